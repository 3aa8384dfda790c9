"""ffconcat playlists: safe quoting, atomic writes, and a reader that parses exactly as ffmpeg does.

ffmpeg's concat demuxer (libavformat/concatdec.c) ends a line at CR, LF, CR LF or NUL, and at nothing
else (a form feed or U+2028 is part of the line); it splits the keyword at spaces, tabs, CR and LF and
reads a file name like ``av_get_token``: single quotes keep everything up to the next quote, a
backslash outside quotes escapes one character, and text after the name is ignored. The reader here
follows the same rules, so it sees the very entries ffmpeg would open, and it refuses whatever the
writer would not write (other directives, trailing text, URLs, unterminated quotes). A quote in a
path is written as ``'\\''`` (close, escaped quote, reopen); control characters and Unicode line
separators cannot be written and are refused. Relative paths are joined to the playlist's location
like URLs, so they are written as ``./name``.
"""

from __future__ import annotations

import glob
import os
import re
import unicodedata
from dataclasses import dataclass

from .. import host
from ..common.files import atomic_path

HEADER = "ffconcat version 1.0"
LINE_END = re.compile(r"\r\n|[\r\n\0]")  # ffmpeg's line ends (read_line_to_bprint)
SPACE = " \t\r\n"  # ffmpeg's SPACE_CHARS and av_get_token's WHITESPACES
URL = re.compile(r"^([A-Za-z0-9+.-]+:|subfile,)")  # what ffmpeg opens as a protocol instead of a file
DECIMAL = re.compile(r"^[0-9]+(\.[0-9]+)?$")
# A name ffmpeg's -safe 1 accepts: components of [A-Za-z0-9_-] and dots, none starting with a dot.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$")


@dataclass(frozen=True)
class Entry:
    """One ``file`` directive: an absolute path and its duration in seconds when known."""

    path: str
    duration: float | None = None


def unwritable(text: str) -> list[str]:
    """The characters of ``text`` a playlist line cannot hold: control characters (tab aside), line and
    paragraph separators, unpaired surrogates."""
    return [c for c in text if c != "\t" and unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs")]


def quote(path: str, input_name: str = "clips") -> str:
    """``path`` as one ffconcat token; raises for characters the format cannot hold."""
    bad = unwritable(path)
    if bad:
        raise ValueError(
            f"{input_name}: the path {path!r} contains a line break or control character ({bad[0]!r}), which an "
            "ffconcat playlist cannot hold safely (ffmpeg and other readers split lines differently); rename the file."
        )
    return "'" + path.replace("'", "'\\''") + "'"


def _keyword(line: str) -> tuple[str, str]:
    """concatdec's ``get_keyword``: the word up to the first space character, and the rest after the spaces."""
    line = line.lstrip(SPACE)
    end = next((i for i, c in enumerate(line) if c in SPACE), len(line))
    return line[:end], line[end:].lstrip(SPACE)


def _token(text: str) -> tuple[str, str]:
    """``av_get_token(text, SPACE)``: the first token and what follows; raises on an unterminated quote
    (ffmpeg takes the rest of the line; the writer never writes one)."""
    i, n = 0, len(text)
    while i < n and text[i] in SPACE:
        i += 1
    out, end = "", 0
    while i < n and text[i] not in SPACE:
        ch = text[i]
        i += 1
        if ch == "\\" and i < n:
            out += text[i]
            i += 1
            end = len(out)
        elif ch == "'":
            close = text.find("'", i)
            if close < 0:
                raise ValueError("unterminated quote")
            out += text[i:close]
            i = close + 1
            end = len(out)
        else:
            out += ch
    while len(out) > end and out[-1] in SPACE:
        out = out[:-1]
    return out, text[i:]


def read_ffconcat(path: str) -> list[Entry]:
    """The ``file`` entries of an ffconcat playlist, paths made absolute against the playlist's folder.

    Lines are split and read exactly as ffmpeg's concat demuxer does; anything the pack's writer would
    not write is refused with the line number.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    except OSError as exc:
        raise ValueError(f"playlist: cannot read {path} ({exc.strerror}).") from None
    lines = LINE_END.split(text)
    if not lines or lines[0].strip(SPACE) != HEADER:
        raise ValueError(f"playlist: {path} is not an ffconcat file (its first line must be '{HEADER}').")
    entries: list[Entry] = []
    for number, line in enumerate(lines[1:], start=2):
        keyword, rest = _keyword(line)
        if not keyword or keyword.startswith("#"):
            continue

        def refuse(why: str):
            return ValueError(f"playlist: {path} line {number}: {why}; write playlists with the FFConcat Playlist node.")

        if keyword == "file":
            try:
                arg, rest = _token(rest)
            except ValueError as exc:
                raise refuse(str(exc)) from None
            if not arg:
                raise refuse("a file directive without a name")
            if URL.match(arg):
                raise refuse(f"{arg!r} is a URL, not a file")
            if unwritable(arg):
                raise refuse(f"the name {arg!r} holds a control character or line separator")
            entries.append(Entry(os.path.normpath(os.path.join(folder, arg))))
        elif keyword == "duration" and entries:
            arg, rest = _keyword(rest)
            if not DECIMAL.match(arg):
                raise refuse(f"the duration {arg!r} is not a number of seconds")
            entries[-1] = Entry(entries[-1].path, float(arg))
        else:
            raise refuse(f"the directive {keyword!r} is not one the pack writes (file, then duration)")
        if rest.strip(SPACE):
            raise refuse(f"unexpected text {rest.strip(SPACE)!r} after the {keyword}")
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


def live_copy(playlist: str, entries: list[Entry], channel: str) -> tuple[str, bool]:
    """Write the copy of ``playlist`` a playlist-mode channel's ffmpeg reads: ``(path, safe)``.

    Written beside the playlist from entries already read and checked to be inside the output folder,
    so what ffmpeg opens is what the pack checked, even if the playlist changes meanwhile. When every
    entry is a plain name ffmpeg's own ``-safe 1`` accepts, the copy uses them (``safe`` True);
    otherwise it holds absolute paths and ffmpeg runs with ``-safe 0`` on the checked copy.
    """
    folder = os.path.dirname(playlist)
    paths = [inside_output(e.path, "playlist") for e in entries]
    names = [os.path.relpath(p, folder) for p in paths]
    safe = all(SAFE_NAME.match(n) for n in names)
    lines = [HEADER]
    for entry, name, full in zip(entries, names, paths):
        lines.append(f"file {quote(name if safe else full, 'playlist')}")
        if entry.duration:
            lines.append(f"duration {entry.duration:.6f}")
    copy = os.path.join(folder, f".{channel}.live.ffconcat")
    with atomic_path(copy) as part:
        with open(part, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return copy, safe


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
