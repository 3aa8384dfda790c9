"""``run``: the main job headless, through the engines, without ComfyUI.

It uses the models found in the models folder; where a model is missing it generates tiny random
ones (in ``--tiny-dir``) so the whole chain runs on any machine, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..nodes import host
from ..nodes.broadcast.mp4 import next_output_file, write_mp4
from ..nodes.common.models import on_device
from ..nodes.zeroscope import loader, sampler


def _progress(label: str):
    def show(value: int, total: int) -> None:
        print(f"\r{label}: {value}/{total}", end="\n" if value >= total else "", file=sys.stderr, flush=True)

    return show


def _models_or_tiny(args) -> bool:
    """Point the engines at real models when present, else at generated tiny ones; True when tiny."""
    host.configure(models_dir=args.models, output_dir=args.output)
    if all(host.find_model("zeroscope", n) for n in (args.t2v_model, args.xl_model)):
        return False
    from .tiny import make_tiny_models

    if not os.path.isdir(os.path.join(args.tiny_dir, "zeroscope")):
        print(f"models not found in {args.models}: generating tiny random models in {args.tiny_dir}", file=sys.stderr)
        make_tiny_models(args.tiny_dir)
    host.configure(models_dir=args.tiny_dir)
    return True


def run(args) -> int:
    tiny = _models_or_tiny(args)
    if tiny:
        args.width, args.height, args.xl_width, args.xl_height = 64, 64, 128, 128
        args.steps = min(args.steps, 4)
    t2v = loader.load_cached(args.t2v_model)
    with on_device(*t2v.modules()):
        bar = host.ProgressBar(args.steps)
        remove = host.add_progress_listener(_progress("text to video"))
        frames = sampler.text_to_video(
            t2v, args.prompt, args.negative_prompt, args.frames, args.height, args.width,
            args.steps, args.guidance, args.seed, on_step=lambda i, n: bar.update(1),
        )
        remove()
    xl = loader.load_cached(args.xl_model)
    with on_device(*xl.modules()):
        bar = host.ProgressBar(sampler.strength_step_count(args.steps, args.strength))
        remove = host.add_progress_listener(_progress("XL upscale"))
        frames = sampler.video_to_video(
            xl, sampler.resize_frames(frames, args.xl_height, args.xl_width), args.prompt, args.negative_prompt,
            args.strength, args.steps, args.guidance, args.seed, on_step=lambda i, n: bar.update(1),
        )
        remove()
    path, _, _ = next_output_file("WebTV/clip", "mp4")
    write_mp4(frames, path, args.fps, metadata={"comment": json.dumps({"prompt": args.prompt, "seed": args.seed, "tiny_models": tiny})})
    print(json.dumps({"video": path, "frames": frames.shape[0], "tiny_models": tiny}))
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("run", help="run the pipeline headless and write the mp4", description=__doc__)
    p.add_argument("--prompt", default="a lighthouse on a cliff at sunset, waves crashing, slow pan right, golden light")
    p.add_argument("--negative-prompt", default="blurry, text, watermark")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--guidance", type=float, default=9.0)
    p.add_argument("--strength", type=float, default=0.7)
    p.add_argument("--width", type=int, default=576)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--xl-width", type=int, default=1024)
    p.add_argument("--xl-height", type=int, default=576)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--t2v-model", default="zeroscope_v2_576w")
    p.add_argument("--xl-model", default="zeroscope_v2_XL")
    p.add_argument("--models", default=os.path.abspath("models"), help="ComfyUI-style models folder")
    p.add_argument("--output", default=os.path.abspath("output"), help="where the mp4 goes")
    p.add_argument("--tiny-dir", default=os.path.abspath(".tiny-models"), help="where tiny models are generated when real ones are missing")
    p.set_defaults(handler=run)
