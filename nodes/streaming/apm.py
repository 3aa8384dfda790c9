"""APM, the appearance preservation module: the anchor frame's image tokens mixed into cross-attention.

- :class:`OpenCLIPImageEncoder`: OpenCLIP's ViT (``visual.*`` key names, as in the checkpoint's
  ``image_encoder.model.`` and in ``open_clip_pytorch_model.bin``), returning the pooled, projected
  image embedding.
- :class:`AnchorResampler`: the MLP that turns one image embedding into ``num_image_tokens`` tokens.
- :class:`APMAttention`: a spatial cross-attention (``attn2``) carrying ``alpha``, ``conv`` and
  ``conv_ln``. The context it receives is 77 text tokens + 16 image tokens; its keys and values are
  computed from ``text + SiLU(alpha) * LN(conv(all tokens))``, where ``conv`` runs along the token axis.
  The official code mixes only in its xformers processor; here the mixing wraps *any* diffusers
  processor (SDPA, plain softmax, sliced, xformers), and replacing the processor keeps it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from .config import StreamingConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, width * 4), gelu=nn.GELU(), c_proj=nn.Linear(width * 4, width))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(_ResidualBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class VisionTransformer(nn.Module):
    """OpenCLIP's image tower: patch conv, class token, pre/post LayerNorm, projection of the class token."""

    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int, embed_dim: int):
        super().__init__()
        grid = image_size // patch_size
        self.image_size = image_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width**-0.5)
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, width) * width**-0.5)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = _Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, embed_dim) * width**-0.5)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.conv1(pixels).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class OpenCLIPImageEncoder(nn.Module):
    """The APM image encoder: frames in [-1, 1] -> ``[N, image_embed_dim]`` CLIP image embeddings."""

    # OpenCLIP's text-side leftovers the checkpoint carries under ``image_encoder.model.``; unused.
    UNUSED_KEYS = ("token_embedding.", "positional_embedding", "ln_final.", "text_projection", "logit_scale", "transformer.", "attn_mask")

    def __init__(self, config: StreamingConfig):
        super().__init__()
        self.visual = VisionTransformer(
            config.image_size, config.patch_size, config.vision_width, config.vision_layers,
            config.vision_heads, config.image_embed_dim,
        )

    @classmethod
    def is_unused_key(cls, key: str) -> bool:
        """True for open_clip text-tower keys, which the image encoder does not load."""
        return not key.startswith("visual.") and key.startswith(cls.UNUSED_KEYS)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [-1, 1] -> CLIP input, as the official code: resize, [0, 1], CLIP normalisation.

        The official resize is kornia's bicubic with ``align_corners=True`` and antialiasing on. Kornia's
        antialiasing is a Gaussian blur of sigma ``(scale - 1) / 2`` with a 3-tap kernel, which at 256 -> 224
        (sigma 0.07) weighs the neighbours by e^-98: plain bicubic without antialiasing. Bicubic overshoot past
        [-1, 1] is kept (no clamp), as there.
        """
        size = self.visual.image_size
        x = frames.float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=True)
        x = (x + 1) / 2
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        dtype = self.visual.conv1.weight.dtype
        return self.visual(self.preprocess(frames).to(dtype))


class AnchorResampler(nn.Module):
    """One CLIP embedding -> ``num_image_tokens`` context tokens (``context_embedding.{0,2}``)."""

    def __init__(self, config: StreamingConfig):
        super().__init__()
        self.num_tokens = config.num_image_tokens
        self.token_dim = config.cross_attention_dim
        self.context_embedding = nn.Sequential(
            nn.Linear(config.image_embed_dim, config.resampler_inner_dim),
            nn.SiLU(),
            nn.Linear(config.resampler_inner_dim, config.num_image_tokens * config.cross_attention_dim),
        )

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """``[B, E]`` or ``[B, frames, E]`` (averaged over frames) -> ``[B, tokens, token_dim]``."""
        if embeds.ndim == 3:
            embeds = embeds.mean(dim=1)
        return self.context_embedding(embeds).view(embeds.shape[0], self.num_tokens, self.token_dim)


def mix_context(attn: "APMAttention", context: torch.Tensor) -> torch.Tensor:
    """77 text + 16 image tokens -> 77 tokens: ``text + SiLU(alpha) * LN(conv(tokens))``."""
    text = context[:, : attn.num_text_tokens]
    mixed = attn.conv_ln(attn.conv(context))
    return text + F.silu(attn.alpha).to(mixed.dtype) * mixed


class APMAttnProcessor:
    """Mixes image tokens into the context, then runs the wrapped diffusers processor.

    A context of exactly ``num_text_tokens`` tokens (no anchor) passes through unchanged.
    """

    def __init__(self, inner=None):
        self.inner = inner if inner is not None else AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        if encoder_hidden_states is not None and encoder_hidden_states.shape[1] != attn.num_text_tokens:
            expected = attn.num_text_tokens + attn.num_image_tokens
            if encoder_hidden_states.shape[1] != expected:
                raise ValueError(
                    f"APM cross-attention expects {attn.num_text_tokens} text tokens or {expected} text + image "
                    f"tokens, got {encoder_hidden_states.shape[1]}."
                )
            encoder_hidden_states = mix_context(attn, encoder_hidden_states)
        return self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kwargs)


class APMAttention(Attention):
    """A diffusers ``Attention`` whose every processor is wrapped in :class:`APMAttnProcessor`."""

    num_text_tokens: int
    num_image_tokens: int

    def set_processor(self, processor) -> None:
        if not isinstance(processor, APMAttnProcessor):
            processor = APMAttnProcessor(processor)
        super().set_processor(processor)

    def get_processor(self, return_deprecated_lora: bool = False):
        """The backend processor inside the APM wrapper (what diffusers' utilities expect to see)."""
        return self.processor.inner


def install_apm(attn: nn.Module, config: StreamingConfig) -> APMAttention:
    """Turn a spatial cross-attention into an :class:`APMAttention` in place (same keys plus APM's)."""
    tokens = config.num_context_tokens
    attn.__class__ = APMAttention
    attn.num_text_tokens = config.num_text_tokens
    attn.num_image_tokens = config.num_image_tokens
    attn.conv = nn.Conv1d(tokens, config.num_text_tokens, config.apm_conv_kernel, padding=config.apm_conv_kernel // 2)
    attn.conv_ln = nn.LayerNorm(config.cross_attention_dim)
    attn.alpha = nn.Parameter(torch.zeros(()))
    attn.set_processor(attn.processor)
    return attn
