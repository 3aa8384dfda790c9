"""The channel without a media server: stream keys, re-runs of the node, the rotation, shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from comfyui_webtv.nodes.broadcast import channel as channels
from comfyui_webtv.nodes.broadcast.keys import resolve
from comfyui_webtv.nodes.broadcast.nodes import ChannelStatus, FFConcatPlaylist, RTMPChannel
from comfyui_webtv.nodes.broadcast.normalize import ChannelFormat, ClipInfo

from .rtmp_server import channel_ffmpegs, free_port, make_clip


def test_stream_keys_come_from_env_or_file(monkeypatch, tmp_path):
    monkeypatch.setenv("WEBTV_KEY_1", "sekrit-one")
    assert resolve("rtmp://h/app/${WEBTV_KEY_1}") == ("rtmp://h/app/sekrit-one", ["sekrit-one"])
    key_file = tmp_path / "key"
    key_file.write_text("sekrit-two\n")
    monkeypatch.delenv("WEBTV_KEY_2", raising=False)
    monkeypatch.setenv("WEBTV_KEY_2_FILE", str(key_file))
    assert resolve("rtmps://h/app/${WEBTV_KEY_2}")[0] == "rtmps://h/app/sekrit-two"
    key_file.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        resolve("rtmps://h/app/${WEBTV_KEY_2}")
    monkeypatch.setenv("WEBTV_KEY_2_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cannot read the stream key file"):
        resolve("rtmps://h/app/${WEBTV_KEY_2}")


def test_keys_never_show_in_status(output_dir, monkeypatch):
    folder = os.path.join(output_dir, "WebTV")
    os.makedirs(folder)
    make_clip(os.path.join(folder, "a.mp4"), "red", 0.5, tone=None)
    monkeypatch.setenv("WEBTV_KEY_SECRET", "do-not-leak-1234")
    playlist = FFConcatPlaylist().write("WebTV/a.mp4", "WebTV/k.ffconcat", "replace", "relative")["result"][0]
    RTMPChannel().start(
        playlist=playlist, channel="keys", outputs=f"rtmp://127.0.0.1:{free_port()}/live/${{WEBTV_KEY_SECRET}}",
        local_preview=False, mode="clips", width=160, height=96, fps=24.0, video_kbps=300, audio_kbps=64,
        sample_rate="48000", keyframe_seconds=2.0, preset="veryfast", retry_max_seconds=0.5,
    )
    deadline = time.monotonic() + 5
    while channels.get("keys").attempts < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    text = ChannelStatus().status("keys")["result"][0]
    assert "${WEBTV_KEY_SECRET}" in text and "do-not-leak" not in text
    channels.stop("keys")


def _preview_start(playlist: str, kbps: int = 300) -> dict:
    return json.loads(RTMPChannel().start(
        playlist=playlist, channel="rerun", outputs="", local_preview=True, mode="clips", width=160, height=96,
        fps=24.0, video_kbps=kbps, audio_kbps=64, sample_rate="48000", keyframe_seconds=2.0, preset="veryfast",
    )["result"][0])


def test_rerun_follows_the_playlist_without_reconnecting(output_dir):
    folder = os.path.join(output_dir, "WebTV")
    os.makedirs(folder)
    for i, colour in enumerate(("red", "lime", "blue")):
        make_clip(os.path.join(folder, f"clip_{i}.mp4"), colour, 0.5, tone=None)
    node = FFConcatPlaylist()
    playlist = node.write("WebTV/clip_0.mp4\nWebTV/clip_1.mp4", "WebTV/r.ffconcat", "replace", "relative")["result"][0]
    first = _preview_start(playlist)
    assert first["clips"] == 2
    deadline = time.monotonic() + 10
    while channels.get("rerun").status()["state"] != "live" and time.monotonic() < deadline:
        time.sleep(0.1)
    node.write("WebTV/clip_2.mp4", "WebTV/r.ffconcat", "append", "relative")
    again = _preview_start(playlist)
    assert again["clips"] == 3 and again["sessions"] == 1 and again["state"] == "live"
    with pytest.raises(ValueError, match="already broadcasting with other settings"):
        _preview_start(playlist, kbps=400)
    channels.stop("rerun")
    assert channel_ffmpegs() == []


def test_rotation_loops_and_follows_edits(output_dir):
    clips = [ClipInfo(f"/c{i}.mp4", 1.0, 16, 16, 24.0, False) for i in range(4)]
    settings = channels.ChannelSettings(name="rot", outputs=("rtmp://127.0.0.1:1/live/x",), preview=False, fmt=ChannelFormat(16, 16))
    channel = channels.Channel(settings, clips[:3])  # never started: only the rotation is exercised
    order = []
    for _ in range(4):
        order.append(channel._next_clip()[1].path)
        channel._advance()
    assert order == ["/c0.mp4", "/c1.mp4", "/c2.mp4", "/c0.mp4"]  # loops
    channel.set_clips([clips[1], clips[3], clips[2]])  # /c1 (on air) kept, /c3 inserted after it
    channel._advance()
    assert channel._next_clip()[1].path == "/c3.mp4"
    channel.set_clips([clips[0], clips[2]])  # the clip on air (/c3) was removed
    channel._advance()
    assert channel._next_clip()[1].path == "/c2.mp4"  # the clip now at its place plays next


SCRIPT = """
import atexit, json, sys, time
import psutil
# Registered before the pack is imported, so it runs after the pack's shutdown hook (atexit is LIFO).
atexit.register(lambda: print(json.dumps([p.pid for p in psutil.Process().children(recursive=True)]), flush=True))
from comfyui_webtv.nodes import host
from comfyui_webtv.nodes.broadcast import channel
from comfyui_webtv.nodes.broadcast.normalize import ChannelFormat
host.configure(output_dir=sys.argv[1])
settings = channel.ChannelSettings(name="bye", fmt=ChannelFormat(160, 96))
live = channel.start(settings, [sys.argv[2]])
deadline = time.monotonic() + 15
while live.status()["state"] != "live" and time.monotonic() < deadline:
    time.sleep(0.1)
print(json.dumps([p.pid for p in psutil.Process().children(recursive=True)]), flush=True)
if sys.argv[3] == "hang":
    time.sleep(60)
"""


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_no_ffmpeg_outlives_comfyui(output_dir, ending):
    clip = make_clip(os.path.join(output_dir, "a.mp4"), "red", 0.5, tone=440)
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, output_dir, clip, "hang" if ending == "sigkill" else "exit"],
        stdout=subprocess.PIPE, text=True,
    )
    pids = json.loads(proc.stdout.readline())
    assert len(pids) >= 2  # the encoder and the HLS output at least
    if ending == "sigkill":  # a crash: no atexit; the pipes close and every ffmpeg sees end of input
        proc.send_signal(signal.SIGKILL)
    else:  # a normal exit: the shutdown hook has stopped the channel before the interpreter ends
        assert json.loads(proc.stdout.readline()) == []
    proc.wait(30)
    deadline = time.monotonic() + 10
    while (alive := [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive == []
