"""CAM, the conditional attention module: short-term memory of the previous chunk's last frames.

- :class:`FrameConditionEncoder` (``controlnet_cond_embedding``): control frames in pixels -> the
  latent grid, added to the CAM encoder's stem.
- :class:`CAMEncoder` (checkpoint prefix ``unet.``): a copy of the UNet's encoder half and mid block run
  on the first ``control_frames`` noisy frames; returns every skip tensor and the mid output.
- :class:`SkipMerger` (``cross_attention_merger_*``): each skip of the extension UNet attends, per pixel
  and over time, to the matching CAM feature; the result is added to the skip (zero at initialisation).
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel
from diffusers.models.unets.unet_3d_blocks import UNetMidBlock3DCrossAttn, get_down_block
from torch import nn

from .config import StreamingConfig


def skip_channels(config: StreamingConfig) -> list[int]:
    """Channels of the UNet's skip tensors in production order (stem, then each down block's outputs)."""
    channels = [config.block_out_channels[0]]
    last = len(config.block_out_channels) - 1
    for i, out in enumerate(config.block_out_channels):
        channels += [out] * config.layers_per_block + ([out] if i < last else [])
    return channels


def time_embedding(model: nn.Module, timestep, batch: int, frames: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The per-frame time embedding ``[batch * frames, dim]`` (as diffusers' UNet3D computes it)."""
    t = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], dtype=torch.int64)
    t = (t[None] if t.ndim == 0 else t).to(device).expand(batch)
    emb = model.time_embedding(model.time_proj(t).to(dtype))
    return emb.repeat_interleave(frames, dim=0)


def run_encoder(model: nn.Module, sample: torch.Tensor, emb, context, frames: int, stem_add: torch.Tensor | None = None):
    """Stem, down blocks and mid block on flattened frames; returns ``(mid, skips)``.

    ``stem_add`` (CAM's encoded control frames) is added after ``transformer_in``.
    """
    sample = model.conv_in(sample)
    sample = model.transformer_in(sample, num_frames=frames, return_dict=False)[0]
    if stem_add is not None:
        sample = sample + stem_add
    skips = [sample]
    for block in model.down_blocks:
        if getattr(block, "has_cross_attention", False):
            sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=context, num_frames=frames)
        else:
            sample, res = block(hidden_states=sample, temb=emb, num_frames=frames)
        skips += res
    sample = model.mid_block(sample, emb, encoder_hidden_states=context, num_frames=frames)
    return sample, skips


class FrameConditionEncoder(nn.Module):
    """Control frames ``[N, 3, H, W]`` in [-1, 1] -> ``[N, C0, H/8, W/8]``; ``conv_out`` starts at zero."""

    def __init__(self, channels: tuple[int, ...], out_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels[0], 3, padding=1)
        blocks = []
        for cin, cout in zip(channels[:-1], channels[1:]):
            blocks += [nn.Conv2d(cin, cin, 3, padding=1), nn.Conv2d(cin, cout, 3, padding=1, stride=2)]
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(channels[-1], out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = nn.functional.silu(self.conv_in(frames))
        for block in self.blocks:
            x = nn.functional.silu(block(x))
        return self.conv_out(x)


class TemporalCrossAttention(nn.Module):
    """Per-pixel attention of a skip's frames (queries) to the CAM feature's frames (keys and values)."""

    def __init__(self, channels: int, head_dim: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.attention = Attention(
            query_dim=channels, cross_attention_dim=channels, heads=channels // head_dim, dim_head=head_dim,
            bias=False, out_bias=True,
        )
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, skip: torch.Tensor, feature: torch.Tensor, batch: int) -> torch.Tensor:
        """``skip [B*F, C, h, w]``, ``feature [B*Fc, C, h, w]`` -> the residual to add to ``skip``."""
        bf, c, h, w = skip.shape
        frames, cond_frames = bf // batch, feature.shape[0] // batch
        x = self.norm(skip.view(batch, frames, c, h, w).transpose(1, 2))  # group norm over (C/g, F, h, w)
        x = self.proj_in(x.permute(0, 3, 4, 2, 1).reshape(batch * h * w, frames, c))
        kv = feature.view(batch, cond_frames, c, h, w).permute(0, 3, 4, 1, 2).reshape(batch * h * w, cond_frames, c)
        x = self.proj_out(self.attention(x, encoder_hidden_states=kv))
        return x.view(batch, h, w, frames, c).permute(0, 3, 4, 1, 2).reshape(bf, c, h, w)


class SkipMerger(nn.Module):
    """``ConditionalModel`` of the official code: ``skip + temporal_transformer(skip, feature)``."""

    def __init__(self, channels: int, head_dim: int, groups: int):
        super().__init__()
        self.temporal_transformer = TemporalCrossAttention(channels, head_dim, groups)

    def forward(self, skip: torch.Tensor, feature: torch.Tensor, batch: int) -> torch.Tensor:
        return skip + self.temporal_transformer(skip, feature, batch)


class CAMEncoder(nn.Module):
    """The CAM encoder: the UNet3D encoder half + mid block (same key names), plus the frame encoder."""

    def __init__(self, config: StreamingConfig):
        super().__init__()
        self.config = config
        ch = config.block_out_channels
        heads = config.attention_head_dim  # diffusers passes this as the per-block "heads" argument
        temb = ch[0] * 4
        self.conv_in = nn.Conv2d(config.in_channels, ch[0], 3, padding=1)
        self.time_proj = Timesteps(ch[0], True, 0)
        self.time_embedding = TimestepEmbedding(ch[0], temb, act_fn="silu")
        self.transformer_in = TransformerTemporalModel(
            num_attention_heads=8, attention_head_dim=config.attention_head_dim, in_channels=ch[0],
            num_layers=1, norm_num_groups=config.norm_num_groups,
        )
        self.controlnet_cond_embedding = FrameConditionEncoder(config.cond_channels, ch[0])
        self.down_blocks = nn.ModuleList()
        out = ch[0]
        for i, kind in enumerate(config.down_block_types):
            cin, out = out, ch[i]
            self.down_blocks.append(get_down_block(
                kind, num_layers=config.layers_per_block, in_channels=cin, out_channels=out, temb_channels=temb,
                add_downsample=i < len(ch) - 1, resnet_eps=1e-5, resnet_act_fn="silu",
                resnet_groups=config.norm_num_groups, cross_attention_dim=config.cross_attention_dim,
                num_attention_heads=heads, downsample_padding=1, dual_cross_attention=False,
            ))
        self.mid_block = UNetMidBlock3DCrossAttn(
            in_channels=ch[-1], temb_channels=temb, resnet_eps=1e-5, resnet_act_fn="silu", output_scale_factor=1,
            cross_attention_dim=config.cross_attention_dim, num_attention_heads=heads,
            resnet_groups=config.norm_num_groups, dual_cross_attention=False,
        )

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the encoder's weights."""
        return self.conv_in.weight.dtype

    @classmethod
    def from_unet(cls, unet: nn.Module, config: StreamingConfig) -> "CAMEncoder":
        """A CAM encoder initialised from a UNet's encoder (how training starts)."""
        cam = cls(config)
        own = cam.state_dict()
        cam.load_state_dict({k: v for k, v in unet.state_dict().items() if k in own}, strict=False)
        return cam

    def forward(self, latents: torch.Tensor, timestep, context: torch.Tensor, control: torch.Tensor):
        """CAM features for the first control frames of the noisy chunk.

        ``latents [B, C, F, h, w]`` (only ``F_cond`` frames are read), ``context [B, 77, D]`` text tokens,
        ``control [B * F_cond, 3, H, W]`` pixels in [-1, 1]. Returns ``(skips, mid)``, each ``[B*F_cond, ...]``.
        """
        frames = self.config.control_frames
        x = latents[:, :, :frames]
        batch = x.shape[0]
        emb = time_embedding(self, timestep, batch, frames, self.dtype, x.device)
        context = context[:, : self.config.num_text_tokens].repeat_interleave(frames, dim=0)
        flat = x.permute(0, 2, 1, 3, 4).reshape(batch * frames, *x.shape[1:2], *x.shape[3:])
        stem = self.controlnet_cond_embedding(control.to(self.dtype))
        mid, skips = run_encoder(self, flat, emb, context, frames, stem_add=stem)
        return skips, mid
