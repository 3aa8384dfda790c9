"""Locating and running ffmpeg (never through a shell); children die with the process that started them."""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys

_PR_SET_PDEATHSIG = 1
try:  # resolved before any fork: the child only makes the one system call
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):  # pragma: no cover - no libc symbol
    _prctl = None


def _die_with_parent() -> None:
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def popen(args: list[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` for every child the pack starts (ffmpeg, the RTMP publisher): never through a
    shell, stdin ``/dev/null`` unless the caller gives one (ffmpeg would read ComfyUI's terminal), and on
    Linux SIGKILL when the thread that started it ends, so a killed ComfyUI leaves no child behind.

    This is the one place that starts processes (a test checks the pack for others); :func:`run_ffmpeg`
    uses it too. Linux ties the signal to the starting *thread*: start long-lived children from a thread
    that lives as long as they should.
    """
    if kwargs.get("shell"):
        raise ValueError("popen: children are never started through a shell; pass the arguments as a list.")
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    if _prctl is not None:
        kwargs.setdefault("preexec_fn", _die_with_parent)
    return subprocess.Popen(args, **kwargs)


@functools.lru_cache(maxsize=None)
def ffmpeg_exe() -> str:
    """The ffmpeg binary: ``$FFMPEG_BINARY``, imageio-ffmpeg's bundled one, or ffmpeg on PATH."""
    env = os.environ.get("FFMPEG_BINARY")
    if env:
        return env
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
        if found:
            return found
    raise RuntimeError("ffmpeg was not found: install imageio-ffmpeg (pip) or ffmpeg (system), or set FFMPEG_BINARY.")


def run_ffmpeg(args: list[str], stdin: bytes | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ffmpeg with ``args``; raise with its last error lines when it fails."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *(["-nostdin"] if stdin is None else []), *args]
    with popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        try:
            out, err = child.communicate(stdin, timeout=timeout)
        except BaseException:
            child.kill()
            child.wait()
            raise
    proc = subprocess.CompletedProcess(cmd, child.returncode, out, err)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError("ffmpeg failed: " + " | ".join(tail))
    return proc
