"""FILM weight files: one-time TorchScript -> safetensors conversion, and strict loading at run time.

The released files (``film_net_fp32.pt`` / ``film_net_fp16.pt``) are TorchScript archives. Plain
``torch.load`` refuses them since torch 2.6 (``weights_only``), and running their code ties a
workflow to the torch that exported them. :func:`convert` reads one once with ``torch.jit.load``
(which runs code from the file) and writes its 82 tensors to a ``.safetensors`` file; :func:`load_file`
reads only safetensors: the pack's converted files and ComfyUI core's ``frame_interpolation`` FILM files
(:func:`from_core_layout`), which hold the same tensors under other names.
"""

from __future__ import annotations

import os
import warnings
import zipfile

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .. import host
from .model import FilmConfig, FilmNet

RELEASES = "https://github.com/dajes/frame-interpolation-pytorch/releases/download"
RELEASE_TAG = "v1.0.2"
DEFAULT_NAME = "film_net_fp32.safetensors"
CORE_FILE_URL = "https://huggingface.co/Comfy-Org/frame_interpolation/resolve/main/frame_interpolation/film_net_fp16.safetensors"
FORMAT = "film_net"
TIME_INPUT = ("honoured", "ignored")
JIT_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"


def official_keys() -> dict[str, tuple[int, ...]]:
    """The 82 parameter names of the released weights and their shapes."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in FilmNet().state_dict().items()}


def config_from_shapes(state: dict[str, torch.Tensor]) -> FilmConfig:
    """The widths a state dict was built with (the official names fix everything else)."""
    keys = official_keys()
    missing = sorted(set(keys) - set(state))
    unexpected = sorted(set(state) - set(keys))
    if missing or unexpected:
        raise ValueError(key_problems("FILM (film_net)", missing, unexpected))
    head = "predict_flow._predictors.{}._convs.0.0.weight"
    return FilmConfig(
        filters=state["extract.extract_sublevels.convs.0.0.0.weight"].shape[0],
        flow_filters=(
            state[head.format(2)].shape[0],
            state[head.format(1)].shape[0],
            state[head.format(0)].shape[0],
            state["predict_flow._predictor._convs.0.0.weight"].shape[0],
        ),
    )


# ComfyUI core (comfy_extras/frame_interpolation_models/film_net.py) builds the same tree with the same
# module indices (flow heads and decoder stages coarse to fine, as the release), but its conv unit keeps the
# nn.Conv2d as attribute ``conv`` where the release's keeps it as child ``0``; ``fuse.output_conv`` is a
# plain conv in both. So every key but the output conv's differs in that one part.
CORE_PROBE = "extract.extract_sublevels.convs.0.0.conv.weight"


def core_key(key: str) -> str:
    """Core's name for a release key: ``<unit>.0.weight`` -> ``<unit>.conv.weight``."""
    if key.startswith("fuse.output_conv."):
        return key
    unit, index, param = key.rsplit(".", 2)
    if index != "0":
        raise ValueError(f"{key}: not a conv unit parameter")
    return f"{unit}.conv.{param}"


def core_key_table() -> dict[str, str]:
    """Core key -> release key, for the 82 tensors."""
    return {core_key(k): k for k in official_keys()}


def is_core_layout(state: dict) -> bool:
    """True when more of ``state``'s keys follow core's names than the release's."""
    table = core_key_table()
    return sum(k in table for k in state) > sum(k in table.values() for k in state)


def from_core_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A core-layout state dict under the release names; every key mapped, none left over."""
    table = core_key_table()
    missing = sorted(set(table) - set(state))
    unexpected = sorted(set(state) - set(table))
    if missing or unexpected:
        raise ValueError(key_problems("ComfyUI core FILM", missing, unexpected))
    return {table[k]: v for k, v in state.items()}


def key_problems(what: str, missing: list[str], unexpected: list[str]) -> str:
    """The error for a state dict with missing or extra keys, naming them."""
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} key(s): {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:4])}"
                     f"{' ...' if len(unexpected) > 4 else ''}")
    return f"not a {what} state dict: " + "; ".join(parts)


def from_interp_model(interp_model, dtype: torch.dtype = torch.float32) -> FilmNet:
    """Our model from core's ``INTERP_MODEL`` (a ModelPatcher whose ``.model`` is core's FILMNet); its code
    applies t, so the copy honours t."""
    module = getattr(interp_model, "model", None)
    if not isinstance(module, torch.nn.Module):
        raise ValueError(
            f"interp_model: expected the INTERP_MODEL of ComfyUI's Load Frame Interpolation Model, got "
            f"{type(interp_model).__name__}."
        )
    state = module.state_dict()
    if CORE_PROBE not in state:
        raise ValueError(
            f"interp_model: {type(module).__name__} is not a FILM model (RIFE?); FILM Interpolate runs FILM only. "
            "Load film_net_fp16.safetensors or film_net_fp32.safetensors in Load Frame Interpolation Model, or "
            "disconnect interp_model to use model_name."
        )
    try:
        return build(from_core_layout({k: v.detach().to("cpu") for k, v in state.items()}), dtype=dtype)
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"interp_model: {e}") from None


def build(state: dict[str, torch.Tensor], honours_t: bool = True, dtype: torch.dtype = torch.float32) -> FilmNet:
    """A :class:`FilmNet` holding ``state``, loaded with ``strict=True`` (any shape mismatch is an error)."""
    model = FilmNet(config_from_shapes(state), honours_t=honours_t)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    return model.to(dtype).eval().requires_grad_(False)


# ---------------------------------------------------------------- conversion (one time, TorchScript allowed)

def is_torchscript(path: str) -> bool:
    """True for a TorchScript archive (a zip with ``code/`` and ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def read_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], torch.nn.Module | None]:
    """The tensors of a ``.pt`` file and, for TorchScript, the scripted module (to probe it)."""
    if is_torchscript(path):
        with warnings.catch_warnings():  # torch.jit is deprecated, yet it is how the releases were saved
            warnings.filterwarnings("ignore", message=JIT_DEPRECATED)
            module = torch.jit.load(path, map_location="cpu")
        return {k: v.detach().clone() for k, v in module.state_dict().items()}, module
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if host.is_interrupt(e):
            raise
        raise ValueError(
            f"{path}: is neither a TorchScript archive nor a plain tensor checkpoint that loads with "
            f"weights_only=True ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Download "
            f"film_net_fp32.pt again from {RELEASES}/{RELEASE_TAG}/film_net_fp32.pt."
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no FILM state dict.")
    return dict(state), None


def probe_time_input(module: torch.nn.Module, size: int = 64) -> str:
    """'honoured' when the scripted model's output depends on t, 'ignored' when it does not (release v1.0.0)."""
    module = module.float().eval()
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.rand(2, 1, 3, size, size, generator=g)
    with torch.no_grad():
        early = module(x0, x1, torch.full((1, 1), 0.25))
        late = module(x0, x1, torch.full((1, 1), 0.75))
    return "ignored" if torch.equal(early, late) else "honoured"


def convert(src: str, dst: str | None = None, time_input: str = "probe") -> str:
    """Convert a released ``film_net_*.pt`` (or a plain state dict) to safetensors; returns the output path.

    ``time_input`` is recorded in the file: 'probe' runs the TorchScript model at t = 0.25 and 0.75 to
    find out whether it honours t (v1.0.2) or always makes the midpoint (v1.0.0).
    """
    if not os.path.isfile(src):
        raise FileNotFoundError(f"{src}: no such file; download it from {RELEASES}/{RELEASE_TAG}/film_net_fp32.pt.")
    dst = dst or os.path.splitext(src)[0] + ".safetensors"
    if not dst.endswith(".safetensors"):
        raise ValueError(f"{dst}: the output name must end in .safetensors.")
    state, module = read_checkpoint(src)
    config_from_shapes(state)  # refuse anything that is not FILM before writing
    if time_input == "probe":
        if module is None:
            raise ValueError(
                f"{src}: a plain state dict carries no code to probe; pass time_input 'honoured' "
                "(the eager model applies t) or 'ignored' (always interpolate at the midpoint)."
            )
        time_input = probe_time_input(module)
    if time_input not in TIME_INPUT:
        raise ValueError(f"time_input: {time_input!r} is not one of probe, {', '.join(TIME_INPUT)}.")
    metadata = {
        "format": FORMAT,
        "time_input": time_input,
        "source": os.path.basename(src),
        "dtype": str(next(iter(state.values())).dtype).replace("torch.", ""),
    }
    tmp = os.path.join(os.path.dirname(os.path.abspath(dst)), "." + os.path.basename(dst) + ".part")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata=metadata)
    os.replace(tmp, dst)
    return dst


# ---------------------------------------------------------------- run time (safetensors only)

def missing_message(name: str) -> str:
    """The error for absent FILM weights: where to download them and how to convert them."""
    folders = host.model_dirs("film")
    core = host.model_dirs("frame_interpolation")
    stem = os.path.splitext(name)[0]
    return (
        f"model_name: the FILM weights '{name}' are not in {' or '.join(folders + core)}. Either put ComfyUI's "
        f"own FILM file ({CORE_FILE_URL}) into {core[0]}, or download "
        f"{RELEASES}/{RELEASE_TAG}/film_net_fp32.pt (v1.0.2 honours t; v1.0.0 always makes the midpoint) "
        f"into {folders[0]}, then convert it once: python -m comfyui_webtv convert-film "
        f"{os.path.join(folders[0], 'film_net_fp32.pt')} {os.path.join(folders[0], stem + '.safetensors')}"
    )


def read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a converted file; a clear error for a corrupt or foreign one."""
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # the Rust reader raises its own error types for bad headers and truncation
        if host.is_interrupt(e):
            raise
        raise ValueError(
            f"model_name: {path} is not a readable safetensors file ({e}); it may be truncated. Convert "
            "film_net_fp32.pt again with: python -m comfyui_webtv convert-film"
        ) from None
    return state, metadata


def is_film_file(path: str) -> bool:
    """True when a safetensors file's header names FILM tensors in either layout (RIFE files are not)."""
    try:
        with safe_open(path, framework="pt") as f:
            keys = set(f.keys())
    except Exception as e:
        if host.is_interrupt(e):
            raise
        return False
    return CORE_PROBE in keys or "extract.extract_sublevels.convs.0.0.0.weight" in keys


def names() -> list[str]:
    """Weight names to offer: the film folders' files, then core's frame_interpolation FILM files."""
    own = host.list_models("film")
    core = [n for n in host.list_models("frame_interpolation")
            if n not in own and is_film_file(host.find_model("frame_interpolation", n))]
    return sorted(own, key=lambda n: (not n.endswith(".safetensors"), n)) + core


def find(name: str) -> str:
    """The path of weight file ``name`` in the film folders or core's frame_interpolation folders, or an error
    saying where to get it."""
    path = host.find_model("film", name) or host.find_model("frame_interpolation", name)
    if path is None:
        raise FileNotFoundError(missing_message(name))
    if not path.endswith(".safetensors"):
        raise ValueError(
            f"model_name: {name} is a TorchScript/pickle file, which is not loaded at run time (plain torch.load "
            f"refuses TorchScript since torch 2.6). Convert it once: python -m comfyui_webtv convert-film {path} "
            f"{os.path.splitext(path)[0]}.safetensors  then choose the .safetensors file."
        )
    return path


def load_file(path: str, dtype: torch.dtype = torch.float32) -> FilmNet:
    """Build the model from a converted file or a core FILM file (strict keys and shapes, fp16 or fp32)."""
    state, metadata = read_safetensors(path)
    if metadata.get("format", FORMAT) != FORMAT:
        raise ValueError(f"model_name: {path} is a {metadata['format']!r} file, not FILM film_net weights.")
    try:
        if is_core_layout(state):  # core's code applies t
            return build(from_core_layout(state), dtype=dtype)
        return build(state, honours_t=metadata.get("time_input", "honoured") == "honoured", dtype=dtype)
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"model_name: {path} does not hold FILM film_net weights: {e}") from None
