"""Tiny random Zeroscope models with the real structure, saved in the diffusers folder layout."""

from __future__ import annotations

import json
import os

import torch

from ..common.models import claim_tiny_path

NAMES = ("zeroscope_v2_576w", "zeroscope_v2_XL")
CLIP_TEXT_LAYER_PARTS = ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj", "layer_norm1",
                         "mlp.fc1", "mlp.fc2", "layer_norm2")


def clip_text_keys(layers: int) -> list[str]:
    """The text encoder's weight names in the released files, as fixed strings.

    The ModelScope / Zeroscope repositories' ``text_encoder/model.safetensors`` and the StreamingT2V checkpoint's
    ``text_encoder.`` part were written by transformers 4.x, whose ``CLIPTextModel`` has a ``text_model.`` level
    (transformers 5 has not, and maps these names when it loads a folder).
    """
    keys = ["text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight"]
    for i in range(layers):
        for part in CLIP_TEXT_LAYER_PARTS:
            keys += [f"text_model.encoder.layers.{i}.{part}.weight", f"text_model.encoder.layers.{i}.{part}.bias"]
    return keys + ["text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias"]


def save_text_encoder(model, folder: str) -> None:
    """Save a ``CLIPTextModel`` as the released repositories have it: config plus weights under :func:`clip_text_keys`."""
    from safetensors.torch import save_file

    model.save_pretrained(folder)
    state = model.state_dict()
    official = clip_text_keys(model.config.num_hidden_layers)
    level = "text_model."
    installed = {key: key if key in state else key[len(level):] for key in official}
    if sorted(installed.values()) != sorted(state):
        raise RuntimeError(f"CLIPTextModel's weights are not the released layout: {sorted(set(state) ^ set(installed.values()))}")
    for name in os.listdir(folder):
        if name.endswith((".safetensors", ".bin")) or name.endswith(".index.json"):
            os.remove(os.path.join(folder, name))
    save_file({key: state[installed[key]].contiguous() for key in official}, os.path.join(folder, "model.safetensors"),
              metadata={"format": "pt"})


def _bytes_to_unicode() -> dict[int, str]:
    """The byte-to-character table of CLIP's byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tokenizer(folder: str) -> int:
    """A CLIP tokenizer folder over a tiny vocabulary (single bytes, no merges); returns its size."""
    os.makedirs(folder, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump({tok: i for i, tok in enumerate(tokens)}, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)
    return len(tokens)


def save_tiny_model(folder: str, seed: int = 0) -> str:
    """Write a tiny text-to-video model (UNet3D, VAE, CLIP text encoder, tokenizer, DDIM) into ``folder``."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vocab = write_tokenizer(os.path.join(folder, "tokenizer"))
    UNet3DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=32,
        attention_head_dim=4,
    ).save_pretrained(os.path.join(folder, "unet"))
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=64,
        scaling_factor=0.18215,
    ).save_pretrained(os.path.join(folder, "vae"))
    save_text_encoder(CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=vocab - 2,
            eos_token_id=vocab - 1,
            pad_token_id=vocab - 1,
            hidden_act="gelu",
        )
    ), os.path.join(folder, "text_encoder"))
    DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    ).save_pretrained(os.path.join(folder, "scheduler"))
    return folder


def make(models_dir: str) -> list[str]:
    """Tiny stand-ins for Zeroscope v2 576w and XL under ``models_dir/zeroscope``."""
    return [
        save_tiny_model(claim_tiny_path(os.path.join(models_dir, "zeroscope", name)), seed=i)
        for i, name in enumerate(NAMES)
    ]
