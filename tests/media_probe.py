"""Reading back what the pack wrote (PyAV), for assertions."""

from __future__ import annotations

from dataclasses import dataclass, field

import av


@dataclass
class MediaInfo:
    frames: int
    fps: float
    width: int
    height: int
    video_codec: str
    audio_codec: str | None
    video_duration: float
    audio_duration: float | None
    tags: dict = field(default_factory=dict)


def probe(path: str) -> MediaInfo:
    """Decode every video frame and read the audio stream's length."""
    with av.open(path) as container:
        video = container.streams.video[0]
        fps, width, height, codec = float(video.average_rate), video.width, video.height, video.codec_context.name
        frames = sum(1 for _ in container.decode(video))
        tags = dict(container.metadata)
    audio_codec = audio_duration = None
    with av.open(path) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            audio_codec = stream.codec_context.name
            samples = sum(f.samples for f in container.decode(stream))
            audio_duration = samples / stream.rate
    return MediaInfo(frames, fps, width, height, codec, audio_codec, frames / fps, audio_duration, tags)
