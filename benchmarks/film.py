"""FILM benchmark: the shared frame loop against one call per frame and against ComfyUI core's scheme.

Speed, at --size (release widths, random weights, fp32, CPU unless a GPU is present), for x2, x4, 8 -> 24
and 24 -> 60, in one run on the same weights and frames:
- shared: this pack's loop (features once per frame, flows once per pair, fusion batched over times);
- unshared: the previous loop, kept here as it was: one whole forward pass for every frame made;
- core: core's FrameInterpolate scheme re-expressed with our model parts: a frame's features shared by its
  two pairs, a pair's flows (one pass per direction) shared by its times, one fusion per time, the output
  preallocated in memory; integer multipliers only, so 8 -> 24 is x3 and 24 -> 60 is x5 minus dropped frames.
Frames per second count the frames each case asks for; the three agree to max_abs_diff.

Memory: RssAnon peak of fresh processes multiplying 48 and 1200 disk-backed input frames x4 with the
tiny-width model, the output disk-backed as the node does (the store's threshold lowered to 8 MB so that
small frames use it as long clips at real sizes do), or preallocated in memory as core does.

Last line: {"speedup_x4_vs_unshared", "speedup_24_60_vs_unshared", "time_x4_over_core_scheme",
"time_24_60_over_core_scheme", "max_abs_diff", "memory_1200_over_48", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from fractions import Fraction

import torch
from measure import PeakMemory

from comfyui_webtv.nodes.common import frames as common_frames
from comfyui_webtv.nodes.film import interpolate as film_loop
from comfyui_webtv.nodes.film import timing, tiny
from comfyui_webtv.nodes.film.model import FilmConfig, FilmNet

CASES = {  # name: (input frames, source fps, target fps or None, multiplier)
    "x2": (3, Fraction(24), None, 2),
    "x4": (2, Fraction(24), None, 4),
    "8->24": (3, Fraction(8), Fraction(24), 3),
    "24->60": (3, Fraction(24), Fraction(60), 5),
}


def old_groups(plan: timing.Plan, batch_size: int) -> list[list[int]]:
    """The previous grouping: consecutive pairs gathered until their first level of calls fills a batch."""
    groups, current, filled = [], [], 0
    for pair, levels in plan.jobs.items():
        current.append(pair)
        filled += len(levels[0])
        if filled >= batch_size:
            groups.append(current)
            current, filled = [], 0
    return groups + [current] if current else groups


def unshared(model: FilmNet, images: torch.Tensor, plan: timing.Plan, batch_size: int) -> torch.Tensor:
    """The previous frame loop: each group's jobs level by level, both frames of every job stacked and sent
    through the whole model (features, flows and fusion again for every frame made)."""
    device = next(model.parameters()).device
    out = common_frames.new_frames(len(plan.frames), *images.shape[1:3])
    cache: dict = {}

    def source(job, x):
        if x == 0 or x == 1:
            return images[job.pair + int(x)].permute(2, 0, 1).to(device, torch.float32)
        return cache[(job.pair, x)]

    with torch.inference_mode():
        for group in old_groups(plan, batch_size):
            for level in range(max(len(plan.jobs[p]) for p in group)):
                jobs = [j for p in group if level < len(plan.jobs[p]) for j in plan.jobs[p][level]]
                for start in range(0, len(jobs), batch_size):
                    chunk = jobs[start : start + batch_size]
                    x0 = torch.stack([source(j, j.a) for j in chunk])
                    x1 = torch.stack([source(j, j.b) for j in chunk])
                    t = torch.tensor([[float(j.t)] for j in chunk])
                    for j, frame in zip(chunk, film_loop.run_model(model, x0, x1, t)):
                        cache[(j.pair, j.x)] = frame
        for k, f in enumerate(plan.frames):
            out[k] = cache[(f.pair, f.t)].permute(1, 2, 0).cpu() if f.needs_model else images[f.pair]
    return out


def core_scheme(model: FilmNet, images: torch.Tensor, multiplier: int) -> torch.Tensor:
    """Core's FrameInterpolate loop with our parts (sizes here are multiples of 64, so no padding)."""
    device = next(model.parameters()).device
    count, height, width = images.shape[:3]
    result = torch.empty((count - 1) * multiplier + 1, 3, height, width)  # preallocated, in memory
    times = [k / multiplier for k in range(1, multiplier)]
    fusion = model.fusion_levels
    with torch.inference_mode():
        result[0] = images[0].permute(2, 0, 1)
        index, carried = 1, None
        for i in range(count - 1):
            a = carried if carried is not None else model.features(images[i : i + 1].permute(0, 3, 1, 2).to(device))
            b = carried = model.features(images[i + 1 : i + 2].permute(0, 3, 1, 2).to(device))
            fa, fb = [x[:, 3:] for x in a], [x[:, 3:] for x in b]
            flow01 = model.predict_flow(fa, fb)[:fusion]
            flow10 = model.predict_flow(fb, fa)[:fusion]
            for t in times:  # one fusion per time
                result[index] = model.synthesize(a, b, flow01, flow10, torch.tensor([[t]]))[0].cpu()
                index += 1
            result[index] = images[i + 1].permute(2, 0, 1)
            index += 1
    return result.permute(0, 2, 3, 1).clamp_(0, 1)


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, value


def speed(width: int, height: int, repeats: int, batch_size: int) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = tiny.random_model(FilmConfig(), seed=0).to(device)  # release widths, random weights
    results, worst = {}, 0.0
    warm = torch.rand(2, height, width, 3)
    warm_plan = timing.make_plan(timing.multiplier_times(2, 2), 2, "auto", True, 4)
    film_loop.interpolate(model, warm, warm_plan, batch_size)  # one-time costs (kernels, allocator) untimed
    unshared(model, warm, warm_plan, batch_size)
    core_scheme(model, warm, 2)
    for name, (count, source, target, multiplier) in CASES.items():
        images = torch.rand(count, height, width, 3, generator=torch.Generator().manual_seed(count))
        times = timing.rate_times(count, source, target) if target else timing.multiplier_times(count, multiplier)
        plan = timing.make_plan(times, count, "auto", True, 4)
        runs = {
            "shared": lambda: film_loop.interpolate(model, images, plan, batch_size),
            "unshared": lambda: unshared(model, images, plan, batch_size),
            "core": lambda: core_scheme(model, images, multiplier),
        }
        seconds: dict[str, list[float]] = {v: [] for v in runs}
        outputs = {}
        for _ in range(repeats):  # interleaved, so load changes hit every variant alike
            for variant, fn in runs.items():
                s, outputs[variant] = timed(fn)
                seconds[variant].append(s)
        # Core's output holds every 1/multiplier; compare the frames the plan shows (not its end holds).
        shown = [(k, f) for k, f in enumerate(plan.frames) if not f.hold]
        core_index = [int(f.requested * multiplier) for _, f in shown]
        ours = outputs["shared"][[k for k, _ in shown]]
        diff = max((ours - outputs["core"][core_index]).abs().max().item(),
                   (outputs["shared"] - outputs["unshared"]).abs().max().item())
        worst = max(worst, diff)
        median = {v: statistics.median(s) for v, s in seconds.items()}
        frames = len(plan.frames)
        results[name] = median
        print(f"{name:>7} ({count} frames -> {frames}, {plan.strategy}, {plan.report(None)['model_calls']} made): "
              + ", ".join(f"{v} {frames / median[v]:.3f} fps" for v in runs)
              + f"; max abs diff {diff:.2e} ({width}x{height}, {device.type}, batch {batch_size}, median of {repeats})",
              flush=True)
    return {"times": results, "max_abs_diff": worst}


def memory_child(count: int, size: int, in_memory: bool) -> None:
    """Multiply ``count`` disk-backed frames x4; print the RssAnon peak of the run."""
    torch.set_num_threads(1)
    images = common_frames.new_frames(count, size, size, on_disk=True)
    g = torch.Generator().manual_seed(0)
    for start in range(0, count, 64):
        images[start : start + 64] = torch.rand(min(64, count - start), size, size, 3, generator=g)
    if in_memory:
        common_frames.DISK_THRESHOLD_BYTES = 1 << 62  # core's way: the whole output preallocated in memory
    plan = timing.make_plan(timing.multiplier_times(count, 4), count, "auto", True, 4)
    model = tiny.random_model()
    with PeakMemory(torch.device("cpu")) as peak:
        out = film_loop.interpolate(model, images, plan, batch_size=4)
    print(json.dumps({"peak_mb": peak.peak / 2**20, "frames_out": out.shape[0], "on_disk": common_frames.is_on_disk(out)}))


def memory(size: int) -> dict[str, float]:
    peaks = {}
    for count, in_memory in ((48, False), (1200, False), (1200, True)):
        args = [sys.executable, __file__, "--memory-child", str(count), "--memory-size", str(size)]
        result = subprocess.run(args + (["--in-memory"] if in_memory else []), capture_output=True, text=True,
                                check=True, env=dict(os.environ, COMFYUI_WEBTV_DISK_FRAMES_MB="8"))
        peaks[(count, in_memory)] = peak = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{count:>4} frames x4 at {size}x{size} -> {peak['frames_out']} frames, output "
              f"{'on disk' if peak['on_disk'] else 'in memory'}: RssAnon peak {peak['peak_mb']:.1f} MB", flush=True)
    base = peaks[(48, False)]["peak_mb"]
    return {"memory_1200_over_48": round(peaks[(1200, False)]["peak_mb"] / base, 3),
            "memory_1200_in_memory_output_over_48": round(peaks[(1200, True)]["peak_mb"] / base, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="576x320", help="speed frame size WIDTHxHEIGHT (multiples of 64)")
    parser.add_argument("--repeats", type=int, default=1, help="speed runs per variant (median)")
    parser.add_argument("--batch-size", type=int, default=2, help="batch size of the shared and unshared loops")
    parser.add_argument("--memory-size", type=int, default=64, help="frame side for the memory runs")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.memory_size, args.in_memory)
        return
    width, height = (int(v) for v in args.size.split("x"))
    measured = speed(width, height, args.repeats, args.batch_size)
    t = measured["times"]
    summary = {
        "size": f"{width}x{height}",
        **{f"speedup_{k.replace('->', '_')}_vs_unshared": round(t[k]["unshared"] / t[k]["shared"], 3) for k in CASES},
        **{f"time_{k.replace('->', '_')}_over_core_scheme": round(t[k]["shared"] / t[k]["core"], 3) for k in CASES},
        "max_abs_diff": measured["max_abs_diff"],
        **memory(args.memory_size),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
