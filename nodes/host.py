"""The pack's one bridge to ComfyUI.

Everything that touches ComfyUI internals (``folder_paths``, ``comfy.utils``,
``comfy.model_management``, ``server``) lives here. Without ComfyUI the same
functions fall back to standalone behaviour, so the engines run in tests, the
CLI or a batch worker:

- model and output folders come from ``COMFYUI_WEBTV_MODELS`` / ``COMFYUI_WEBTV_OUTPUT``
  (default ``./models`` and ``./output``) or :func:`configure`;
- progress goes to listeners added with :func:`add_progress_listener`;
- interruption is requested with :func:`request_interrupt`;
- server events go to listeners added with :func:`add_event_listener`;
- models stay with the caller (:mod:`.common.models` caches them) instead of ComfyUI's model management.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import threading
from typing import Callable

import torch

try:  # pragma: no cover - exercised only inside ComfyUI
    import folder_paths
    import comfy.model_management as _mm
    import comfy.utils as _cu

    IN_COMFYUI = True
except ImportError:
    folder_paths = _mm = _cu = None
    IN_COMFYUI = False

# Model kinds the pack registers: name -> (folder under models/, file extensions or None for folders).
MODEL_FOLDERS: dict[str, tuple[str, set[str] | None]] = {
    "zeroscope": ("zeroscope", None),
    "streaming_t2v": ("streaming_t2v", {".ckpt", ".safetensors"}),
    "open_clip": ("open_clip", {".bin", ".safetensors", ".pt"}),
    "film": ("film", {".pt", ".pth", ".safetensors"}),
    "frame_interpolation": ("frame_interpolation", {".safetensors"}),  # ComfyUI core's FILM/RIFE files
    "musicgen": ("musicgen", None),
    "llm": ("llm", None),
}

_standalone = {
    "models": os.environ.get("COMFYUI_WEBTV_MODELS", os.path.abspath("models")),
    "output": os.environ.get("COMFYUI_WEBTV_OUTPUT", os.path.abspath("output")),
}
_interrupt = threading.Event()
_progress_listeners: list[Callable[[int, int], None]] = []
_event_listeners: list[Callable[[str, dict], None]] = []


class Interrupted(Exception):
    """Raised in standalone mode when :func:`request_interrupt` was called."""


def configure(models_dir: str | None = None, output_dir: str | None = None) -> None:
    """Set the standalone models and output folders (ignored inside ComfyUI)."""
    if models_dir:
        _standalone["models"] = os.path.abspath(models_dir)
    if output_dir:
        _standalone["output"] = os.path.abspath(output_dir)


# ---------------------------------------------------------------- folders

def register_model_folders() -> None:
    """Register the pack's model kinds with ComfyUI so users can map them in extra_model_paths.yaml."""
    if not IN_COMFYUI:
        return
    for kind, (sub, exts) in MODEL_FOLDERS.items():
        path = os.path.join(folder_paths.models_dir, sub)
        if kind in folder_paths.folder_names_and_paths:
            paths = folder_paths.folder_names_and_paths[kind][0]
            if path not in paths:
                paths.append(path)
        else:
            folder_paths.folder_names_and_paths[kind] = ([path], set(exts or ()))


def model_dirs(kind: str) -> list[str]:
    """Every folder where models of ``kind`` are looked for; the first is the default."""
    if IN_COMFYUI:
        dirs = list(folder_paths.get_folder_paths(kind))
        if kind == "zeroscope":
            dirs += folder_paths.get_folder_paths("diffusers")
        return dirs
    dirs = [os.path.join(_standalone["models"], MODEL_FOLDERS[kind][0])]
    if kind == "zeroscope":
        dirs.append(os.path.join(_standalone["models"], "diffusers"))
    return dirs


def list_models(kind: str) -> list[str]:
    """Model names of ``kind``: sub-folders for folder kinds, files for file kinds."""
    exts = MODEL_FOLDERS[kind][1]
    names: set[str] = set()
    for root in model_dirs(kind):
        if not os.path.isdir(root):
            continue
        for entry in os.listdir(root):
            full = os.path.join(root, entry)
            if exts is None and os.path.isdir(full):
                names.add(entry)
            elif exts is not None and os.path.isfile(full) and os.path.splitext(entry)[1] in exts:
                names.add(entry)
    return sorted(names)


def find_model(kind: str, name: str, allow_absolute: bool = True) -> str | None:
    """Full path of a model name of ``kind``, or None when it is in none of its folders.

    A relative name must stay inside the folder (no ``..``, no NUL); an absolute path counts only
    with ``allow_absolute`` (workflow inputs that name models pass False).
    """
    if not name or "\x00" in name:
        return None
    if os.path.isabs(name):
        return name if allow_absolute and os.path.exists(name) else None
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return None
    for root in model_dirs(kind):
        full = os.path.join(root, name)
        if os.path.exists(full):
            return full
    return None


def output_dir() -> str:
    """The folder every output of the pack goes under."""
    path = folder_paths.get_output_directory() if IN_COMFYUI else _standalone["output"]
    os.makedirs(path, exist_ok=True)
    return path


def temp_dir() -> str:
    """Scratch folder for previews and frame stores."""
    if IN_COMFYUI:
        path = folder_paths.get_temp_directory()
    else:
        path = os.path.join(os.path.dirname(_standalone["output"]), "temp")
    os.makedirs(path, exist_ok=True)
    return path


def output_path(relative: str, input_name: str = "filename_prefix",
                fix: str = "use a path relative to the output folder, without '..'.") -> str:
    """Resolve ``relative`` (or an absolute path) under the output dir, refusing any path that leaves it.

    The one path guard for every file the pack writes or plays: NUL, an empty name, the output folder
    itself (``.``, ``WebTV/..``) and anything that resolves outside it (``..``, absolute paths elsewhere,
    symlinked folders pointing out) are refused. The error names ``input_name`` and ends with ``fix``.
    """
    root = os.path.realpath(output_dir())
    if not isinstance(relative, str) or "\x00" in relative or not relative.strip():
        raise ValueError(f"{input_name}: {relative!r} is not a usable path (empty or containing NUL); {fix}")
    full = os.path.realpath(os.path.join(root, relative))
    if full == root or os.path.commonpath([root, full]) != root:
        raise ValueError(f"{input_name}: {relative!r} is outside the output folder {root}; {fix}")
    return full


def metadata_disabled() -> bool:
    """True when ComfyUI runs with ``--disable-metadata`` (standalone: ``COMFYUI_WEBTV_DISABLE_METADATA=1``)."""
    if IN_COMFYUI:
        try:
            from comfy.cli_args import args
        except ImportError:  # pragma: no cover - very old ComfyUI
            return False
        return bool(getattr(args, "disable_metadata", False))
    return os.environ.get("COMFYUI_WEBTV_DISABLE_METADATA", "").strip().lower() in ("1", "true", "yes")


# ---------------------------------------------------------------- devices

def torch_device() -> torch.device:
    """The device models run on."""
    if IN_COMFYUI:
        return _mm.get_torch_device()
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def offload_device() -> torch.device:
    """Where idle models wait between runs."""
    return _mm.unet_offload_device() if IN_COMFYUI else torch.device("cpu")


def managed_models() -> bool:
    """True when ComfyUI's model management decides where models live (inside ComfyUI)."""
    return IN_COMFYUI


class _Held(torch.nn.Module):
    """What a ModelPatcher wraps: it sets ``device`` on its module, a read-only property on
    transformers and diffusers models, so it gets this plain holder instead."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module


def model_patcher(module: torch.nn.Module, on_unload: Callable[[], None] | None = None):
    """Wrap ``module`` in ComfyUI's ``CoreModelPatcher`` (``ModelPatcher`` where there is none), as core
    wraps its own networks; ``on_unload()`` runs when model management unloads it."""
    import comfy.model_patcher as mp

    cls = getattr(mp, "CoreModelPatcher", mp.ModelPatcher)  # looked up now: main.py may swap in the dynamic one
    patcher = cls(_Held(module), load_device=_mm.get_torch_device(), offload_device=_mm.unet_offload_device())
    if on_unload is not None:
        from comfy.patcher_extension import CallbacksMP

        patcher.add_callback(CallbacksMP.ON_DETACH, lambda *_: on_unload())
    return patcher


def load_models(patchers: list, memory_required: int = 0) -> torch.device:
    """Bring ``patchers`` to the run device through ComfyUI's ``load_models_gpu``, which offloads other
    models to make room for them and ``memory_required`` bytes of activations."""
    _mm.load_models_gpu(list(patchers), memory_required=int(memory_required))
    return _mm.get_torch_device()


def unloading_all() -> bool:
    """True when called (on this thread) from inside ComfyUI's ``unload_all_models``: "Unload models",
    ``POST /free`` or the retry after an out-of-memory error, which free every model, as opposed to
    ``free_memory`` offloading some to make room for others. ComfyUI has no event for it and refuses
    hooks on model management, so the caller's frames are read."""
    if not IN_COMFYUI:
        return False
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "unload_all_models" and frame.f_globals.get("__name__") == _mm.__name__:
            return True
        frame = frame.f_back
    return False


def is_loaded(patcher) -> bool:
    """True while ComfyUI's model management lists ``patcher`` among its loaded models."""
    return patcher is not None and any(loaded.model is patcher for loaded in list(_mm.current_loaded_models))


def soft_empty_cache() -> None:
    """Give cached accelerator memory back."""
    if IN_COMFYUI:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- progress and interruption

def is_interrupt(exc: BaseException) -> bool:
    """True when ``exc`` is a Cancel (ComfyUI's interrupt, or :class:`Interrupted`), which no handler may swallow."""
    if IN_COMFYUI and isinstance(exc, _mm.InterruptProcessingException):
        return True
    return isinstance(exc, Interrupted)


def check_interrupt() -> None:
    """Raise if the user asked to stop (ComfyUI's Cancel, or :func:`request_interrupt`)."""
    if IN_COMFYUI:
        _mm.throw_exception_if_processing_interrupted()
    elif _interrupt.is_set():
        _interrupt.clear()
        raise Interrupted("interrupted")


def request_interrupt() -> None:
    """Standalone equivalent of ComfyUI's Cancel button."""
    _interrupt.set()


def add_progress_listener(listener: Callable[[int, int], None]) -> Callable[[], None]:
    """Call ``listener(value, total)`` on every standalone progress update; returns a remover."""
    _progress_listeners.append(listener)
    return lambda: _progress_listeners.remove(listener)


class ProgressBar:
    """ComfyUI's progress bar (one per node run); every update is also an interrupt point."""

    def __init__(self, total: int):
        self.total = max(int(total), 1)
        self.value = 0
        self._bar = _cu.ProgressBar(self.total) if IN_COMFYUI else None

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` (an interrupt point)."""
        self.update_absolute(self.value + n)

    def update_absolute(self, value: int, total: int | None = None) -> None:
        """Set the progress to ``value`` (of ``total`` when given; an interrupt point)."""
        if total is not None:
            self.total = max(int(total), 1)
        self.value = min(int(value), self.total)
        if self._bar is not None:
            self._bar.update_absolute(self.value, self.total)
        for listener in list(_progress_listeners):
            listener(self.value, self.total)
        check_interrupt()


# ---------------------------------------------------------------- core types

class VideoFile:
    """Standalone stand-in for core's VIDEO ``VideoFromFile``: a finished video file."""

    def __init__(self, path: str):
        self.path = path

    def get_stream_source(self) -> str:
        """The file's path, as core's ``get_stream_source``."""
        return self.path

    def save_to(self, path: str, **_) -> None:
        """Copy the file to ``path``, as core's ``save_to`` for an mp4."""
        shutil.copyfile(self.path, path)


def video_from_file(path: str):
    """Core's VIDEO for a finished file (``VideoFromFile``); :class:`VideoFile` standalone or on a
    ComfyUI without the VIDEO type."""
    if IN_COMFYUI:
        try:
            from comfy_api.latest import InputImpl

            return InputImpl.VideoFromFile(path)
        except ImportError:
            pass
    return VideoFile(path)


def video_file(video) -> str | None:
    """The file behind a VIDEO that is one (core's ``VideoFromFile`` on a path, :class:`VideoFile`), else None.
    Other VIDEOs are asked for nothing here: core encodes them in memory to answer ``get_stream_source``."""
    if isinstance(video, VideoFile):
        return video.path
    if IN_COMFYUI:
        try:
            from comfy_api.latest import InputImpl
        except ImportError:
            return None
        if isinstance(video, InputImpl.VideoFromFile):
            source = video.get_stream_source()
            return source if isinstance(source, str) else None
    return None


# ---------------------------------------------------------------- server and lifetime

def add_routes(register: Callable[[object], None]) -> bool:
    """Let ``register(routes)`` add aiohttp routes to ComfyUI's server; False when standalone."""
    if not IN_COMFYUI:
        return False
    try:
        from server import PromptServer
    except ImportError:
        return False
    if getattr(PromptServer, "instance", None) is None:
        return False
    register(PromptServer.instance.routes)
    return True


def add_event_listener(listener: Callable[[str, dict], None]) -> Callable[[], None]:
    """Call ``listener(event, data)`` on every standalone :func:`send_event`; returns a remover."""
    _event_listeners.append(listener)
    return lambda: _event_listeners.remove(listener)


def send_event(event: str, data: dict) -> None:
    """Push ``data`` to every open editor as the server event ``event`` (read in JS with
    ``api.addEventListener``); standalone, to the listeners. Safe from any thread."""
    if IN_COMFYUI:
        try:
            from server import PromptServer
        except ImportError:
            return
        server = getattr(PromptServer, "instance", None)
        if server is not None:
            server.send_sync(event, data)
        return
    for listener in list(_event_listeners):
        listener(event, data)


def on_shutdown(callback: Callable[[], None]) -> None:
    """Run ``callback`` when ComfyUI (or the standalone process) exits."""
    atexit.register(callback)
