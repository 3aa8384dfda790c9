"""Output nodes: Save Video."""

from __future__ import annotations

import json

from .mp4 import next_output_file, write_mp4


class SaveVideo:
    DESCRIPTION = (
        "Saves IMAGE frames, with optional AUDIO, as an mp4 (H.264 + AAC, faststart) in ComfyUI's output "
        "folder. The file appears only once complete, so playlists and streams never pick up half a file. "
        "Returns the file path for later nodes (playlists, the live channel)."
    )
    CATEGORY = "WebTV/Output"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Absolute path of the saved mp4.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The video frames, [frames, height, width, 3] in 0..1."}),
                "fps": ("FLOAT", {"default": 8.0, "min": 0.1, "max": 240.0, "step": 0.01, "tooltip": "Frames per second of the video."}),
                "filename_prefix": ("STRING", {"default": "WebTV/clip", "tooltip": "Name under the output folder; may contain sub-folders. A counter is appended."}),
                "crf": ("INT", {"default": 19, "min": 0, "max": 51, "tooltip": "H.264 quality: lower is better and larger (18-23 is typical)."}),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Sound for the video; padded with silence or cut to the video's length."}),
                "generation_info": ("STRING", {"forceInput": True, "tooltip": "Generation parameters (from a generator node) stored in the mp4's metadata."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, images, fps, filename_prefix, crf, audio=None, generation_info=None, prompt=None, extra_pnginfo=None):
        path, subfolder, filename = next_output_file(filename_prefix, "mp4")
        metadata = {}
        if generation_info:
            metadata["comment"] = generation_info
        if prompt is not None:
            metadata["prompt"] = json.dumps(prompt)
        if extra_pnginfo and "workflow" in extra_pnginfo:
            metadata["workflow"] = json.dumps(extra_pnginfo["workflow"])
        write_mp4(images, path, fps, crf=crf, audio=audio, metadata=metadata)
        preview = {"filename": filename, "subfolder": subfolder, "type": "output", "format": "video/mp4"}
        return {"ui": {"images": [preview], "animated": (True,)}, "result": (path,)}


NODE_CLASS_MAPPINGS = {"WebTVSaveVideo": SaveVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"WebTVSaveVideo": "Save Video (WebTV)"}
