"""StreamingT2V checkpoints: the official Lightning format, the converter, VidXTend names, bad files (§10.2)."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from comfyui_webtv.nodes.streaming import checkpoint, tiny
from comfyui_webtv.nodes.streaming.checkpoint import CheckpointError, WeightFile, convert
from comfyui_webtv.nodes.streaming.config import TINY
from comfyui_webtv.nodes.streaming.model import load_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny builder's files: official-format ckpt, ModelScope base folder, OpenCLIP file."""
    root = tmp_path_factory.mktemp("st2v_models")
    base, ckpt, clip = tiny.make(str(root))
    return {"root": root, "base": base, "ckpt": ckpt, "clip": clip}


def reference_state(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def write_variant(tmp_path, name: str, change) -> str:
    """A copy of the tiny checkpoint whose state dict ``change`` edited, with the tiny config beside it."""
    path = str(tmp_path / name)
    data = tiny.lightning_checkpoint(tiny.official_state_dict(TINY, None))
    change(data["state_dict"])
    torch.save(data, path)
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        f.write(TINY.to_json())
    return path


def test_fabricated_checkpoint_has_the_official_layout(files):
    data = torch.load(files["ckpt"], weights_only=True)
    assert {"epoch", "global_step", "optimizer_states", "state_dict"} <= set(data)
    prefixes = {k.split(".")[0] for k in data["state_dict"]}
    assert prefixes == {"base_model", "unet", "resampler", "image_encoder", "text_encoder", "vae"}
    assert "image_encoder.model.logit_scale" in data["state_dict"]


def test_checkpoint_is_opened_memory_mapped_and_weights_only(files, monkeypatch):
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real(*a, **k))
    weights = WeightFile(files["ckpt"])
    assert calls == [{"map_location": "cpu", "mmap": True, "weights_only": True}]
    split = weights.component_keys()
    assert set(split) == {"unet", "cam", "resampler", "image_encoder", "text_encoder", "vae"}
    assert weights.config() == TINY


def test_official_checkpoint_loads_strictly_into_every_module(files):
    model = load_model(files["ckpt"], files["base"])
    state = reference_state(files["ckpt"])
    for prefix, module in (("base_model.", model.unet), ("unet.", model.cam), ("resampler.", model.resampler),
                           ("image_encoder.model.", model.image_encoder), ("text_encoder.", model.text_encoder),
                           ("vae.", model.vae)):
        for key, value in module.state_dict().items():
            assert torch.equal(value, state[prefix + key]), prefix + key
    assert all(p.device.type == "cpu" for p in model.unet.parameters())
    assert all(float(a.alpha) != 0 for a in model.unet.apm_layers())  # trained APM weights really arrived
    from_file = load_model(files["ckpt"], files["base"], files["clip"])  # image encoder from models/open_clip
    assert all(torch.equal(a, b) for a, b in zip(from_file.image_encoder.state_dict().values(),
                                                  model.image_encoder.state_dict().values()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_converter_round_trips_bit_exactly_with_cast_and_without_junk(files, tmp_path, dtype):
    target = str(tmp_path / "st2v.safetensors")
    counts = convert(files["ckpt"], target, dtype)
    state = reference_state(files["ckpt"])
    with safe_open(target, framework="pt") as f:
        keys = set(f.keys())
        for key in keys:
            assert torch.equal(f.get_tensor(key), state[key].to(dtype)), key
        assert f.get_tensor(next(iter(keys))).dtype == dtype
        assert f.metadata()[checkpoint.CONFIG_METADATA] == TINY.to_json()
    kept = {k for k in state if k.split(".")[0] in ("base_model", "unet", "resampler", "image_encoder")}
    junk = {"image_encoder.model.logit_scale", "image_encoder.model.token_embedding.weight",
            "image_encoder.model.ln_final.weight", "image_encoder.model.text_projection"}
    assert keys == kept - {k for k in kept if k.startswith("image_encoder.model.") and not k.startswith("image_encoder.model.visual.")}
    assert not keys & junk and sum(counts.values()) == len(keys)
    if dtype == torch.float32:
        converted = load_model(target, files["base"])
        original = load_model(files["ckpt"], files["base"])
        for a, b in zip(converted.unet.state_dict().values(), original.unet.state_dict().values()):
            assert torch.equal(a, b)
    else:
        converted = load_model(target, files["base"], dtype=dtype)
        assert converted.unet.dtype == dtype


def test_vidxtend_names_are_mapped(files, tmp_path):
    state = reference_state(files["ckpt"])
    names = {"base_model.": "unet.", "unet.": "controlnet.", "resampler.": "resampler."}
    vx = {}
    for key, value in state.items():
        for old, new in names.items():
            if key.startswith(old):
                vx[new + key[len(old):]] = value.contiguous()
    source = str(tmp_path / "vidxtend.safetensors")
    save_file(vx, source, metadata={checkpoint.CONFIG_METADATA: TINY.to_json()})
    target = str(tmp_path / "converted.safetensors")
    convert(source, target, torch.float32)
    with safe_open(target, framework="pt") as f:
        assert set(f.keys()) == {k for k in state if k.startswith(tuple(names))}
        for key in f.keys():
            assert torch.equal(f.get_tensor(key), state[key])
    model = load_model(source, files["base"], files["clip"])  # VidXTend files load directly too
    assert torch.equal(model.cam.conv_in.weight, state["unet.conv_in.weight"])


def test_missing_and_unexpected_keys_are_reported(tmp_path, files):
    missing = write_variant(tmp_path, "missing.ckpt", lambda s: [s.pop(k) for k in list(s)
                            if k.startswith("base_model.cross_attention_merger_mid_block.")])
    with pytest.raises(CheckpointError, match=r"extension UNet: 11 missing key\(s\): cross_attention_merger_mid_block"):
        load_model(missing, files["base"])
    extra = write_variant(tmp_path, "extra.ckpt", lambda s: s.update({"unet.controlnet_mid_block.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"CAM encoder: 1 unexpected key\(s\): controlnet_mid_block.weight"):
        load_model(extra, files["base"])
    shape = write_variant(tmp_path, "shape.ckpt", lambda s: s.update({"resampler.context_embedding.0.bias": torch.zeros(5)}))
    with pytest.raises(CheckpointError, match=r"wrong shape: context_embedding.0.bias \(5,\)"):
        load_model(shape, files["base"])


def test_wrong_files_get_clear_errors(tmp_path, files):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.ckpt is not a PyTorch zip checkpoint"):
        WeightFile(str(text))
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="not a StreamingT2V checkpoint.*model\\."):
        load_model(str(other), files["base"])
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "hook": os.getcwd}, unsafe)  # a pickled callable: refused, never run
    with pytest.raises(CheckpointError, match="cannot be loaded as plain weights"):
        WeightFile(str(unsafe))
    with pytest.raises(CheckpointError, match="does not exist"):
        WeightFile(str(tmp_path / "absent.ckpt"))
    no_image = str(tmp_path / "no_image.safetensors")
    convert(files["ckpt"], no_image, torch.float32, components=("unet", "cam", "resampler"))
    with pytest.raises(CheckpointError, match="carries no image encoder"):
        load_model(no_image, files["base"])
    with pytest.raises(FileNotFoundError, match="base_model: .*text-to-video-ms-1.7b"):
        load_model(files["ckpt"], str(tmp_path))


def test_transformers_clip_vision_files_load_and_match(tmp_path):
    """A CLIP vision file in transformers format (as ComfyUI's clip_vision models) maps onto the OpenCLIP tower."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from comfyui_webtv.nodes.streaming.apm import OpenCLIPImageEncoder
    from comfyui_webtv.nodes.streaming.model import load_image_encoder_file

    torch.manual_seed(0)
    hf = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=TINY.vision_width, intermediate_size=4 * TINY.vision_width, num_hidden_layers=TINY.vision_layers,
        num_attention_heads=TINY.vision_heads, image_size=TINY.image_size, patch_size=TINY.patch_size,
        projection_dim=TINY.image_embed_dim, hidden_act="gelu")).eval()
    path = str(tmp_path / "clip_vision.safetensors")
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, path)
    with torch.device("meta"):
        encoder = OpenCLIPImageEncoder(TINY)
    load_image_encoder_file(encoder, path, torch.float32)
    frames = torch.rand(2, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        ours = encoder(frames)
        theirs = hf(pixel_values=encoder.preprocess(frames)).image_embeds
    assert torch.allclose(ours, theirs, atol=1e-5)
    other = str(tmp_path / "other.safetensors")
    save_file({"visual.conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="is not the OpenCLIP ViT-H/14 image encoder.*wrong shape"):
        load_image_encoder_file(OpenCLIPImageEncoder(TINY), other, torch.float32)
