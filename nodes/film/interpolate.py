"""The frame loop: runs a :class:`~.timing.Plan` group of pairs by group into a preallocated IMAGE.

The model's three parts are shared as far as the plan allows: each frame's :meth:`~.model.FilmNet.features`
once (an input frame's are kept until its second pair is done), each pair's
:meth:`~.model.FilmNet.flows` once whatever the number of times between its frames, and
:meth:`~.model.FilmNet.synthesize` batched over the times of a pair and over the pairs of a group.

Memory holds the input, the output (disk-backed past a size, see :func:`~..common.frames.new_frames`)
and one group of pairs: its frames' features and flows, its in-between results for bisection, and one
batch of activations. Nothing grows with the clip length.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from fractions import Fraction
from typing import Callable, Iterator

import torch

from .. import host
from ..common import frames as common_frames
from .model import FilmNet, crop, pad_to
from .timing import Job, OutFrame, Plan


def run_model(model: FilmNet, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One unshared forward pass on ``[B,3,H,W]`` frames of any size: pad to the model's alignment, crop,
    clamp (float32). The reference the shared loop is checked against."""
    if x0.shape != x1.shape:
        raise ValueError(f"frames: the two sides of a pair differ in size ({tuple(x0.shape)} vs {tuple(x1.shape)}).")
    dtype = next(model.parameters()).dtype
    x0, box = pad_to(x0.to(dtype), model.config.align)
    x1, _ = pad_to(x1.to(dtype), model.config.align)
    return crop(model(x0, x1, t.to(x0.device)), box).float().clamp_(0, 1)


def check_output_size(count: int, height: int, width: int, input_name: str) -> None:
    """Refuse, before any work, an output larger than the room it would go to (memory below the disk
    threshold, else the free space of the temp folder)."""
    need = count * height * width * 3 * 4
    if need <= common_frames.DISK_THRESHOLD_BYTES:
        return
    folder = host.temp_dir()
    free = shutil.disk_usage(folder).free
    if need > free:
        raise ValueError(
            f"{input_name}: the output would be {count} frames of {width}x{height} ({need / 1e9:.1f} GB), more "
            f"than the {free / 1e9:.1f} GB free in {folder}; lower {input_name}, interpolate a shorter clip, or "
            "free space there."
        )


def _groups(plan: Plan, batch_size: int) -> list[list[int]]:
    """Runs of ``batch_size`` consecutive pairs that need the model: one call of features (their new frames)
    and of flows each, and all their times fused ``batch_size`` at a time."""
    pairs = list(plan.jobs)
    return [pairs[start : start + batch_size] for start in range(0, len(pairs), batch_size)]


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _gather(parts: list[torch.Tensor]) -> torch.Tensor:
    """One batch from single-sample tensors; one tensor repeated (a pair's times) is expanded, not copied."""
    if all(p is parts[0] for p in parts):
        return parts[0].expand(len(parts), *parts[0].shape[1:])
    return torch.cat(parts)


def _own(levels: list[torch.Tensor]) -> list[torch.Tensor]:
    """``levels`` without the rest of the batch they were computed in (so it can be freed)."""
    return [t.clone() if t.untyped_storage().nbytes() > t.nbytes else t for t in levels]


class Runner:
    """The model's parts on its device. On CUDA: channels_last and cuDNN autotuning, and with ``compile``
    each part is compiled for one batch shape (short batches are padded with their last sample)."""

    def __init__(self, model: FilmNet, batch_size: int, compile: bool = False):
        self.model, self.batch_size = model, batch_size
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.cuda = self.device.type == "cuda"
        self.static = compile and self.cuda
        self.parts = [model.features, model.flows, model.synthesize]
        if self.cuda:
            model.to(memory_format=torch.channels_last)
        if self.static:
            self.parts = [torch.compile(p, dynamic=False) for p in self.parts]

    @contextmanager
    def tuned(self) -> Iterator[None]:
        """cuDNN picks the fastest algorithms for the (repeated) shapes while the loop runs."""
        if not self.cuda:
            yield
            return
        before = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = before

    def _pad(self, x: torch.Tensor, size: int | None = None) -> torch.Tensor:
        size = size or self.batch_size
        if not self.static or x.shape[0] == size:
            return x
        return torch.cat([x, x[-1:].expand(size - x.shape[0], *x.shape[1:])])

    def features(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """Levels of ``[N,3,H,W]`` float32 frames (already padded to the alignment), N <= batch_size + 1."""
        n = frames.shape[0]
        x = self._pad(frames.to(self.dtype), self.batch_size + 1)
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return [level[:n] for level in self.parts[0](x)]

    def flows(self, a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n = a[0].shape[0]
        f01, f10 = self.parts[1]([self._pad(x) for x in a], [self._pad(x) for x in b])
        return [f[:n] for f in f01], [f[:n] for f in f10]

    def synthesize(self, a, b, flow01, flow10, t: torch.Tensor) -> torch.Tensor:
        n = t.shape[0]
        pad = self._pad
        out = self.parts[2]([pad(x) for x in a], [pad(x) for x in b], [pad(x) for x in flow01],
                            [pad(x) for x in flow10], pad(t.to(self.device)))
        return out[:n]


def interpolate(
    model: FilmNet,
    images: torch.Tensor,
    plan: Plan,
    batch_size: int = 1,
    on_frame: Callable[[int], None] | None = None,
    compile: bool = False,
) -> torch.Tensor:
    """Render ``plan`` from IMAGE ``images`` ``[F,H,W,3]``; returns the output IMAGE (float32, CPU).

    ``model`` must already be on its run device; ``on_frame(1)`` is called for every frame written.
    ``batch_size`` bounds the pairs and times in one call of each part (frames: one more); ``compile``
    applies on CUDA.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: must be at least 1, got {batch_size}.")
    run = Runner(model, batch_size, compile)
    height, width = images.shape[1:3]
    align = model.config.align
    box = pad_to(images[:1, ..., :1].permute(0, 3, 1, 2), align)[1]  # the crop back to the frame size
    out = common_frames.new_frames(len(plan.frames), height, width)
    written = 0
    levels: dict[Fraction, list[torch.Tensor]] = {}  # features by absolute time (input frame i at i)
    made: dict[Fraction, torch.Tensor] = {}  # model outputs by absolute time, [3,H,W] float32, clamped

    def write_until(ready: Callable[[OutFrame], bool]) -> None:
        nonlocal written
        first = written
        while written < len(plan.frames) and ready(plan.frames[written]):
            frame = plan.frames[written]
            if frame.needs_model:
                out[written] = made[frame.time].permute(1, 2, 0).cpu()
            else:
                out[written] = images[frame.pair, ..., :3]
            written += 1
            if on_frame:
                on_frame(1)
        if written > first:  # disk-backed frames keep no page resident: those written, and the inputs passed
            common_frames.release(out[first:written])
            common_frames.release(images[: plan.frames[written - 1].pair])

    def frame_at(time: Fraction) -> torch.Tensor:
        if time.denominator == 1:
            return images[int(time), ..., :3].permute(2, 0, 1).to(run.device, torch.float32)
        return made[time]

    def ends(job: Job) -> tuple[Fraction, Fraction]:
        return job.pair + job.a, job.pair + job.b

    with torch.inference_mode(), run.tuned():
        for group in _groups(plan, batch_size):
            levels = {time: lv for time, lv in levels.items() if time == group[0]}  # carried from the last group
            made.clear()
            flows: dict[tuple[Fraction, Fraction], tuple[list, list]] = {}
            for depth in range(max(len(plan.jobs[p]) for p in group)):
                jobs = [j for p in group if depth < len(plan.jobs[p]) for j in plan.jobs[p][depth]]
                needed = sorted({e for j in jobs for e in ends(j)} - levels.keys())
                for chunk in _chunks(needed, batch_size + 1):  # a first group has one frame more
                    padded, _ = pad_to(torch.stack([frame_at(time) for time in chunk]), align)
                    for k, lv in enumerate(zip(*[level.split(1) for level in run.features(padded)])):
                        levels[chunk[k]] = list(lv)
                pairs = sorted({ends(j) for j in jobs} - flows.keys())
                for chunk in _chunks(pairs, batch_size):
                    a = [torch.cat(parts) for parts in zip(*[levels[x] for x, _ in chunk])]
                    b = [torch.cat(parts) for parts in zip(*[levels[y] for _, y in chunk])]
                    f01, f10 = run.flows(a, b)
                    for k, key in enumerate(chunk):
                        flows[key] = ([f[k : k + 1] for f in f01], [f[k : k + 1] for f in f10])
                    host.check_interrupt()
                fused = model.fusion_levels
                for chunk in _chunks(jobs, batch_size):
                    sides = [ends(j) for j in chunk]
                    a = [_gather([levels[x][i] for x, _ in sides]) for i in range(fused)]
                    b = [_gather([levels[y][i] for _, y in sides]) for i in range(fused)]
                    f01 = [_gather([flows[s][0][i] for s in sides]) for i in range(fused)]
                    f10 = [_gather([flows[s][1][i] for s in sides]) for i in range(fused)]
                    t = torch.tensor([[float(j.t)] for j in chunk])
                    result = crop(run.synthesize(a, b, f01, f10, t), box).float().clamp_(0, 1)
                    for j, frame in zip(chunk, result):
                        made[j.pair + j.x] = frame
                    host.check_interrupt()
            last = group[-1]
            carry = Fraction(last + 1)
            levels = {carry: _own(levels[carry])} if carry in levels else {}
            write_until(lambda f: not f.needs_model or f.pair <= last)
        write_until(lambda f: True)
    return out
