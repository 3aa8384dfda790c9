"""MusicGen's token sampling: the codebook delay pattern and one sampled frame per step.

MusicGen predicts ``K`` parallel codebooks per audio frame. Codebook ``k`` runs ``delay[k]`` steps
behind the first (``k`` for mono models, ``k // 2`` for stereo ones, whose codebooks interleave
left and right), so each step predicts codebook 0 of frame ``t`` together with codebook 1 of frame
``t - 1`` and so on. A prompt (the tail of the previous window) fills the first frames; only the
positions after it are sampled, and the prompt codes come back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# Prompt positions run through the decoder at once: a window's prompt is read in pieces, so the
# attention scores of a long prompt never exist all at once.
PREFILL_CHUNK = 64


@dataclass(frozen=True)
class Sampling:
    """How tokens are drawn (audiocraft's semantics: top-p, when above 0, replaces top-k)."""

    guidance: float = 3.0
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0


def delays(num_codebooks: int, audio_channels: int) -> list[int]:
    """Steps each codebook lags behind the first."""
    return [k // audio_channels for k in range(num_codebooks)]


def steps_for(new_frames: int, num_codebooks: int, audio_channels: int) -> int:
    """Sampling steps needed for ``new_frames`` frames after a prompt."""
    return new_frames + max(delays(num_codebooks, audio_channels))


def delayed_grid(prompt: torch.Tensor, total: int, lag: list[int], start_token: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The delayed token grid ``[B, K, total + max_lag + 1]`` holding ``prompt`` ``[B, K, P]``, and its known-mask.

    Position 0 is the start token; codebook ``k`` holds frame ``j`` at position ``j + lag[k] + 1``;
    positions before and after a codebook's frames are start-token padding. ``known[k, t]`` is True
    where the grid is fixed (padding or prompt) and False where a token must be sampled.
    """
    batch, num_codebooks, length = prompt.shape
    width = total + max(lag) + 1
    grid = torch.full((batch, num_codebooks, width), start_token, dtype=torch.long, device=prompt.device)
    frame = torch.arange(width, device=prompt.device)[None, :] - torch.tensor(lag, device=prompt.device)[:, None] - 1
    for k in range(num_codebooks):
        grid[:, k, lag[k] + 1 : lag[k] + 1 + length] = prompt[:, k]
    known = (frame < length) | (frame >= total)
    return grid, known


def undelay(grid: torch.Tensor, total: int, lag: list[int]) -> torch.Tensor:
    """Codes ``[B, K, total]`` frame-aligned again from a delayed grid."""
    return torch.stack([grid[:, k, lag[k] + 1 : lag[k] + 1 + total] for k in range(grid.shape[1])], dim=1)


def pick(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """One token per row of ``logits`` ``[..., V]`` (float32): argmax at temperature 0, else top-p / top-k sampling."""
    if sampling.temperature <= 0:
        return logits.argmax(-1)
    shifted = logits - logits.amax(-1, keepdim=True)  # so a tiny temperature cannot overflow to inf / inf
    probs = torch.softmax(shifted / sampling.temperature, dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    if sampling.top_p > 0:
        ordered, index = flat.sort(dim=-1, descending=True)
        before = ordered.cumsum(-1) - ordered  # mass of the more likely tokens
        ordered = ordered.masked_fill(before > sampling.top_p, 0.0)
        choice = index.gather(-1, torch.multinomial(ordered, 1))
    elif 0 < sampling.top_k < flat.shape[-1]:
        top, index = flat.topk(sampling.top_k, dim=-1)
        choice = index.gather(-1, torch.multinomial(top, 1))
    else:
        choice = torch.multinomial(flat, 1)
    return choice.reshape(probs.shape[:-1])


Forward = Callable[[torch.Tensor, object], tuple[torch.Tensor, object]]


@torch.no_grad()
def sample_codes(
    forward: Forward,
    prompt: torch.Tensor,
    new_frames: int,
    lag: list[int],
    start_token: int,
    sampling: Sampling,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Continue ``prompt`` ``[B, K, P]`` by ``new_frames`` frames; returns ``[B, K, P + new_frames]``.

    ``forward(ids [B', K, n], cache) -> (logits [B', K, V] at the last position, cache)`` runs the
    decoder incrementally; with guidance above 1 it gets the batch twice (conditional, then
    unconditional) and the logits are mixed as ``uncond + guidance * (cond - uncond)``.
    Sampling draws from torch's global generator (seed it around the call).
    """
    batch, _, length = prompt.shape
    total = length + new_frames
    grid, known = delayed_grid(prompt, total, lag, start_token)
    guided = sampling.guidance > 1
    cache = None
    for t in range(length + 1, grid.shape[-1]):
        pieces = range(0, t, PREFILL_CHUNK) if cache is None else [t - 1]
        for a in pieces:
            ids = grid[..., a : min(a + PREFILL_CHUNK, t)]
            logits, cache = forward(torch.cat([ids, ids]) if guided else ids, cache)
        logits = logits.float()
        if guided:
            cond, uncond = logits.chunk(2)
            logits = uncond + sampling.guidance * (cond - uncond)
        grid[..., t] = torch.where(known[:, t], grid[..., t], pick(logits, sampling))
        if on_step is not None:
            on_step()
    return undelay(grid, total, lag)
