"""StreamingT2V nodes: schema, tiny end-to-end runs through the registered folders, converter (§10.10)."""

from __future__ import annotations

import os

import pytest
import torch

from comfyui_webtv.cli import main as cli_main
from comfyui_webtv.nodes import NODE_CLASS_MAPPINGS, host
from comfyui_webtv.nodes.streaming import nodes
from comfyui_webtv.nodes.streaming.config import TINY
from comfyui_webtv.nodes.zeroscope.nodes import ZeroscopeLoader


def test_schema():
    for node_id, cls in nodes.NODE_CLASS_MAPPINGS.items():
        assert NODE_CLASS_MAPPINGS[node_id] is cls and node_id in nodes.NODE_DISPLAY_NAME_MAPPINGS
        assert cls.DESCRIPTION and cls.CATEGORY == "WebTV/StreamingT2V" and hasattr(cls, cls.FUNCTION)
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, (kind, options) in spec.get(section, {}).items():
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
                if name == "seed":
                    assert options["control_after_generate"] is True


def _extend_args(model, frames, **change):
    args = dict(model=model, frames=frames, prompt="a boat", negative_prompt="", total_frames=28, steps=2, guidance=7.5,
                eta=1.0, seed=3, anchor_index=0, frames_per_step=8, fit="crop", sequential_guidance=False,
                offload_components=False)
    args.update(change)
    return args


def _enhance_args(model, frames, **change):
    args = dict(model=model, frames=frames, prompt="a boat", negative_prompt="", seed=1, strength=0.5, steps=4,
                guidance=7.5, chunk_length=8, overlap=4, width=64, height=48, fit="stretch", length_mode="trim")
    args.update(change)
    return args


def test_tiny_end_to_end(tiny_env):
    loader_spec = nodes.StreamingT2VLoader.INPUT_TYPES()["required"]
    assert "streaming_t2v.ckpt" in loader_spec["checkpoint"][0]
    assert "open_clip_pytorch_model.bin" in loader_spec["image_encoder"][0]
    (model,) = nodes.StreamingT2VLoader().load("streaming_t2v.ckpt", "text-to-video-ms-1.7b", "from checkpoint", "auto")
    updates = []
    remove = host.add_progress_listener(lambda value, total: updates.append((value, total)))
    clip = torch.rand(12, 40, 72, 3, generator=torch.Generator().manual_seed(0))
    (long,) = nodes.StreamingT2VExtend().extend(**_extend_args(model, clip, sequential_guidance=True, offload_components=True))
    remove()
    assert long.shape == (28, TINY.resolution, TINY.resolution, 3) and 0 <= long.min() and long.max() <= 1
    assert updates[-1] == (4, 4)  # 2 chunks x 2 steps
    (xl,) = ZeroscopeLoader().load("zeroscope_v2_XL", "auto", False)
    (enhanced,) = nodes.RandomizedBlendingEnhance().enhance(**_enhance_args(xl, long))
    assert enhanced.shape == (28, 48, 64, 3) and torch.isfinite(enhanced).all()
    (kept,) = nodes.RandomizedBlendingEnhance().enhance(**_enhance_args(xl, long, fit="pad, crop back", length_mode="pad"))
    assert kept.shape == (28, 48, 48, 3)  # square in, square out: the bars are cropped off again
    stop = host.add_progress_listener(lambda value, total: host.request_interrupt())
    try:
        with pytest.raises(host.Interrupted):  # every progress update is an interrupt point
            nodes.StreamingT2VExtend().extend(**_extend_args(model, clip, total_frames=200))
    finally:
        stop()
    with pytest.raises(ValueError, match="fewer than chunk_length 24"):
        nodes.RandomizedBlendingEnhance().enhance(**_enhance_args(xl, long[:20], chunk_length=24, overlap=8))


@pytest.mark.parametrize("change, message", [
    ({"prompt": " "}, "prompt: is empty"),
    ({"frames": torch.rand(5, 32, 32, 3)}, "frames: needs at least 8"),
    ({"steps": 0}, "steps: must be at least 1"),
    ({"total_frames": float("nan")}, "total_frames: nan is not a whole number"),
    ({"frames_per_step": 0}, "frames_per_step: must be at least 1"),
    ({"guidance": float("nan")}, "guidance: must be a finite number"),
    ({"eta": float("inf")}, "eta: must be a finite number"),
    ({"seed": 2**64}, "seed: must be at most"),
    ({"anchor_guidance": float("nan")}, "anchor_guidance: must be a finite number"),
    ({"fit": "squash"}, "fit: must be one of crop, pad, stretch"),
])
def test_extend_bad_input(tiny_env, change, message):
    (model,) = nodes.StreamingT2VLoader().load("streaming_t2v.ckpt", "text-to-video-ms-1.7b", "from checkpoint", "auto")
    with pytest.raises(ValueError, match=message):
        nodes.StreamingT2VExtend().extend(**{**_extend_args(model, torch.rand(12, 32, 32, 3)), **change})


@pytest.mark.parametrize("change, message", [
    ({"chunk_length": 0}, "chunk_length: must be at least 1"),
    ({"overlap": 8}, "overlap: must be 0 to chunk_length - 1"),
    ({"strength": float("nan")}, "strength: must be a finite number"),
    ({"steps": 0}, "steps: must be at least 1"),
    ({"guidance": float("nan")}, "guidance: must be a finite number"),
    ({"seed": 2**64}, "seed: must be at most"),
    ({"width": 60}, "width: 60 is not a multiple of 8"),
])
def test_enhance_bad_input(tiny_env, change, message):
    (xl,) = ZeroscopeLoader().load("zeroscope_v2_XL", "auto", False)
    with pytest.raises(ValueError, match=message):
        nodes.RandomizedBlendingEnhance().enhance(**{**_enhance_args(xl, torch.rand(12, 32, 32, 3)), **change})


def test_enhance_takes_the_largest_seed(tiny_env):
    (xl,) = ZeroscopeLoader().load("zeroscope_v2_XL", "auto", False)
    frames = torch.rand(8, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    (out,) = nodes.RandomizedBlendingEnhance().enhance(**_enhance_args(xl, frames, seed=2**64 - 1, steps=2))
    assert out.shape == (8, 48, 64, 3)


def test_converter_node_and_command(tiny_env):
    node = nodes.StreamingT2VConvertCheckpoint()
    result = node.convert("streaming_t2v.ckpt", "bf16", "st2v_bf16.safetensors", False)
    path = result["result"][0]
    assert os.path.dirname(path) == os.path.join(tiny_env["models"], "streaming_t2v")
    assert "st2v_bf16.safetensors" in nodes.StreamingT2VLoader.INPUT_TYPES()["required"]["checkpoint"][0]
    (model,) = nodes.StreamingT2VLoader().load("st2v_bf16.safetensors", "text-to-video-ms-1.7b",
                                               "open_clip_pytorch_model.bin", "fp32")
    assert model.unet.dtype == torch.float32  # CPU runs fp32 whatever the file holds
    for bad in ("../escape.safetensors", "model.ckpt", "streaming_t2v.ckpt"):
        with pytest.raises(ValueError, match="filename"):
            node.convert("streaming_t2v.ckpt", "fp16", bad, True)
    src = os.path.join(tiny_env["models"], "streaming_t2v", "streaming_t2v.ckpt")
    out = os.path.join(tiny_env["output"], "cli.safetensors")
    assert cli_main(["convert-streaming-t2v", src, out, "--dtype", "fp16"]) == 0 and os.path.isfile(out)


# The official stage-2 sampler (design note §2): DDIM from the ModelScope repo's scheduler config.
OFFICIAL_DDIM = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000,
                 "prediction_type": "epsilon", "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading"}
CHOICES = {"DDIM": "DDIMScheduler", "DPM-Solver++ 2M": "DPMSolverMultistepScheduler",
           "UniPC": "UniPCMultistepScheduler", "Euler": "EulerDiscreteScheduler"}


def _spy_schedulers(model, monkeypatch) -> list:
    made, new_scheduler = [], model.new_scheduler
    monkeypatch.setattr(model, "new_scheduler", lambda choice=None: made.append(new_scheduler(choice)) or made[-1])
    return made


def _diffusers_scheduler(model, monkeypatch, folder: str) -> None:
    """The independent reference: diffusers' own DDIMScheduler read from the model folder's scheduler config."""
    from diffusers import DDIMScheduler

    monkeypatch.setattr(model, "new_scheduler", lambda choice=None: DDIMScheduler.from_pretrained(folder, subfolder="scheduler"))


def test_scheduler_inputs_default_to_ddim():
    for cls in (nodes.StreamingT2VExtend, nodes.RandomizedBlendingEnhance):
        kind, options = cls.INPUT_TYPES()["optional"]["scheduler"]
        assert list(kind) == list(CHOICES) and options["default"] == "DDIM" and options["tooltip"]


@pytest.mark.oldest  # schedulers from the model config under the oldest diffusers too
@pytest.mark.parametrize("choice", list(CHOICES))
def test_every_scheduler_runs_extend_and_enhance_from_the_model_config(tiny_env, monkeypatch, choice):
    (model,) = nodes.StreamingT2VLoader().load("streaming_t2v.ckpt", "text-to-video-ms-1.7b", "from checkpoint", "auto")
    (xl,) = ZeroscopeLoader().load("zeroscope_v2_XL", "auto", False)
    made, made_xl = _spy_schedulers(model, monkeypatch), _spy_schedulers(xl, monkeypatch)
    clip = torch.rand(12, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    (long,) = nodes.StreamingT2VExtend().extend(**_extend_args(model, clip, total_frames=20, scheduler=choice))
    (enhanced,) = nodes.RandomizedBlendingEnhance().enhance(**_enhance_args(xl, long, scheduler=choice))
    for out in (long, enhanced):
        assert torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    for scheduler in made + made_xl:
        assert type(scheduler).__name__ == CHOICES[choice]
        assert {k: scheduler.config[k] for k in ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps")} == {
            k: OFFICIAL_DDIM[k] for k in ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps")}
    assert len(made) == 1 and len(made_xl) == 1


@pytest.mark.oldest  # schedulers from the model config under the oldest diffusers too
def test_default_scheduler_reproduces_the_official_ddim(tiny_env, monkeypatch):
    (model,) = nodes.StreamingT2VLoader().load("streaming_t2v.ckpt", "text-to-video-ms-1.7b", "from checkpoint", "auto")
    (xl,) = ZeroscopeLoader().load("zeroscope_v2_XL", "auto", False)
    clip = torch.rand(12, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    (long,) = nodes.StreamingT2VExtend().extend(**_extend_args(model, clip))  # an old workflow: no scheduler input
    (enhanced,) = nodes.RandomizedBlendingEnhance().enhance(**_enhance_args(xl, long))
    (other,) = nodes.StreamingT2VExtend().extend(**_extend_args(model, clip, scheduler="DPM-Solver++ 2M"))
    assert not torch.equal(long, other)  # the choice is honoured

    base = os.path.join(tiny_env["models"], "zeroscope", "text-to-video-ms-1.7b")
    from diffusers import DDIMScheduler

    official = DDIMScheduler.from_pretrained(base, subfolder="scheduler")
    assert {k: official.config[k] for k in OFFICIAL_DDIM} == OFFICIAL_DDIM
    with monkeypatch.context() as patch:
        _diffusers_scheduler(model, patch, base)
        _diffusers_scheduler(xl, patch, os.path.join(tiny_env["models"], "zeroscope", "zeroscope_v2_XL"))
        (ref_long,) = nodes.StreamingT2VExtend().extend(**_extend_args(model, clip))
        (ref_enhanced,) = nodes.RandomizedBlendingEnhance().enhance(**_enhance_args(xl, ref_long))
    assert torch.equal(long, ref_long) and torch.equal(enhanced, ref_enhanced)


def test_ms_vid2vid_folder_is_refused_with_the_reason(tiny_env, tmp_path):
    """The official enhancer's files (ali-vilab/MS-Vid2Vid-XL) get an error that says why, not 'download Zeroscope'."""
    folder = tmp_path / "MS-Vid2Vid-XL"
    folder.mkdir()
    for name in ("configuration.json", "non_ema_0035000.pth", "open_clip_pytorch_model.bin", "v2-1_512-ema-pruned.ckpt"):
        (folder / name).write_bytes(b"")
    with pytest.raises(ValueError, match=r"model_name: .*is MS-Vid2Vid-XL .*cannot run.*zeroscope_v2_XL"):
        ZeroscopeLoader().load(str(folder), "auto", False)
    assert "MS-Vid2Vid-XL" in nodes.RandomizedBlendingEnhance.DESCRIPTION
