"""MusicGen: time and peak memory of 10 s against 90 s of music on the tiny model.

90 s is past MusicGen's 30-second window, so it runs as windowed continuation with the defaults
(30 s windows, 12 s of context, 10 s decode chunks); 10 s is a single window. Each length runs in a
fresh process, after a short warm-up generation, ``--repeats`` times; the medians are compared.

Memory is the peak of the process's anonymous memory (RssAnon: what it holds itself, not the page
cache behind the disk-backed output waveform) above its level just before the run, sampled every
few milliseconds; on a GPU it is the peak of allocated device memory above the level before. The
output waveform goes to the disk-backed store, as it does past the size threshold for long pieces.
The children run with glibc's mmap threshold pinned at its default (128 KiB): left dynamic, glibc
raises it whenever a large buffer is freed and keeps later ones in its heap, so RSS grows with the
number of windows by what the allocator retains (about 1.2-1.3x here at 90 s), not by what the
generator holds.

Goal: memory within 10 % (flat in duration), time about 9x plus the context re-reading of each
window (linear in duration). Last line: {"memory_90s_over_10s": ..., "time_90s_over_10s": ...}.
Run: ``python benchmarks/musicgen.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from measure import PeakMemory

LENGTHS = (10.0, 90.0)


def child(folder: str, seconds: float) -> None:
    """One measurement in this process; prints one JSON line."""
    import transformers

    from comfyui_webtv.nodes.common import frames as frames_mod
    from comfyui_webtv.nodes.common.models import on_device
    from comfyui_webtv.nodes.music import generate, loader
    from comfyui_webtv.nodes.music.sampling import Sampling

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)  # the token loop of a tiny model is latency-bound
    frames_mod.DISK_THRESHOLD_BYTES = 0  # the output waveform to the disk-backed store
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = loader.load_model(folder, "transformers")
    samples = generate.total_samples(seconds, model.sample_rate)
    with on_device(*model.modules(), device=device):
        generate.generate_music(model, ["warm-up"], model.sample_rate // 5, Sampling(), seed=1)
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            out = generate.generate_music(model, ["lofi hip hop beat with warm piano"], samples, Sampling(), seed=0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
    assert out.shape[-1] == samples and frames_mod.is_on_disk(out)
    print(json.dumps({"seconds": seconds, "time_s": elapsed, "peak_bytes": memory.growth}))


def measure(folder: str, seconds: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", folder, str(seconds)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per length (medians are compared)")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], float(args.child[1]))
        return

    from comfyui_webtv.nodes.music import tiny

    with tempfile.TemporaryDirectory() as scratch:
        folder = tiny.save_tiny_model(os.path.join(scratch, "musicgen-small"))
        runs = {seconds: [] for seconds in LENGTHS}
        for _ in range(args.repeats):
            for seconds in LENGTHS:  # interleaved, so machine noise hits both lengths alike
                result = measure(folder, seconds)
                runs[seconds].append(result)
                print(f"{seconds:5.0f} s of music: {result['time_s']:7.2f} s, peak {result['peak_bytes'] / 2**20:7.1f} MiB", flush=True)
    time_s = {s: statistics.median(r["time_s"] for r in runs[s]) for s in LENGTHS}
    peak = {s: statistics.median(r["peak_bytes"] for r in runs[s]) for s in LENGTHS}
    short, long = LENGTHS
    print(json.dumps({
        "memory_90s_over_10s": round(peak[long] / peak[short], 3),
        "time_90s_over_10s": round(time_s[long] / time_s[short], 3),
    }))


if __name__ == "__main__":
    main()
