"""Hostile numbers for the model nodes (Zeroscope, StreamingT2V, FILM, MusicGen), called with tiny models
in the real on-disk format (issue 11 point 15: ComfyUI passes NaN through min/max, so nodes check too)."""

from __future__ import annotations

import math

import pytest
import torch

from .test_hostile_other_nodes import call
from .test_hostile_inputs import refused


@pytest.fixture
def zeroscope(tiny_env):
    return call("ZeroscopeLoader", model_name="zeroscope_v2_576w", dtype="auto", download_if_missing=False)[0]


T2V = dict(prompt="a boat", negative_prompt="", seed=1, frames=2, steps=1, guidance=7.0, width=64, height=64, scheduler="DDIM")


@pytest.mark.parametrize("field,value", [("guidance", math.nan), ("guidance", math.inf), ("steps", 0), ("frames", 0),
                                         ("seed", 2**64), ("prompt", ""), ("width", 60000), ("height", 100)])
def test_zeroscope_inputs(hostile, zeroscope, field, value):
    refused(hostile, lambda: call("ZeroscopeTextToVideo", model=zeroscope, **{**T2V, field: value}), field)


FILM = dict(model_name="film_net_fp32.safetensors", mode="frame_rate", multiplier=2, source_fps=8.0, target_fps=16.0,
            strategy="auto", bisection_depth=3, scene_cut_threshold=0.5, batch_size=2, dtype="auto")


@pytest.mark.parametrize("field,value", [("source_fps", math.nan), ("target_fps", math.inf), ("source_fps", 0.0),
                                         ("scene_cut_threshold", math.nan), ("multiplier", 0), ("batch_size", 0)])
def test_film_inputs(hostile, tiny_env, field, value):
    mode = "multiplier" if field == "multiplier" else "frame_rate"
    refused(hostile, lambda: call("WebTVFilmInterpolate", frames=torch.rand(3, 32, 32, 3), **{**FILM, "mode": mode, field: value}), field)


def test_film_output_size_checked_before_starting(hostile, tiny_env):
    """0.1 fps to 480 fps on 24 frames asks for ~110k frames: refused up front with the size, not a SIGBUS later."""
    refused(hostile, lambda: call("WebTVFilmInterpolate", frames=torch.rand(24, 256, 256, 3),
                                  **{**FILM, "source_fps": 0.1, "target_fps": 480.0}), "target_fps")


@pytest.fixture
def musicgen(tiny_env):
    return call("WebTVMusicGenLoader", model_name="musicgen-small", backend="auto", dtype="auto", download_if_missing=False)[0]


MUSIC = dict(prompt="calm piano", duration_mode="seconds", seconds=0.5, fps=8.0, guidance=3.0, temperature=1.0,
             top_k=50, top_p=0.0, seed=1, window_seconds=10.0, context_seconds=2.0)


@pytest.mark.parametrize("field,value", [("seconds", math.nan), ("guidance", math.nan), ("temperature", math.inf),
                                         ("fps", math.nan),
                                         ("seed", 2**64), ("seconds", 0.0)])
def test_musicgen_inputs(hostile, musicgen, field, value):
    refused(hostile, lambda: call("WebTVMusicGen", model=musicgen, **{**MUSIC, field: value}), field)


@pytest.mark.parametrize("field,value", [("total_frames", 0), ("frames_per_step", 0), ("steps", 0), ("guidance", math.nan), ("eta", math.nan)])
def test_streaming_extend_inputs(hostile, tiny_env, field, value):
    model = call("StreamingT2VLoader", checkpoint="streaming_t2v.ckpt", base_model="text-to-video-ms-1.7b",
                 image_encoder="from checkpoint", dtype="auto")[0]
    args = dict(model=model, frames=torch.rand(8, 32, 32, 3), prompt="a boat", negative_prompt="", total_frames=16, steps=1,
                guidance=7.0, eta=0.0, seed=1, anchor_index=-1, frames_per_step=8, fit="crop",
                sequential_guidance=False, offload_components=False)
    refused(hostile, lambda: call("StreamingT2VExtend", **{**args, field: value}), field)
