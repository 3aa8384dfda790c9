"""The frame loop: runs a :class:`~.timing.Plan` batch by batch into a preallocated IMAGE.

Memory holds the input, the output (disk-backed past a size, see :func:`~..common.frames.new_frames`)
and one group of pairs: the group's frames, its in-between results for bisection, and one batch of
activations. Nothing grows with the clip length.
"""

from __future__ import annotations

from typing import Callable

import torch

from .. import host
from ..common.frames import new_frames
from .model import FilmNet, crop, pad_to
from .timing import Job, OutFrame, Plan


def run_model(model: FilmNet, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One forward pass on ``[B,3,H,W]`` frames of any size: pad to the model's alignment, crop, clamp (float32)."""
    if x0.shape != x1.shape:
        raise ValueError(f"frames: the two sides of a pair differ in size ({tuple(x0.shape)} vs {tuple(x1.shape)}).")
    dtype = next(model.parameters()).dtype
    x0, box = pad_to(x0.to(dtype), model.config.align)
    x1, _ = pad_to(x1.to(dtype), model.config.align)
    return crop(model(x0, x1, t.to(x0.device)), box).float().clamp_(0, 1)


def _groups(plan: Plan, batch_size: int) -> list[list[int]]:
    """Consecutive pairs gathered until their first level of calls fills a batch."""
    groups: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for pair, levels in plan.jobs.items():
        current.append(pair)
        filled += len(levels[0])
        if filled >= batch_size:
            groups.append(current)
            current, filled = [], 0
    if current:
        groups.append(current)
    return groups


def interpolate(
    model: FilmNet,
    images: torch.Tensor,
    plan: Plan,
    batch_size: int = 1,
    on_frame: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Render ``plan`` from IMAGE ``images`` ``[F,H,W,3]``; returns the output IMAGE (float32, CPU).

    ``model`` must already be on its run device; ``on_frame(1)`` is called for every frame written.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: must be at least 1, got {batch_size}.")
    device = next(model.parameters()).device
    height, width = images.shape[1:3]
    out = new_frames(len(plan.frames), height, width)
    written = 0

    def write_until(ready: Callable[[OutFrame], bool], cache: dict) -> None:
        nonlocal written
        while written < len(plan.frames) and ready(plan.frames[written]):
            frame = plan.frames[written]
            if frame.needs_model:
                out[written] = cache[(frame.pair, frame.t)].permute(1, 2, 0).cpu()
            else:
                out[written] = images[frame.pair, ..., :3]
            written += 1
            if on_frame:
                on_frame(1)

    def source(cache: dict, job: Job, x) -> torch.Tensor:
        if x == 0 or x == 1:
            return images[job.pair + int(x), ..., :3].permute(2, 0, 1).to(device, torch.float32)
        return cache[(job.pair, x)]

    with torch.inference_mode():
        for group in _groups(plan, batch_size):
            cache: dict = {}
            depth = max(len(plan.jobs[p]) for p in group)
            for level in range(depth):
                jobs = [j for p in group if level < len(plan.jobs[p]) for j in plan.jobs[p][level]]
                for start in range(0, len(jobs), batch_size):
                    chunk = jobs[start : start + batch_size]
                    x0 = torch.stack([source(cache, j, j.a) for j in chunk])
                    x1 = torch.stack([source(cache, j, j.b) for j in chunk])
                    t = torch.tensor([[float(j.t)] for j in chunk])
                    for j, frame in zip(chunk, run_model(model, x0, x1, t)):
                        cache[(j.pair, j.x)] = frame
                    host.check_interrupt()
            last = group[-1]
            write_until(lambda f: not f.needs_model or f.pair <= last, cache)
        write_until(lambda f: True, {})
    return out
