"""Overhead of the Zeroscope nodes on one tiny model in one process.

- node_over_pipeline: median time of the Text to Video node over a direct call of diffusers'
  (deprecated) TextToVideoSDPipeline on the same weights, seed and settings (goal: <= 1.05);
- cached_over_cold: Loader + Text to Video on a second run (model cached) over the first run (loaded
  from disk).

Runs are interleaved and repeated, and medians compared, because this machine is shared and noisy.
The last line printed is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from comfyui_webtv.cli.tiny import make_tiny_models
from comfyui_webtv.nodes import host
from comfyui_webtv.nodes.zeroscope.nodes import ZeroscopeLoader, ZeroscopeTextToVideo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as models_dir, tempfile.TemporaryDirectory() as out:
        make_tiny_models(models_dir)
        host.configure(models_dir=models_dir, output_dir=out)
        settings = dict(frames=args.frames, steps=args.steps, guidance=9.0, width=args.size, height=args.size)
        prompt = "a paper boat on a river, drifting left, soft morning light"

        def node_run() -> torch.Tensor:
            model = ZeroscopeLoader().load("zeroscope_v2_576w", "auto", False)[0]
            return ZeroscopeTextToVideo().generate(model, prompt, "", 0, **settings)[0]

        start = time.perf_counter()
        node_run()
        cold = time.perf_counter() - start

        from diffusers.pipelines.deprecated import TextToVideoSDPipeline

        model = ZeroscopeLoader().load("zeroscope_v2_576w", "auto", False)[0]
        pipe = TextToVideoSDPipeline(
            vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
            scheduler=model.new_scheduler(),
        )
        pipe.set_progress_bar_config(disable=True)

        def pipeline_run():
            return pipe(
                prompt, num_frames=args.frames, height=args.size, width=args.size, num_inference_steps=args.steps,
                guidance_scale=9.0, generator=torch.Generator().manual_seed(0), output_type="np",
            ).frames[0]

        node_times, pipe_times = [], []
        for _ in range(args.repeats):
            for run, times in ((node_run, node_times), (pipeline_run, pipe_times)):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)

    figures = {
        "node_over_pipeline": round(statistics.median(node_times) / statistics.median(pipe_times), 3),
        "cached_over_cold": round(statistics.median(node_times) / cold, 3),
    }
    print(f"node median {statistics.median(node_times):.3f} s, pipeline median {statistics.median(pipe_times):.3f} s, cold first run {cold:.3f} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
