"""``convert-film IN.pt [OUT.safetensors]``: convert a released FILM TorchScript file to safetensors, once.

Reading a TorchScript archive (torch.jit.load) executes TorchScript code stored in the file, so only
convert files you trust. Files outside the FILM model folders (models/film, or $COMFYUI_WEBTV_MODELS/film)
are refused unless --force is given.
ComfyUI's own FILM files (models/frame_interpolation/film_net_fp16.safetensors) need no conversion.
"""

from __future__ import annotations

import argparse
import os

from ..nodes import host
from ..nodes.film import weights


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("convert-film", help=__doc__.split(": ", 1)[1].split("\n")[0], description=__doc__)
    p.add_argument("src", help="film_net_fp32.pt or film_net_fp16.pt from the dajes/frame-interpolation-pytorch "
                   "releases, in the models folder (torch.jit.load runs code from this file)")
    p.add_argument("dst", nargs="?", help="output .safetensors (default: beside the input, same name)")
    p.add_argument(
        "--time-input", choices=("probe", *weights.TIME_INPUT), default="probe",
        help="whether the model honours t (v1.0.2) or always interpolates the midpoint (v1.0.0); "
        "probe (default) runs the TorchScript model once to find out",
    )
    p.add_argument("--force", action="store_true",
                   help="convert a file outside the FILM model folders (it executes code from that file)")
    p.set_defaults(handler=_run)


def _inside(path: str, folders: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(os.path.commonpath([real, os.path.realpath(f)]) == os.path.realpath(f) for f in folders)


def _run(args) -> int:
    folders = host.model_dirs("film")
    if not args.force and not _inside(args.src, folders):
        raise SystemExit(
            f"convert-film: {args.src} is outside the FILM model folder(s) {', '.join(folders)}. Loading a "
            "TorchScript file executes code stored in it; move a file you trust there, or pass --force."
        )
    path = weights.convert(args.src, args.dst, args.time_input)
    state, metadata = weights.read_safetensors(path)
    print(f"{path}: {len(state)} tensors, {metadata['dtype']}, t {metadata['time_input']}")
    return 0
