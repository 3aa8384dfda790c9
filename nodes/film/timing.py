"""Output timestamps, model-call schedules and scene cuts, in exact arithmetic.

Times are :class:`~fractions.Fraction` s in units of input frames: input frame i is at time i, so an
output frame at 7/3 lies a third of the way from input frame 2 to input frame 3. Two strategies reach a
time t between two input frames:

- ``single_shot``: one model call at t (weights whose code honours t, release v1.0.2);
- ``bisection``: only midpoints (t = 1/2) of frames already known, recursively, so only dyadic times
  p / 2**k are reachable (weights that ignore t, release v1.0.0). Other targets are rounded to the
  nearest multiple of 2**-depth, and the frame carries the time it really shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from ..common import checks

STRATEGIES = ("auto", "single_shot", "bisection")
HALF = Fraction(1, 2)


@dataclass(frozen=True)
class OutFrame:
    """One output frame: what it shows is input ``pair`` + ``t`` (t = 0: input frame ``pair`` itself)."""

    requested: Fraction
    pair: int
    t: Fraction = Fraction(0)
    hold: bool = False  # across a scene cut the earlier frame is held instead of morphing

    @property
    def time(self) -> Fraction:
        """The time the frame really shows, in input frames."""
        return self.pair + self.t

    @property
    def needs_model(self) -> bool:
        """False for an input frame shown as is (``t == 0``)."""
        return self.t != 0


@dataclass(frozen=True)
class Job:
    """One model call: the frame at ``x`` of ``pair`` from the known frames at ``a`` and ``b`` (0 and 1 are inputs)."""

    pair: int
    x: Fraction
    a: Fraction
    b: Fraction

    @property
    def t(self) -> Fraction:
        """Where ``x`` lies between ``a`` and ``b`` (0..1)."""
        return (self.x - self.a) / (self.b - self.a)


def as_rate(value: float, input_name: str) -> Fraction:
    """A frame rate as an exact fraction of its decimal text (23.976 -> 2997/125)."""
    return Fraction(repr(checks.positive(input_name, value))).limit_denominator(10**6)


def multiplier_times(count: int, multiplier: int) -> list[Fraction]:
    """``multiplier - 1`` frames between each pair: (count - 1) * multiplier + 1 times, k / multiplier."""
    if multiplier < 1:
        raise ValueError(f"multiplier: must be at least 1, got {multiplier}.")
    return [Fraction(k, multiplier) for k in range((count - 1) * multiplier + 1)]


def rate_times(count: int, source_fps: Fraction, target_fps: Fraction) -> list[Fraction]:
    """Output times at exact multiples of the output period, covering the input's duration (count / source_fps).

    Times past the last input frame (the last input period) hold the last frame.
    """
    if target_fps < source_fps:
        raise ValueError(
            f"target_fps: {float(target_fps):g} is lower than source_fps {float(source_fps):g}; FILM only adds "
            "frames. Raise target_fps, or drop frames with a frame-rate node after this one."
        )
    step = source_fps / target_fps  # output period in input frames
    return [k * step for k in range(rate_count(count, source_fps, target_fps))]


def rate_count(count: int, source_fps: Fraction, target_fps: Fraction) -> int:
    """The number of output frames of :func:`rate_times` (known before the times are made)."""
    return math.ceil(count * target_fps / source_fps)


def dyadic(t: Fraction, depth: int) -> Fraction:
    """The multiple of 2**-depth nearest to ``t`` (halves round up)."""
    scale = 1 << depth
    return Fraction(math.floor(t * scale + HALF), scale)


def is_dyadic(t: Fraction, depth: int) -> bool:
    """True when ``t`` is a multiple of 2**-depth."""
    return (t * (1 << depth)).denominator == 1


def place(times: list[Fraction], count: int, bisect_depth: int | None = None) -> list[OutFrame]:
    """Map output times to (pair, t); with ``bisect_depth``, round t to the nearest dyadic of that depth.

    Times past the last input frame hold it.
    """
    frames = []
    for requested in times:
        if requested > count - 1:
            frames.append(OutFrame(requested, count - 1, Fraction(0), True))
            continue
        pair = min(math.floor(requested), count - 1)
        t = requested - pair
        if bisect_depth is not None:
            t = dyadic(t, bisect_depth)
            if t == 1:
                pair, t = pair + 1, Fraction(0)
        frames.append(OutFrame(requested, pair, t))
    return frames


def hold_cuts(frames: list[OutFrame], cut_pairs: set[int]) -> list[OutFrame]:
    """Frames between the two sides of a cut show the earlier frame, so the cut stays at its time."""
    return [OutFrame(f.requested, f.pair, Fraction(0), True) if f.needs_model and f.pair in cut_pairs else f for f in frames]


def pair_jobs(pair: int, targets: set[Fraction], strategy: str) -> list[list[Job]]:
    """The model calls that produce ``targets`` (times in (0, 1)) of one pair, in dependency levels."""
    if strategy == "single_shot":
        return [[Job(pair, x, Fraction(0), Fraction(1)) for x in sorted(targets)]] if targets else []
    levels: dict[int, set[Job]] = {}
    todo = list(targets)
    while todo:
        x = todo.pop()
        depth = x.denominator.bit_length() - 1
        if x.denominator != 1 << depth:
            raise ValueError(f"bisection reaches only dyadic times, not {x}")
        half = Fraction(1, x.denominator)
        job = Job(pair, x, x - half, x + half)
        if job not in levels.setdefault(depth, set()):
            levels[depth].add(job)
            todo += [e for e in (job.a, job.b) if 0 < e < 1]
    return [sorted(levels[d], key=lambda j: j.x) for d in sorted(levels)]


def schedule(frames: list[OutFrame], strategy: str) -> dict[int, list[list[Job]]]:
    """Model calls per pair (pairs in order), for every frame that needs the model."""
    targets: dict[int, set[Fraction]] = {}
    for f in frames:
        if f.needs_model:
            targets.setdefault(f.pair, set()).add(f.t)
    return {pair: pair_jobs(pair, ts, strategy) for pair, ts in sorted(targets.items())}


def call_count(jobs: dict[int, list[list[Job]]]) -> int:
    """The number of frames the model makes in ``jobs`` (one synthesis each)."""
    return sum(len(level) for levels in jobs.values() for level in levels)


# Relative cost of the model's parts, from a CPU fp32 profile of whole calls at 576 x 320 (issue 13):
# 22-26 % features of the two frames, 31-33 % the two flows of the pair, 39-43 % fusion.
COST = {"features": 0.12, "flows": 0.32, "synthesize": 0.41}


def work(jobs: dict[int, list[list[Job]]]) -> dict[str, int]:
    """How often each part of the model runs when shared as far as ``jobs`` allow: features once per frame
    used (input or made), flows once per pair of known frames, synthesis once per frame made."""
    calls = [j for levels in jobs.values() for level in levels for j in level]
    return {
        "features": len({j.pair + e for j in calls for e in (j.a, j.b)}),
        "flows": len({(j.pair + j.a, j.pair + j.b) for j in calls}),
        "synthesize": len(calls),
    }


def cost(jobs: dict[int, list[list[Job]]]) -> float:
    """The relative cost of ``jobs`` (see :data:`COST`)."""
    return sum(COST[part] * n for part, n in work(jobs).items())


@dataclass
class Plan:
    """Everything a run does: output frames with their exact times, the strategy, the model calls."""

    frames: list[OutFrame]
    strategy: str
    jobs: dict[int, list[list[Job]]]
    cut_pairs: list[int]

    def report(self, fps: Fraction | None) -> dict:
        """A JSON-ready summary (the node's ``timing`` output)."""
        errors = [abs(f.time - f.requested) for f in self.frames if not f.hold]
        done = work(self.jobs)
        return {
            "strategy": self.strategy,
            "output_frames": len(self.frames),
            "output_fps": float(fps) if fps else None,
            "model_calls": call_count(self.jobs),
            "feature_frames": done["features"],
            "flow_pairs": done["flows"],
            "interpolated_frames": sum(f.needs_model for f in self.frames),
            "max_time_error_frames": float(max(errors, default=0)),
            "scene_cuts_after_frames": self.cut_pairs,
            "held_frames": sum(f.hold for f in self.frames),
        }


def make_plan(
    times: list[Fraction],
    count: int,
    strategy: str,
    honours_t: bool,
    bisect_depth: int,
    cut_pairs: set[int] = frozenset(),
) -> Plan:
    """Choose the strategy and lay out the frames and model calls.

    ``auto`` bisects when the weights ignore t, and also when every target is already dyadic and bisection
    costs no more (t = 1/2 is what FILM was trained on; in practice only at x2, where both are the same calls:
    bisection needs the flows and features of every midpoint it makes, a single shot shares one pair's flows
    among all its times); otherwise it makes each frame in one shot.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}.")
    if strategy == "single_shot" and not honours_t:
        raise ValueError(
            "strategy: single_shot needs weights whose code honours t (release v1.0.2), but these ignore it "
            "(v1.0.0) and would put every frame at the midpoint. Use auto or bisection, or convert v1.0.2."
        )
    if bisect_depth < 1:
        raise ValueError(f"bisection_depth: must be at least 1, got {bisect_depth}.")
    cuts = sorted(cut_pairs)
    if strategy == "auto":
        if not honours_t:
            strategy = "bisection"
        else:
            exact = hold_cuts(place(times, count), cut_pairs)
            single = schedule(exact, "single_shot")
            if all(is_dyadic(f.t, bisect_depth) for f in exact):
                bisect = schedule(exact, "bisection")
                if cost(bisect) <= cost(single):
                    return Plan(exact, "bisection", bisect, cuts)
            return Plan(exact, "single_shot", single, cuts)
    frames = hold_cuts(place(times, count, bisect_depth if strategy == "bisection" else None), cut_pairs)
    return Plan(frames, strategy, schedule(frames, strategy), cuts)


# ---------------------------------------------------------------- scene cuts

def luma_histograms(images: torch.Tensor, bins: int = 32, chunk: int = 16) -> torch.Tensor:
    """Normalised luma histograms ``[frames, bins]`` of an IMAGE batch, ``chunk`` frames at a time.

    Large frames are sampled on a grid of at most about 256 pixels a side, which keeps the histograms.
    """
    out = torch.empty(images.shape[0], bins)
    weights = torch.tensor([0.299, 0.587, 0.114])
    stride = max(1, max(images.shape[1:3]) // 256)
    for start in range(0, images.shape[0], chunk):
        rgb = images[start : start + chunk, ::stride, ::stride, :3].float()
        index = ((rgb @ weights).flatten(1) * bins).long().clamp_(0, bins - 1)
        counts = torch.zeros(index.shape[0], bins).scatter_add_(1, index, torch.ones(index.shape))
        out[start : start + index.shape[0]] = counts / index.shape[1]
    return out


def cut_scores(images: torch.Tensor) -> torch.Tensor:
    """Per consecutive pair, the total-variation distance of the luma histograms, 0 (same) to 1 (disjoint)."""
    hist = luma_histograms(images)
    return 0.5 * (hist[1:] - hist[:-1]).abs().sum(dim=1)


def detect_cuts(images: torch.Tensor, threshold: float) -> set[int]:
    """Pairs (by their first frame) whose score exceeds ``threshold``; threshold 1 turns detection off."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"scene_cut_threshold: must be between 0 and 1 (1 turns detection off), got {threshold}.")
    if threshold >= 1:
        return set()
    return {int(i) for i in torch.nonzero(cut_scores(images) > threshold).flatten()}
