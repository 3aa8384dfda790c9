"""ComfyUI IMAGE batches (``[frames, H, W, C]`` float 0..1) and the disk-backed store for long videos.

A long video is still an IMAGE: :func:`new_frames` returns a plain float32 tensor that, past a size
threshold, is memory-mapped from an unlinked file in the temp folder. Other packs see an ordinary
tensor; the frames live in the page cache, which the OS evicts as needed. Pages a loop has written or read
stay mapped into the process (and count in its RSS) until :func:`release` drops them, so a loop that releases
the frames it is done with keeps its memory flat however many frames it writes.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import shutil
import sys
import tempfile
import weakref

import numpy as np
import torch

from .. import host

# Largest IMAGE kept in RAM; above it the store is a file. Setting: COMFYUI_WEBTV_DISK_FRAMES_MB (default 512;
# 0 puts every video on disk), or ``threshold_bytes`` per call.
DISK_THRESHOLD_BYTES = int(float(os.environ.get("COMFYUI_WEBTV_DISK_FRAMES_MB", "512")) * 2**20)

_STORES = weakref.WeakSet()  # storages new_frames mapped shared from a file: the only ones release touches
_MADVISE = ctypes.CDLL(None, use_errno=True).madvise if sys.platform.startswith("linux") else None


def new_frames(count: int, height: int, width: int, channels: int = 3, on_disk: bool | None = None,
               threshold_bytes: int | None = None) -> torch.Tensor:
    """A zeroed IMAGE of ``count`` frames; on disk when ``on_disk`` or when larger than the threshold."""
    numel = count * height * width * channels
    if on_disk is None:
        on_disk = numel * 4 > (DISK_THRESHOLD_BYTES if threshold_bytes is None else threshold_bytes)
    if not on_disk or numel == 0:
        return torch.zeros(count, height, width, channels)
    folder = host.temp_dir()
    fd, path = tempfile.mkstemp(prefix="webtv-frames-", suffix=".f32", dir=folder)
    try:
        reserve(fd, numel * 4, folder)
        frames = torch.from_file(path, shared=True, size=numel, dtype=torch.float32)
        _STORES.add(frames.untyped_storage())
    finally:
        os.close(fd)
        os.unlink(path)  # the mapping keeps the data; the file vanishes with the tensor
    return frames.view(count, height, width, channels)


def reserve(fd: int, size: int, folder: str) -> None:
    """Allocate ``size`` bytes for ``fd`` now, so a full disk is a clear error here and never a SIGBUS
    (which would take ComfyUI down) when a memory-mapped page is first written."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        free = shutil.disk_usage(folder).free
        raise MemoryError(
            f"the frame store needs {size:,} bytes in {folder} but it cannot reserve them ({e.strerror}; {free:,} bytes free); "
            "free space there, point the temp folder at a larger disk, or ask for fewer or smaller frames."
        ) from None


def release(frames: torch.Tensor) -> None:
    """Drop the pages behind ``frames`` (frames of a disk-backed store a loop is done with) from the process.

    The data stays: the mapping is shared, so ``MADV_DONTNEED`` only unmaps the pages (dirty ones are written
    back to the file) and a later read maps them in again from the page cache. Pages shared with neighbouring
    frames go too, which costs those frames a minor fault, nothing more. A no-op for frames in RAM and off Linux.
    """
    storage = frames.untyped_storage()
    if _MADVISE is None or frames.numel() == 0 or storage not in _STORES:
        return
    base, size = storage.data_ptr(), storage.nbytes()  # base is page-aligned: mmap returned it
    first = frames.data_ptr()
    last = first + sum((n - 1) * step for n, step in zip(frames.shape, frames.stride())) * frames.element_size()
    start = first - (first - base) % mmap.PAGESIZE
    end = min(last + frames.element_size(), base + size)
    if _MADVISE(ctypes.c_void_p(start), ctypes.c_size_t(end - start), mmap.MADV_DONTNEED) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"madvise on the frame store failed: {os.strerror(err)}")


def is_on_disk(frames: torch.Tensor) -> bool:
    """True when ``frames`` is memory-mapped from a file (see :func:`new_frames`)."""
    storage = frames.untyped_storage()
    return storage.filename is not None if hasattr(storage, "filename") else False


def check_image(images, input_name: str, min_frames: int = 1) -> torch.Tensor:
    """Validate an IMAGE input and return it, or raise an error that names the input."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{input_name}: expected an IMAGE batch [frames, height, width, 3], got {shape}.")
    if images.shape[0] < min_frames:
        raise ValueError(
            f"{input_name}: needs at least {min_frames} frame(s), got {images.shape[0]}; connect a longer video."
        )
    return images[..., :3] if images.shape[-1] == 4 else images


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """IMAGE frames to an ``[F, H, W, 3]`` uint8 array (rounded, clipped)."""
    return (frames[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
