"""Sizes of the StreamingT2V (StreamingModelscope) model, so tests build the same code at tiny sizes.

:data:`OFFICIAL` is the released checkpoint's architecture (ModelScope T2V UNet3D + CAM + APM, OpenCLIP
ViT-H/14 image encoder). A checkpoint at any other size carries its config in a JSON file beside it
(``<name>.json``) or, for converted files, in the safetensors metadata.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

CHECKPOINT_FILE = "streaming_t2v.ckpt"  # the official file name (PAIR/StreamingT2V)
BASE_FOLDER = "text-to-video-ms-1.7b"  # ModelScope T2V folder in models/zeroscope
FROM_CHECKPOINT = "from checkpoint"  # image encoder choice: the checkpoint's own OpenCLIP weights
# How a clip reaches the model's square frames; stretching gives anamorphic frames CAM and APM never saw.
SQUARE_FITS = ("crop", "pad", "stretch")


@dataclass(frozen=True)
class StreamingConfig:
    # extension UNet (diffusers UNet3DConditionModel arguments); the CAM encoder copies its encoder half
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",)
    up_block_types: tuple[str, ...] = ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3
    layers_per_block: int = 2
    cross_attention_dim: int = 1024
    attention_head_dim: int = 64  # diffusers' name; it is the head width (heads = channels / 64)
    norm_num_groups: int = 32
    in_channels: int = 4
    # CAM
    control_frames: int = 8  # conditioning frames from the previous chunk
    chunk_frames: int = 16  # frames denoised per extension step
    cond_channels: tuple[int, ...] = (32, 96, 256, 512)  # frame encoder stages (each but the first halves H, W)
    merger_head_dim: int = 64
    merger_norm_groups: int = 32
    # APM
    num_text_tokens: int = 77
    num_image_tokens: int = 16
    apm_conv_kernel: int = 3
    resampler_inner_dim: int = 1280
    # OpenCLIP image encoder (ViT-H/14, laion2b_s32b_b79k)
    image_size: int = 224
    patch_size: int = 14
    vision_width: int = 1280
    vision_layers: int = 32
    vision_heads: int = 16
    image_embed_dim: int = 1024
    # pixels
    resolution: int = 256

    def unet_kwargs(self) -> dict:
        """Arguments for diffusers' ``UNet3DConditionModel`` with the same blocks."""
        return dict(
            in_channels=self.in_channels,
            out_channels=self.in_channels,
            down_block_types=self.down_block_types,
            up_block_types=self.up_block_types,
            block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block,
            norm_num_groups=self.norm_num_groups,
            cross_attention_dim=self.cross_attention_dim,
            attention_head_dim=self.attention_head_dim,
        )

    @property
    def new_frames_per_step(self) -> int:
        """Frames each extension step adds (chunk minus the control frames)."""
        return self.chunk_frames - self.control_frames

    @property
    def num_context_tokens(self) -> int:
        """Text plus image tokens in the cross-attention context."""
        return self.num_text_tokens + self.num_image_tokens

    def to_json(self) -> str:
        """The config as JSON."""
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, data: dict) -> "StreamingConfig":
        """A config from a dict; unknown keys are an error, tuples are restored."""
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown StreamingT2V config keys: {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return replace(cls(), **values)

    @classmethod
    def from_json(cls, text: str) -> "StreamingConfig":
        """A config from :meth:`to_json` text."""
        return cls.from_dict(json.loads(text))


OFFICIAL = StreamingConfig()

# Tiny sizes with the same structure (design note §10); text width matches the tiny ModelScope encoder.
TINY = StreamingConfig(
    block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    layers_per_block=1,
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=8,
    cond_channels=(8, 8, 16, 16),
    merger_head_dim=8,
    merger_norm_groups=8,
    resampler_inner_dim=48,
    image_size=32,
    patch_size=8,
    vision_width=32,
    vision_layers=2,
    vision_heads=4,
    image_embed_dim=24,
    resolution=32,  # latents 4 x 4
)
