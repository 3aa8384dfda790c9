"""Zeroscope: the sampler against diffusers' deprecated pipelines, the nodes end to end, bad input."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from comfyui_webtv.nodes.broadcast.nodes import SaveVideo
from comfyui_webtv.nodes.common import models
from comfyui_webtv.nodes.diffusion import sampler
from comfyui_webtv.nodes.zeroscope import loader
from comfyui_webtv.nodes.zeroscope.nodes import ZeroscopeLoader, ZeroscopeTextToVideo, ZeroscopeXLUpscale
from media_probe import probe

pytestmark = pytest.mark.oldest  # loading and parity under the oldest transformers and diffusers too


@pytest.fixture
def tiny_576w(tiny_env):
    return loader.load_model(os.path.join(tiny_env["models"], "zeroscope", "zeroscope_v2_576w"))


def _pipeline(cls, model):
    return cls(
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
        scheduler=model.new_scheduler(),
    )


def test_text_to_video_matches_deprecated_pipeline(tiny_576w):
    from diffusers import TextToVideoSDPipeline

    kwargs = dict(num_frames=6, height=64, width=64, num_inference_steps=3, guidance_scale=7.5)
    ref = _pipeline(TextToVideoSDPipeline, tiny_576w)(
        "a red fox running left", negative_prompt="blurry", generator=torch.Generator().manual_seed(7), output_type="np", **kwargs
    ).frames[0]
    ours = sampler.text_to_video(tiny_576w, "a red fox running left", "blurry", 6, 64, 64, 3, 7.5, seed=7)
    assert ours.shape == (6, 64, 64, 3)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5)
    other = sampler.text_to_video(tiny_576w, "a red fox running left", "blurry", 6, 64, 64, 3, 7.5, seed=8)
    assert not torch.allclose(ours, other)


def test_video_to_video_matches_deprecated_pipeline(tiny_576w):
    from diffusers import VideoToVideoSDPipeline

    frames = torch.rand(5, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    ref = _pipeline(VideoToVideoSDPipeline, tiny_576w)(
        "waves at dusk", video=[f.numpy() for f in frames], strength=0.6, num_inference_steps=5,
        guidance_scale=9.0, negative_prompt="text", generator=torch.Generator().manual_seed(3), output_type="np",
    ).frames[0]
    ours = sampler.video_to_video(tiny_576w, frames, "waves at dusk", "text", strength=0.6, steps=5, guidance=9.0, seed=3)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5)


def test_frame_slices_do_not_change_the_decode(tiny_576w):
    latents = torch.randn(1, 4, 7, 8, 8, generator=torch.Generator().manual_seed(1))
    whole = sampler.decode_latents(tiny_576w, latents, slice_frames=7)
    sliced = sampler.decode_latents(tiny_576w, latents, slice_frames=2)
    torch.testing.assert_close(whole, sliced, atol=1e-5, rtol=0)


def test_custom_predictor_plugs_into_the_loop(tiny_576w):
    scheduler = tiny_576w.new_scheduler()
    scheduler.set_timesteps(4)
    calls = []

    def predict(latents, t):
        calls.append(int(t))
        return torch.zeros_like(latents)

    steps = []
    sampler.denoise(scheduler, torch.randn(1, 4, 3, 8, 8), scheduler.timesteps, predict, on_step=lambda i, n: steps.append((i, n)))
    assert calls == [int(t) for t in scheduler.timesteps] and steps == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_loader_text_to_video_xl_save_video_end_to_end(tiny_env):
    model = ZeroscopeLoader().load("zeroscope_v2_576w", "auto", False)[0]
    assert ZeroscopeLoader().load("zeroscope_v2_576w", "fp16", False)[0] is model  # cached, fp32 on CPU
    xl = ZeroscopeLoader().load("zeroscope_v2_XL", "auto", False)[0]
    frames, prompt, info = ZeroscopeTextToVideo().generate(
        model=model, prompt="a boat drifting right", negative_prompt="", seed=5, frames=10, steps=2, guidance=7.0,
        width=64, height=48, scheduler="DPM-Solver++ 2M")
    assert frames.shape == (10, 48, 64, 3) and 0 <= frames.min() and frames.max() <= 1
    up = ZeroscopeXLUpscale().upscale(**_upscale_args(xl, frames, prompt=prompt, seed=5, strength=0.7, steps=3, guidance=7.0,
                                                      width=96, height=64, chunk_length=4, overlap=2))[0]
    assert up.shape == (10, 64, 96, 3)
    audio = {"waveform": torch.sin(torch.linspace(0, 2000, 44100 * 2)).repeat(1, 2, 1) * 0.2, "sample_rate": 44100}
    out = SaveVideo().save(up, 8.0, "WebTV/test", 23, audio=audio, generation_info=info)
    path = out["result"][0]
    assert out["ui"]["images"][0] == {"filename": os.path.basename(path), "subfolder": "WebTV", "type": "output", "format": "video/mp4"}
    info = probe(path)
    assert (info.frames, info.fps, info.width, info.height, info.video_codec) == (10, 8.0, 96, 64, "h264")
    assert info.audio_codec == "aac" and abs(info.audio_duration - 10 / 8) < 1 / 8
    assert '"seed": 5' in info.tags["comment"]


def _upscale_args(model, frames, **change):
    args = dict(model=model, frames=frames, prompt="fog", negative_prompt="", seed=1, strength=0.5, steps=4, guidance=5.0,
                width=64, height=64, chunk_length=6, overlap=2, scheduler="DDIM")
    args.update(change)
    return args


def test_upscale_of_one_chunk_equals_one_video_to_video_pass(tiny_env):
    xl = loader.load_cached("zeroscope_v2_XL")
    frames = torch.rand(6, 32, 32, 3, generator=torch.Generator().manual_seed(2))
    one = ZeroscopeXLUpscale().upscale(**_upscale_args(xl, frames, chunk_length=6))[0]
    direct = sampler.video_to_video(xl, sampler.resize_frames(frames, 64, 64), "fog", "", strength=0.5, steps=4,
                                    guidance=5.0, seed=1)
    torch.testing.assert_close(one, direct)
    longer = ZeroscopeXLUpscale().upscale(**_upscale_args(xl, frames, chunk_length=24))[0]  # chunk > input: one chunk
    torch.testing.assert_close(longer, direct)


def _record_unet_inputs(model, monkeypatch) -> list[torch.Tensor]:
    seen = []
    forward = model.unet.forward

    def spy(sample, *args, **kwargs):
        seen.append(sample.detach().clone())
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(model.unet, "forward", spy)
    return seen


def test_long_upscale_blends_overlapping_chunks_under_one_noise(tiny_env, monkeypatch):
    """A long input is not cut into independent chunks: neighbouring chunks overlap, and at the first step
    the overlap frames they see are the same noised latents (one noise tensor for the whole video)."""
    xl = loader.load_cached("zeroscope_v2_XL")
    frames = torch.rand(14, 32, 32, 3, generator=torch.Generator().manual_seed(4))
    seen = _record_unet_inputs(xl, monkeypatch)
    out = ZeroscopeXLUpscale().upscale(**_upscale_args(xl, frames, chunk_length=6, overlap=2, steps=4, strength=0.5))[0]
    assert out.shape == (14, 64, 64, 3)  # every frame kept (the grid is padded, not trimmed)
    chunks = 3  # starts 0, 4, 8: frames 0-5, 4-9, 8-13
    assert len(seen) == chunks * 2 and all(x.shape[2] == 6 for x in seen)  # 2 steps x 3 chunks, 6 frames each
    for earlier, later in zip(seen[:chunks - 1], seen[1:chunks]):
        torch.testing.assert_close(later[:, :, :2], earlier[:, :, 4:], rtol=0, atol=0)


@pytest.mark.parametrize("scheduler", ["DDIM", "DPM-Solver++ 2M", "UniPC", "Euler"])
def test_every_scheduler_runs_from_the_model_config(tiny_576w, scheduler):
    made = tiny_576w.new_scheduler(scheduler)
    assert type(made).__name__ == sampler.SCHEDULERS[scheduler][0]
    assert made.config.beta_schedule == "scaled_linear" and made.config.beta_end == 0.012  # the model's betas kept
    video = sampler.text_to_video(tiny_576w, "a kite", num_frames=3, height=32, width=32, steps=3, seed=1, scheduler=scheduler)
    assert video.shape == (3, 32, 32, 3) and torch.isfinite(video).all()


def test_dpm_solver_matches_diffusers_pipeline_with_that_scheduler(tiny_576w):
    from diffusers import DPMSolverMultistepScheduler
    from diffusers import TextToVideoSDPipeline

    pipe = _pipeline(TextToVideoSDPipeline, tiny_576w)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)  # what the official code does
    ref = pipe("a red fox", num_frames=4, height=32, width=32, num_inference_steps=4, guidance_scale=9.0,
               generator=torch.Generator().manual_seed(7), output_type="np").frames[0]
    ours = sampler.text_to_video(tiny_576w, "a red fox", "", num_frames=4, height=32, width=32, steps=4, guidance=9.0,
                                 seed=7, scheduler="DPM-Solver++ 2M")
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5)


def test_missing_model_folder_names_files_and_repository(tiny_env):
    with pytest.raises(FileNotFoundError) as err:
        ZeroscopeLoader().load("zeroscope_v2_nothing", "auto", False)
    assert "model_name" in str(err.value) and "huggingface-cli download" in str(err.value)


def test_incomplete_model_folder_lists_missing_files(tiny_env, tmp_path, monkeypatch):
    from comfyui_webtv.nodes import host

    broken = tmp_path / "zeroscope" / "zeroscope_v2_576w"
    shutil.copytree(os.path.join(tiny_env["models"], "zeroscope", "zeroscope_v2_576w"), broken)
    os.remove(broken / "unet" / "diffusion_pytorch_model.safetensors")
    os.remove(broken / "tokenizer" / "merges.txt")
    monkeypatch.setitem(host._standalone, "models", str(tmp_path))
    models.clear_cache()
    with pytest.raises(FileNotFoundError) as err:
        ZeroscopeLoader().load("zeroscope_v2_576w", "auto", False)
    text = str(err.value)
    assert "unet/diffusion_pytorch_model" in text and "tokenizer/merges.txt" in text and "cerspense/zeroscope_v2_576w" in text
    assert "vae/" not in text


def test_download_is_refused_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from comfyui_webtv.nodes import host

    monkeypatch.setitem(host._standalone, "models", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set, so it was not downloaded from cerspense/zeroscope_v2_XL"):
        ZeroscopeLoader().load("zeroscope_v2_XL", "auto", True)
    assert not (tmp_path / "zeroscope").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"width": 60}, "width: 60 is not a positive multiple of 8"),
        ({"height": 0}, "height"),
        ({"frames": 0}, "frames: must be at least 1"),
        ({"prompt": "   "}, "prompt: is empty"),
        ({"steps": 0}, "steps: must be at least 1"),
        ({"guidance": float("nan")}, "guidance: must be a finite number"),
        ({"seed": 2**64}, "seed: must be at most"),
        ({"frames": 2.5}, "frames: 2.5 is not a whole number"),
        ({"scheduler": "LMS"}, "scheduler: must be one of"),
    ],
)
def test_text_to_video_bad_input(tiny_576w, change, message):
    args = dict(prompt="a cat", negative_prompt="", seed=0, frames=2, steps=1, guidance=5.0, width=64, height=64)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        ZeroscopeTextToVideo().generate(tiny_576w, **args)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"chunk_length": 0}, "chunk_length: must be at least 1"),
        ({"overlap": 6}, "overlap: must be at most 5"),
        ({"strength": float("nan")}, "strength: must be a finite number"),
        ({"steps": float("inf")}, "steps: inf is not a whole number"),
        ({"seed": -1}, "seed: must be at least 0"),
    ],
)
def test_upscale_bad_input(tiny_576w, change, message):
    with pytest.raises(ValueError, match=message):
        ZeroscopeXLUpscale().upscale(**_upscale_args(tiny_576w, torch.rand(4, 32, 32, 3), **change))


def test_unwritable_output_leaves_no_partial_mp4(output_dir):
    with open(os.path.join(output_dir, "WebTV"), "w") as f:
        f.write("a file where the sub-folder should go")
    with pytest.raises(ValueError, match="filename_prefix: cannot create the folder"):
        SaveVideo().save(torch.rand(4, 32, 32, 3), 8.0, "WebTV/clip", 23)
    assert os.listdir(output_dir) == ["WebTV"]


def test_failed_encode_leaves_no_partial_mp4(output_dir):
    with pytest.raises(ValueError, match="fps"):
        SaveVideo().save(torch.rand(4, 32, 32, 3), 0.0, "clip", 23)
    with pytest.raises(ValueError, match="images"):
        SaveVideo().save(torch.rand(32, 32, 3), 8.0, "clip", 23)
    with pytest.raises(ValueError, match="filename_prefix"):
        SaveVideo().save(torch.rand(4, 32, 32, 3), 8.0, "../escape/clip", 23)
    leftovers = [f for _, _, files in os.walk(output_dir) for f in files]
    assert leftovers == []
