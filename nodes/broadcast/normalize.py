"""Per-clip normalisation to the channel's format: probe a clip, decode it to raw frames and PCM.

Every clip on a channel is brought to one format (size with letterbox padding, frame rate, yuv420p,
48 or 44.1 kHz stereo s16le) so the encoder sees one endless, uniform stream. A clip with no sound
gets silence; audio shorter or longer than the picture is padded or cut frame by frame.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction

from ..common import checks
from ..common.ffmpeg import ffmpeg_exe, popen

MAX_WIDTH, MAX_HEIGHT = 3840, 2160  # 4K UHD, the most streaming platforms ingest


@dataclass(frozen=True)
class ChannelFormat:
    """The uniform picture and sound every clip is converted to."""

    width: int = 1024
    height: int = 576
    fps: Fraction = Fraction(24)
    sample_rate: int = 48000
    channels: int = 2

    def __post_init__(self):
        if not isinstance(self.fps, Fraction):
            checks.finite("fps", self.fps, low=1, high=120)
        object.__setattr__(self, "fps", Fraction(self.fps).limit_denominator(1001))
        for name, high in (("width", MAX_WIDTH), ("height", MAX_HEIGHT)):
            value = checks.integer(name, getattr(self, name), low=16, high=high)
            if value % 2:
                raise ValueError(f"{name}: {value} must be an even number of pixels (H.264 in yuv420p).")
        if not 1 <= self.fps <= 120:
            raise ValueError(f"fps: {float(self.fps)} is outside 1..120.")
        if self.sample_rate not in (44100, 48000):
            raise ValueError(f"sample_rate: {self.sample_rate} Hz; streaming platforms take 44100 or 48000.")

    @property
    def frame_bytes(self) -> int:
        """Bytes of one raw yuv420p frame."""
        return self.width * self.height * 3 // 2

    def samples_before(self, frame: int) -> int:
        """Audio samples that belong before video frame ``frame`` (exact for fractional frame rates)."""
        return frame * self.sample_rate * self.fps.denominator // self.fps.numerator

    def video_filter(self) -> str:
        """The ffmpeg filter that brings any clip to this frame rate and size (letterboxed) in yuv420p."""
        w, h = self.width, self.height
        return (
            f"fps={self.fps}:round=down,scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2,"
            f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1,format=yuv420p"
        )

    def black_frame(self) -> bytes:
        """One black yuv420p frame as raw bytes."""
        luma = self.width * self.height
        return bytes([16]) * luma + bytes([128]) * (luma // 2)


@dataclass(frozen=True)
class ClipInfo:
    """What the channel needs to know about a clip before it goes on air."""

    path: str
    duration: float | None
    width: int
    height: int
    fps: float | None
    has_audio: bool


def probe(path: str, input_name: str = "clips") -> ClipInfo:
    """Read a clip's streams (cached while the file is unchanged); raises a clear error when it is not a playable video."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ValueError(f"{input_name}: cannot read {path} ({exc.strerror}).") from None
    return _probe(path, st.st_size, st.st_mtime_ns, input_name)


@functools.lru_cache(maxsize=4096)
def _probe(path: str, size: int, mtime_ns: int, input_name: str) -> ClipInfo:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError(f"{input_name}: {path} has no video stream.")
            video = container.streams.video[0]
            duration = container.duration / 1_000_000 if container.duration else None
            if video.duration and video.time_base:
                duration = float(video.duration * video.time_base)
            rate = float(video.average_rate) if video.average_rate else None
            return ClipInfo(path, duration, video.width, video.height, rate, bool(container.streams.audio))
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"{input_name}: cannot read {path} as a video ({exc}).") from None


class ClipDecoder:
    """Decodes one clip at the channel format: frames from one ffmpeg, sound from another.

    The processes start at once and block on their pipes, so a decoder opened ahead of time
    (prefetch) is ready the moment the previous clip ends.
    """

    def __init__(self, clip: ClipInfo, fmt: ChannelFormat):
        self.clip, self.fmt = clip, fmt
        self._log = tempfile.TemporaryFile()
        base = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", clip.path]
        self._video = popen(
            base + ["-map", "0:v:0", "-vf", fmt.video_filter(), "-f", "rawvideo", "pipe:1"],
            stdout=subprocess.PIPE, stderr=self._log,
        )
        self._audio = None
        if clip.has_audio:
            self._audio = popen(
                base + ["-map", "0:a:0", "-ac", str(fmt.channels), "-ar", str(fmt.sample_rate), "-f", "s16le", "pipe:1"],
                stdout=subprocess.PIPE, stderr=self._log,
            )
        self.frames_read = 0

    def read_frame(self) -> bytes | None:
        """The next frame as yuv420p bytes, or None at the end of the clip."""
        data = self._video.stdout.read(self.fmt.frame_bytes)
        if len(data) < self.fmt.frame_bytes:
            return None
        self.frames_read += 1
        return data

    def read_audio(self, samples: int) -> bytes:
        """``samples`` interleaved s16le samples; silence where the clip has no (more) sound."""
        size = samples * self.fmt.channels * 2
        data = self._audio.stdout.read(size) if self._audio is not None else b""
        return data + bytes(size - len(data))

    def error(self) -> str:
        """ffmpeg's last error lines, for a clip that produced no frame."""
        self._video.wait()
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:]) or f"ffmpeg exited with code {self._video.returncode}"

    def close(self) -> None:
        """End the decoding ffmpeg processes."""
        for proc in (self._video, self._audio):
            if proc is None:
                continue
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()
        self._log.close()
