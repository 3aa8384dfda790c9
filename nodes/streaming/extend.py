"""The autoregressive StreamingT2V loop (design note §5): a video grows chunk by chunk.

Each step denoises a chunk of ``chunk_frames`` (16) latent frames. CAM sees the video's last
``control_frames`` (8) frames, which the chunk's first 8 frames re-synthesise; APM sees the fixed anchor
frame. Only the chunk's new frames are decoded, straight into the output IMAGE (disk-backed when large),
and the next step reads its control frames back from there. Frames the loop is done with are released from
the process (:func:`~..common.frames.release`), so its memory, page-cache pages included, does not grow
with the frame count.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch

from ..common.frames import new_frames, release
from ..common.models import diffusion_memory, element_size, on_device
from ..diffusion.blending import fit_frames
from ..diffusion.sampler import OnStep, Predict, decode_latents, denoise, resize_frames
from .config import SQUARE_FITS
from .model import StreamingT2VModel


@dataclass
class Branches:
    """Guidance branches: contexts ``[n, 93, D]`` (text + image tokens) and how their predictions combine."""

    contexts: torch.Tensor
    combine: Callable[[list[torch.Tensor]], torch.Tensor]


def fit_square(frames: torch.Tensor, size: int, fit: str) -> torch.Tensor:
    """IMAGE frames to ``size x size``: ``crop`` (centre square first), ``pad`` (black bars) or ``stretch``."""
    if fit not in SQUARE_FITS:
        raise ValueError(f"fit: must be one of {', '.join(SQUARE_FITS)}, got {fit!r}.")
    if fit == "crop":
        h, w = frames.shape[1:3]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        frames = frames[:, top : top + side, left : left + side]
    if fit == "pad":
        return fit_frames(frames, size, size, "pad")
    return resize_frames(frames, size, size)


def encode_text(model: StreamingT2VModel, texts: list[str]) -> torch.Tensor:
    """CLIP text hidden states ``[len(texts), 77, D]``."""
    device = model.text_encoder.device
    ids = model.tokenizer(texts, padding="max_length", max_length=model.config.num_text_tokens, truncation=True,
                          return_tensors="pt").input_ids.to(device)
    return model.text_encoder(ids)[0]


def image_tokens(model: StreamingT2VModel, anchor: torch.Tensor) -> torch.Tensor:
    """Anchor frame(s) ``[N, 3, H, W]`` in [-1, 1] -> APM tokens ``[N, 16, D]``."""
    device = next(model.image_encoder.parameters()).device
    embeds = model.image_encoder(anchor.to(device))
    return model.resampler(embeds.to(device=next(model.resampler.parameters()).device, dtype=model.dtype))


def guidance_branches(text: torch.Tensor, anchor_tokens: torch.Tensor, zero_tokens: torch.Tensor,
                      guidance: float, anchor_guidance: float | None = None) -> Branches:
    """CFG branches. ``text`` is ``[negative, prompt]``.

    Two branches (the official code): ``e(neg, 0) + w (e(prompt, anchor) - e(neg, 0))``. With a separate
    ``anchor_guidance`` the paper's three: ``e00 + w_t (e(prompt, 0) - e00) + w_a (e(prompt, anchor) - e(prompt, 0))``,
    which equals the two-branch form when both weights are equal. ``guidance <= 1``: the prompt branch only.
    """
    neg, pos = text[0:1], text[1:2]
    cond = torch.cat([pos, anchor_tokens], dim=1)
    if guidance <= 1.0 and anchor_guidance is None:
        return Branches(cond, lambda e: e[0])
    uncond = torch.cat([neg, zero_tokens], dim=1)
    if anchor_guidance is None:
        return Branches(torch.cat([uncond, cond]), lambda e: e[0] + guidance * (e[1] - e[0]))
    text_only = torch.cat([pos, zero_tokens], dim=1)
    return Branches(
        torch.cat([uncond, text_only, cond]),
        lambda e: e[0] + guidance * (e[1] - e[0]) + anchor_guidance * (e[2] - e[1]),
    )


def chunk_predictor(model: StreamingT2VModel, branches: Branches, control: torch.Tensor, scheduler,
                    sequential: bool = False) -> Predict:
    """``predict(latents, t)`` for one chunk: CAM on the first control frames, the UNet on all, guidance.

    ``control`` is ``[F_cond, 3, H, W]`` in [-1, 1]; every branch sees the same control frames. With
    ``sequential`` the branches run one at a time (less activation memory, same result).
    """
    contexts = branches.contexts

    def run(latents: torch.Tensor, t, ctx: torch.Tensor) -> torch.Tensor:
        n = ctx.shape[0]
        x = scheduler.scale_model_input(latents.expand(n, *latents.shape[1:]), t)
        cam = model.cam(x, t, ctx, control.repeat(n, 1, 1, 1))
        return model.unet(x, t, ctx, cam)

    def predict(latents: torch.Tensor, t) -> torch.Tensor:
        if sequential:
            outs = [run(latents, t, contexts[i : i + 1]) for i in range(contexts.shape[0])]
        else:
            outs = list(run(latents, t, contexts).split(1))
        return branches.combine(outs)

    return predict


def extension_steps(init_frames: int, total_frames: int, per_step: int) -> int:
    """How many extension steps take ``init_frames`` to at least ``total_frames``."""
    return max(0, math.ceil((total_frames - init_frames) / per_step))


def extend(
    model: StreamingT2VModel,
    frames: torch.Tensor,
    prompt: str,
    negative_prompt: str = "",
    total_frames: int = 240,
    steps: int = 50,
    guidance: float = 7.5,
    eta: float = 1.0,
    seed: int = 33,
    anchor_index: int = 0,
    frames_per_step: int | None = None,
    fit: str = "crop",
    anchor_guidance: float | None = None,
    sequential_guidance: bool = False,
    offload_components: bool = False,
    on_step: OnStep | None = None,
    scheduler: str | None = None,
) -> torch.Tensor:
    """Extend IMAGE ``frames`` to ``total_frames`` frames at the model's resolution.

    The first frames of the result are ``frames`` (resized); each step appends ``frames_per_step`` (default
    ``chunk_frames - control_frames`` = 8) new frames. One CPU generator seeded with ``seed`` draws every
    chunk's noise, so a seed gives the same video on every device. ``scheduler`` is a
    :data:`~..diffusion.sampler.SCHEDULERS` choice (None: the base model's own, DDIM for ModelScope, as the
    official code); ``eta`` applies to DDIM only.
    """
    cfg = model.config
    size, cond, chunk = cfg.resolution, cfg.control_frames, cfg.chunk_frames
    per_step = frames_per_step or cfg.new_frames_per_step
    if not 1 <= per_step <= cfg.new_frames_per_step:
        raise ValueError(f"frames_per_step: must be 1 to {cfg.new_frames_per_step}, got {per_step}.")
    if frames.shape[0] < cond:
        raise ValueError(
            f"frames: StreamingT2V conditions each step on the last {cond} frames, got {frames.shape[0]}; "
            f"connect a clip of at least {cond} frames (text-to-video usually gives 16 or 24)."
        )
    if not -frames.shape[0] <= anchor_index < frames.shape[0]:
        raise ValueError(f"anchor_index: {anchor_index} is outside the {frames.shape[0]}-frame input clip; use 0 to {frames.shape[0] - 1}.")

    initial = min(frames.shape[0], total_frames)
    out = new_frames(total_frames, size, size)
    for start in range(0, initial, 16):
        part = frames[start : min(start + 16, initial)]
        out[start : start + part.shape[0]] = fit_square(part, size, fit)
        release(out[start : start + part.shape[0]])
    if total_frames <= frames.shape[0]:
        return out

    device = model.unet.device
    anchor = fit_square(frames[anchor_index : anchor_index + 1 or None], size, fit).permute(0, 3, 1, 2) * 2 - 1
    encoders = on_device(model.text_encoder, model.image_encoder, device=device) if offload_components else nullcontext()
    with torch.no_grad():
        with encoders:
            text = encode_text(model, [negative_prompt, prompt]).to(device, model.dtype)
            tokens = image_tokens(model, torch.cat([anchor, torch.zeros_like(anchor)])).to(device)
        branches = guidance_branches(text, tokens[0:1], tokens[1:2], guidance, anchor_guidance)

    generator = torch.Generator("cpu").manual_seed(seed)
    latent = size // model.vae_scale_factor
    shape = (1, cfg.in_channels, chunk, latent, latent)
    position = frames.shape[0]
    while position < total_frames:
        keep = min(per_step, total_frames - position)
        control = out[position - cond : position].permute(0, 3, 1, 2).to(device, model.dtype) * 2 - 1
        release(out[:position])  # not only the control frames: a read maps its neighbours' pages too (fault-around)
        sampler = model.new_scheduler(scheduler)  # fresh per chunk: multistep schedulers keep state
        sampler.set_timesteps(steps, device=device)
        latents = torch.randn(shape, generator=generator).to(device, model.dtype) * sampler.init_noise_sigma
        predict = chunk_predictor(model, branches, control, sampler, sequential_guidance)
        latents = denoise(sampler, latents, sampler.timesteps, predict, generator, eta, on_step)
        decoding = diffusion_memory(keep, size, size, element_size(model.vae))
        decoder = on_device(model.vae, device=device, memory_required=decoding) if offload_components else nullcontext()
        with decoder:
            decode_latents(model, latents[:, :, cond : cond + keep], slice_frames=keep, out=out[position : position + keep])
        position += keep
    return out
