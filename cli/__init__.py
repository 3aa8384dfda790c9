"""Command line: ``python -m comfyui_webtv {run,make-tiny-models}``."""

from __future__ import annotations

import argparse

from . import film, queue, station, streaming, tiny


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyui_webtv", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    station.add_parser(commands)
    tiny.add_parser(commands)
    film.add_parser(commands)
    streaming.add_parser(commands)
    queue.add_parser(commands)
    args = parser.parse_args(argv)
    return args.handler(args)
