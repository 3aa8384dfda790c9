"""``make-tiny-models DIR``: every model the workflows use, tiny and random, in the real on-disk formats."""

from __future__ import annotations

import argparse
import os
import sys

from ..nodes.film import tiny as film_tiny
from ..nodes.music import tiny as music_tiny
from ..nodes.prompts import tiny as prompts_tiny
from ..nodes.streaming import tiny as streaming_tiny
from ..nodes.zeroscope import tiny as zeroscope_tiny

# Each stage's builder: make(models_dir) -> list of written paths.
BUILDERS = (zeroscope_tiny.make, film_tiny.make, prompts_tiny.make, music_tiny.make, streaming_tiny.make)

def make_tiny_models(models_dir: str) -> list[str]:
    """Write every tiny model into the ComfyUI-style ``models_dir``; returns the written paths."""
    os.makedirs(models_dir, exist_ok=True)
    written: list[str] = []
    for make in BUILDERS:
        written += make(models_dir)
    return written


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("make-tiny-models", help=__doc__.split(":")[0], description=__doc__)
    p.add_argument("dir", help="a ComfyUI-style models folder (zeroscope/, film/, ... are created in it)")
    p.set_defaults(handler=lambda args: _run(args.dir))


def _run(models_dir: str) -> int:
    try:
        written = make_tiny_models(models_dir)
    except FileExistsError as exc:
        print(f"make-tiny-models: {exc}", file=sys.stderr)
        return 2
    print(*written, sep="\n")
    return 0
