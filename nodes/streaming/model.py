"""The assembled StreamingT2V model and where its parts come from.

- extension UNet, CAM encoder, resampler: the StreamingT2V checkpoint (``models/streaming_t2v``);
- OpenCLIP ViT-H/14 image encoder: the checkpoint's ``image_encoder.model.`` when present, else an
  OpenCLIP or transformers-format file in ``models/open_clip``;
- tokenizer, scheduler config, text encoder and VAE: the ModelScope text-to-video folder
  (``models/zeroscope/text-to-video-ms-1.7b``); text encoder / VAE weights in the checkpoint override it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from .. import host
from ..common import models
from ..common.compat import pretrained_dtype
from ..diffusion.sampler import LatentVideoModel
from ..zeroscope import loader as zeroscope_loader
from . import checkpoint
from .apm import AnchorResampler, OpenCLIPImageEncoder
from .cam import CAMEncoder
from .config import BASE_FOLDER, FROM_CHECKPOINT, StreamingConfig
from .unet import StreamingUNet3D

OPEN_CLIP_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


@dataclass
class StreamingT2VModel(LatentVideoModel):
    """Everything the extension loop needs; kept on the offload device between runs."""

    name: str
    config: StreamingConfig
    unet: StreamingUNet3D
    cam: CAMEncoder
    resampler: AnchorResampler
    image_encoder: OpenCLIPImageEncoder
    text_encoder: torch.nn.Module
    tokenizer: object
    vae: torch.nn.Module
    scheduler_config: dict = field(repr=False)
    dtype: torch.dtype = torch.float32

    def modules(self) -> tuple[torch.nn.Module, ...]:
        """The torch modules to move to the device for a run."""
        return (self.unet, self.cam, self.resampler, self.image_encoder, self.text_encoder, self.vae)


def build_modules(config: StreamingConfig, device: str | torch.device = "cpu"):
    """Fresh (random or meta) extension UNet, CAM encoder, resampler and image encoder."""
    with torch.device(device):
        return StreamingUNet3D(config), CAMEncoder(config), AnchorResampler(config), OpenCLIPImageEncoder(config)


def _hf_vision_to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``CLIPVisionModelWithProjection`` keys -> OpenCLIP ``visual.*`` keys."""
    out: dict[str, torch.Tensor] = {}
    names = {
        "vision_model.embeddings.class_embedding": "visual.class_embedding",
        "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
        "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
        "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
        "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
        "vision_model.post_layernorm.weight": "visual.ln_post.weight",
        "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    }
    layer = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for key, value in state.items():
        if key in names:
            out[names[key]] = value
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.t().contiguous()
        elif key.startswith("vision_model.encoder.layers."):
            index, rest = key[len("vision_model.encoder.layers."):].split(".", 1)
            base = f"visual.transformer.resblocks.{index}."
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                kind = rest.rsplit(".", 1)[1]
                q, k, v = (state[f"vision_model.encoder.layers.{index}.self_attn.{p}_proj.{kind}"] for p in "qkv")
                out[base + f"attn.in_proj_{kind}"] = torch.cat([q, k, v])
                continue
            for old, new in layer.items():
                if rest.startswith(old + "."):
                    out[base + new + rest[len(old):]] = value
    return out


def load_image_encoder_file(encoder: OpenCLIPImageEncoder, path: str, dtype: torch.dtype) -> None:
    """Load an OpenCLIP (``visual.*``) or transformers (``vision_model.*``) CLIP file into ``encoder``."""
    name = os.path.basename(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:
            if host.is_interrupt(exc):
                raise
            raise checkpoint.CheckpointError(f"image_encoder: {name} is not a loadable weights file ({exc}).") from exc
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    if any(k.startswith("vision_model.") for k in state):
        state = _hf_vision_to_open_clip(state)
    found = {k: tuple(v.shape) for k, v in state.items()}
    report = checkpoint.compare_keys("image_encoder", checkpoint.expected_shapes(encoder), found, OpenCLIPImageEncoder.is_unused_key)
    if not report.ok:
        raise checkpoint.CheckpointError(
            f"image_encoder: {name} is not the OpenCLIP ViT-H/14 image encoder StreamingT2V needs: {report.describe()}. "
            f"Download open_clip_pytorch_model.bin from {OPEN_CLIP_REPO} into models/open_clip."
        )
    wanted = checkpoint.expected_shapes(encoder)
    encoder.load_state_dict({k: v.to(dtype) for k, v in state.items() if k in wanted}, strict=True, assign=True)


def load_base_parts(folder: str, dtype: torch.dtype):
    """Text encoder, tokenizer, VAE and scheduler config from a ModelScope-layout folder."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    missing = [m for m in zeroscope_loader.missing_files(folder) if not m.startswith("unet/")]
    if missing:
        raise FileNotFoundError(
            f"base_model: the ModelScope text-to-video folder {folder} lacks {', '.join(missing)}; StreamingT2V takes "
            f"its text encoder, tokenizer, VAE and scheduler from it. Download "
            f"{zeroscope_loader.HUB_REPOS[BASE_FOLDER]} into models/zeroscope/{BASE_FOLDER}."
        )
    text_encoder = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), **pretrained_dtype(dtype))
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype)
    scheduler_config = dict(DDIMScheduler.load_config(os.path.join(folder, "scheduler")))
    return text_encoder, tokenizer, vae, scheduler_config


def load_model(checkpoint_path: str, base_folder: str, image_encoder_path: str | None = None,
               dtype: torch.dtype = torch.float32) -> StreamingT2VModel:
    """Assemble the model: strict loads of every component (see the module docstring for the sources)."""
    weights = checkpoint.WeightFile(checkpoint_path)
    config = weights.config()
    split = weights.component_keys()
    unet, cam, resampler, image_encoder = build_modules(config, "meta")
    for component, module in (("unet", unet), ("cam", cam), ("resampler", resampler)):
        checkpoint.load_component(module, weights, component, dtype)
    if image_encoder_path is None:
        if "image_encoder" not in split:
            raise checkpoint.CheckpointError(
                f"image_encoder: {weights.name} carries no image encoder; choose an OpenCLIP ViT-H/14 file "
                f"(open_clip_pytorch_model.bin from {OPEN_CLIP_REPO}, in models/open_clip)."
            )
        checkpoint.load_component(image_encoder, weights, "image_encoder", dtype, OpenCLIPImageEncoder.is_unused_key)
    else:
        load_image_encoder_file(image_encoder, image_encoder_path, dtype)
    text_encoder, tokenizer, vae, scheduler_config = load_base_parts(base_folder, dtype)
    if "text_encoder" in split:
        checkpoint.load_component(text_encoder, weights, "text_encoder", dtype,
                                  lambda k: k.endswith("position_ids"), assign=False)
    if "vae" in split:
        checkpoint.load_component(vae, weights, "vae", dtype, assign=False)
    if text_encoder.config.hidden_size != config.cross_attention_dim:
        raise checkpoint.CheckpointError(
            f"base_model: the text encoder in {base_folder} is {text_encoder.config.hidden_size}-wide but the checkpoint "
            f"expects {config.cross_attention_dim}; use {zeroscope_loader.HUB_REPOS[BASE_FOLDER]}."
        )
    for module in (unet, cam, resampler, image_encoder, text_encoder, vae):
        module.eval().requires_grad_(False)
    return StreamingT2VModel(
        name=weights.name, config=config, unet=unet, cam=cam, resampler=resampler, image_encoder=image_encoder,
        text_encoder=text_encoder, tokenizer=tokenizer, vae=vae, scheduler_config=scheduler_config, dtype=dtype,
    )


def resolve(kind: str, name: str, input_name: str, hint: str) -> str:
    """The path of model ``name`` of ``kind``, or a FileNotFoundError naming ``input_name`` and ``hint``."""
    path = host.find_model(kind, name)
    if path is None:
        where = host.model_dirs(kind)[0]
        raise FileNotFoundError(f"{input_name}: '{name}' is not in {where}. {hint}")
    return path


def load_cached(checkpoint_name: str, base_name: str = BASE_FOLDER, image_encoder: str = FROM_CHECKPOINT,
                dtype_choice: str = "auto") -> StreamingT2VModel:
    """Load once from the registered folders; later runs reuse the model until a file changes."""
    ckpt = resolve("streaming_t2v", checkpoint_name, "checkpoint",
                   f"Download streaming_t2v.ckpt from {checkpoint.HUB_FILE} into that folder.")
    base = resolve("zeroscope", base_name, "base_model",
                   f"Download {zeroscope_loader.HUB_REPOS[BASE_FOLDER]} into models/zeroscope/{BASE_FOLDER}.")
    clip = None if image_encoder == FROM_CHECKPOINT else resolve(
        "open_clip", image_encoder, "image_encoder", f"Download open_clip_pytorch_model.bin from {OPEN_CLIP_REPO}.")
    dtype = zeroscope_loader.resolve_dtype(dtype_choice, host.torch_device())
    key = ("streaming_t2v", os.path.realpath(ckpt), os.path.realpath(base), clip and os.path.realpath(clip), str(dtype))
    stamp = (models.path_stamp(ckpt), models.path_stamp(base), clip and models.path_stamp(clip))
    return models.cached(key, lambda: load_model(ckpt, base, clip, dtype), stamp=stamp)
