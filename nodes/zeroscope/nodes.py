"""Zeroscope nodes: loader, text-to-video, XL upscale."""

from __future__ import annotations

import json

from .. import host
from ..common import checks
from ..common.frames import check_image
from ..common.models import diffusion_memory, element_size, on_device
from ..diffusion import blending, sampler
from ..diffusion.sampler import SCHEDULER_TOOLTIP, SCHEDULERS
from . import loader

MODEL_TYPE = "ZEROSCOPE_MODEL"


def _check_prompt(prompt: str) -> str:
    if not prompt or not prompt.strip():
        raise ValueError("prompt: is empty; describe the video to generate (subject, motion, camera, light).")
    return prompt.strip()


MAX_SIZE = 4096  # the largest widget value; beyond it a frame alone outgrows any GPU


def _check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        value = checks.integer(name, value, high=MAX_SIZE)
        if value <= 0 or value % 8:
            raise ValueError(f"{name}: {value} is not a positive multiple of 8; use for example {max(8, round(value / 8) * 8)}.")


def _check_sampling(seed, steps, guidance, scheduler) -> None:
    checks.seed("seed", seed)
    checks.integer("steps", steps, low=1, high=1000)
    checks.finite("guidance", guidance, low=1.0, high=100.0)
    sampler.check_scheduler(scheduler)


def _step_progress(total_steps: int):
    bar = host.ProgressBar(total_steps)
    return lambda *_: bar.update(1)


class ZeroscopeLoader:
    DESCRIPTION = (
        "Loads a diffusers-format text-to-video model (Zeroscope v2 576w, Zeroscope v2 XL, or any ModelScope-"
        "layout model) from models/zeroscope or models/diffusers. Loaded once and cached across runs; moved "
        "to the GPU only while a node uses it."
    )
    CATEGORY = "WebTV/Zeroscope"
    FUNCTION = "load"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)

    @classmethod
    def INPUT_TYPES(cls):
        names = sorted(set(host.list_models("zeroscope")) | {"zeroscope_v2_576w", "zeroscope_v2_XL"})
        return {
            "required": {
                "model_name": (names, {"default": "zeroscope_v2_576w", "tooltip": "Model folder under models/zeroscope (or models/diffusers)."}),
                "dtype": (["auto", "fp32", "fp16", "bf16"], {"default": "auto", "tooltip": "Weight precision on the GPU; auto is fp16. Always fp32 on CPU."}),
                "download_if_missing": ("BOOLEAN", {"default": False, "tooltip": "Download the model from the Hugging Face Hub when it is missing (not in offline mode)."}),
            }
        }

    def load(self, model_name, dtype, download_if_missing):
        return (loader.load_cached(model_name, dtype, download_if_missing),)


class ZeroscopeTextToVideo:
    DESCRIPTION = "Generates a short video from a prompt with Zeroscope v2 576w (24 frames at 576 x 320 by default)."
    CATEGORY = "WebTV/Zeroscope"
    FUNCTION = "generate"
    RETURN_TYPES = ("IMAGE", "STRING", "STRING")
    RETURN_NAMES = ("frames", "prompt", "generation_info")
    OUTPUT_TOOLTIPS = (
        "The generated frames.",
        "The prompt, to wire into the XL upscale.",
        "Seed and parameters as JSON, for Save Video's metadata.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "From Zeroscope Loader (zeroscope_v2_576w)."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What the video shows: subject, motion and its direction, camera, light."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What to avoid (for example: blurry, text, watermark)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True, "tooltip": "Noise seed; the same seed gives the same video on every device."}),
                "frames": ("INT", {"default": 24, "min": 1, "max": 512, "tooltip": "Number of frames to generate."}),
                "steps": ("INT", {"default": 40, "min": 1, "max": 200, "tooltip": "Denoising steps."}),
                "guidance": ("FLOAT", {"default": 9.0, "min": 1.0, "max": 30.0, "step": 0.1, "tooltip": "Classifier-free guidance scale; 1 disables guidance."}),
                "width": ("INT", {"default": 576, "min": 64, "max": 2048, "step": 8, "tooltip": "Frame width, a multiple of 8."}),
                "height": ("INT", {"default": 320, "min": 64, "max": 2048, "step": 8, "tooltip": "Frame height, a multiple of 8."}),
            },
            "optional": {  # optional, so API workflows written before it still run
                "scheduler": (list(SCHEDULERS), {"default": "DDIM", "tooltip": SCHEDULER_TOOLTIP}),
            },
        }

    def generate(self, model, prompt, negative_prompt, seed, frames, steps, guidance, width, height, scheduler="DDIM"):
        prompt = _check_prompt(prompt)
        _check_size(width, height)
        _check_sampling(seed, steps, guidance, scheduler)
        frames = checks.integer("frames", frames, low=1)
        memory = diffusion_memory(frames, height, width, element_size(model.unet))
        with on_device(*model.modules(), memory_required=memory):
            video = sampler.text_to_video(
                model, prompt, negative_prompt, num_frames=frames, height=height, width=width, steps=steps,
                guidance=guidance, seed=seed, on_step=_step_progress(steps), scheduler=scheduler,
            )
        info = {
            "model": model.name, "prompt": prompt, "negative_prompt": negative_prompt, "seed": seed,
            "frames": frames, "steps": steps, "guidance": guidance, "width": width, "height": height,
            "scheduler": scheduler,
        }
        return (video, prompt, json.dumps(info))


class ZeroscopeXLUpscale:
    DESCRIPTION = (
        "The Zeroscope v2 XL second pass: resizes frames to 1024 x 576 and re-renders them video-to-video "
        "with the same prompt. Long inputs run in overlapping chunks with randomized blending (one noise for the "
        "whole video, chunk predictions joined at a random frame of each overlap), so memory stays bounded and "
        "chunk boundaries leave no seams."
    )
    CATEGORY = "WebTV/Zeroscope"
    FUNCTION = "upscale"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "From Zeroscope Loader (zeroscope_v2_XL)."}),
                "frames": ("IMAGE", {"tooltip": "Frames to upscale, usually from Zeroscope Text to Video."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "The prompt of the first pass; wire it from the text-to-video node."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What to avoid."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True, "tooltip": "Noise seed."}),
                "strength": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "How much to re-render: 0 keeps the input, 1 ignores it."}),
                "steps": ("INT", {"default": 40, "min": 1, "max": 200, "tooltip": "Denoising steps of the full schedule (strength x steps run)."}),
                "guidance": ("FLOAT", {"default": 9.0, "min": 1.0, "max": 30.0, "step": 0.1, "tooltip": "Classifier-free guidance scale."}),
                "width": ("INT", {"default": 1024, "min": 64, "max": 4096, "step": 8, "tooltip": "Output width, a multiple of 8."}),
                "height": ("INT", {"default": 576, "min": 64, "max": 4096, "step": 8, "tooltip": "Output height, a multiple of 8."}),
                "chunk_length": ("INT", {"default": 24, "min": 1, "max": 512, "tooltip": "Frames the model sees at once; lower it if memory runs out."}),
            },
            "optional": {  # optional, so API workflows written before them still run
                "overlap": ("INT", {"default": 8, "min": 0, "max": 511, "tooltip": "Frames shared by neighbouring chunks, where they are blended; 0 gives independent chunks (visible seams)."}),
                "scheduler": (list(SCHEDULERS), {"default": "DDIM", "tooltip": SCHEDULER_TOOLTIP}),
            },
        }

    def upscale(self, model, frames, prompt, negative_prompt, seed, strength, steps, guidance, width, height,
                chunk_length, overlap=8, scheduler="DDIM"):
        frames = check_image(frames, "frames")
        prompt = _check_prompt(prompt)
        _check_size(width, height)
        _check_sampling(seed, steps, guidance, scheduler)
        strength = checks.finite("strength", strength, low=0.0, high=1.0)
        chunk_length = checks.integer("chunk_length", chunk_length, low=1)
        overlap = checks.integer("overlap", overlap, low=0, high=chunk_length - 1)
        chunk = min(chunk_length, frames.shape[0])  # a short input is one chunk
        overlap = min(overlap, chunk - 1)
        starts, _ = blending.chunk_grid(frames.shape[0], chunk, overlap, "pad")
        progress = _step_progress(max(sampler.strength_step_count(steps, strength), 1) * len(starts))
        with on_device(*model.modules(), memory_required=diffusion_memory(chunk, height, width, element_size(model.unet))):
            out = blending.enhance(
                model, frames, prompt, negative_prompt, chunk=chunk, overlap=overlap, strength=strength, steps=steps,
                guidance=guidance, seed=seed, width=width, height=height, fit="stretch", length_mode="pad",
                on_chunk=progress, scheduler=scheduler,
            )
        return (out,)


NODE_CLASS_MAPPINGS = {
    "ZeroscopeLoader": ZeroscopeLoader,
    "ZeroscopeTextToVideo": ZeroscopeTextToVideo,
    "ZeroscopeXLUpscale": ZeroscopeXLUpscale,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ZeroscopeLoader": "Zeroscope Loader",
    "ZeroscopeTextToVideo": "Zeroscope Text to Video",
    "ZeroscopeXLUpscale": "Zeroscope XL Upscale",
}
