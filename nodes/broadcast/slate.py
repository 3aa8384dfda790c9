"""The slate a channel airs when it has nothing to play: its name and "starting soon", never black.

ffmpeg draws it (lavfi ``color`` + ``drawtext``) with no asset of the pack's own: through fontconfig,
else the first of a few common font files. An ffmpeg built without drawtext, or a machine with no
font at all, gets the same text from Pillow's built-in bitmap font instead. Made once per channel
format and name.
"""

from __future__ import annotations

import functools
import glob
import logging
import os

from ..common.ffmpeg import run_ffmpeg
from .normalize import ChannelFormat

log = logging.getLogger(__name__)
BACKGROUND = (16, 24, 48)  # a dark blue, plainly not a dead (black) feed
SUBTITLE = "starting soon"
FONT_GLOBS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans*.ttf", "/usr/share/fonts/**/*.ttf",
              "/System/Library/Fonts/*.ttc", "C:/Windows/Fonts/arial.ttf")


def _font_files() -> list[str]:
    for pattern in FONT_GLOBS:
        found = sorted(glob.glob(pattern, recursive=True))
        if found:
            return found[:1]
    return []


def _drawtext(fmt: ChannelFormat, name: str, fontfile: str | None) -> bytes:
    """One yuv420p frame drawn by ffmpeg (``name`` holds only letters, digits, '-' and '_': nothing to escape)."""
    font = f":fontfile='{fontfile}'" if fontfile else ""
    big, small = max(8, fmt.height // 7), max(6, fmt.height // 14)
    color = "0x{:02x}{:02x}{:02x}".format(*BACKGROUND)
    graph = (f"color=c={color}:s={fmt.width}x{fmt.height}:r=1,"
             f"drawtext=text='{name}'{font}:fontcolor=white:fontsize={big}:x=(w-tw)/2:y=h/2-th-{small // 2},"
             f"drawtext=text='{SUBTITLE}'{font}:fontcolor=0xc8c8c8:fontsize={small}:x=(w-tw)/2:y=h/2+{small // 2}")
    out = run_ffmpeg(["-f", "lavfi", "-i", graph, "-frames:v", "1", "-pix_fmt", "yuv420p", "-f", "rawvideo", "pipe:1"],
                     timeout=30).stdout
    if len(out) != fmt.frame_bytes:
        raise RuntimeError(f"ffmpeg drew {len(out)} bytes, not one {fmt.width}x{fmt.height} frame")
    return out


def _pillow(fmt: ChannelFormat, name: str) -> bytes:
    """The same slate from Pillow's built-in font, converted to yuv420p by ffmpeg."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (fmt.width, fmt.height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for text, size, y, fill in ((name, max(8, fmt.height // 7), 0.42, "white"), (SUBTITLE, max(6, fmt.height // 14), 0.6, (200, 200, 200))):
        font = ImageFont.load_default(size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        draw.text(((fmt.width - (right - left)) / 2, fmt.height * y - (bottom - top) / 2), text, font=font, fill=fill)
    return run_ffmpeg(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{fmt.width}x{fmt.height}", "-i", "pipe:0",
                       "-frames:v", "1", "-pix_fmt", "yuv420p", "-f", "rawvideo", "pipe:1"], stdin=image.tobytes(), timeout=30).stdout


@functools.lru_cache(maxsize=16)
def slate_frame(fmt: ChannelFormat, name: str) -> bytes:
    """One raw yuv420p frame showing the channel's name and "starting soon"."""
    for fontfile in (None, *_font_files()):
        try:
            return _drawtext(fmt, name, fontfile)
        except (RuntimeError, OSError) as e:
            log.debug("slate: drawtext with font %s failed: %s", fontfile or "(fontconfig)", e)
    log.info("slate: ffmpeg's drawtext has no usable font here; drawing the slate with Pillow's built-in font")
    return _pillow(fmt, name)
