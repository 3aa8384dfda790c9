"""Reading StreamingT2V weights: the official Lightning ``.ckpt``, converted safetensors, VidXTend files.

The official ``streaming_t2v.ckpt`` is a 25.6 GB torch zip pickle ``{"state_dict": ..., "optimizer_states": ...,
...}``. It is opened memory-mapped and weights-only, so only the tensors that are copied out are ever
read, and nothing in the pickle can run code. Its prefixes map onto our modules (:data:`OFFICIAL_PREFIXES`);
every component is checked strictly (missing, unexpected and wrongly shaped keys are reported).

:func:`convert` writes one safetensors file in fp16/bf16 with the same prefixes, tensor by tensor (memory
stays flat), and the model config in its metadata.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import torch

from .. import host
from ..common.files import atomic_path
from .config import OFFICIAL, StreamingConfig

OFFICIAL_PREFIXES = {
    "base_model.": "unet",
    "unet.": "cam",
    "resampler.": "resampler",
    "image_encoder.model.": "image_encoder",
    "text_encoder.": "text_encoder",
    "vae.": "vae",
}
# VidXTend (benjamin-paine/vidxtend): the same weights under other names.
VIDXTEND_PREFIXES = {
    "unet.": "unet",
    "controlnet.": "cam",
    "resampler.": "resampler",
    "image_encoder.model.": "image_encoder",
    "text_encoder.": "text_encoder",
    "vae.": "vae",
}
COMPONENT_NAMES = {
    "unet": "extension UNet",
    "cam": "CAM encoder",
    "resampler": "APM resampler",
    "image_encoder": "OpenCLIP image encoder",
    "text_encoder": "text encoder",
    "vae": "VAE",
}
# Components the converter keeps (text encoder and VAE are frozen copies of the ModelScope repo's).
CONVERTED = ("unet", "cam", "resampler", "image_encoder")
CONFIG_METADATA = "streaming_t2v_config"
# transformers 4.x's CLIPTextModel (which saved the official checkpoint) nests its weights under this; 5.x does not.
TEXT_MODEL_LEVEL = "text_model."
HUB_FILE = "https://huggingface.co/PAIR/StreamingT2V/blob/main/streaming_t2v.ckpt"

SAFETENSORS_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a message naming the file and the fix."""


@dataclass
class KeyReport:
    """How a component's keys differ from what the module expects."""

    component: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no key is missing, unexpected or of the wrong shape."""
        return not (self.missing or self.unexpected or self.wrong_shape)

    def describe(self, limit: int = 5) -> str:
        """A one-line summary of the mismatches, at most ``limit`` keys per kind."""
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
                parts.append(f"{len(items)} {label} key(s): {', '.join(items[:limit])}{more}")
        if self.wrong_shape:
            shown = ", ".join(f"{k} {tuple(a)} (expected {tuple(b)})" for k, a, b in self.wrong_shape[:limit])
            parts.append(f"{len(self.wrong_shape)} key(s) with the wrong shape: {shown}")
        return "; ".join(parts)


def compare_keys(component: str, expected: Mapping[str, tuple], found: Mapping[str, tuple],
                 ignorable: Callable[[str], bool] = lambda key: False) -> KeyReport:
    """Strict comparison of key -> shape maps; ``ignorable`` unexpected keys are left out."""
    report = KeyReport(component)
    report.missing = sorted(k for k in expected if k not in found)
    report.unexpected = sorted(k for k in found if k not in expected and not ignorable(k))
    report.wrong_shape = [(k, tuple(found[k]), tuple(expected[k])) for k in sorted(expected)
                          if k in found and tuple(found[k]) != tuple(expected[k])]
    return report


class WeightFile:
    """A weight file's tensors by full key, read lazily (mmap for ``.ckpt``, ``safe_open`` for safetensors)."""

    def __init__(self, path: str):
        self.path = path
        self.name = os.path.basename(path)
        self.metadata: dict[str, str] = {}
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint: {path} does not exist; put streaming_t2v.ckpt ({HUB_FILE}) in models/streaming_t2v.")
        if path.endswith(".safetensors"):
            self._open_safetensors()
        else:
            self._open_torch()

    def _open_safetensors(self) -> None:
        from safetensors import safe_open

        try:
            handle = safe_open(self.path, framework="pt", device="cpu")
        except Exception as exc:
            if host.is_interrupt(exc):
                raise
            raise CheckpointError(f"checkpoint: {self.name} is not a readable safetensors file ({exc}); convert the checkpoint again.") from exc
        self.metadata = dict(handle.metadata() or {})
        self._keys = list(handle.keys())
        self._get = handle.get_tensor
        self._shape = lambda key: tuple(handle.get_slice(key).get_shape())

    def _open_torch(self) -> None:
        try:
            data = torch.load(self.path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint: {self.name} is not a PyTorch zip checkpoint that can be memory-mapped ({exc}). "
                f"Expected streaming_t2v.ckpt from {HUB_FILE}; re-download it if it is truncated."
            ) from exc
        except Exception as exc:  # pickle errors, weights-only refusals
            if host.is_interrupt(exc):
                raise
            raise CheckpointError(
                f"checkpoint: {self.name} cannot be loaded as plain weights ({type(exc).__name__}: {exc}). "
                f"It is not the official StreamingT2V checkpoint ({HUB_FILE}) or is damaged; it was not executed."
            ) from exc
        if isinstance(data, dict) and isinstance(data.get("state_dict"), Mapping):
            data = data["state_dict"]
        if not isinstance(data, Mapping) or not all(torch.is_tensor(v) for v in data.values()):
            raise CheckpointError(
                f"checkpoint: {self.name} holds no 'state_dict' of tensors; expected the Lightning checkpoint "
                f"streaming_t2v.ckpt from {HUB_FILE}."
            )
        self._keys = list(data.keys())
        self._get = data.__getitem__
        self._shape = lambda key: tuple(data[key].shape)

    def keys(self) -> list[str]:
        """Every tensor name in the file."""
        return self._keys

    def tensor(self, key: str) -> torch.Tensor:
        """The tensor named ``key``."""
        return self._get(key)

    def shape(self, key: str) -> tuple:
        """The shape of tensor ``key``."""
        return self._shape(key)

    def config(self) -> StreamingConfig:
        """The model config: safetensors metadata, else ``<name>.json`` beside the file, else the official one."""
        if CONFIG_METADATA in self.metadata:
            return StreamingConfig.from_json(self.metadata[CONFIG_METADATA])
        sidecar = os.path.splitext(self.path)[0] + ".json"
        if os.path.isfile(sidecar):
            with open(sidecar) as f:
                return StreamingConfig.from_json(f.read())
        return OFFICIAL

    def prefixes(self) -> dict[str, str]:
        """The prefix -> component map of this file's layout (official or VidXTend)."""
        keys = self._keys
        if any(k.startswith("base_model.") for k in keys):
            return OFFICIAL_PREFIXES
        if any(k.startswith("controlnet.") for k in keys):
            return VIDXTEND_PREFIXES
        tops = sorted({k.split(".", 1)[0] + "." for k in keys})[:8]
        raise CheckpointError(
            f"checkpoint: {self.name} is not a StreamingT2V checkpoint: no 'base_model.' (official) or "
            f"'controlnet.' (VidXTend) keys; its key prefixes are {', '.join(tops) or 'none'}. "
            f"Use streaming_t2v.ckpt from {HUB_FILE} or a file converted from it."
        )

    def component_keys(self) -> dict[str, dict[str, str]]:
        """component -> {key inside the component: full key in the file}."""
        split: dict[str, dict[str, str]] = {}
        prefixes = self.prefixes()
        for key in self._keys:
            for prefix, component in prefixes.items():
                if key.startswith(prefix):
                    split.setdefault(component, {})[key[len(prefix):]] = key
                    break
        return split


def match_text_model_level(keys: Mapping[str, str], expected: Iterable[str]) -> dict[str, str]:
    """Text-encoder keys renamed to the installed ``CLIPTextModel``'s layout (the one key resolver for it).

    The official checkpoint has ``text_encoder.text_model.encoder...``; under transformers 5 the module
    expects ``encoder...``. The level is added to or removed from every key or from none, so the strict
    comparison that follows still reports any other difference.
    """
    expected = list(expected)
    wants = any(k.startswith(TEXT_MODEL_LEVEL) for k in expected)
    if keys and all(k.startswith(TEXT_MODEL_LEVEL) for k in keys) and not wants:
        return {k[len(TEXT_MODEL_LEVEL):]: full for k, full in keys.items()}
    if keys and wants and not any(k.startswith(TEXT_MODEL_LEVEL) for k in keys):
        return {TEXT_MODEL_LEVEL + k: full for k, full in keys.items()}
    return dict(keys)


def expected_shapes(module: torch.nn.Module) -> dict[str, tuple]:
    """The shape of every entry in ``module``'s state dict."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def load_component(module: torch.nn.Module, weights: WeightFile, component: str, dtype: torch.dtype,
                   ignorable: Callable[[str], bool] = lambda key: False, assign: bool = True) -> KeyReport:
    """Load one component strictly (raising :class:`CheckpointError` with the key report on any mismatch).

    With ``assign`` the module may live on the meta device: tensors are taken over (cast to ``dtype``).
    """
    keys = weights.component_keys().get(component, {})
    if component == "text_encoder":
        keys = match_text_model_level(keys, module.state_dict())
    found = {k: weights.shape(full) for k, full in keys.items()}
    report = compare_keys(component, expected_shapes(module), found, ignorable)
    if not report.ok:
        raise CheckpointError(
            f"checkpoint: {weights.name} does not match the StreamingT2V {COMPONENT_NAMES[component]}: "
            f"{report.describe()}. The file is incomplete, damaged or another model; use streaming_t2v.ckpt "
            f"from {HUB_FILE} (or convert it again)."
        )
    expected = module.state_dict()
    state = {}
    for key, full in keys.items():
        if key not in expected:
            continue
        tensor = weights.tensor(full)
        state[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    module.load_state_dict(state, strict=True, assign=assign)
    return report


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def write_safetensors(path: str, tensors: Iterable[tuple[str, Callable[[], torch.Tensor], tuple, torch.dtype]],
                      metadata: dict[str, str]) -> None:
    """Write a safetensors file one tensor at a time: ``tensors`` yields ``(key, load, shape, dtype)``."""
    entries = list(tensors)
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for key, _, shape, dtype in entries:
        size = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        header[key] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for key, load, shape, dtype in entries:
            tensor = load().to(dtype)
            if tuple(tensor.shape) != tuple(shape):
                raise CheckpointError(f"checkpoint: {key} changed shape while converting.")
            f.write(_tensor_bytes(tensor))


def convert(source: str, target: str, dtype: torch.dtype = torch.float16,
            components: Iterable[str] = CONVERTED) -> dict[str, int]:
    """Convert a StreamingT2V checkpoint into one safetensors file in ``dtype``, official prefixes kept.

    Optimizer state, Lightning bookkeeping and unused OpenCLIP text leftovers are dropped; VidXTend names
    are mapped to the official ones. Returns the number of tensors written per component.
    """
    from .apm import OpenCLIPImageEncoder

    weights = WeightFile(source)
    split = weights.component_keys()
    wanted = [c for c in components if c in split]
    for needed in ("unet", "cam", "resampler"):
        if needed not in split:
            raise CheckpointError(f"checkpoint: {weights.name} has no {COMPONENT_NAMES[needed]} weights; it cannot be converted.")
    out_prefix = {component: prefix for prefix, component in OFFICIAL_PREFIXES.items()}
    entries, counts = [], {}
    for component in wanted:
        counts[component] = 0
        for key, full in sorted(split[component].items()):
            if component == "image_encoder" and OpenCLIPImageEncoder.is_unused_key(key):
                continue
            shape = weights.shape(full)
            src = weights.tensor(full)
            out_dtype = dtype if src.is_floating_point() else src.dtype
            entries.append((out_prefix[component] + key, lambda full=full: weights.tensor(full), shape, out_dtype))
            counts[component] += 1
    metadata = {
        "format": "pt",
        CONFIG_METADATA: weights.config().to_json(),
        "source": weights.name,
        "dtype": str(dtype).replace("torch.", ""),
    }
    write_safetensors(target, entries, metadata)
    return counts
