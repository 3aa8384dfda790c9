"""Outputs beyond H.264 RTMP: HEVC as Enhanced RTMP, and MPEG-TS over SRT.

The receivers are ffmpeg itself listening on 127.0.0.1 (``-listen 1`` for RTMP, ``mode=listener`` for
SRT) writing what arrives to a file; PyAV (FFmpeg 8, which reads Enhanced FLV) says what was received.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import av
import pytest

from comfyui_webtv.nodes.broadcast import channel as channels
from comfyui_webtv.nodes.broadcast.encoder import Encoding
from comfyui_webtv.nodes.broadcast.keys import check_output_url
from comfyui_webtv.nodes.broadcast.nodes import ChannelStatus, ChannelStop, FFConcatPlaylist, RTMPChannel
from comfyui_webtv.nodes.common.ffmpeg import ffmpeg_exe

from .rtmp_server import channel_ffmpegs, free_port, make_clip

FPS = 24
CLIP_S = 1.0


@pytest.fixture
def playlist(output_dir):
    folder = os.path.join(output_dir, "WebTV")
    os.makedirs(folder)
    clips = [make_clip(os.path.join(folder, f"clip_{c}.mp4"), c, CLIP_S, tone=440) for c in ("red", "blue")]
    yield FFConcatPlaylist().write("\n".join(clips), "WebTV/channel.ffconcat", "replace", "relative")["result"][0]
    channels.stop_all()


class Listener:
    """ffmpeg waiting for one incoming stream and copying it into ``path`` (the bundled 9.x, which has SRT).

    The channel first checks that an RTMP server accepts TCP connections, which ends an ffmpeg
    ``-listen 1`` with a failed handshake, so a listener that ends having received nothing starts again.
    """

    def __init__(self, source: str, path: str, fmt: str):
        self.cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
        self.cmd += (["-listen", "1"] if source.startswith("rtmp:") else []) + ["-i", source, "-c", "copy", "-f", fmt, path]
        self.path, self.errors, self._stop = path, [], threading.Event()
        self.proc = subprocess.Popen(self.cmd, stderr=subprocess.PIPE)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.errors.append(self.proc.communicate()[1].decode(errors="replace"))
            got = os.path.exists(self.path) and os.path.getsize(self.path) > 0
            if got or self._stop.is_set():
                return
            self.proc = subprocess.Popen(self.cmd, stderr=subprocess.PIPE)

    def wait(self, timeout: float = 60.0) -> None:
        """Wait for the stream's end (the channel stopped), killing the listener if it does not come."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.proc.kill()
            self._thread.join(10)


def run_channel(playlist: str, url: str, codec: str, receiver: Listener) -> dict:
    RTMPChannel().start(
        playlist=playlist, channel="codecs", outputs=url, local_preview=False, mode="clips", width=160, height=96,
        fps=float(FPS), video_kbps=400, audio_kbps=64, sample_rate="48000", keyframe_seconds=1.0, preset="ultrafast",
        retry_max_seconds=1.0, codec=codec,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the first clip aired in full: the next one is on air
        state = json.loads(ChannelStatus().status("codecs")["result"][0])
        if (state.get("current_clip") or {}).get("index") == 1 and state["outputs"][0]["state"] == "live":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the channel did not go live: {json.dumps(state)}; listener: {receiver.errors}")
    time.sleep(1.0)
    final = json.loads(ChannelStop().stop("codecs")["result"][0])
    receiver.wait()
    return final


def received(path: str) -> tuple[str, int, tuple]:
    """(video codec, decoded frames, RGB of the first frame's centre) of a received file."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return stream.codec_context.name, len(frames), tuple(int(v) for v in frames[0][48, 80])


def keyframe_gaps(path: str) -> list[float]:
    """Seconds between the received video keyframes."""
    with av.open(path) as container:
        times = [float(p.pts * p.time_base) for p in container.demux(container.streams.video[0]) if p.pts is not None and p.is_keyframe]
    return [b - a for a, b in zip(times, times[1:])]


@pytest.mark.parametrize("codec,names", [("hevc", {"hevc"}), ("h264", {"h264"})])
def test_codec_reaches_an_rtmp_listener(playlist, tmp_path, codec, names):
    port = free_port()
    path = str(tmp_path / "got.flv")
    receiver = Listener(f"rtmp://127.0.0.1:{port}/live/test", path, "flv")
    final = run_channel(playlist, f"rtmp://127.0.0.1:{port}/live/test", codec, receiver)
    assert final["dropped_frames"] == 0
    name, frames, rgb = received(path)
    assert name in names, f"{codec}: received {name}"
    assert frames >= FPS * CLIP_S, frames
    assert rgb[0] > 200 and rgb[1] < 60 and rgb[2] < 60, f"the first clip is red, got {rgb}"
    gaps = keyframe_gaps(path)  # keyframe_seconds=1: a fixed GOP, no scene-cut keyframes at the clip change
    assert gaps and all(abs(g - 1.0) < 0.05 for g in gaps), gaps
    assert channel_ffmpegs() == []


def test_srt_output_reaches_a_listener(playlist, tmp_path):
    port = free_port()
    path = str(tmp_path / "got.ts")
    receiver = Listener(f"srt://127.0.0.1:{port}?mode=listener", path, "mpegts")
    run_channel(playlist, f"srt://127.0.0.1:{port}?mode=caller&latency=200000", "h264", receiver)
    name, frames, rgb = received(path)
    assert name == "h264" and frames >= FPS * CLIP_S, (name, frames)
    assert rgb[0] > 200 and rgb[1] < 60 and rgb[2] < 60, f"the first clip is red, got {rgb}"
    gaps = keyframe_gaps(path)  # keyframe_seconds=1: a fixed GOP, no scene-cut keyframes at the clip change
    assert gaps and all(abs(g - 1.0) < 0.05 for g in gaps), gaps
    assert channel_ffmpegs() == []


def test_srt_addresses_are_checked(monkeypatch):
    monkeypatch.setenv("WEBTV_KEY_SRT", "live_123456_abcdefXYZ")
    check_output_url("srt://ingest.example.com:9000?mode=caller&latency=200000&streamid=live/cam1")
    for bad, why in [
        ("srt://ingest.example.com:9000?streamid=${WEBTV_KEY_SRT}", "command line"),
        ("srt://ingest.example.com:9000?passphrase=abcdefghijkl", "command line"),
        ("srt://ingest.example.com:9000?streamid=live_123456_abcdefXYZ", "command line"),
        ("srt://ingest.example.com:9000?mode=listener", "caller"),
        ("srt://ingest.example.com?mode=caller", "no port"),
        ("srt://${WEBTV_KEY_SRT}:9000", "server address"),
        ("srt://ingest.example.com:9000/live/x", "srt://host:port"),
    ]:
        with pytest.raises(ValueError, match=why) as info:
            check_output_url(bad)
        assert "live_123456_abcdefXYZ" not in str(info.value) and "abcdefghijkl" not in str(info.value)


def test_codec_is_checked():
    assert Encoding().codec == "h264"
    for bad in ("av1", "H264", "vp9", ""):
        with pytest.raises(ValueError, match="codec"):
            Encoding(codec=bad)
