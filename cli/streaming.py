"""``convert-streaming-t2v IN.ckpt [OUT.safetensors]``: convert the 25.6 GB StreamingT2V checkpoint to fp16/bf16 safetensors, once."""

from __future__ import annotations

import argparse
import os

from ..nodes.streaming import checkpoint

DTYPES = ("fp16", "bf16", "fp32")


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("convert-streaming-t2v", help=__doc__.split(":")[0], description=__doc__)
    p.add_argument("src", help="streaming_t2v.ckpt from PAIR/StreamingT2V (or a VidXTend .safetensors)")
    p.add_argument("dst", nargs="?", help="output .safetensors (default: beside the input, streaming_t2v_<dtype>.safetensors)")
    p.add_argument("--dtype", choices=DTYPES, default="fp16", help="precision of the converted weights (default fp16)")
    p.add_argument("--no-image-encoder", action="store_true", help="leave out the OpenCLIP image encoder (then load it from models/open_clip)")
    p.set_defaults(handler=_run)


def _run(args) -> int:
    import torch

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    dst = args.dst or os.path.join(os.path.dirname(os.path.abspath(args.src)), f"streaming_t2v_{args.dtype}.safetensors")
    components = tuple(c for c in checkpoint.CONVERTED if not (args.no_image_encoder and c == "image_encoder"))
    counts = checkpoint.convert(args.src, dst, dtype, components)
    print(f"{dst}: " + ", ".join(f"{name} {n} tensors" for name, n in counts.items()) + f", {args.dtype}")
    return 0
