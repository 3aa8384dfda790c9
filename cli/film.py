"""``convert-film IN.pt [OUT.safetensors]``: convert a released FILM TorchScript file to safetensors, once."""

from __future__ import annotations

import argparse

from ..nodes.film import weights


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("convert-film", help=__doc__.split(":")[0], description=__doc__)
    p.add_argument("src", help="film_net_fp32.pt or film_net_fp16.pt from the dajes/frame-interpolation-pytorch releases")
    p.add_argument("dst", nargs="?", help="output .safetensors (default: beside the input, same name)")
    p.add_argument(
        "--time-input", choices=("probe", *weights.TIME_INPUT), default="probe",
        help="whether the model honours t (v1.0.2) or always interpolates the midpoint (v1.0.0); "
        "probe (default) runs the TorchScript model once to find out",
    )
    p.set_defaults(handler=_run)


def _run(args) -> int:
    path = weights.convert(args.src, args.dst, args.time_input)
    state, metadata = weights.read_safetensors(path)
    print(f"{path}: {len(state)} tensors, {metadata['dtype']}, t {metadata['time_input']}")
    return 0
