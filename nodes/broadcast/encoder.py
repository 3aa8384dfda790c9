"""The channel's encoder command and the reader of ffmpeg's ``-progress`` reports.

The encoding meets Twitch's and YouTube's ingest rules: H.264 Main (or HEVC Main or AV1, which YouTube
takes as Enhanced RTMP), yuv420p, a keyframe every ``keyframe_seconds`` (no scene-cut keyframes),
strict CBR (bitrate = minrate = maxrate, VBV buffer of one second, x264 ``nal-hrd=cbr``), AAC-LC stereo
at 44.1 or 48 kHz. One encoder process makes one encode per :class:`Profile` the outputs ask for (a
video codec, and Opus sound with constrained-baseline H.264 for WebRTC), each written to its own pipe;
the outputs copy those streams to FLV (RTMP), MPEG-TS (SRT), WebRTC (WHIP) or HLS, so each distinct
encode is made once whatever the number of destinations.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from dataclasses import dataclass

from ..common import checks
from .keys import mask
from .normalize import ChannelFormat

PRESETS = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"]
TUNES = ["zerolatency", "film", "animation", "none"]
CODECS = ["h264", "hevc", "av1"]
_X265_TUNES = {"zerolatency": "zerolatency", "animation": "animation"}  # x265 has no "film"
_SVT_PRESETS = dict(zip(PRESETS, (12, 11, 10, 9, 8, 7)))  # SVT-AV1 presets from fastest (12) to slower


@dataclass(frozen=True)
class Profile:
    """One encode the channel's ffmpeg makes: a video codec, and for WebRTC (WHIP) Opus sound and
    constrained-baseline H.264 without B-frames (what WebRTC peers decode); else AAC."""

    codec: str = "h264"
    webrtc: bool = False

    @property
    def container(self) -> str:
        """The pipe's container: MPEG-TS, or FLV for AV1, which FFmpeg's MPEG-TS demuxer (8.x in PyAV,
        9.x bundled) cannot read back (it sees a data stream)."""
        return "flv" if self.codec == "av1" else "mpegts"

    @property
    def label(self) -> str:
        """How the status names this encode."""
        return f"{self.codec}+opus" if self.webrtc else self.codec


@dataclass(frozen=True)
class Encoding:
    """Bitrates, keyframe interval, video codec, x264/x265 speed preset and tuning.

    ``zerolatency`` (no B-frames, no lookahead) is the default: it encodes about 1.5-2x faster than the
    preset alone at the same bitrate and starts the stream sooner, for a little less quality per bit.
    """

    video_kbps: int = 3000
    audio_kbps: int = 128
    keyframe_seconds: float = 2.0
    preset: str = "veryfast"
    tune: str = "zerolatency"
    codec: str = "h264"

    def __post_init__(self):
        checks.integer("video_kbps", self.video_kbps, low=100, high=50000)
        checks.integer("audio_kbps", self.audio_kbps, low=32, high=320)
        checks.finite("keyframe_seconds", self.keyframe_seconds)
        if not 0.5 <= self.keyframe_seconds <= 10:
            raise ValueError(f"keyframe_seconds: {self.keyframe_seconds} is outside 0.5..10 (Twitch and YouTube ask for 2).")
        if self.preset not in PRESETS:
            raise ValueError(f"preset: {self.preset!r} is not one of {PRESETS}.")
        if self.tune not in TUNES:
            raise ValueError(f"tune: {self.tune!r} is not one of {TUNES}.")
        if self.codec not in CODECS:
            raise ValueError(f"codec: {self.codec!r} is not one of {CODECS}.")


def encode_args(fmt: ChannelFormat, enc: Encoding, profile: Profile | None = None, target: str = "pipe:1") -> list[str]:
    """Output options for one encode: CBR H.264, HEVC or AV1 with fixed GOP + AAC (Opus for WebRTC), written
    to ``target`` as MPEG-TS (FLV for AV1). ``profile``: the channel's own codec when None."""
    profile = profile or Profile(enc.codec)
    gop = max(1, round(float(fmt.fps) * enc.keyframe_seconds))
    rate = f"{enc.video_kbps}k"
    keyframes = ["-g", str(gop), "-keyint_min", str(gop), "-force_key_frames", f"expr:gte(t,n_forced*{enc.keyframe_seconds})"]
    if profile.codec == "av1":
        # SVT-AV1 (in both FFmpeg builds and in PyAV): CBR needs its low-delay prediction structure, which
        # has no B-frames; scene-change keyframes off. It takes no max rate without its TPL, which low delay turns off.
        video = [
            "-c:v", "libsvtav1", "-preset", str(_SVT_PRESETS[enc.preset]), "-pix_fmt", "yuv420p", *keyframes,
            "-b:v", rate, "-bufsize", rate, "-svtav1-params", "scd=0:pred-struct=1:rc=2",
        ]
    elif profile.codec == "hevc":
        tune = ["-tune", _X265_TUNES[enc.tune]] if enc.tune in _X265_TUNES else []
        video = [
            "-c:v", "libx265", "-preset", enc.preset, *tune, "-profile:v", "main", "-pix_fmt", "yuv420p", *keyframes,
            "-b:v", rate, "-maxrate", rate, "-bufsize", rate,
            "-x265-params", "scenecut=0:open-gop=0:strict-cbr=1:repeat-headers=1:log-level=error",
        ]
    else:
        tune = [] if enc.tune == "none" else ["-tune", enc.tune]
        level = ["-profile:v", "baseline", "-bf", "0"] if profile.webrtc else ["-profile:v", "main"]
        video = [
            "-c:v", "libx264", "-preset", enc.preset, *tune, *level, "-pix_fmt", "yuv420p", *keyframes, "-sc_threshold", "0",
            "-b:v", rate, "-minrate", rate, "-maxrate", rate, "-bufsize", rate,
            "-x264-params", "nal-hrd=cbr:force-cfr=1",
        ]
    if profile.webrtc:  # WebRTC's Opus runs at 48 kHz whatever the channel's rate
        audio = ["-c:a", "libopus", "-b:a", f"{enc.audio_kbps}k", "-ar", "48000", "-ac", "2"]
    else:
        audio = ["-c:a", "aac", "-b:a", f"{enc.audio_kbps}k", "-ar", str(fmt.sample_rate), "-ac", str(fmt.channels)]
    if profile.container == "flv":
        return video + audio + ["-f", "flv", "-flvflags", "no_duration_filesize", target]
    return video + audio + ["-f", "mpegts", "-mpegts_pmt_start_pid", "0x1000", "-mpegts_start_pid", "0x100", target]


def encoder_outputs(fmt: ChannelFormat, enc: Encoding, per_output: list[str], targets: list[tuple[Profile, str]]) -> list[str]:
    """The output part of the encoder's command: each profile's encode to its pipe, each with ``per_output``
    (the maps and filters, which ffmpeg applies to the output that follows them)."""
    return [arg for profile, target in targets for arg in per_output + encode_args(fmt, enc, profile, target)]


def raw_input_args(fmt: ChannelFormat, audio_fd: int) -> tuple[list[str], list[str]]:
    """``(inputs, per-output options)`` for the pipe feeder: yuv420p frames on stdin, s16le PCM on ``audio_fd``."""
    return [
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-video_size", f"{fmt.width}x{fmt.height}",
        "-framerate", str(fmt.fps), "-probesize", "32", "-analyzeduration", "0", "-i", "pipe:0",
        "-f", "s16le", "-ar", str(fmt.sample_rate), "-ac", str(fmt.channels), "-probesize", "32", "-analyzeduration", "0",
        "-i", f"pipe:{audio_fd}",
    ], ["-map", "0:v", "-map", "1:a"]


def playlist_input_args(fmt: ChannelFormat, playlist: str, has_audio: bool, safe: bool = True) -> tuple[list[str], list[str]]:
    """``(inputs, per-output options)`` for the seed-compatible mode: the concat demuxer over the playlist,
    looped, read in real time.

    Input options come before the ``-i`` they belong to (the WebTV's printed command had ``-stream_loop``
    after it, which current ffmpeg rejects). ``safe``: every entry is a plain relative name, so ffmpeg's
    own check (``-safe 1``) stays on; otherwise the playlist is the pack's checked copy (see
    :func:`.playlist.live_copy`).
    """
    args = ["-re", "-stream_loop", "-1", "-f", "concat", "-safe", "1" if safe else "0", "-i", playlist]
    if has_audio:
        audio = ["-map", "0:a:0", "-af", "aresample=async=1"]
    else:
        args += ["-f", "lavfi", "-i", f"anullsrc=r={fmt.sample_rate}:cl=stereo"]
        audio = ["-map", "1:a", "-shortest"]
    return args, ["-map", "0:v:0", "-vf", fmt.video_filter(), "-r", str(fmt.fps)] + audio


_KEY = re.compile(r"^[a-z0-9_]+$")


class FfmpegLog:
    """Reads an ffmpeg's stderr in a thread: ``-progress`` blocks and the last other lines (keys masked)."""

    def __init__(self, stream, secrets: list[str] = ()):
        self.progress: dict[str, str] = {}
        self._lines: deque[str] = deque(maxlen=6)
        self._secrets = list(secrets)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        block: dict[str, str] = {}
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").strip()
            key, sep, value = line.partition("=")
            if sep and _KEY.match(key):
                block[key] = value.strip()
                if key == "progress":
                    self.progress, block = block, {}
            elif line.startswith("Svt[") and not line.startswith("Svt[error]"):
                continue  # SVT-AV1 logs its settings and warnings itself, whatever ffmpeg's log level
            elif line:
                self._lines.append(mask(line, self._secrets))
        stream.close()

    def note(self, line: str) -> None:
        """Add a line of our own to the reported tail."""
        self._lines.append(line)

    def join(self, timeout: float = 2.0) -> None:
        """Wait up to ``timeout`` seconds for the reader thread to finish."""
        self._thread.join(timeout)

    def tail(self) -> str:
        """The last error lines, joined."""
        return " | ".join(self._lines)

    def number(self, key: str) -> float | None:
        """A numeric progress field (``speed`` without its ``x``); None when not reported yet."""
        value = self.progress.get(key, "").rstrip("x").strip()
        try:
            return float(value)
        except ValueError:
            return None
