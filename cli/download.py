"""``download-models``: fetch the models ``run`` needs from the Hugging Face Hub into the models folder.

Exactly the models the station's workflow loads: Zeroscope v2 576w and XL (their unet, vae, text
encoder, tokenizer and scheduler sub-folders), MusicGen small (the transformers files), and the FILM
weights (film_net_fp32.pt from the frame-interpolation-pytorch release, converted to safetensors). A
complete model is skipped; an interrupted download continues where it stopped. HF_ENDPOINT chooses
the Hub (a mirror); HF_HUB_OFFLINE=1 refuses to download. Sizes: the README's "Models" section.
"""

from __future__ import annotations

import argparse
import os
import sys

# Approximate size of each download, from the Hub's file listings (GB).
SIZES_GB = {"zeroscope_v2_576w": 3.7, "zeroscope_v2_XL": 3.7, "musicgen-small": 2.4, "film_net_fp32.safetensors": 0.14}


def size_text(needs: list[tuple[str, str]]) -> str:
    """The download size of ``needs`` in words."""
    known = [SIZES_GB[name] for _, name in needs if name in SIZES_GB]
    return f"{sum(known):.1f} GB" + ("" if len(known) == len(needs) else " and more")


def complete(kind: str, name: str) -> bool:
    """True when model ``name`` is in the models folder with every file its loader reads."""
    from ..nodes import host

    path = host.find_model(kind, name)
    if path is None:
        return False
    if kind == "zeroscope":
        from ..nodes.zeroscope import loader

        return not loader.missing_files(path)
    if kind == "musicgen":
        from ..nodes.music import loader

        return not loader.missing_files(path, loader.detect_backend(path))
    return True


def fetch(needs: list[tuple[str, str]], models_dir: str) -> None:
    """Download every model of ``needs`` (kind, name) that is not complete in ``models_dir``."""
    from ..nodes import host

    host.configure(models_dir=models_dir)
    for kind, name in needs:
        if complete(kind, name):
            continue
        if kind == "zeroscope":
            from ..nodes.zeroscope import loader

            loader.resolve_folder(name, download_if_missing=True)
        elif kind == "musicgen":
            from ..nodes.music import loader

            loader.resolve_folder(name, "transformers", download_if_missing=True)
        else:
            fetch_film(name, host.model_dirs("film")[0])


def fetch_film(name: str, folder: str) -> str:
    """``film_net_fp32.pt`` (or fp16) from the release, converted to ``name`` (safetensors) in ``folder``."""
    from ..nodes.common import hub
    from ..nodes.film import weights

    stem = os.path.splitext(name)[0]
    if stem not in ("film_net_fp32", "film_net_fp16"):
        raise FileNotFoundError(f"model_name: no release file is known for the FILM weights '{name}'; convert them by hand.")
    src = hub.fetch_file(f"{weights.RELEASES}/{weights.RELEASE_TAG}/{stem}.pt", os.path.join(folder, stem + ".pt"), name)
    dst = weights.convert(src, os.path.join(folder, name))
    os.remove(src)
    return dst


def run(args) -> int:
    from ..nodes.common import hub
    from ..workflow import runner
    from .station import needed_models

    if hub.offline():
        print("download-models: error: HF_HUB_OFFLINE is set, so nothing can be downloaded; unset it (or set HF_HUB_OFFLINE=0)", file=sys.stderr)
        return 2
    if os.path.exists(args.models) and not os.path.isdir(args.models):
        print(f"download-models: error: --models {args.models}: is a file; give a folder", file=sys.stderr)
        return 2
    needs = needed_models(runner.load(args.workflow))
    print(f"models for {os.path.basename(args.workflow)}: {', '.join(n for _, n in needs)} (about {size_text(needs)} in all)", file=sys.stderr)
    try:
        fetch(needs, os.path.abspath(args.models))
    except (ConnectionError, FileNotFoundError) as e:
        print(f"download-models: error: {e}".replace("\n", " "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    print(f"models ready in {os.path.abspath(args.models)}", file=sys.stderr)
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    from .station import WORKFLOW

    p = commands.add_parser("download-models", help="fetch the models run needs", description=__doc__)
    p.add_argument("--models", default="models", help="ComfyUI-style models folder to fill (zeroscope/, film/, musicgen/)")
    p.add_argument("--workflow", default=WORKFLOW, help="fetch the models this workflow loads")
    p.set_defaults(handler=run)
