"""``run``: the whole station headless, without ComfyUI.

A theme in; shot prompts written; per shot a Zeroscope clip, the XL second pass, FILM to the channel's
frame rate, MusicGen music fitted to the clip, an mp4; the ffconcat playlist growing and the channel on
air (the local HLS preview, and RTMP outputs when given). The stages run through the same node classes
ComfyUI runs, so the CLI and a workflow behave alike.

It uses the models found in ``--models``; when any is missing it generates tiny random models (with the
real architectures) into ``--tiny-dir`` and runs on those at small sizes, so the chain runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ..nodes import host
from ..nodes.broadcast import channel as channels
from ..nodes.broadcast.nodes import ChannelAppend, ChannelStop, FFConcatPlaylist, RTMPChannel, SaveVideo
from ..nodes.film.nodes import FilmInterpolate
from ..nodes.music.nodes import FitAudioToVideo, MusicGen, MusicGenLoader
from ..nodes.prompts.nodes import ShotWriter
from ..nodes.zeroscope.nodes import ZeroscopeLoader, ZeroscopeTextToVideo, ZeroscopeXLUpscale

REQUIRED = (("zeroscope", "zeroscope_v2_576w"), ("zeroscope", "zeroscope_v2_XL"), ("film", "film_net_fp32.safetensors"), ("musicgen", "musicgen-small"))
TINY_SIZES = {"width": 64, "height": 64, "xl_width": 128, "xl_height": 96, "steps": 3, "frames": 8, "channel_width": 320, "channel_height": 180}


class Terminal:
    """Prints the running stage's progress on one line of stderr."""

    def __init__(self):
        self.stage = ""
        host.add_progress_listener(self.show)

    def show(self, value: int, total: int) -> None:
        end = "\n" if value >= total else ""
        print(f"\r  {self.stage}: {value}/{total}", end=end, file=sys.stderr, flush=True)

    def begin(self, stage: str) -> None:
        self.stage = stage


def use_models(args) -> bool:
    """Point the engines at real models when all are present, else at tiny ones; True when tiny."""
    host.configure(models_dir=args.models, output_dir=args.output)
    if all(host.find_model(kind, name) for kind, name in REQUIRED):
        return False
    from .tiny import make_tiny_models

    missing = [name for kind, name in REQUIRED if not host.find_model(kind, name)]
    print(f"missing in {args.models}: {', '.join(missing)}; running on tiny random models from {args.tiny_dir}", file=sys.stderr)
    host.configure(models_dir=args.tiny_dir)
    if not all(host.find_model(kind, name) for kind, name in REQUIRED):
        make_tiny_models(args.tiny_dir)
    for key, value in TINY_SIZES.items():
        setattr(args, key, min(getattr(args, key), value))
    return True


def run(args) -> int:
    tiny = use_models(args)
    term = Terminal()
    term.begin("shot writer")
    prompts, _, report = ShotWriter().write(args.theme, args.shots, args.style, args.seed, args.llm, args.llm_url, args.llm_model)
    print(f"shots ({json.loads(report).get('source', '?')}):", *(f"  {i + 1}. {p}" for i, p in enumerate(prompts)), sep="\n", file=sys.stderr)

    t2v = ZeroscopeLoader().load("zeroscope_v2_576w", "auto", False)[0]
    xl = ZeroscopeLoader().load("zeroscope_v2_XL", "auto", False)[0]
    music = MusicGenLoader().load("musicgen-small", "auto", "auto", False)[0]
    clips, status = [], None
    try:
        for i, prompt in enumerate(prompts):
            print(f"shot {i + 1}/{len(prompts)}", file=sys.stderr)
            seed = args.seed + i
            term.begin("text to video")
            frames, prompt, info = ZeroscopeTextToVideo().generate(
                t2v, prompt, args.negative_prompt, seed, args.frames, args.steps, 9.0, args.width, args.height)
            term.begin("XL upscale")
            frames = ZeroscopeXLUpscale().upscale(
                xl, frames, prompt, args.negative_prompt, seed, 0.7, args.steps, 9.0, args.xl_width, args.xl_height, 24)[0]
            term.begin("FILM")
            frames, fps, _ = FilmInterpolate().interpolate(
                frames, "film_net_fp32.safetensors", "frame_rate", 2, args.fps, args.target_fps, "auto", 4, 0.5, 2, "auto")
            term.begin("MusicGen")
            audio = MusicGen().generate(
                music, args.music, "match video", 0.0, fps, 3.0, 1.0, 250, 0.0, seed, 30.0, 12.0, video=frames)[0]
            audio = FitAudioToVideo().fit(audio, frames, fps, "48000", "loop", 0.0, 0.5)[0]
            term.begin("mp4")
            path = SaveVideo().save(frames, fps, "WebTV/station/shot", 19, audio=audio, generation_info=info)["result"][0]
            clips.append(path)
            playlist_path = FFConcatPlaylist().write("", "WebTV/station/channel.ffconcat", "append", "relative", clip=path)["result"][0]
            if status is None:
                status = RTMPChannel().start(
                    playlist_path, args.channel, "\n".join(args.rtmp), True, "clips", args.channel_width,
                    args.channel_height, args.target_fps, 3000, 128, "48000", 2.0, "veryfast")
            else:
                ChannelAppend().append(args.channel, "", clip=path)
            state = channels.get(args.channel).status()
            print(f"on air: {state.get('preview_url')} ({len(clips)} clip(s) in {playlist_path})", file=sys.stderr)
        wait_on_air(args)
        final = channels.get(args.channel).status()
    finally:
        if status is not None:
            ChannelStop().stop(args.channel)
    print(json.dumps({"clips": clips, "playlist": playlist_path, "tiny_models": tiny, "channel": final}, default=str))
    return 0


def wait_on_air(args) -> None:
    """Keep the channel looping for ``--on-air`` seconds (0: until Ctrl-C)."""
    print("channel looping; Ctrl-C stops it" if args.on_air == 0 else f"channel on air for {args.on_air:g} s", file=sys.stderr)
    end = time.monotonic() + args.on_air if args.on_air > 0 else float("inf")
    try:
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
    except KeyboardInterrupt:
        pass


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("run", help="the whole station headless: theme -> clips with music -> playlist -> channel", description=__doc__)
    p.add_argument("--theme", default="a lighthouse keeper's day on a stormy northern island, from dawn to night")
    p.add_argument("--shots", type=int, default=3)
    p.add_argument("--style", default="cinematic, photorealistic, 35mm film")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--llm", choices=["auto", "openai_compatible", "local", "template"], default="auto",
                   help="shot writer backend (the API key comes from WEBTV_LLM_API_KEY or WEBTV_LLM_API_KEY_FILE)")
    p.add_argument("--llm-url", default="", help="an OpenAI-compatible chat endpoint")
    p.add_argument("--llm-model", default="", help="model name at the endpoint, or a folder under models/llm")
    p.add_argument("--negative-prompt", default="blurry, text, watermark, low quality")
    p.add_argument("--music", default="calm ambient score, soft strings and piano, slow tempo")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--width", type=int, default=576)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--xl-width", type=int, default=1024)
    p.add_argument("--xl-height", type=int, default=576)
    p.add_argument("--fps", type=float, default=8.0, help="frame rate of the generated clips")
    p.add_argument("--target-fps", type=float, default=24.0, help="frame rate after FILM, and the channel's")
    p.add_argument("--channel", default="webtv")
    p.add_argument("--channel-width", type=int, default=1024)
    p.add_argument("--channel-height", type=int, default=576)
    p.add_argument("--rtmp", action="append", default=[],
                   help="an rtmp:// or rtmps:// output, key as a placeholder: rtmp://host/app/${STREAM_KEY} (repeatable)")
    p.add_argument("--on-air", type=float, default=0.0, help="seconds to keep broadcasting after the last clip (0: until Ctrl-C)")
    p.add_argument("--models", default=os.path.abspath("models"), help="ComfyUI-style models folder")
    p.add_argument("--output", default=os.path.abspath("output"), help="where clips and the playlist go")
    p.add_argument("--tiny-dir", default=os.path.abspath(".tiny-models"), help="where tiny models are generated when real ones are missing")
    p.set_defaults(handler=run)
