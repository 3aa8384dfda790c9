"""Finding and loading MusicGen models from ``models/musicgen/<name>``.

Two on-disk layouts are read:

- transformers (the default backend): ``config.json`` (model_type ``musicgen`` or ``musicgen_melody``),
  ``model.safetensors`` or ``pytorch_model.bin`` (or their shards) and the T5 tokenizer
  (``tokenizer.json`` or ``spiece.model``);
- audiocraft (optional backend, ``pip install audiocraft``): ``state_dict.bin`` + ``compression_state_dict.bin``.

The Hugging Face repositories ``facebook/musicgen-*`` hold both, so one download serves either backend.
The weights are licensed CC-BY-NC-4.0 (non-commercial).
"""

from __future__ import annotations

import glob
import json
import os

import torch

from .. import host
from ..common import hub, models
from ..common.compat import pretrained_dtype
from .backends import AudiocraftMusicGen, MusicModel, TransformersMusicGen

LICENSE = "CC-BY-NC-4.0"
HUB_REPOS = {
    name: f"facebook/{name}"
    for name in (
        "musicgen-small", "musicgen-medium", "musicgen-large", "musicgen-melody", "musicgen-melody-large",
        "musicgen-stereo-small", "musicgen-stereo-medium", "musicgen-stereo-large",
        "musicgen-stereo-melody", "musicgen-stereo-melody-large",
    )
}
BACKENDS = ("auto", "transformers", "audiocraft")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

TRANSFORMERS_FILES = {
    "config.json": ("config.json",),
    "weights": ("model.safetensors", "model-*.safetensors", "pytorch_model.bin", "pytorch_model-*.bin"),
    "tokenizer": ("tokenizer.json", "spiece.model"),
}
AUDIOCRAFT_FILES = {"lm": ("state_dict.bin",), "codec": ("compression_state_dict.bin",)}


def _missing(folder: str, needs: dict[str, tuple[str, ...]]) -> list[str]:
    return [" or ".join(patterns) for patterns in needs.values()
            if not any(glob.glob(os.path.join(folder, p)) for p in patterns)]


def missing_files(folder: str, backend: str) -> list[str]:
    """Files ``backend`` needs that ``folder`` lacks."""
    return _missing(folder, TRANSFORMERS_FILES if backend == "transformers" else AUDIOCRAFT_FILES)


def detect_backend(folder: str, choice: str = "auto") -> str:
    """The backend for ``folder``: ``choice`` unless ``auto``; ``auto`` prefers a complete transformers layout."""
    if choice not in BACKENDS:
        raise ValueError(f"backend: {choice!r} is not one of {', '.join(BACKENDS)}.")
    if choice != "auto":
        return choice
    if not missing_files(folder, "transformers"):
        return "transformers"
    if not missing_files(folder, "audiocraft"):
        return "audiocraft"
    return "transformers"


def _missing_message(name: str, where: str, backend: str, missing: list[str]) -> str:
    repo = HUB_REPOS.get(name, "facebook/musicgen-small")
    files = "\n  ".join(missing) if missing else "(the whole folder)"
    return (
        f"model_name: the MusicGen model '{name}' is incomplete or missing at {where} for the {backend} backend.\n"
        f"Missing:\n  {files}\n"
        f"Download the Hugging Face repository '{repo}' into {where} "
        f"(for example: huggingface-cli download {repo} --local-dir \"{where}\"), "
        f"or enable 'download_if_missing' on the loader. The weights are licensed {LICENSE} (non-commercial)."
    )


def resolve_folder(name: str, backend: str = "auto", download_if_missing: bool = False) -> tuple[str, str]:
    """``(folder, backend)`` for ``name``, checked for the files that backend reads (downloaded when allowed)."""
    folder = host.find_model("musicgen", name)
    if folder is None and download_if_missing:
        folder = download(name, backend)
    if folder is None:
        where = os.path.join(host.model_dirs("musicgen")[0], name)
        raise FileNotFoundError(_missing_message(name, where, "transformers" if backend == "auto" else backend, []))
    chosen = detect_backend(folder, backend)
    if missing_files(folder, chosen) and download_if_missing:
        download(name, chosen, folder)
        chosen = detect_backend(folder, backend)
    missing = missing_files(folder, chosen)
    if missing:
        raise FileNotFoundError(_missing_message(name, folder, chosen, missing))
    return folder, chosen


def download(name: str, backend: str = "auto", folder: str | None = None) -> str:
    """Fetch ``name`` from the Hugging Face Hub (explicit opt-in; refused in offline mode)."""
    if backend == "audiocraft":
        patterns = ["state_dict.bin", "compression_state_dict.bin"]
    else:
        patterns = ["*.json", "*.safetensors", "spiece.model"]
    return hub.download("musicgen", name, HUB_REPOS, lambda repo: patterns, folder)


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """``auto`` is fp16 on an accelerator; CPU always runs fp32."""
    if device.type == "cpu":
        return torch.float32
    return torch.float16 if choice == "auto" else DTYPES[choice]


def _codec_in_fp32(cls: type) -> type:
    """``cls`` that loads EnCodec (``audio_encoder``) in fp32 whatever ``dtype`` the rest gets: audiocraft
    decodes in fp32, its fp16 autocast covers only the language model."""
    keep = ["audio_encoder"]
    return type(cls.__name__, (cls,), {"_keep_in_fp32_modules": keep, "_keep_in_fp32_modules_strict": keep})


def load_transformers(folder: str, dtype: torch.dtype = torch.float32) -> TransformersMusicGen:
    """A transformers MusicGen (or MusicGen Melody) and its tokenizer from a Hugging Face folder."""
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

    with open(os.path.join(folder, "config.json")) as f:
        model_type = json.load(f).get("model_type")
    classes = {"musicgen": MusicgenForConditionalGeneration, "musicgen_melody": MusicgenMelodyForConditionalGeneration}
    if model_type not in classes:
        raise ValueError(f"model_name: {folder}/config.json has model_type {model_type!r}; expected musicgen or musicgen_melody.")
    model = _codec_in_fp32(classes[model_type]).from_pretrained(folder, **pretrained_dtype(dtype))
    model.audio_encoder.float()  # where a transformers release kept it in `dtype` (bf16 before 5.x)
    model.eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    chroma_config = None
    preprocessor = os.path.join(folder, "preprocessor_config.json")
    if model_type == "musicgen_melody" and os.path.isfile(preprocessor):
        with open(preprocessor) as f:
            chroma_config = {k: v for k, v in json.load(f).items() if k in ("n_fft", "hop_length")}
    return TransformersMusicGen(os.path.basename(os.path.normpath(folder)), folder, model, tokenizer, chroma_config)


def load_audiocraft(folder: str) -> AudiocraftMusicGen:
    """An audiocraft MusicGen from a folder holding its checkpoint pair (needs audiocraft installed)."""
    try:
        from audiocraft.models import MusicGen
    except ImportError as error:
        raise ImportError(
            "backend: audiocraft is not installed. Install it with 'pip install audiocraft --no-deps' plus the "
            "packages it imports (audiocraft pins torch 2.1, which would replace ComfyUI's torch), or choose the "
            f"transformers backend. ({error})"
        ) from error
    model = MusicGen.get_pretrained(folder, device="cpu")
    return AudiocraftMusicGen(os.path.basename(os.path.normpath(folder)), folder, model)


def load_model(folder: str, backend: str, dtype: torch.dtype = torch.float32) -> MusicModel:
    """Load ``folder`` with ``backend`` (``transformers`` or ``audiocraft``)."""
    return load_audiocraft(folder) if backend == "audiocraft" else load_transformers(folder, dtype)


def load_cached(name: str, backend: str = "auto", dtype_choice: str = "auto", download_if_missing: bool = False) -> MusicModel:
    """Load ``name`` once; later runs reuse it until its files change."""
    folder, chosen = resolve_folder(name, backend, download_if_missing)
    dtype = resolve_dtype(dtype_choice, host.torch_device())
    key = ("musicgen", os.path.realpath(folder), chosen, str(dtype))
    return models.cached(key, lambda: load_model(folder, chosen, dtype), stamp=models.path_stamp(folder))
