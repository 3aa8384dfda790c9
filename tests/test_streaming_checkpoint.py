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

pytestmark = pytest.mark.oldest  # checkpoint loading under the oldest transformers too


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny builder's files: official-format ckpt, ModelScope base folder, OpenCLIP file."""
    root = tmp_path_factory.mktemp("st2v_models")
    base, ckpt, clip = tiny.make(str(root))
    return {"root": root, "base": base, "ckpt": ckpt, "clip": clip}


# The text encoder's keys in streaming_t2v.ckpt: transformers 4.39's CLIPTextModel (with its ``text_model.`` level)
# under ``text_encoder.``; the tiny text encoder has 2 layers.
OFFICIAL_TEXT_KEYS = {
    "text_encoder.text_model.embeddings.token_embedding.weight",
    "text_encoder.text_model.embeddings.position_embedding.weight",
    "text_encoder.text_model.final_layer_norm.weight",
    "text_encoder.text_model.final_layer_norm.bias",
} | {
    f"text_encoder.text_model.encoder.layers.{i}.{part}.{kind}"
    for i in (0, 1)
    for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "layer_norm1",
                 "layer_norm2", "mlp.fc1", "mlp.fc2")
    for kind in ("weight", "bias")
}


def official_text_key(module_key: str) -> str:
    """The checkpoint key of a key of the installed CLIPTextModel (transformers 4.x or 5.x)."""
    return "text_encoder." + ("" if module_key.startswith("text_model.") else "text_model.") + module_key


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
                           ("image_encoder.model.", model.image_encoder), ("vae.", model.vae)):
        for key, value in module.state_dict().items():
            assert torch.equal(value, state[prefix + key]), prefix + key
    for key, value in model.text_encoder.state_dict().items():
        assert torch.equal(value, state[official_text_key(key)]), key
    assert all(p.device.type == "cpu" for p in model.unet.parameters())
    assert all(float(a.alpha) != 0 for a in model.unet.apm_layers())  # trained APM weights really arrived
    from_file = load_model(files["ckpt"], files["base"], files["clip"])  # image encoder from models/open_clip
    assert all(torch.equal(a, b) for a, b in zip(from_file.image_encoder.state_dict().values(),
                                                  model.image_encoder.state_dict().values()))


def test_tiny_checkpoint_names_the_text_encoder_as_the_official_one(files):
    state = reference_state(files["ckpt"])
    assert {k for k in state if k.startswith("text_encoder.")} == OFFICIAL_TEXT_KEYS
    from safetensors.torch import load_file

    folder = load_file(os.path.join(files["base"], "text_encoder", "model.safetensors"))  # the ModelScope repo's layout
    assert {"text_encoder." + k for k in folder} == OFFICIAL_TEXT_KEYS


def test_official_text_encoder_keys_load_strictly_and_change_the_weights(files, tmp_path):
    """Fixed official names (not the installed library's) load strictly; the checkpoint's weights win over the folder's."""
    base_text = load_model(files["ckpt"], files["base"]).text_encoder.state_dict()

    def official_text(state):
        for key in [k for k in state if k.startswith("text_encoder.")]:
            del state[key]
        generator = torch.Generator().manual_seed(3)
        for key in sorted(OFFICIAL_TEXT_KEYS):
            shape = next(v.shape for k, v in base_text.items() if official_text_key(k) == key)
            state[key] = torch.randn(shape, generator=generator)
        state["text_encoder.text_model.embeddings.position_ids"] = torch.arange(77)[None]  # older transformers kept it

    path = write_variant(tmp_path, "official_text.ckpt", official_text)
    model = load_model(path, files["base"])
    state = reference_state(path)
    for key, value in model.text_encoder.state_dict().items():
        assert torch.equal(value, state[official_text_key(key)]), key


def test_text_encoder_keys_are_checked_strictly_after_renaming(files, tmp_path):
    def without_level(state):  # what a converter run under transformers 5 would write: loads too
        for key in [k for k in state if k.startswith("text_encoder.text_model.")]:
            state["text_encoder." + key[len("text_encoder.text_model."):]] = state.pop(key)

    def one_misnamed(state):
        state["text_encoder.text_model.final_layer_norm.gain"] = state.pop("text_encoder.text_model.final_layer_norm.weight")

    def mixed(state):
        state["text_encoder.final_layer_norm.bias"] = state.pop("text_encoder.text_model.final_layer_norm.bias")

    def with_base(state):
        state.update(tiny.official_state_dict(TINY, files["base"]))

    from transformers import CLIPTextConfig, CLIPTextModel

    installed_has_level = any(k.startswith("text_model.") for k in CLIPTextModel(CLIPTextConfig(
        hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1)).state_dict())
    # A mixed file is read as it stands: one key off under transformers 4.x (which keeps the level), every
    # key off under 5.x (the level is dropped from all or none); refused either way.
    mixed_report = "1 missing key.*1 unexpected" if installed_has_level else "35 missing key.*35 unexpected"
    load_model(write_variant(tmp_path, "v5.ckpt", lambda s: (with_base(s), without_level(s))), files["base"])
    for name, change, report in (("misnamed", one_misnamed, "1 missing key.*final_layer_norm.weight.*1 unexpected"),
                                 ("mixed", mixed, mixed_report)):  # renamed all or none: refused
        path = write_variant(tmp_path, f"{name}.ckpt", lambda s, change=change: (with_base(s), change(s)))
        with pytest.raises(CheckpointError, match=f"text encoder: {report}"):
            load_model(path, files["base"])


@pytest.mark.parametrize("installed_has_level", [True, False])  # transformers 4.x / 5.x
def test_text_model_level_is_matched_for_either_transformers(installed_has_level):
    official = {"text_model.embeddings.token_embedding.weight": "text_encoder.text_model.embeddings.token_embedding.weight",
                "text_model.final_layer_norm.bias": "text_encoder.text_model.final_layer_norm.bias"}
    v5 = {"embeddings.token_embedding.weight": "text_encoder.embeddings.token_embedding.weight",
          "final_layer_norm.bias": "text_encoder.final_layer_norm.bias"}
    expected = list(official) if installed_has_level else list(v5)
    for file_keys in (official, v5):
        renamed = checkpoint.match_text_model_level(file_keys, expected)
        assert sorted(renamed) == sorted(expected) and sorted(renamed.values()) == sorted(file_keys.values())


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
