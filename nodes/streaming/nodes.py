"""StreamingT2V nodes: loader, checkpoint converter, extension, randomized-blending enhancement."""

from __future__ import annotations

import os

import torch

from .. import host
from ..common import checks
from ..common.frames import check_image
from ..common.models import diffusion_memory, element_size, on_device
from ..diffusion import blending
from ..diffusion.blending import FITS, LENGTH_MODES, RANGE_MODES, chunk_grid
from ..diffusion.sampler import SCHEDULERS, check_scheduler, strength_step_count
from ..zeroscope.nodes import MODEL_TYPE as ZEROSCOPE_MODEL
from .config import BASE_FOLDER, CHECKPOINT_FILE as CHECKPOINT, FROM_CHECKPOINT, SQUARE_FITS

MODEL_TYPE = "STREAMING_T2V_MODEL"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _check_prompt(prompt: str) -> str:
    if not prompt or not prompt.strip():
        raise ValueError("prompt: is empty; describe the video (subject, motion, camera, light).")
    return prompt.strip()


def _check_sampling(seed, steps, guidance, scheduler) -> None:
    checks.seed("seed", seed)
    checks.integer("steps", steps, low=1, high=1000)
    checks.finite("guidance", guidance, low=1.0, high=100.0)
    check_scheduler(scheduler)


def _progress(total: int):
    bar = host.ProgressBar(total)
    return lambda *_: bar.update(1)


class StreamingT2VLoader:
    DESCRIPTION = (
        "Loads StreamingT2V (StreamingModelscope): the official streaming_t2v.ckpt (memory-mapped and weights-only, "
        "never read whole) or a file made by StreamingT2V Convert Checkpoint, with strict key checks. The text "
        "encoder, tokenizer, VAE and scheduler come from the ModelScope text-to-video folder; the OpenCLIP "
        "ViT-H/14 image encoder from the checkpoint or models/open_clip."
    )
    CATEGORY = "WebTV/StreamingT2V"
    FUNCTION = "load"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)

    @classmethod
    def INPUT_TYPES(cls):
        checkpoints = sorted(set(host.list_models("streaming_t2v")) | {CHECKPOINT})
        bases = sorted(set(host.list_models("zeroscope")) | {BASE_FOLDER})
        encoders = [FROM_CHECKPOINT] + host.list_models("open_clip")
        return {
            "required": {
                "checkpoint": (checkpoints, {"default": CHECKPOINT, "tooltip": "streaming_t2v.ckpt (PAIR/StreamingT2V) or a converted .safetensors in models/streaming_t2v."}),
                "base_model": (bases, {"default": BASE_FOLDER, "tooltip": "The ModelScope text-to-video folder (ali-vilab/text-to-video-ms-1.7b) in models/zeroscope: text encoder, tokenizer, VAE, scheduler."}),
                "image_encoder": (encoders, {"default": FROM_CHECKPOINT, "tooltip": "OpenCLIP ViT-H/14 for the anchor frame: from the checkpoint, or a file in models/open_clip (open_clip_pytorch_model.bin)."}),
                "dtype": (["auto", "fp32", "fp16", "bf16"], {"default": "auto", "tooltip": "Weight precision on the GPU; auto is fp16 (the official code runs fp32). Always fp32 on CPU."}),
            }
        }

    def load(self, checkpoint, base_model, image_encoder, dtype):
        from .model import load_cached

        return (load_cached(checkpoint, base_model, image_encoder, dtype),)


class StreamingT2VConvertCheckpoint:
    DESCRIPTION = (
        "One-time conversion of the 25.6 GB streaming_t2v.ckpt into one safetensors file in fp16 or bf16 (about "
        "5 GB with the image encoder) in models/streaming_t2v. Optimizer state and unused keys are dropped; the "
        "file is written tensor by tensor and appears only when complete."
    )
    CATEGORY = "WebTV/StreamingT2V"
    FUNCTION = "convert"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Path of the converted file; choose it in StreamingT2V Loader.",)

    @classmethod
    def INPUT_TYPES(cls):
        checkpoints = sorted(set(host.list_models("streaming_t2v")) | {CHECKPOINT})
        return {
            "required": {
                "checkpoint": (checkpoints, {"default": CHECKPOINT, "tooltip": "The checkpoint to convert (models/streaming_t2v)."}),
                "dtype": (["fp16", "bf16", "fp32"], {"default": "fp16", "tooltip": "Precision of the converted weights."}),
                "filename": ("STRING", {"default": "streaming_t2v_fp16.safetensors", "tooltip": "Name of the new file in models/streaming_t2v (a plain file name ending in .safetensors)."}),
                "include_image_encoder": ("BOOLEAN", {"default": True, "tooltip": "Keep the OpenCLIP image encoder in the file; off saves 1.3 GB but needs models/open_clip."}),
            }
        }

    def convert(self, checkpoint, dtype, filename, include_image_encoder):
        from . import checkpoint as ckpt

        if os.path.basename(filename) != filename or not filename.endswith(".safetensors") or filename.startswith("."):
            raise ValueError(f"filename: {filename!r} must be a plain file name ending in .safetensors, without folders.")
        source = host.find_model("streaming_t2v", checkpoint)
        if source is None:
            raise FileNotFoundError(f"checkpoint: '{checkpoint}' is not in {host.model_dirs('streaming_t2v')[0]}; download it from {ckpt.HUB_FILE}.")
        target = os.path.join(os.path.dirname(source), filename)
        if os.path.realpath(target) == os.path.realpath(source):
            raise ValueError("filename: is the checkpoint itself; choose another name.")
        components = ckpt.CONVERTED if include_image_encoder else tuple(c for c in ckpt.CONVERTED if c != "image_encoder")
        ckpt.convert(source, target, DTYPES[dtype], components)
        return {"ui": {"text": [target]}, "result": (target,)}


class StreamingT2VExtend:
    DESCRIPTION = (
        "Extends a clip to a long video with StreamingT2V: each step denoises 16 frames conditioned on the video's "
        "last 8 frames (CAM) and an anchor frame (APM) and appends the new ones (8 by default). Works at the "
        "model's 256 x 256; frames go straight to a disk-backed store, so memory stays flat up to 1200 frames "
        "and beyond. Progress per chunk and step; cancel any time."
    )
    CATEGORY = "WebTV/StreamingT2V"
    FUNCTION = "extend"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The input clip (resized) followed by the new frames, total_frames in all.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "From StreamingT2V Loader."}),
                "frames": ("IMAGE", {"tooltip": "The clip to extend (at least 8 frames), e.g. from Zeroscope Text to Video; resized to 256 x 256."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What the video shows; usually the prompt of the first clip."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What to avoid."}),
                "total_frames": ("INT", {"default": 240, "min": 1, "max": 100000, "tooltip": "Length of the result including the input clip (80 to 1200 and beyond)."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 200, "tooltip": "Denoising steps per chunk (official: 50 DDIM steps)."}),
                "guidance": ("FLOAT", {"default": 7.5, "min": 1.0, "max": 30.0, "step": 0.1, "tooltip": "Classifier-free guidance for text and anchor together (official: 7.5)."}),
                "eta": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "DDIM stochasticity (official: 1.0); the other schedulers ignore it."}),
                "seed": ("INT", {"default": 33, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True, "tooltip": "Noise seed; the same seed gives the same video on every device."}),
                "anchor_index": ("INT", {"default": 0, "min": -4096, "max": 4096, "tooltip": "Which input frame is the appearance anchor (APM); 0 is the first, -1 the last."}),
                "frames_per_step": ("INT", {"default": 8, "min": 1, "max": 8, "tooltip": "New frames kept per step; 8 as trained, fewer is slower but re-conditions more often."}),
                "fit": (list(SQUARE_FITS), {"default": "crop", "tooltip": "How non-square input becomes 256 x 256: centre crop, pad (black bars) or stretch (anamorphic frames, which CAM and APM were not trained on)."}),
                "sequential_guidance": ("BOOLEAN", {"default": False, "tooltip": "Run the guidance branches one at a time: less GPU memory, same result."}),
                "offload_components": ("BOOLEAN", {"default": False, "tooltip": "Keep the text/image encoders and the VAE on the GPU only while they work."}),
            },
            "optional": {
                "anchor_guidance": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 30.0, "step": 0.1, "tooltip": "A separate anchor weight (paper's 3-branch guidance, one more UNet pass); -1 uses guidance for both."}),
                "scheduler": (list(SCHEDULERS), {"default": "DDIM", "tooltip": "Sampler, set up from the base model's scheduler config: DDIM is the official one (with eta 1 and 50 steps); DPM-Solver++ 2M, UniPC and Euler are deterministic and need fewer steps (20-25)."}),
            },
        }

    def extend(self, model, frames, prompt, negative_prompt, total_frames, steps, guidance, eta, seed, anchor_index,
               frames_per_step, fit, sequential_guidance, offload_components, anchor_guidance=-1.0, scheduler="DDIM"):
        from .extend import extend, extension_steps

        frames = check_image(frames, "frames", min_frames=model.config.control_frames)
        prompt = _check_prompt(prompt)
        _check_sampling(seed, steps, guidance, scheduler)
        total_frames = checks.integer("total_frames", total_frames, low=1)
        eta = checks.finite("eta", eta, low=0.0, high=1.0)
        anchor_index = checks.integer("anchor_index", anchor_index)
        frames_per_step = checks.integer("frames_per_step", frames_per_step, low=1)
        anchor_guidance = checks.finite("anchor_guidance", anchor_guidance, low=-1.0, high=100.0)
        per_step = min(frames_per_step, model.config.new_frames_per_step)
        chunks = extension_steps(frames.shape[0], total_frames, per_step)
        resident = (model.unet, model.cam, model.resampler) if offload_components else model.modules()
        size = model.config.resolution
        memory = diffusion_memory(model.config.chunk_frames, size, size, element_size(model.unet))
        with on_device(*resident, memory_required=memory):
            video = extend(
                model, frames, prompt, negative_prompt, total_frames, steps, guidance, eta, seed, anchor_index,
                per_step, fit, None if anchor_guidance < 0 else anchor_guidance, sequential_guidance,
                offload_components, on_step=_progress(max(chunks * steps, 1)), scheduler=scheduler,
            )
        return (video,)


class RandomizedBlendingEnhance:
    DESCRIPTION = (
        "Enhances a long video with a video-to-video model (Zeroscope XL by default) chunk by chunk, with "
        "StreamingT2V's randomized blending: one noise for the whole video, and at every step each overlap is cut "
        "at a random frame and the chunks' predictions are joined there before one scheduler step on the whole "
        "video. No seams, no extra model evaluations; only one chunk is on the GPU at a time. The official enhancer, "
        "MS-Vid2Vid-XL, is not a diffusers model and is not supported (the README says what differs)."
    )
    CATEGORY = "WebTV/StreamingT2V"
    FUNCTION = "enhance"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The enhanced frames (the chunk grid's length when trimming, the input's when padding).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (ZEROSCOPE_MODEL, {"tooltip": "The enhancer: Zeroscope Loader with zeroscope_v2_XL (any ModelScope-layout video model works)."}),
                "frames": ("IMAGE", {"tooltip": "The long video, e.g. from StreamingT2V Extend."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "The video's prompt."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What to avoid."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True, "tooltip": "Seed of the noise and of the random cut offsets."}),
                "strength": ("FLOAT", {"default": 0.6, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Noise level: 0 keeps the input, 1 ignores it (the paper's T' = 600 of 1000 is about 0.6)."}),
                "steps": ("INT", {"default": 30, "min": 1, "max": 200, "tooltip": "Steps of the full schedule (strength x steps run)."}),
                "guidance": ("FLOAT", {"default": 7.5, "min": 1.0, "max": 30.0, "step": 0.1, "tooltip": "Classifier-free guidance scale."}),
                "chunk_length": ("INT", {"default": 24, "min": 1, "max": 512, "tooltip": "Frames the model sees at once."}),
                "overlap": ("INT", {"default": 8, "min": 0, "max": 511, "tooltip": "Frames shared by neighbouring chunks, where the random cut falls; 0 gives independent chunks."}),
                "width": ("INT", {"default": 1024, "min": 64, "max": 4096, "step": 8, "tooltip": "Output width, a multiple of 8 (Zeroscope XL: 1024)."}),
                "height": ("INT", {"default": 576, "min": 64, "max": 4096, "step": 8, "tooltip": "Output height, a multiple of 8 (Zeroscope XL: 576)."}),
                "fit": (list(FITS), {"default": "pad, crop back", "tooltip": "How frames reach width x height: stretch, crop (fill), pad (black bars, as the official code), or pad and crop the bars off afterwards (keeps the input's shape)."}),
                "length_mode": (list(LENGTH_MODES), {"default": "trim", "tooltip": "Frames past the last full chunk: trim them (official: 240 -> 232 at 24/8) or pad the grid and keep every frame."}),
            },
            "optional": {
                "offset_range": (list(RANGE_MODES), {"default": "code", "tooltip": "Random cut range in an overlap of O frames: code = 0..O-1 (official code), paper = 0..O."}),
                "eta": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "DDIM stochasticity; the other schedulers ignore it."}),
                "scheduler": (list(SCHEDULERS), {"default": "DDIM", "tooltip": "Sampler, set up from the enhancer's scheduler config: DDIM (Zeroscope XL's own), DPM-Solver++ 2M, UniPC, Euler. The official enhancer's DPM-Solver++ 2M SDE belongs to MS-Vid2Vid-XL, which the pack does not run."}),
            },
        }

    def enhance(self, model, frames, prompt, negative_prompt, seed, strength, steps, guidance, chunk_length, overlap,
                width, height, fit, length_mode, offset_range="code", eta=0.0, scheduler="DDIM"):
        frames = check_image(frames, "frames")
        prompt = _check_prompt(prompt)
        _check_sampling(seed, steps, guidance, scheduler)
        strength = checks.finite("strength", strength, low=0.0, high=1.0)
        eta = checks.finite("eta", eta, low=0.0, high=1.0)
        chunk_length = checks.integer("chunk_length", chunk_length, low=1)
        overlap = checks.integer("overlap", overlap, low=0)
        for name, value in (("width", width), ("height", height)):
            if checks.integer(name, value, low=8) % 8:
                raise ValueError(f"{name}: {value} is not a multiple of 8; use {round(value / 8) * 8}.")
        starts, _ = chunk_grid(frames.shape[0], chunk_length, overlap, length_mode)
        total = max(strength_step_count(steps, strength), 1) * len(starts)
        memory = diffusion_memory(chunk_length, height, width, element_size(model.unet))
        with on_device(*model.modules(), memory_required=memory):
            video = blending.enhance(
                model, frames, prompt, negative_prompt, chunk_length, overlap, strength, steps, guidance, seed, eta,
                width, height, fit, length_mode, offset_range, on_chunk=_progress(total), scheduler=scheduler,
            )
        return (video,)


NODE_CLASS_MAPPINGS = {
    "StreamingT2VLoader": StreamingT2VLoader,
    "StreamingT2VConvertCheckpoint": StreamingT2VConvertCheckpoint,
    "StreamingT2VExtend": StreamingT2VExtend,
    "RandomizedBlendingEnhance": RandomizedBlendingEnhance,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "StreamingT2VLoader": "StreamingT2V Loader",
    "StreamingT2VConvertCheckpoint": "StreamingT2V Convert Checkpoint",
    "StreamingT2VExtend": "StreamingT2V Extend",
    "RandomizedBlendingEnhance": "Randomized Blending Enhance",
}
