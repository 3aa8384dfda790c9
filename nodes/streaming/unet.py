"""The StreamingT2V extension UNet: diffusers' UNet3D (standard keys) with CAM mergers and APM layers.

Checkpoint prefix ``base_model.``. Compared to ``UNet3DConditionModel`` it adds
``cross_attention_merger_down_blocks.{k}`` (one per skip tensor) and ``cross_attention_merger_mid_block``,
and ``alpha``/``conv``/``conv_ln`` on every spatial ``attn2``. Its own forward lets the mergers act
between the encoder producing the skips and the decoder consuming them.
"""

from __future__ import annotations

from typing import Iterator

import torch
from diffusers import UNet3DConditionModel
from torch import nn

from .apm import APMAttention, install_apm
from .cam import SkipMerger, run_encoder, skip_channels, time_embedding
from .config import StreamingConfig


class StreamingUNet3D(UNet3DConditionModel):
    """Extension UNet. ``forward(latents, t, context, cam=None)``: context is 77 text (+ 16 image) tokens."""

    def __init__(self, config: StreamingConfig):
        super().__init__(**config.unet_kwargs())
        self.streaming_config = config
        self.cross_attention_merger_down_blocks = nn.ModuleList(
            SkipMerger(c, config.merger_head_dim, config.merger_norm_groups) for c in skip_channels(config)
        )
        self.cross_attention_merger_mid_block = SkipMerger(
            config.block_out_channels[-1], config.merger_head_dim, config.merger_norm_groups
        )
        for attn in self.spatial_cross_attentions():
            install_apm(attn, config)

    def spatial_cross_attentions(self) -> Iterator[nn.Module]:
        """The ``attn2`` of every spatial transformer (down, mid, up), in key order."""
        for block in [*self.down_blocks, self.mid_block, *self.up_blocks]:
            for transformer in getattr(block, "attentions", ()):
                for layer in transformer.transformer_blocks:
                    yield layer.attn2

    def apm_layers(self) -> list[APMAttention]:
        """The spatial cross-attentions that carry APM."""
        return [a for a in self.spatial_cross_attentions() if isinstance(a, APMAttention)]

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, cam=None) -> torch.Tensor:
        """Noise prediction ``[B, C, F, h, w]``; ``cam`` is the CAM encoder's ``(skips, mid)`` or None."""
        batch, _, frames, height, width = sample.shape
        up_factor = 2**self.num_upsamplers
        forward_size = height % up_factor != 0 or width % up_factor != 0
        emb = time_embedding(self, timestep, batch, frames, self.dtype, sample.device)
        context = encoder_hidden_states.repeat_interleave(frames, dim=0)
        flat = sample.permute(0, 2, 1, 3, 4).reshape(batch * frames, sample.shape[1], height, width)

        mid, skips = run_encoder(self, flat, emb, context, frames)
        if cam is not None:
            cam_skips, cam_mid = cam
            if len(cam_skips) != len(skips):
                raise ValueError(f"CAM gave {len(cam_skips)} skip features for {len(skips)} UNet skips.")
            skips = [m(s, c, batch) for m, s, c in zip(self.cross_attention_merger_down_blocks, skips, cam_skips)]
            mid = self.cross_attention_merger_mid_block(mid, cam_mid, batch)

        x = mid
        for i, block in enumerate(self.up_blocks):
            res = tuple(skips[-len(block.resnets):])
            skips = skips[: -len(block.resnets)]
            size = skips[-1].shape[2:] if forward_size and i < len(self.up_blocks) - 1 else None
            if getattr(block, "has_cross_attention", False):
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=context,
                          upsample_size=size, num_frames=frames)
            else:
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, upsample_size=size, num_frames=frames)
        if self.conv_norm_out is not None:
            x = self.conv_act(self.conv_norm_out(x))
        x = self.conv_out(x)
        return x.reshape(batch, frames, *x.shape[1:]).permute(0, 2, 1, 3, 4)
