"""ffconcat playlists: safe quoting, atomic writes, and a reader that follows ffmpeg's own parsing.

ffmpeg's concat demuxer reads one directive per line and splits arguments like ``av_get_token``:
single quotes keep everything up to the next quote, a backslash outside quotes escapes one character.
A quote in a path is written as ``'\\''`` (close, escaped quote, reopen). A line break cannot be
expressed at all, so such paths are refused rather than written as a second, injected directive.
Relative paths are joined to the playlist's location like URLs, so they are written as ``./name``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from .. import host
from ..common.files import atomic_path

HEADER = "ffconcat version 1.0"


@dataclass(frozen=True)
class Entry:
    """One ``file`` directive: an absolute path and its duration in seconds when known."""

    path: str
    duration: float | None = None


def quote(path: str, input_name: str = "clips") -> str:
    """``path`` as one ffconcat token; raises for characters the format cannot hold."""
    bad = [c for c in ("\n", "\r", "\x00") if c in path]
    if bad:
        raise ValueError(
            f"{input_name}: the path {path!r} contains a line break or NUL, which an ffconcat playlist cannot "
            "hold (it would start a new directive); rename the file."
        )
    return "'" + path.replace("'", "'\\''") + "'"


def _token(text: str) -> tuple[str, str]:
    """Split the first token off ``text`` as ffmpeg's ``av_get_token`` does (whitespace ends it)."""
    text = text.lstrip(" \t")
    out: list[str] = []
    i = 0
    while i < len(text) and text[i] not in " \t":
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif ch == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ValueError(f"unterminated quote in {text!r}")
            out.append(text[i + 1 : end])
            i = end + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out), text[i:]


def read_ffconcat(path: str) -> list[Entry]:
    """The ``file`` entries of an ffconcat playlist, paths made absolute against the playlist's folder."""
    folder = os.path.dirname(os.path.abspath(path))
    entries: list[Entry] = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        lines = []
    except OSError as exc:
        raise ValueError(f"playlist: cannot read {path} ({exc.strerror}).") from None
    if not lines or lines[0].strip() != HEADER:
        raise ValueError(f"playlist: {path} is not an ffconcat file (its first line must be '{HEADER}').")
    for number, line in enumerate(lines[1:], start=2):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keyword, rest = _token(line)
            arg, _ = _token(rest)
        except ValueError as exc:
            raise ValueError(f"playlist: {path} line {number}: {exc}") from None
        if keyword == "file":
            entries.append(Entry(os.path.normpath(os.path.join(folder, arg))))
        elif keyword == "duration" and entries:
            entries[-1] = Entry(entries[-1].path, float(arg))
    return entries


def write_ffconcat(path: str, entries: list[Entry], relative: bool = True) -> str:
    """Write ``entries`` to ``path`` (replaced atomically); paths relative to the playlist or absolute."""
    folder = os.path.dirname(os.path.abspath(path))
    lines = [HEADER]
    for entry in entries:
        # "./" keeps ffmpeg from reading "a:b.mp4" as a protocol or "#b.mp4" as a URL fragment.
        target = "./" + os.path.relpath(entry.path, folder) if relative else os.path.abspath(entry.path)
        lines.append(f"file {quote(target)}")
        if entry.duration:
            lines.append(f"duration {entry.duration:.6f}")
    with atomic_path(path) as part:
        with open(part, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return path


def inside_output(path: str, input_name: str) -> str:
    """The real absolute path of ``path`` (absolute, or relative to the output folder); refuses paths outside it."""
    return host.output_path(
        path, input_name, "the channel only plays and writes files under the output folder (save or copy clips there first)."
    )


def resolve_clips(lines: list[str], input_name: str = "clips") -> list[str]:
    """Clip paths from lines holding paths or glob patterns (relative to the output folder), in order, without repeats."""
    found: list[str] = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        quote(line, input_name)
        full = inside_output(line, input_name)
        if glob.has_magic(line) and not os.path.exists(full):
            matches = sorted(glob.glob(os.path.join(os.path.realpath(host.output_dir()), line)))
            if not matches:
                raise ValueError(f"{input_name}: the pattern {line!r} matches no file under the output folder.")
            paths = [inside_output(m, input_name) for m in matches]
        else:
            if not os.path.isfile(full):
                raise ValueError(f"{input_name}: the clip {line!r} does not exist ({full}).")
            paths = [full]
        for p in paths:
            quote(p, input_name)
            if p not in found:
                found.append(p)
    return found
