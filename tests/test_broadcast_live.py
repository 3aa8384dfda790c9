"""The live channel through a real RTMP server (Debian nginx + libnginx-mod-rtmp on 127.0.0.1).

Clips go out through the pack's nodes; what nginx received (its recording of each publishing session)
is analysed with PyAV: one publishing connection, every clip in order with its frame count, no timestamp gaps, 2 s
keyframes, constant bitrate, sound throughout; a server crash and restart; the playlist mode's loop.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from comfyui_webtv.nodes.broadcast import channel as channels
from comfyui_webtv.nodes.broadcast.nodes import ChannelAppend, ChannelStatus, ChannelStop, FFConcatPlaylist, RTMPChannel

from .rtmp_server import Nginx, TlsProxy, analyse, channel_ffmpegs, cmdline, make_clip

FPS = 24
CLIP_S = 1.5
FRAMES = round(FPS * CLIP_S)
KBPS = 600
TONES = {"red": 440.0, "lime": 660.0, "blue": 880.0}


@pytest.fixture
def nginx(tmp_path):
    server = Nginx(str(tmp_path / "nginx"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def clips(output_dir):
    folder = os.path.join(output_dir, "WebTV")
    os.makedirs(folder)
    made = {c: make_clip(os.path.join(folder, f"clip_{i}_{c}.mp4"), c, CLIP_S, tone=TONES[c]) for i, c in enumerate(TONES)}
    # The odd one: another size and frame rate, and no sound at all.
    made["yellow"] = make_clip(os.path.join(folder, "odd yellow's clip.mp4"), "yellow", CLIP_S, size=(240, 240), fps=30, tone=None)
    yield made
    channels.stop_all()
    assert channel_ffmpegs() == []


def start_channel(playlist: str, url: str, name: str = "test", mode: str = "clips", preview: bool = False) -> dict:
    result = RTMPChannel().start(
        playlist=playlist, channel=name, outputs=url, local_preview=preview, mode=mode, width=320, height=180,
        fps=float(FPS), video_kbps=KBPS, audio_kbps=96, sample_rate="48000", keyframe_seconds=2.0, preset="veryfast",
        retry_max_seconds=1.0,
    )
    return json.loads(result["result"][0])


def status(name: str = "test") -> dict:
    return json.loads(ChannelStatus().status(name)["result"][0])


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    now = {k: v for k, v in status().items() if k != "history"}
    pytest.fail(f"timed out after {timeout} s waiting for {what}; status: {json.dumps(now)}")


def playlist_of(*paths: str) -> str:
    return FFConcatPlaylist().write("\n".join(paths), "WebTV/channel.ffconcat", "replace", "relative")["result"][0]


def completed(name: str = "test") -> list[str]:
    return [os.path.basename(h["path"]) for h in status(name)["history"] if h["completed"]]


def check_stream(stream, expected_runs, target_kbps: int, frame_slack: int = 0):
    """Clips in order with their frame counts, timestamps, keyframes, bitrate and sound of a received stream."""
    assert (stream.width, stream.height) == (320, 180)
    runs = stream.runs()[: len(expected_runs)]
    assert [c for c, _ in runs] == [c for c, _ in expected_runs], runs
    assert all(abs(n - m) <= frame_slack for (_, n), (_, m) in zip(runs, expected_runs)), runs
    gaps = np.diff(stream.video_times)
    assert gaps.max() <= 1.5 / FPS, f"timestamp gap of {gaps.max():.3f} s"
    keys = stream.video_times[stream.keyframes]
    assert len(keys) >= 3
    assert np.allclose(np.diff(keys), 2.0, atol=0.5 / FPS), f"keyframes at {keys}"
    # CBR: every whole GOP carries the target bitrate (x264 pads with filler data).
    for start, end in zip(keys[1:-2], keys[2:-1]):
        inside = (stream.video_times >= start) & (stream.video_times < end)
        kbps = stream.sizes[inside].sum() * 8 / (end - start) / 1000
        assert abs(kbps - target_kbps) / target_kbps < 0.15, f"GOP at {start:.1f} s: {kbps:.0f} kbit/s for {target_kbps}"
    assert (stream.audio_rate, stream.audio_channels) == (48000, 2)
    assert stream.audio_times[0] <= stream.video_times[0] + 0.1 and stream.audio_times[-1] >= stream.video_times[-1] - 0.2
    assert np.diff(stream.audio_times).max() < 0.1, "the sound has a gap"


def test_channel_appends_on_one_connection(nginx, clips):
    url = nginx.url("test")
    start_channel(playlist_of(clips["red"], clips["lime"], clips["blue"]), url)
    wait_for(lambda: (status()["current_clip"] or {}).get("index") == 1, 10, "the second clip")
    appended = json.loads(ChannelAppend().append("test", "WebTV/odd yellow's clip.mp4")["result"][0])
    assert appended["clips"] == 4
    # Past the appended clip and back to the first: the playlist loops.
    wait_for(lambda: completed()[:4] == [os.path.basename(clips[c]) for c in ("red", "lime", "blue", "yellow")], 30, "four clips")
    wait_for(lambda: status()["frames_sent"] >= 4 * FRAMES + 12, 30, "the first clip again")
    final = json.loads(ChannelStop().stop("test")["result"][0])
    assert channel_ffmpegs() == []
    assert final["sessions"] == 1 and final["reconnects"] == 0 and final["failed_attempts"] == 0
    assert final["frames_sent"] >= 4 * FRAMES + 12 and final["dropped_frames"] == 0 and final["late_frames"] >= 0
    stream = analyse(nginx.recording("test", sessions=1))
    assert len(nginx.publishes()) == 1, nginx.publishes()
    expected = [("red", FRAMES), ("lime", FRAMES), ("blue", FRAMES), ("yellow", FRAMES)]
    check_stream(stream, expected, KBPS)
    assert stream.runs()[4][0] == "red", "the playlist loops when nothing new is queued"
    # Each clip's own tone plays with its picture; the clip without sound is silent.
    start = stream.video_times[0]
    for i, (colour, _) in enumerate(expected):
        a, b = start + (i * FRAMES + 6) / FPS, start + ((i + 1) * FRAMES - 6) / FPS
        freq, rms = stream.tone(a, b)
        if colour == "yellow":
            assert rms < 0.01, f"the silent clip has sound (rms {rms})"
        else:
            assert abs(freq - TONES[colour]) < 15 and rms > 0.05, f"{colour}: {freq:.0f} Hz, rms {rms:.3f}"


def test_channel_survives_a_server_restart(nginx, clips):
    url = nginx.url("test")
    start_channel(playlist_of(clips["red"], clips["lime"], clips["blue"]), url)
    wait_for(lambda: status()["state"] == "live" and (status()["current_clip"] or {}).get("index") == 1, 10, "live on the second clip")
    wait_for(lambda: status()["current_clip"]["frame"] >= 8, 10, "mid-clip")
    nginx.kill()
    wait_for(lambda: status()["state"] in ("reconnecting", "waiting"), 5, "the channel to notice the crash")
    time.sleep(1.0)
    nginx.start()
    wait_for(lambda: status()["state"] == "live" and status()["sessions"] == 2, 10, "back on air")
    wait_for(lambda: len(completed()) >= 4, 30, "the clips after the restart")
    final = json.loads(ChannelStop().stop("test")["result"][0])
    assert final["reconnects"] == 1
    history = [(os.path.basename(h["path"]), h["completed"]) for h in final["history"]]
    rotation = ["red", "lime", "blue"] * 3
    # The clip on air when the channel noticed the crash (the second, or a later one on a slow machine) is
    # played again from its first frame; none is skipped.
    cut = [done for _, done in history].index(False)
    assert cut >= 1 and len(history) >= cut + 3, history
    aired = [os.path.basename(clips[c]) for c in rotation[: cut + 1] + rotation[cut : cut + 2]]
    assert history[: cut + 3] == [(name, i != cut) for i, name in enumerate(aired)], history
    # The restarted server's log starts empty: its first session is the channel's second.
    stream = analyse(nginx.recording("test", sessions=1))
    check_stream(stream, [(rotation[cut], FRAMES), (rotation[cut + 1], FRAMES)], KBPS)


def test_one_encode_feeds_rtmp_and_rtmps_independently(nginx, clips, tmp_path, monkeypatch):
    """Two servers, one over TLS: one encoder; a crash of one server leaves the other's stream untouched."""
    other = Nginx(str(tmp_path / "nginx-b"))
    other.start()
    proxy = TlsProxy(other.root, other.port)
    monkeypatch.setenv("WEBTV_CA_FILE", proxy.cert)  # trust the test's own certificate, verification stays on
    try:
        start_channel(playlist_of(clips["red"], clips["lime"], clips["blue"]), f"{nginx.url('a')}\nrtmps://127.0.0.1:{proxy.port}/live/b")
        wait_for(lambda: [o["state"] for o in status()["outputs"]] == ["live", "live"], 10, "both outputs live")
        encoders = [p for p in channel_ffmpegs() if "libx264" in cmdline(p)]
        assert len(encoders) == 1 and proxy.handshakes >= 1
        other.kill()
        wait_for(lambda: status()["outputs"][1]["state"] != "live", 5, "the rtmps output to notice")
        assert status()["outputs"][0]["state"] == "live" and status()["state"] == "live"
        other.start()
        wait_for(lambda: status()["outputs"][1]["state"] == "live", 10, "the rtmps output back")
        wait_for(lambda: len(completed()) >= 4, 30, "four clips")
        wait_for(lambda: status()["frames_sent"] >= 4 * FRAMES + 12, 30, "the first clip again")
        final = json.loads(ChannelStop().stop("test")["result"][0])
        rejoined = analyse(other.recording("b", sessions=1))  # the session after the restart
    finally:
        other.kill()
        proxy.close()
    assert final["sessions"] == 1 and final["outputs"][0]["reconnects"] == 0 and final["outputs"][1]["reconnects"] >= 1
    check_stream(analyse(nginx.recording("a", sessions=1)), [("red", FRAMES), ("lime", FRAMES), ("blue", FRAMES)], KBPS)
    assert len(nginx.publishes()) == 1
    # Back mid-stream: from a keyframe on, continuous.
    assert rejoined.keyframes[0] and len(rejoined.colours) >= FRAMES
    assert np.diff(rejoined.video_times).max() <= 1.5 / FPS


def test_playlist_mode_loops_through_nginx(nginx, clips):
    url = nginx.url("test")
    started = start_channel(playlist_of(clips["red"], clips["blue"]), url, mode="playlist")
    assert started["mode"] == "playlist"
    wait_for(lambda: status()["state"] == "live", 10, "live")
    wait_for(lambda: status()["frames_sent"] >= 5 * FRAMES + FPS, 15, "two passes and a half")
    ChannelStop().stop("test")
    stream = analyse(nginx.recording("test", sessions=1))
    assert len(nginx.publishes()) == 1
    # ffmpeg's -stream_loop offsets each pass by the container's duration, which the AAC priming makes a
    # little longer than the picture: the seed-compatible mode repeats a frame where the playlist wraps.
    check_stream(stream, [("red", FRAMES), ("blue", FRAMES), ("red", FRAMES), ("blue", FRAMES)], KBPS, frame_slack=1)


def test_unreachable_server_retries_without_blocking(output_dir, clips):
    from .rtmp_server import free_port

    port = free_port()  # nothing listens there
    start_channel(playlist_of(clips["red"]), f"rtmp://127.0.0.1:{port}/live/test")
    wait_for(lambda: status()["failed_attempts"] >= 3, 6, "three attempts")
    now = status()
    assert now["state"] in ("waiting", "reconnecting")
    assert f"127.0.0.1:{port}" in now["last_error"] and "refused" in now["last_error"].lower()
    assert channel_ffmpegs() == []  # it waits for the server instead of spawning encoders
    ChannelStop().stop("test")


def test_bad_inputs_are_refused_clearly(output_dir, clips, monkeypatch):
    playlist = playlist_of(clips["red"])
    with pytest.raises(ValueError, match="outputs: 'http://example.com/live' is not an RTMP address"):
        start_channel(playlist, "http://example.com/live")
    with pytest.raises(ValueError, match=r"playlist: '/etc/hostname' is outside the output folder"):
        start_channel("/etc/hostname", "")
    with pytest.raises(ValueError, match="clips: '../secret.mp4' is outside the output folder"):
        playlist_of("../secret.mp4")
    monkeypatch.delenv("WEBTV_KEY_TEST", raising=False)
    with pytest.raises(ValueError, match=r"stream key \$\{WEBTV_KEY_TEST\} is not set"):
        start_channel(playlist, "rtmp://127.0.0.1:1/live/${WEBTV_KEY_TEST}")
    with pytest.raises(ValueError, match="seems to contain a stream key"):
        start_channel(playlist, "rtmp://live.twitch.tv/app/live_123456789_AbCdEfGhIjKlMnOpQrStUvWxYz")
    with pytest.raises(ValueError, match="give at least one rtmp"):
        start_channel(playlist, "", preview=False)
    with pytest.raises(ValueError, match="no channel named 'nope'"):
        ChannelStatus().status("nope")
    assert channel_ffmpegs() == []


def test_stream_key_is_on_no_command_line(nginx, clips, monkeypatch):
    """The key reaches the server (nginx logs it as the stream name) but no process's argv, child or not."""
    import psutil

    key = "k3y-never-on-argv-7f2c"
    monkeypatch.setenv("WEBTV_KEY_ARGV_TEST", key)
    start_channel(playlist_of(clips["red"], clips["lime"]), f"rtmp://127.0.0.1:{nginx.port}/live/${{WEBTV_KEY_ARGV_TEST}}", preview=True)
    wait_for(lambda: [o["state"] for o in status()["outputs"]] == ["live", "live"], 15, "both outputs live")
    children = psutil.Process().children(recursive=True)
    assert len(children) >= 3  # the encoder, the publisher, the HLS ffmpeg (and clip decoders)
    seen = 0
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read()
        except OSError:
            continue  # ended meanwhile
        seen += 1
        assert key.encode() not in argv, f"the stream key is on the command line of process {pid}"
    assert seen > len(children)
    assert key not in json.dumps(status())
    ChannelStop().stop("test")
    assert any(f'"{key}"' in line for line in nginx.publishes()), nginx.publishes()  # it was used, as the stream name

