"""Writing IMAGE frames and AUDIO to an mp4 (H.264 + AAC, faststart) through ffmpeg."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time

import numpy as np
import torch

from .. import host
from ..common.ffmpeg import ffmpeg_exe, popen
from ..common.files import atomic_path, check_writable
from ..common.frames import check_image, release, to_uint8
from .keys import mask_addresses


def check_audio(audio: dict, input_name: str = "audio") -> tuple[torch.Tensor, int]:
    """Validate a ComfyUI AUDIO dict; return its first item ``[C, T]`` and sample rate."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError(f"{input_name}: expected ComfyUI AUDIO {{'waveform': [B, C, T], 'sample_rate': int}}.")
    waveform = audio["waveform"]
    if not isinstance(waveform, torch.Tensor) or waveform.ndim != 3 or waveform.shape[1] < 1:
        raise ValueError(f"{input_name}: waveform must be a [batch, channels, samples] tensor.")
    rate = audio["sample_rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not np.isfinite(rate) or rate != int(rate):
        raise ValueError(f"{input_name}: sample_rate must be a whole number of samples per second, got {rate!r}.")
    rate = int(rate)
    if rate <= 0:
        raise ValueError(f"{input_name}: sample_rate must be positive, got {rate}.")
    return waveform[0].float().cpu(), rate


STALE_S = 600  # a part file or scratch folder untouched this long belongs to a writer that was killed
SCRATCH_PREFIX = "webtv-mp4-"


def remove_stale(folder: str, pattern: re.Pattern, older_than: float = STALE_S) -> None:
    """Remove entries of ``folder`` matching ``pattern`` not modified for ``older_than`` seconds (debris of a killed run)."""
    now = time.time()
    for name in os.listdir(folder):
        full = os.path.join(folder, name)
        try:
            if pattern.match(name) and now - os.lstat(full).st_mtime > older_than:
                shutil.rmtree(full) if os.path.isdir(full) and not os.path.islink(full) else os.remove(full)
        except OSError:
            pass  # another process removed it first


def ffmetadata(metadata: dict[str, str]) -> str:
    """``metadata`` as an FFMETADATA1 file (ffmpeg escapes =, ;, #, backslash and newline with a backslash)."""
    def escape(text: str) -> str:
        return re.sub(r"([=;#\\\n])", r"\\\1", text)

    return ";FFMETADATA1\n" + "".join(f"{escape(k)}={escape(v)}\n" for k, v in metadata.items())


def next_output_file(prefix: str, ext: str) -> tuple[str, str, str]:
    """``(full_path, subfolder, filename)`` for the next ``{prefix}_{counter:05}_.{ext}`` under the output dir."""
    if not prefix or prefix.strip() != prefix or "\x00" in prefix:
        raise ValueError("filename_prefix: give a non-empty prefix such as 'WebTV/clip' (no leading or trailing spaces).")
    full_prefix = host.output_path(prefix)
    folder, base = os.path.split(full_prefix)
    check_writable(folder, "filename_prefix")
    remove_stale(folder, re.compile(rf"^\.{re.escape(base)}_\d+_\..*\.part\.{re.escape(ext)}$"))
    pattern = re.compile(rf"^{re.escape(base)}_(\d+)_\.{re.escape(ext)}$")
    taken = [int(m.group(1)) for name in os.listdir(folder) if (m := pattern.match(name))]
    filename = f"{base}_{max(taken, default=0) + 1:05}_.{ext}"
    subfolder = os.path.relpath(folder, os.path.realpath(host.output_dir()))
    return os.path.join(folder, filename), "" if subfolder == "." else subfolder, filename


def write_mp4(
    frames: torch.Tensor,
    path: str,
    fps: float,
    crf: int = 19,
    audio: dict | None = None,
    metadata: dict[str, str] | None = None,
    preset: str = "medium",
    chunk_frames: int = 16,
) -> str:
    """Encode ``frames`` (IMAGE) and optional ``audio`` (AUDIO) to ``path``; the file appears only when complete.

    Frames are streamed to ffmpeg ``chunk_frames`` at a time, so a disk-backed IMAGE is never loaded whole.
    Audio is padded with silence or cut to the video's length. Metadata goes through a file (any size,
    never on the command line) and is left out when ComfyUI runs with ``--disable-metadata``
    (standalone: ``COMFYUI_WEBTV_DISABLE_METADATA=1``).
    """
    frames = check_image(frames, "images")
    if not isinstance(fps, (int, float)) or not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps: must be a positive finite number, got {fps}.")
    count, height, width = frames.shape[:3]
    if host.metadata_disabled():
        metadata = None
    elif metadata:
        metadata = {k: mask_addresses(v) for k, v in metadata.items()}
    remove_stale(host.temp_dir(), re.compile(rf"^{SCRATCH_PREFIX}"))
    with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=host.temp_dir()) as scratch, atomic_path(path) as part:
        args = [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps}", "-i", "pipe:0",
        ]
        if audio is not None:
            waveform, rate = check_audio(audio)
            pcm = os.path.join(scratch, "audio.f32")
            waveform.clamp(-1, 1).T.contiguous().numpy().astype(np.float32).tofile(pcm)
            args += ["-f", "f32le", "-ar", str(rate), "-ac", str(waveform.shape[0]), "-i", pcm]
        if metadata:
            meta = os.path.join(scratch, "metadata.txt")
            with open(meta, "w", encoding="utf-8") as f:
                f.write(ffmetadata(metadata))
            args += ["-f", "ffmetadata", "-i", meta, "-map_metadata", "2" if audio is not None else "1"]
        args += ["-map", "0:v"]
        if audio is not None:
            args += ["-map", "1:a", "-c:a", "aac", "-b:a", "192k", "-af", "apad", "-t", f"{count / fps:.6f}"]
        args += [
            "-c:v", "libx264", "-preset", preset, "-crf", str(int(crf)), "-pix_fmt", "yuv420p",
            "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
            "-movflags", "+faststart+use_metadata_tags",
        ]
        args += ["-f", "mp4", part]
        with open(os.path.join(scratch, "ffmpeg.log"), "w+b") as log:
            proc = popen(args, stdin=subprocess.PIPE, stderr=log)
            try:
                for start in range(0, count, chunk_frames):
                    chunk = frames[start : start + chunk_frames]
                    proc.stdin.write(to_uint8(chunk).tobytes())
                    release(chunk)  # a disk-backed video is read once: its pages need not stay
                proc.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg stopped early; its log says why
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            code = proc.wait()
            if code != 0:
                log.seek(0)
                tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"ffmpeg could not write {path}: {' | '.join(tail)}")
    return path
