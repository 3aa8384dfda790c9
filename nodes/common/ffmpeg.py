"""Locating and running ffmpeg (never through a shell)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess


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
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError("ffmpeg failed: " + " | ".join(tail))
    return proc
