"""FILM node: frame interpolation to a multiplier or a target frame rate."""

from __future__ import annotations

import json
import os

import torch

from .. import host
from ..common import checks
from ..common.frames import check_image
from ..common.models import cached, interpolation_memory, on_device, path_stamp
from . import timing, weights
from .interpolate import check_output_size, interpolate
from .model import FilmNet

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# CUDA only: torch.compile each model part for one batch shape (a slow first run, faster long runs).
COMPILE = os.environ.get("COMFYUI_WEBTV_FILM_COMPILE", "") == "1"


def run_dtype(choice: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU; on a GPU the chosen precision, fp16 for auto."""
    if device.type == "cpu":
        return torch.float32
    if choice == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[choice]


def gather_frames(frames) -> torch.Tensor:
    """The IMAGE to interpolate; several batches (a list) are joined when their frame sizes match."""
    if isinstance(frames, (list, tuple)) and frames and all(isinstance(f, torch.Tensor) for f in frames):
        sizes = [tuple(check_image(f, "frames").shape[1:3]) for f in frames]
        if len(set(sizes)) > 1:
            raise ValueError(
                f"frames: the batches have different sizes {sorted(set(sizes))} (height, width); resize them to "
                "one size before interpolating."
            )
        frames = torch.cat([f[..., :3] for f in frames])
    return check_image(frames, "frames", min_frames=2)


def load_cached(name: str, dtype: torch.dtype) -> FilmNet:
    """The model from ``models/film/<name>``, loaded once per file version and precision."""
    path = weights.find(name)
    return cached(("film", path, dtype), lambda: weights.load_file(path, dtype), path_stamp(path))


def from_interp_model(interp_model, dtype: torch.dtype) -> FilmNet:
    """Our model holding the weights of core's ``INTERP_MODEL``; one such copy is cached, redone when the
    model or its tensors change."""
    module = getattr(interp_model, "model", None)
    first = next(module.parameters(), None) if isinstance(module, torch.nn.Module) else None
    stamp = (id(module), None if first is None else (first.data_ptr(), first.dtype, str(first.device)))
    return cached(("film", "interp_model", dtype), lambda: weights.from_interp_model(interp_model, dtype), stamp)


class FilmInterpolate:
    DESCRIPTION = (
        "FILM (Frame Interpolation for Large Motion) in-betweens: multiply the frame count, or retime a clip to "
        "a target frame rate with every output frame at an exact multiple of the output period (8 -> 24, "
        "24 -> 60). Weights: ComfyUI's own FILM files (models/frame_interpolation, or core's INTERP_MODEL) or "
        "the converted release files (models/film/*.safetensors). Each frame's features and each pair's flows "
        "are computed once and shared by every in-between. Weights that ignore t "
        "(release v1.0.0) are driven by midpoint bisection, so frames land only at dyadic times, each reported "
        "with the time it really shows. Scene cuts hold the earlier frame instead of morphing. Works pair batch "
        "by pair batch, so long clips keep memory flat."
    )
    CATEGORY = "WebTV/FILM"
    FUNCTION = "interpolate"
    RETURN_TYPES = ("IMAGE", "FLOAT", "STRING")
    RETURN_NAMES = ("frames", "fps", "timing")
    OUTPUT_TOOLTIPS = (
        "The interpolated frames.",
        "Frame rate of the output (target_fps, or source_fps x multiplier).",
        "JSON: the strategy that ran, model calls, the largest gap between a frame's requested and real time "
        "(in input frames), scene cuts and held frames.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        names = weights.names() or [weights.DEFAULT_NAME]
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "The clip to interpolate (at least 2 frames, all the same size)."}),
                "model_name": (names, {"default": weights.DEFAULT_NAME, "tooltip": "FILM weights: ComfyUI's film_net_fp16/fp32.safetensors in models/frame_interpolation as they are, or converted release weights in models/film (convert the release .pt once with: python -m comfyui_webtv convert-film). Unused when interp_model is connected."}),
                "mode": (["frame_rate", "multiplier"], {"default": "frame_rate", "tooltip": "frame_rate: retime source_fps to target_fps keeping the duration. multiplier: put multiplier - 1 frames between each pair."}),
                "multiplier": ("INT", {"default": 2, "min": 2, "max": 64, "tooltip": "Multiplier mode: output has (frames - 1) x multiplier + 1 frames."}),
                "source_fps": ("FLOAT", {"default": 8.0, "min": 0.1, "max": 240.0, "step": 0.001, "tooltip": "Frame rate of the input clip."}),
                "target_fps": ("FLOAT", {"default": 24.0, "min": 0.1, "max": 480.0, "step": 0.001, "tooltip": "Frame-rate mode: the output rate, at least source_fps; any ratio works (24 -> 60)."}),
                "strategy": (list(timing.STRATEGIES), {"default": "auto", "tooltip": "auto: bisection for weights that ignore t (v1.0.0), or when every target is a midpoint and bisection costs no more (x2); else single_shot (each frame in one call at its t, a pair's flows shared by all its times). bisection: midpoints only, times rounded to the nearest 1/2^bisection_depth."}),
                "bisection_depth": ("INT", {"default": 4, "min": 1, "max": 8, "tooltip": "Bisection: deepest halving; a target that is not dyadic moves to the nearest multiple of 1/2^depth of the pair."}),
                "scene_cut_threshold": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Luma-histogram distance (0..1) above which a pair is a scene cut and its in-betweens hold the earlier frame; 1 turns detection off."}),
                "batch_size": ("INT", {"default": 2, "min": 1, "max": 64, "tooltip": "Frames, pairs and in-between times per call of each model part. On a GPU try 2-8 (lower it if memory runs out); on CPU 1-2."}),
                "dtype": (["auto", "fp32", "fp16", "bf16"], {"default": "auto", "tooltip": "Precision on the GPU (auto is fp16; flows, their time scaling and the sampling grid stay fp32). Always fp32 on CPU."}),
            },
            "optional": {
                "interp_model": ("INTERP_MODEL", {"tooltip": "A FILM model from ComfyUI's Load Frame Interpolation Model; replaces model_name (RIFE models are refused)."}),
            },
        }

    def interpolate(self, frames, model_name, mode, multiplier, source_fps, target_fps, strategy,
                    bisection_depth, scene_cut_threshold, batch_size, dtype, interp_model=None):
        images = gather_frames(frames)
        count, height, width = images.shape[:3]
        source = timing.as_rate(source_fps, "source_fps")
        if mode == "frame_rate":
            fps = timing.as_rate(target_fps, "target_fps")
            check_output_size(timing.rate_count(count, source, fps), height, width, "target_fps")
            times = timing.rate_times(count, source, fps)
        elif mode == "multiplier":
            multiplier = checks.integer("multiplier", multiplier, low=1)
            fps = source * multiplier
            check_output_size((count - 1) * multiplier + 1, height, width, "multiplier")
            times = timing.multiplier_times(count, multiplier)
        else:
            raise ValueError(f"mode: {mode!r} is not frame_rate or multiplier.")
        batch_size = checks.integer("batch_size", batch_size, low=1)
        bisection_depth = checks.integer("bisection_depth", bisection_depth, low=1)
        cuts = timing.detect_cuts(images, checks.finite("scene_cut_threshold", scene_cut_threshold, low=0, high=1))
        device = host.torch_device()
        precision = run_dtype(dtype, device)
        if interp_model is not None:
            model, model_name = from_interp_model(interp_model, precision), "interp_model"
        else:
            model = load_cached(model_name, precision)
        plan = timing.make_plan(times, count, strategy, model.honours_t, bisection_depth, cuts)
        bar = host.ProgressBar(len(plan.frames))
        with on_device(model, device=device, memory_required=interpolation_memory(batch_size, height, width)):
            out = interpolate(model, images, plan, batch_size, on_frame=bar.update, compile=COMPILE)
        report = {"model": model_name, "weights_honour_t": model.honours_t, **plan.report(fps)}
        return (out, float(fps), json.dumps(report))


NODE_CLASS_MAPPINGS = {"WebTVFilmInterpolate": FilmInterpolate}
NODE_DISPLAY_NAME_MAPPINGS = {"WebTVFilmInterpolate": "FILM Interpolate"}
