"""FILM benchmark: batched frame loop vs a one-pair-at-a-time baseline, and peak memory vs clip length.

Speed: frames per second at 576 x 320 with the release architecture (random weights, fp32, CPU unless a GPU
is present) for batch sizes 1, 2 and 4, each divided by the fps of a baseline that works like the
existing ComfyUI FILM node (one pair per forward, gc after each pair, results collected in a list and
concatenated at the end), measured in the same run.

Memory: peak RSS of a fresh process retiming 48 and 480 frames from 8 to 24 fps at a small size with the
tiny-width model; the 480-frame run also holds its 10x larger input and output.

Last line: {"batched_speedup": {"1": r1, "2": r2, "4": r4}, "memory_480_over_48": ratio}.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from fractions import Fraction

import torch
from measure import proc_status

from comfyui_webtv.nodes.film import timing, tiny
from comfyui_webtv.nodes.film.interpolate import interpolate, run_model
from comfyui_webtv.nodes.film.model import FilmConfig, FilmNet


def baseline(model: FilmNet, images: torch.Tensor) -> torch.Tensor:
    """One pair per forward pass, outputs gathered in a list and concatenated (the existing node's loop)."""
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(images.shape[0] - 1):
            x0 = images[i : i + 1].permute(0, 3, 1, 2).to(device)
            x1 = images[i + 1 : i + 2].permute(0, 3, 1, 2).to(device)
            middle = run_model(model, x0, x1, torch.full((1, 1), 0.5))
            out += [x0.cpu(), middle.cpu()]
            gc.collect()
    out.append(images[-1:].permute(0, 3, 1, 2))
    return torch.cat(out).permute(0, 2, 3, 1)


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def speed(width: int, height: int, pairs: int, repeats: int) -> dict[str, float]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = tiny.random_model(FilmConfig(), seed=0).to(device)  # release widths, random weights
    images = torch.rand(pairs + 1, height, width, 3, generator=torch.Generator().manual_seed(0))
    plan = timing.make_plan(timing.multiplier_times(pairs + 1, 2), pairs + 1, "single_shot", True, 4)
    frames = pairs  # interpolated frames per run
    runs = {"baseline": lambda: baseline(model, images)}
    for b in (1, 2, 4):
        runs[f"batch {b}"] = lambda b=b: interpolate(model, images, plan, batch_size=b)
    with torch.inference_mode():  # warm-up
        warm = images[:2].permute(0, 3, 1, 2).to(device)
        run_model(model, warm[:1], warm[1:], torch.full((1, 1), 0.5))
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):  # interleaved, so load changes hit every variant alike
        for name, fn in runs.items():
            seconds[name].append(timed(fn))
    fps = {name: frames / statistics.median(s) for name, s in seconds.items()}
    for name, value in fps.items():
        print(f"{name:>9}: {value:.3f} interpolated frames/s at {width}x{height} on {device.type} "
              f"({pairs} frames, median of {repeats})", flush=True)
    return {str(b): round(fps[f"batch {b}"] / fps["baseline"], 3) for b in (1, 2, 4)}


def memory_child(count: int, size: int) -> None:
    """Retime ``count`` frames 8 -> 24 fps as the node does; print the process's peak RSS."""
    torch.set_num_threads(1)
    images = torch.rand(count, size, size, 3, generator=torch.Generator().manual_seed(0))
    times = timing.rate_times(count, Fraction(8), Fraction(24))
    cuts = timing.detect_cuts(images, 0.5)
    plan = timing.make_plan(times, count, "auto", True, 4, cuts)
    out = interpolate(tiny.random_model(), images, plan, batch_size=4)
    peak_mb = proc_status("VmHWM") / 2**20  # peak RSS; unlike ru_maxrss, not inherited from the parent
    print(json.dumps({"peak_mb": peak_mb, "io_mb": (images.nbytes + out.nbytes) / 2**20, "frames_out": out.shape[0]}))


def memory(size: int) -> float:
    peaks = {}
    for count in (48, 480):
        result = subprocess.run([sys.executable, __file__, "--memory-child", str(count), "--memory-size", str(size)],
                                capture_output=True, text=True, check=True)
        peaks[count] = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{count:>4} frames at {size}x{size} -> {peaks[count]['frames_out']} frames: peak RSS "
              f"{peaks[count]['peak_mb']:.1f} MB (input + output {peaks[count]['io_mb']:.1f} MB)", flush=True)
    return round(peaks[480]["peak_mb"] / peaks[48]["peak_mb"], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="576x320", help="speed test frame size, WIDTHxHEIGHT")
    parser.add_argument("--pairs", type=int, default=4, help="frame pairs per speed run (a multiple of 4 fills every batch)")
    parser.add_argument("--repeats", type=int, default=1, help="speed runs per variant (median)")
    parser.add_argument("--memory-size", type=int, default=32, help="frame side for the memory runs")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.memory_size)
        return
    width, height = (int(v) for v in args.size.split("x"))
    ratios = speed(width, height, args.pairs, args.repeats)
    print(json.dumps({"batched_speedup": ratios, "memory_480_over_48": memory(args.memory_size)}))


if __name__ == "__main__":
    main()
