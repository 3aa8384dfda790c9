"""The pack's loaded models: cached across runs, and on the device only while they run.

Inside ComfyUI every module runs through ComfyUI's model management (wrapped in its ``ModelPatcher``,
brought to the device by ``load_models_gpu`` with an estimate of the activation memory the run needs), so
ComfyUI offloads other models to make room, manages our weights like its own, and "Unload models"
(``POST /free``) frees ours. When ComfyUI offloads a cached model to make room for another, the cache
keeps it as long as ComfyUI holds it too (a loader node's output in its cache): the next run finds it and
``load_models_gpu`` moves it back, nothing is read from disk; once ComfyUI lets go of it (its caches
freed), so does the cache. When ComfyUI unloads every model, the cache forgets it. Standalone, the
cache keeps models and :func:`on_device` moves modules to the device and back.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from contextlib import contextmanager
from typing import Callable, Hashable, Iterator, TypeVar

import torch

from .. import host

T = TypeVar("T")


class _Entry:
    """A cached model, its stamp, and (inside ComfyUI) one ModelPatcher per module, made on first use.
    Offloaded by model management, the model is held only weakly."""

    def __init__(self, key: Hashable, stamp: Hashable, model: object):
        self.key, self.stamp, self.strong = key, stamp, model
        self.weak = weakref.ref(model)
        self.patchers: dict[int, object] = {}

    def model(self) -> object | None:
        """The model, held again if it is still alive; None once it was freed."""
        if self.strong is None:
            self.strong = self.weak()
        return self.strong

    def alive(self) -> bool:
        return self.strong is not None or self.weak() is not None


_cache: dict[Hashable, _Entry] = {}
_owners: "weakref.WeakKeyDictionary[torch.nn.Module, weakref.ref[_Entry]]" = weakref.WeakKeyDictionary()
_lock = threading.RLock()
_active = threading.local()  # patchers of the enclosing on_device blocks, kept loaded by nested ones


def path_stamp(path: str) -> tuple:
    """A key part that changes when a model file or folder is replaced."""
    if os.path.isdir(path):
        stamps = []
        for root, _, files in os.walk(path):
            for name in files:
                st = os.stat(os.path.join(root, name))
                stamps.append((os.path.relpath(os.path.join(root, name), path), st.st_size, st.st_mtime_ns))
        return tuple(sorted(stamps))
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns)


def _roots(model: object) -> list[torch.nn.Module]:
    """The torch modules a cached model is made of (itself, or its ``modules()``)."""
    if isinstance(model, torch.nn.Module):
        return [model]
    parts = getattr(model, "modules", None)
    return [m for m in parts() if isinstance(m, torch.nn.Module)] if callable(parts) else []


def cached(key: Hashable, load: Callable[[], T], stamp: Hashable = None) -> T:
    """Return the model stored under ``key``, loading it with ``load()`` once, or again when ``stamp`` changed
    or ComfyUI's model management unloaded it."""
    with _lock:
        hit = _cache.get(key)
        model = hit.model() if hit is not None and hit.stamp == stamp else None
        if model is None:
            _cache.pop(key, None)  # drop the stale model before loading its replacement
            hit = _cache[key] = _Entry(key, stamp, load())
            model = hit.strong
            for module in _roots(model):
                _owners[module] = weakref.ref(hit)
        return model  # type: ignore[return-value]


def clear_cache() -> None:
    """Forget every cached model."""
    with _lock:
        _cache.clear()


def cached_keys() -> list[Hashable]:
    """Keys of the models the cache holds now."""
    with _lock:
        return [key for key, entry in _cache.items() if entry.alive()]


def _forget(entry_ref: "weakref.ref[_Entry]", patcher_ref: weakref.ref) -> None:
    """Model management unloaded a module of this entry; once ComfyUI has let go of the patcher (not during
    its unload loop, which a model freed at once would disturb): unloaded with every model (Unload models,
    ``POST /free``), forget the model; offloaded to make room for another, drop the entry's unloaded
    patchers and, when none is loaded, hold the model only weakly: kept while ComfyUI holds it too."""
    every = host.unloading_all()

    def release() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and host.is_loaded(patcher_ref()):
            time.sleep(0.05)
        entry = entry_ref()
        if entry is None or host.is_loaded(patcher_ref()):
            return  # loaded again meanwhile: in use
        with _lock:
            if _cache.get(entry.key) is not entry:
                return
            if every:
                del _cache[entry.key]
                return
            entry.patchers = {k: p for k, p in entry.patchers.items() if host.is_loaded(p)}
            if not entry.patchers:
                entry.strong = None

    threading.Thread(target=release, name="webtv-model-release", daemon=True).start()


def _patcher(module: torch.nn.Module):
    """The ModelPatcher of ``module``: kept with its cache entry, or made for this run only."""
    with _lock:
        owner = _owners.get(module)
        entry = owner() if owner is not None else None
        if entry is None or _cache.get(entry.key) is not entry:
            return host.model_patcher(module)
        entry.model()  # in use again: held again
        patcher = entry.patchers.get(id(module))
        if patcher is None:
            holder: list = []
            patcher = entry.patchers[id(module)] = host.model_patcher(module, on_unload=lambda: _forget(owner, holder[0]))
            holder.append(weakref.ref(patcher))
        return patcher


@contextmanager
def on_device(*modules: torch.nn.Module | None, device: torch.device | None = None,
              memory_required: int = 0) -> Iterator[torch.device]:
    """Have ``modules`` on the run device for the block (with ``memory_required`` bytes of room for
    activations). Inside ComfyUI, model management loads them and decides when they leave; standalone
    (or on an explicitly chosen other ``device``) they move there and back to the offload device."""
    present = [m for m in modules if m is not None]
    if host.managed_models() and (device is None or device == host.torch_device()):
        outer = getattr(_active, "patchers", [])
        patchers = [p for p in (_patcher(m) for m in present) if all(p is not o for o in outer)]
        device = host.load_models(outer + patchers, memory_required)
        _active.patchers = outer + patchers
        try:
            yield device
        finally:
            _active.patchers = outer
        return
    device = device or host.torch_device()
    for m in present:
        m.to(device)
    try:
        yield device
    finally:
        offload = host.offload_device()
        if offload != device:
            for m in present:
                m.to(offload)
            host.soft_empty_cache()


# ---------------------------------------------------------------- activation memory estimates
# What a run needs on the device beyond its weights (``memory_required`` of ``load_models_gpu``; ComfyUI
# adds the weights of the patchers it loads itself). Estimates, sized like ComfyUI's own for its models.

MIB = 1 << 20


def element_size(*modules: torch.nn.Module | None) -> int:
    """Bytes per value of the first floating-point weight of ``modules`` (4 when there is none)."""
    for module in modules:
        for tensor in (module.parameters() if module is not None else ()):
            if tensor.is_floating_point():
                return tensor.element_size()
    return 4


def diffusion_memory(frames: int, height: int, width: int, element: int, decode_frames: int = 8,
                     guided: bool = True) -> int:
    """A latent video diffusion run at ``frames`` x ``height`` x ``width``: the UNet on latents 8x smaller
    (a batch of 2 with guidance) at 1/100 MiB per latent value and value byte (ComfyUI's budget for its
    latent diffusion models with PyTorch attention), or the VAE decoding ``decode_frames`` frames at 512
    values per pixel (a few 128-channel full-size tensors), whichever is more."""
    latents = (2 if guided else 1) * frames * max(height // 8, 1) * max(width // 8, 1)
    return max(latents * element * MIB // 100, min(frames, decode_frames) * height * width * 512 * element)


def interpolation_memory(pairs: int, height: int, width: int) -> int:
    """FILM on ``pairs`` frame pairs at once: feature pyramids, flows and warps in float32, about 2 KiB per
    pixel of a pair."""
    return pairs * height * width * 2048


def sequence_memory(module: torch.nn.Module, tokens: int, batch: int = 1, decode_samples: int = 0) -> int:
    """A transformer generating ``tokens`` positions for ``batch`` sequences: its key/value cache and
    working set (2 + 4 hidden vectors per position and layer), plus an audio codec decoding
    ``decode_samples`` samples at 256 float32 values per sample."""
    layers, hidden = _depth_and_width(module)
    return (6 * layers * hidden * tokens * batch) * element_size(module) + decode_samples * 256 * 4


def _depth_and_width(module: torch.nn.Module) -> tuple[int, int]:
    """Layers and hidden size of a transformers model (MusicGen: its decoder) or an audiocraft LM."""
    config = getattr(module, "config", None)
    config = getattr(config, "decoder", config)
    for layers, hidden in (("num_hidden_layers", "hidden_size"), ("num_layers", "d_model")):
        if isinstance(getattr(config, layers, None), int) and isinstance(getattr(config, hidden, None), int):
            return getattr(config, layers), getattr(config, hidden)
    transformer = getattr(module, "transformer", None)
    if transformer is not None and hasattr(transformer, "layers") and isinstance(getattr(module, "dim", None), int):
        return len(transformer.layers), module.dim
    return 0, 0  # an unknown layout: ComfyUI's minimum room


TINY_MARKER = "TINY_RANDOM_MODEL.txt"


def claim_tiny_path(path: str) -> str:
    """Prepare ``path`` for a tiny random model, refusing to overwrite anything that is not one."""
    marker = os.path.join(path, TINY_MARKER) if not os.path.splitext(path)[1] else path + "." + TINY_MARKER
    if os.path.exists(path) and not os.path.exists(marker):
        raise FileExistsError(f"{path} exists and is not a tiny test model; refusing to overwrite it.")
    os.makedirs(path if not os.path.splitext(path)[1] else os.path.dirname(path), exist_ok=True)
    with open(marker, "w") as f:
        f.write("Random weights with the real architecture, for tests only. Not a usable model.\n")
    return path
