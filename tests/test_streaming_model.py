"""StreamingT2V modules: official key schema (and a full-size official checkpoint on the meta device), zero-init
identity, CAM and APM wiring, guidance (design note §10.1, 3-6)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import UNet3DConditionModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from comfyui_webtv.nodes.streaming.apm import APMAttnProcessor, OpenCLIPImageEncoder, mix_context
from comfyui_webtv.nodes.streaming.cam import CAMEncoder
from comfyui_webtv.nodes.streaming.checkpoint import CheckpointError, WeightFile, load_component
from comfyui_webtv.nodes.streaming.config import OFFICIAL, TINY
from comfyui_webtv.nodes.streaming.extend import chunk_predictor, guidance_branches
from comfyui_webtv.nodes.streaming.model import build_modules
from comfyui_webtv.nodes.streaming.tiny import randomise_zero_init
from comfyui_webtv.nodes.streaming.unet import StreamingUNet3D

pytestmark = pytest.mark.oldest  # the parity tests under the oldest transformers and diffusers too


# ---------------------------------------------------------------- §10.1 key schema at full size

SKIP_CHANNELS = [320, 320, 320, 320, 640, 640, 640, 1280, 1280, 1280, 1280, 1280]
APM_LAYERS = (
    [f"down_blocks.{b}.attentions.{a}" for b in range(3) for a in range(2)]
    + ["mid_block.attentions.0"]
    + [f"up_blocks.{b}.attentions.{a}" for b in (1, 2, 3) for a in range(3)]
)


def merger_keys(prefix: str, c: int) -> dict[str, tuple]:
    t = prefix + ".temporal_transformer."
    return {
        t + "norm.weight": (c,), t + "norm.bias": (c,), t + "proj_in.weight": (c, c), t + "proj_in.bias": (c,),
        t + "attention.to_q.weight": (c, c), t + "attention.to_k.weight": (c, c), t + "attention.to_v.weight": (c, c),
        t + "attention.to_out.0.weight": (c, c), t + "attention.to_out.0.bias": (c,),
        t + "proj_out.weight": (c, c), t + "proj_out.bias": (c,),
    }


def shapes(module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def official_modules():
    with torch.device("meta"):
        plain = UNet3DConditionModel(**OFFICIAL.unet_kwargs())
    unet, cam, resampler, encoder = build_modules(OFFICIAL, "meta")
    return plain, unet, cam, resampler, encoder


def official_unet_schema(plain) -> dict[str, tuple]:
    """``base_model.`` names and shapes: ModelScope UNet3D (standard diffusers names), APM, mergers (§8.3)."""
    expected = shapes(plain)
    for layer in APM_LAYERS:
        a = layer + ".transformer_blocks.0.attn2."
        expected.update({a + "alpha": (), a + "conv.weight": (77, 93, 3), a + "conv.bias": (77,),
                         a + "conv_ln.weight": (1024,), a + "conv_ln.bias": (1024,)})
    for k, c in enumerate(SKIP_CHANNELS):
        expected.update(merger_keys(f"cross_attention_merger_down_blocks.{k}", c))
    expected.update(merger_keys("cross_attention_merger_mid_block", 1280))
    return expected


def official_cam_schema(plain) -> dict[str, tuple]:
    """``unet.`` (CAM): the UNet3D encoder half and mid block plus the frame encoder; no Identity keys."""
    encoder_half = ("conv_in.", "time_embedding.", "transformer_in.", "down_blocks.", "mid_block.")
    expected = {k: s for k, s in shapes(plain).items() if k.startswith(encoder_half)}
    cond = [(32, 3), (32, 32), (96, 32), (96, 96), (256, 96), (256, 256), (512, 256)]
    names = ["conv_in"] + [f"blocks.{i}" for i in range(6)]
    for name, (cout, cin) in zip(names, cond):
        expected[f"controlnet_cond_embedding.{name}.weight"] = (cout, cin, 3, 3)
        expected[f"controlnet_cond_embedding.{name}.bias"] = (cout,)
    expected["controlnet_cond_embedding.conv_out.weight"] = (320, 512, 3, 3)
    expected["controlnet_cond_embedding.conv_out.bias"] = (320,)
    return expected


RESAMPLER_SCHEMA = {
    "context_embedding.0.weight": (1280, 1024), "context_embedding.0.bias": (1280,),
    "context_embedding.2.weight": (16384, 1280), "context_embedding.2.bias": (16384,),
}


def open_clip_vit_h14_schema() -> dict[str, tuple]:
    vit = {"visual.conv1.weight": (1280, 3, 14, 14), "visual.class_embedding": (1280,),
           "visual.positional_embedding": (257, 1280), "visual.proj": (1280, 1024)}
    for ln in ("ln_pre", "ln_post"):
        vit.update({f"visual.{ln}.weight": (1280,), f"visual.{ln}.bias": (1280,)})
    for i in range(32):
        r = f"visual.transformer.resblocks.{i}."
        vit.update({r + "ln_1.weight": (1280,), r + "ln_1.bias": (1280,), r + "ln_2.weight": (1280,), r + "ln_2.bias": (1280,),
                    r + "attn.in_proj_weight": (3840, 1280), r + "attn.in_proj_bias": (3840,),
                    r + "attn.out_proj.weight": (1280, 1280), r + "attn.out_proj.bias": (1280,),
                    r + "mlp.c_fc.weight": (5120, 1280), r + "mlp.c_fc.bias": (5120,),
                    r + "mlp.c_proj.weight": (1280, 5120), r + "mlp.c_proj.bias": (1280,)})
    return vit


def _kornia_resize_reference(image: np.ndarray, size: int) -> np.ndarray:
    """kornia.geometry.resize(bicubic, align_corners=True, antialias=True) of ``[H, W]``, written out in numpy:
    a 3-tap Gaussian blur of sigma (scale - 1) / 2 with reflected borders, then Keys' cubic (a = -0.75) with
    the corner pixels aligned and clamped borders."""
    def blur(x, sigma):  # along axis 0
        w = np.exp(-np.array([1.0, 0.0, 1.0]) ** 2 / (2 * sigma**2))
        w /= w.sum()
        padded = np.concatenate([x[1:2], x, x[-2:-1]])
        return w[0] * padded[:-2] + w[1] * padded[1:-1] + w[2] * padded[2:]

    def cubic(d):
        d, a = abs(d), -0.75
        return (a + 2) * d**3 - (a + 3) * d**2 + 1 if d <= 1 else (a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a if d < 2 else 0.0)

    def resize(x, out):  # along axis 0
        n = x.shape[0]
        rows = []
        for j in range(out):
            src = j * (n - 1) / (out - 1)
            i = int(np.floor(src))
            rows.append(sum(cubic(src - i - k) * x[min(max(i + k, 0), n - 1)] for k in (-1, 0, 1, 2)))
        return np.stack(rows)

    x = image.astype(np.float64)
    for _ in range(2):  # rows, then columns
        x = resize(blur(x, (x.shape[0] / size - 1) / 2), size).T
    return x


def test_clip_preprocessing_is_the_official_kornia_resize_without_clamp():
    """256 -> 224 in the official model; here the same ratio, 16 -> 14."""
    encoder = OpenCLIPImageEncoder(dataclasses.replace(TINY, image_size=14, patch_size=7))
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    step = torch.cat([-torch.ones(16, 8), torch.ones(16, 8)], dim=1).expand(1, 3, 16, 16)  # a hard edge
    out = encoder.preprocess(step)[0].double().numpy()
    # Keys' cubic at the edge, by hand: output column 6 samples x = 6.923 -> -1.09831589 (overshoot, kept)
    for column, value in ((5, -1.0), (6, -1.09831589), (7, 1.09831589), (8, 1.0)):
        np.testing.assert_allclose(out[:, 3, column], ((value + 1) / 2 - mean) / std, atol=1e-5)
    frames = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2
    got = encoder.preprocess(frames).double().numpy()
    for n in range(2):
        for c in range(3):
            expected = ((_kornia_resize_reference(frames[n, c].double().numpy(), 14) + 1) / 2 - mean[c]) / std[c]
            np.testing.assert_allclose(got[n, c], expected, atol=2e-5)


def test_extension_unet_keys_are_the_official_ones(official_modules):
    plain, unet, *_ = official_modules
    expected = official_unet_schema(plain)
    assert shapes(unet) == expected
    assert len(unet.apm_layers()) == 16
    base = sum(torch.Size(s).numel() for s in shapes(plain).values())
    mergers = sum(torch.Size(s).numel() for k, s in expected.items() if k.startswith("cross_attention_merger"))
    assert 1.40e9 < base < 1.42e9 and 68e6 < mergers < 70e6  # ≈1.41 B base, ≈69 M in the mergers


def test_cam_resampler_image_encoder_keys_are_the_official_ones(official_modules):
    plain, _, cam, resampler, encoder = official_modules
    assert shapes(cam) == official_cam_schema(plain)
    assert shapes(resampler) == RESAMPLER_SCHEMA
    assert shapes(encoder) == open_clip_vit_h14_schema()


def test_full_size_official_checkpoint_loads_strictly(official_modules, tmp_path):
    """A Lightning checkpoint in the official format built from the official names (meta tensors: no bytes)."""
    plain = official_modules[0]
    state = {}
    for prefix, schema in (("base_model.", official_unet_schema(plain)), ("unet.", official_cam_schema(plain)),
                           ("resampler.", RESAMPLER_SCHEMA), ("image_encoder.model.", open_clip_vit_h14_schema())):
        state.update({prefix + k: torch.empty(s, device="meta") for k, s in schema.items()})
    state["image_encoder.model.logit_scale"] = torch.empty((), device="meta")  # OpenCLIP leftover, ignored
    path = tmp_path / "streaming_t2v.ckpt"
    torch.save({"epoch": 9, "global_step": 401000, "state_dict": state, "optimizer_states": [], "lr_schedulers": []}, path)
    weights = WeightFile(str(path))
    assert weights.config() == OFFICIAL
    unet, cam, resampler, encoder = build_modules(OFFICIAL, "meta")
    for component, module in (("unet", unet), ("cam", cam), ("resampler", resampler), ("image_encoder", encoder)):
        ignorable = OpenCLIPImageEncoder.is_unused_key if component == "image_encoder" else (lambda key: False)
        assert load_component(module, weights, component, torch.float16, ignorable).ok
    assert unet.dtype == torch.float16 and len(unet.apm_layers()) == 16
    del state["base_model.up_blocks.3.attentions.2.transformer_blocks.0.attn2.alpha"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): up_blocks.3.attentions.2.transformer_blocks.0.attn2.alpha"):
        load_component(build_modules(OFFICIAL, "meta")[0], WeightFile(str(path)), "unet", torch.float16)


# ---------------------------------------------------------------- tiny modules

LATENT = TINY.resolution // 8


def inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = TINY
    x = torch.randn(batch, 4, cfg.chunk_frames, LATENT, LATENT, generator=g)
    text = torch.randn(batch, 77, cfg.cross_attention_dim, generator=g)
    image = torch.randn(batch, 16, cfg.cross_attention_dim, generator=g)
    control = torch.rand(batch * cfg.control_frames, 3, cfg.resolution, cfg.resolution, generator=g) * 2 - 1
    return x, text, image, control


@pytest.fixture(scope="module")
def tiny_pair():
    """A plain UNet3D and a zero-initialised StreamingUNet3D + CAM with the same base weights."""
    torch.manual_seed(0)
    plain = UNet3DConditionModel(**TINY.unet_kwargs()).eval()
    unet = StreamingUNet3D(TINY).eval()
    missing, unexpected = unet.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".attn2." in k or "cross_attention_merger" in k for k in missing)
    cam = CAMEncoder.from_unet(plain, TINY).eval()
    return plain, unet, cam


@torch.no_grad()
def test_zero_initialised_cam_and_apm_reproduce_the_plain_unet3d(tiny_pair):
    plain, unet, cam = tiny_pair
    x, text, image, control = inputs()
    reference = plain(x, 321, text).sample
    features = cam(x, 321, text, control)
    assert torch.allclose(unet(x, 321, torch.cat([text, image], 1), cam=features), reference, atol=1e-6)
    assert torch.allclose(unet(x, 321, text, cam=features), reference, atol=1e-6)  # 77-token context
    assert torch.allclose(unet(x, 321, text), reference, atol=1e-6)


@pytest.fixture(scope="module")
def trained():
    """Tiny modules whose CAM and APM parameters are non-zero (as after training)."""
    torch.manual_seed(1)
    unet, cam, resampler, encoder = build_modules(TINY)
    randomise_zero_init(unet, cam, scale=0.2)
    return unet.eval(), cam.eval(), resampler.eval(), encoder.eval()


@torch.no_grad()
def test_cam_wiring(trained):
    unet, cam, *_ = trained
    x, text, image, control = inputs()
    ctx = torch.cat([text, image], 1)
    seen = {}
    cam.conv_in.register_forward_hook(lambda m, args, out: seen.update(cam_in=args[0].clone()))
    features = cam(x, 500, ctx, control)
    f_cond = TINY.control_frames
    expected_in = x[:, :, :f_cond].permute(0, 2, 1, 3, 4).reshape(-1, 4, LATENT, LATENT)
    assert torch.equal(seen["cam_in"], expected_in)  # CAM reads exactly x_t[:, :, :F_cond]

    later = x.clone()
    later[:, :, f_cond:] = torch.randn_like(later[:, :, f_cond:])
    again = cam(later, 500, ctx, control)
    assert all(torch.equal(a, b) for a, b in zip(features[0] + [features[1]], again[0] + [again[1]]))

    out = unet(x, 500, ctx, cam=features)
    other = cam(x, 500, ctx, control.flip(0))
    assert not torch.allclose(unet(x, 500, ctx, cam=other), out, atol=1e-5)  # control frames matter

    mergers = list(unet.cross_attention_merger_down_blocks)
    assert len(mergers) == len(features[0])
    for merger, skip in zip(mergers, features[0]):
        assert merger.temporal_transformer.norm.num_channels == skip.shape[1]
        assert skip.shape[0] == 2 * f_cond
    assert unet.cross_attention_merger_mid_block.temporal_transformer.norm.num_channels == features[1].shape[1]


@torch.no_grad()
def test_apm_wiring(trained):
    unet, cam, *_ = trained
    x, text, image, control = inputs()
    features = cam(x, 500, text, control)
    out = unet(x, 500, torch.cat([text, image], 1), cam=features)
    assert not torch.allclose(unet(x, 500, torch.cat([text, image * 2], 1), cam=features), out, atol=1e-5)

    key_lengths = []
    hooks = [a.to_k.register_forward_hook(lambda m, args, o: key_lengths.append(args[0].shape[1])) for a in unet.apm_layers()]
    unet(x, 500, torch.cat([text, image], 1), cam=features)
    for h in hooks:
        h.remove()
    assert key_lengths and set(key_lengths) == {77}  # keys/values come from the 77 mixed tokens

    layer = unet.apm_layers()[0]
    ctx = torch.cat([text, image], 1)
    manual = text + torch.nn.functional.silu(layer.alpha) * layer.conv_ln(
        torch.nn.functional.conv1d(ctx, layer.conv.weight, layer.conv.bias, padding=1))
    assert torch.allclose(mix_context(layer, ctx), manual, atol=1e-6)

    alphas = [a.alpha.clone() for a in unet.apm_layers()]
    for a in unet.apm_layers():
        a.alpha.zero_()
    zero = unet(x, 500, torch.cat([text, image], 1), cam=features)
    assert torch.allclose(unet(x, 500, torch.cat([text, -image], 1), cam=features), zero, atol=1e-6)
    for a, value in zip(unet.apm_layers(), alphas):
        a.alpha.copy_(value)


@torch.no_grad()
def test_apm_mixes_for_every_attention_backend(trained):
    unet, cam, *_ = trained
    x, text, image, control = inputs()
    ctx = torch.cat([text, image], 1)
    features = cam(x, 500, text, control)
    sdpa = unet(x, 500, ctx, cam=features)
    unet.set_attn_processor(AttnProcessor())  # plain softmax backend, set the diffusers way
    try:
        assert all(isinstance(a.processor, APMAttnProcessor) and isinstance(a.processor.inner, AttnProcessor)
                   for a in unet.apm_layers())
        manual = unet(x, 500, ctx, cam=features)
        assert torch.allclose(manual, sdpa, atol=1e-5)
        unet.set_attention_slice(1)  # sliced attention keeps the mixing too
        assert torch.allclose(unet(x, 500, ctx, cam=features), sdpa, atol=1e-5)
    finally:
        unet.set_attn_processor(AttnProcessor2_0())
    with pytest.raises(ValueError, match="text tokens"):
        unet(x, 500, torch.cat([text, image[:, :3]], 1))


@torch.no_grad()
def test_guidance_branches_and_equivalences(trained):
    unet, cam, resampler, encoder = trained
    anchor = torch.rand(1, 3, TINY.resolution, TINY.resolution) * 2 - 1
    tokens = resampler(encoder(torch.cat([anchor, torch.zeros_like(anchor)])))
    assert tokens.shape == (2, 16, TINY.cross_attention_dim)
    x, text, _, control = inputs(batch=1)
    text2 = torch.cat([torch.randn_like(text), text])  # [negative, prompt]
    two = guidance_branches(text2, tokens[0:1], tokens[1:2], 7.5)
    # the unconditional branch is the negative prompt with the all-zero image's tokens
    assert torch.equal(two.contexts[0, 77:], tokens[1]) and torch.equal(two.contexts[1, 77:], tokens[0])
    three = guidance_branches(text2, tokens[0:1], tokens[1:2], 7.5, anchor_guidance=7.5)
    model = SimpleNamespace(unet=unet, cam=cam)
    scheduler = SimpleNamespace(scale_model_input=lambda sample, t: sample)
    ctrl = control[: TINY.control_frames]
    batched = chunk_predictor(model, two, ctrl, scheduler)(x, 400)
    assert torch.allclose(chunk_predictor(model, three, ctrl, scheduler)(x, 400), batched, atol=1e-4)
    assert torch.allclose(chunk_predictor(model, two, ctrl, scheduler, sequential=True)(x, 400), batched, atol=1e-5)
    different = guidance_branches(text2, tokens[0:1], tokens[1:2], 7.5, anchor_guidance=2.0)
    assert not torch.allclose(chunk_predictor(model, different, ctrl, scheduler)(x, 400), batched, atol=1e-4)
