"""A cache of loaded models that keeps them across runs and on the device only while they run."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Callable, Hashable, Iterator, TypeVar

import torch

from .. import host

T = TypeVar("T")

_cache: dict[Hashable, tuple[Hashable, object]] = {}
_lock = threading.Lock()


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


def cached(key: Hashable, load: Callable[[], T], stamp: Hashable = None) -> T:
    """Return the model stored under ``key``, loading it with ``load()`` once, or again when ``stamp`` changed."""
    with _lock:
        hit = _cache.get(key)
        if hit is None or hit[0] != stamp:
            _cache.pop(key, None)  # drop the stale model before loading its replacement
            _cache[key] = (stamp, load())
        return _cache[key][1]  # type: ignore[return-value]


def clear_cache() -> None:
    """Forget every cached model."""
    with _lock:
        _cache.clear()


@contextmanager
def on_device(*modules: torch.nn.Module | None, device: torch.device | None = None) -> Iterator[torch.device]:
    """Move ``modules`` to the run device for the block, then back to the offload device."""
    device = device or host.torch_device()
    present = [m for m in modules if m is not None]
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
