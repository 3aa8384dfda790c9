"""StreamingT2V at a small size: memory and time of the extension loop from 80 to 1200 frames, and the
model evaluations of randomized blending against plain chunked enhancement.

Memory is reported twice. What a user sees: the peak and growth of VmRSS (file-backed pages of the frame
store included; RssFile alone beside it) with the default RAM threshold and with the store on disk from the
first frame, where the peak at 1200 frames over the peak at 300 shows it flat in the frame count. And the peak of
what the process itself holds while extending: its anonymous memory (RssAnon:
model, activations, buffers; not the page cache behind the disk-backed frame store, which the OS writes
back and evicts), sampled every 2 ms; on a GPU, the peak of allocated device memory. Both are absolute
peaks (the model included, as "needs N GB" figures are); the growth above the level at the start of the
run is printed beside them, with what keeping the frames in RAM would add. Finished frames go to the
disk-backed store from the first frame, as they do past the size threshold at real resolutions.

A run with the frames kept in RAM instead is the baseline that shows the store is what keeps memory flat; a
run that does not release finished frames (``frames.release``) shows that releasing them keeps VmRSS flat.
Plain chunked enhancement = every chunk of the same grid denoised on its own (the "independent chunks"
baseline of the paper's ablation). Run: ``python benchmarks/streaming.py [--steps N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time

import torch
from measure import PeakMemory

from comfyui_webtv.nodes.common import frames as frames_mod
from comfyui_webtv.nodes.diffusion import sampler as sampler_mod
from comfyui_webtv.nodes.streaming import extend as extend_mod
from comfyui_webtv.nodes.diffusion import blending
from comfyui_webtv.nodes.streaming import tiny
from comfyui_webtv.nodes.streaming.config import TINY
from comfyui_webtv.nodes.streaming.extend import extend, extension_steps
from comfyui_webtv.nodes.streaming.model import load_model
from comfyui_webtv.nodes.zeroscope.loader import load_model as load_zeroscope
from comfyui_webtv.nodes.diffusion.sampler import video_to_video
from comfyui_webtv.nodes.zeroscope.tiny import save_tiny_model

LENGTHS = (80, 300, 600, 1200)
CONFIG = dataclasses.replace(TINY, resolution=128)  # tiny channels, 128 x 128 frames (16 x 16 latents)


DEFAULT_THRESHOLD = frames_mod.DISK_THRESHOLD_BYTES  # what a user gets (COMFYUI_WEBTV_DISK_FRAMES_MB, 512 MB)


def measure_extension(model, clip, total: int, steps: int, device, on_disk: bool | None = True) -> dict:
    """``on_disk``: True = store on disk from the first frame, False = in RAM, None = the default threshold."""
    chunks = extension_steps(clip.shape[0], total, 8)
    frames_mod.DISK_THRESHOLD_BYTES = {True: 0, False: 2**62, None: DEFAULT_THRESHOLD}[on_disk]
    cpu = torch.device("cpu")
    with PeakMemory(device) as memory, PeakMemory(cpu, field="VmRSS") as rss, PeakMemory(cpu, field="RssFile") as file:
        start = time.perf_counter()
        out = extend(model, clip, "a paper boat on a river", total_frames=total, steps=steps, seed=1)
        seconds = time.perf_counter() - start
    assert out.shape[0] == total and (on_disk is None or frames_mod.is_on_disk(out) == on_disk)
    del out
    return {"frames": total, "chunks": chunks, "peak_mb": memory.peak / 2**20, "growth_mb": memory.growth / 2**20,
            "rss_peak_mb": rss.peak / 2**20, "rss_growth_mb": rss.growth / 2**20, "rss_file_growth_mb": file.growth / 2**20,
            "s_per_step": seconds / chunks}


def count_forwards(module: torch.nn.Module, run) -> int:
    calls = []
    hook = module.register_forward_hook(lambda *a: calls.append(1))
    try:
        run()
    finally:
        hook.remove()
    return len(calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1, help="denoising steps per extension step")
    parser.add_argument("--repeats", type=int, default=3, help="runs per length (medians)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    root = tempfile.mkdtemp(prefix="st2v-bench-")
    base, _, _ = tiny.make(root)
    model = load_model(tiny.write_checkpoint(f"{root}/bench.ckpt", CONFIG, base), base)
    for module in model.modules():
        module.to(device)
    size = model.config.resolution
    clip = torch.rand(16, size, size, 3, generator=torch.Generator().manual_seed(0))
    measure_extension(model, clip, 32, args.steps, device)  # warm-up

    rows = []
    for total in LENGTHS:
        runs = [measure_extension(model, clip, total, args.steps, device) for _ in range(args.repeats if total < 600 else 1)]
        row = {"frames": total, "chunks": runs[0]["chunks"],
               "peak_mb": statistics.median(r["peak_mb"] for r in runs),
               "growth_mb": statistics.median(r["growth_mb"] for r in runs),
               "rss_peak_mb": statistics.median(r["rss_peak_mb"] for r in runs),
               "rss_growth_mb": statistics.median(r["rss_growth_mb"] for r in runs),
               "rss_file_growth_mb": statistics.median(r["rss_file_growth_mb"] for r in runs),
               "s_per_step": statistics.median(r["s_per_step"] for r in runs)}
        row["frames_in_ram_mb"] = total * size * size * 3 * 4 / 2**20  # what frames kept in RAM would add
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))

    release = frames_mod.release  # baseline: the loop without releasing finished frames (as before the fix)
    extend_mod.release = sampler_mod.release = lambda frames: None
    kept = [measure_extension(model, clip, total, args.steps, device) for total in (300, 1200)]
    extend_mod.release = sampler_mod.release = release
    print(json.dumps({"frames_not_released": True, "rss_peak_mb_300": round(kept[0]["rss_peak_mb"], 1),
                      "rss_peak_mb_1200": round(kept[1]["rss_peak_mb"], 1),
                      "rss_file_growth_mb_1200": round(kept[1]["rss_file_growth_mb"], 1),
                      "rss_1200_over_300": round(kept[1]["rss_peak_mb"] / kept[0]["rss_peak_mb"], 3)}))

    in_ram = [measure_extension(model, clip, total, args.steps, device, on_disk=False) for total in (80, 1200)]
    print(json.dumps({"frames_kept_in_ram": True, "peak_mb_80": round(in_ram[0]["peak_mb"], 1),
                      "peak_mb_1200": round(in_ram[1]["peak_mb"], 1),
                      "memory_1200_over_80": round(in_ram[1]["peak_mb"] / in_ram[0]["peak_mb"], 3)}))

    default = [measure_extension(model, clip, total, args.steps, device, on_disk=None) for total in (80, 1200)]
    print(json.dumps({"default_threshold_mb": DEFAULT_THRESHOLD / 2**20, "rss_growth_mb_80": round(default[0]["rss_growth_mb"], 1),
                      "rss_growth_mb_1200": round(default[1]["rss_growth_mb"], 1)}))

    xl = load_zeroscope(save_tiny_model(f"{root}/zeroscope_v2_XL", seed=1))
    for module in xl.modules():
        module.to(device)
    video = torch.rand(80, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    chunk, overlap, steps, strength = 24, 8, 10, 0.6
    starts, covered = blending.chunk_grid(video.shape[0], chunk, overlap)
    blend = count_forwards(xl.unet, lambda: blending.enhance(
        xl, video, "a river", chunk=chunk, overlap=overlap, strength=strength, steps=steps, width=64, height=64))
    plain = count_forwards(xl.unet, lambda: [video_to_video(
        xl, video[s : s + chunk], "a river", strength=strength, steps=steps, seed=i) for i, s in enumerate(starts)])
    print(json.dumps({"chunks": len(starts), "frames": covered, "blend_evals": blend, "plain_evals": plain}))

    first, last = rows[0], rows[-1]
    print(json.dumps({"peak_mb_80": round(first["peak_mb"], 1), "peak_mb_1200": round(last["peak_mb"], 1),
                      "growth_mb_80": round(first["growth_mb"], 1), "growth_mb_1200": round(last["growth_mb"], 1),
                      "s_per_step_1200_over_80": round(last["s_per_step"] / first["s_per_step"], 3),
                      "device": device.type}))
    print(json.dumps({
        "memory_1200_over_80": round(last["peak_mb"] / first["peak_mb"], 3),
        "blend_evals_over_plain": round(blend / plain, 3),
        "rss_1200_over_300_disk": round(last["rss_peak_mb"] / rows[1]["rss_peak_mb"], 3),
        "rss_growth_mb_1200_disk": round(last["rss_growth_mb"], 1),
        "rss_file_growth_mb_1200_disk": round(last["rss_file_growth_mb"], 1),
        "rss_1200_over_300_disk_not_released": round(kept[1]["rss_peak_mb"] / kept[0]["rss_peak_mb"], 3),
        "rss_growth_mb_1200_default_threshold": round(default[1]["rss_growth_mb"], 1),
        "default_threshold_mb": DEFAULT_THRESHOLD / 2**20,
    }))


if __name__ == "__main__":
    main()
