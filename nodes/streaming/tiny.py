"""Tiny random StreamingT2V files in the real formats, for tests and the example workflow.

- ``streaming_t2v/streaming_t2v.ckpt``: a Lightning checkpoint like the official one (``state_dict`` with
  every official prefix, plus ``epoch``, ``optimizer_states`` and other bookkeeping) and its tiny config
  beside it in ``streaming_t2v.json``;
- ``zeroscope/text-to-video-ms-1.7b``: a tiny ModelScope folder (UNet, text encoder, tokenizer, VAE, scheduler),
  a first-stage model too; the text encoder's weights carry the released (transformers 4.x) names, here and in
  the checkpoint's ``text_encoder.`` part;
- ``open_clip/open_clip_pytorch_model.bin``: a tiny OpenCLIP state dict (image tower + text leftovers).
"""

from __future__ import annotations

import os

import torch

from ..common.models import claim_tiny_path
from ..zeroscope.tiny import clip_text_keys, save_tiny_model
from .config import BASE_FOLDER, CHECKPOINT_FILE, TINY, StreamingConfig
from .model import build_modules

OPEN_CLIP_FILE = "open_clip_pytorch_model.bin"


def randomise_zero_init(unet, cam, scale: float = 0.05) -> None:
    """Give the zero-initialised CAM and APM parameters small random values, so that they matter."""
    with torch.no_grad():
        for merger in [*unet.cross_attention_merger_down_blocks, unet.cross_attention_merger_mid_block]:
            merger.temporal_transformer.proj_out.weight.normal_(0, scale)
            merger.temporal_transformer.proj_out.bias.normal_(0, scale)
        for attn in unet.apm_layers():
            attn.alpha.fill_(1.0)
        cam.controlnet_cond_embedding.conv_out.weight.normal_(0, scale)


def open_clip_leftovers(config: StreamingConfig) -> dict[str, torch.Tensor]:
    """The text-side tensors OpenCLIP keeps beside ``visual.*`` (the checkpoint carries them, unused)."""
    width = config.image_embed_dim
    return {
        "token_embedding.weight": torch.randn(64, width),
        "positional_embedding": torch.randn(77, width),
        "ln_final.weight": torch.ones(width),
        "ln_final.bias": torch.zeros(width),
        "text_projection": torch.randn(width, config.image_embed_dim),
        "logit_scale": torch.tensor(4.6052),
    }


def lightning_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict:
    """A dict shaped like a PyTorch Lightning 2.0 checkpoint around ``state_dict``."""
    first = next(iter(state_dict.values()))
    return {
        "epoch": 0,
        "global_step": 1000,
        "pytorch-lightning_version": "2.0.9",
        "state_dict": state_dict,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 0}}}},
        "callbacks": {"ModelCheckpoint": {"best_model_score": None}},
        "optimizer_states": [{
            "state": {0: {"step": torch.tensor(1000.0), "exp_avg": torch.zeros_like(first), "exp_avg_sq": torch.zeros_like(first)}},
            "param_groups": [{"lr": 5e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "params": [0]}],
        }],
        "lr_schedulers": [],
    }


def official_state_dict(config: StreamingConfig, base_folder: str | None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official checkpoint's prefixes (text encoder / VAE from ``base_folder``)."""
    torch.manual_seed(seed)
    unet, cam, resampler, encoder = build_modules(config)
    randomise_zero_init(unet, cam)
    state: dict[str, torch.Tensor] = {}
    parts = (("base_model.", unet.state_dict()), ("unet.", cam.state_dict()), ("resampler.", resampler.state_dict()),
             ("image_encoder.model.", {**encoder.state_dict(), **open_clip_leftovers(config)}))
    if base_folder is not None:
        from diffusers import AutoencoderKL
        from safetensors.torch import load_file

        text = load_file(os.path.join(base_folder, "text_encoder", "model.safetensors"))
        layers = sum(k.endswith("layer_norm1.weight") for k in text)
        if sorted(text) != sorted(clip_text_keys(layers)):
            raise RuntimeError(f"{base_folder}: the text encoder is not saved under the released key names.")
        parts += (("text_encoder.", text),  # the official names (transformers 4.x), whatever transformers is installed
                  ("vae.", AutoencoderKL.from_pretrained(base_folder, subfolder="vae").state_dict()))
    for prefix, tensors in parts:
        state.update({prefix + k: v.detach().clone().contiguous() for k, v in tensors.items()})
    return state


def write_checkpoint(path: str, config: StreamingConfig, base_folder: str | None, seed: int = 0) -> str:
    """Write a tiny official-format ``.ckpt`` and its ``.json`` config."""
    torch.save(lightning_checkpoint(official_state_dict(config, base_folder, seed)), path)
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        f.write(config.to_json())
    return path


def make(models_dir: str) -> list[str]:
    """Tiny StreamingT2V checkpoint, ModelScope base folder and OpenCLIP image encoder under ``models_dir``."""
    base = save_tiny_model(claim_tiny_path(os.path.join(models_dir, "zeroscope", BASE_FOLDER)), seed=7)
    ckpt = claim_tiny_path(os.path.join(models_dir, "streaming_t2v", CHECKPOINT_FILE))
    write_checkpoint(ckpt, TINY, base)
    clip = claim_tiny_path(os.path.join(models_dir, "open_clip", OPEN_CLIP_FILE))
    visual = {k[len("image_encoder.model."):]: v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()
              if k.startswith("image_encoder.model.")}
    torch.save(visual, clip)
    return [base, ckpt, clip]
