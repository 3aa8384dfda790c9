"""The live channel against hostile workflows and faults (issue 11): stream keys, playlists, the preview
server, bad numbers, and a status that tells the truth about every output."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from comfyui_webtv.nodes.broadcast import channel as channels
from comfyui_webtv.nodes.broadcast.keys import check_output_url, resolve, resolve_output_url
from comfyui_webtv.nodes.broadcast.nodes import ChannelStatus, FFConcatPlaylist, RTMPChannel
from comfyui_webtv.nodes.broadcast.normalize import ChannelFormat, ClipInfo
from comfyui_webtv.nodes.broadcast.outputs import clear_hls
from comfyui_webtv.nodes.broadcast.playlist import Entry, live_copy, quote, read_ffconcat, write_ffconcat
from comfyui_webtv.nodes.broadcast.preview import MAX_CONNECTIONS, PreviewServer
from comfyui_webtv.nodes.common.ffmpeg import run_ffmpeg

from .rtmp_server import channel_ffmpegs, cmdline, make_clip

# Key formats as the services hand them out (fixed strings, not derived from the code under test).
FACEBOOK_KEY = "FB-1234567890123456-0-AbCdEfGhIjKlMnOpQrSt"
QUERY_KEY = "hunter2"


# ------------------------------------------------------------------ 1, 4: stream keys
def test_placeholders_only_name_marked_stream_keys_in_the_stream_part(monkeypatch):
    monkeypatch.setenv("WEBTV_LLM_API_KEY", "sk-llm-secret")
    monkeypatch.setenv("HOME_SECRET", "home-secret")
    monkeypatch.setenv("WEBTV_KEY_TWITCH", "live_1_abc")
    monkeypatch.delenv("WEBTV_STREAM_KEYS", raising=False)
    refused = {
        "rtmp://attacker.example/live/${WEBTV_LLM_API_KEY}": "is not a stream key variable",
        "rtmp://attacker.example/live/x?k=${HOME_SECRET}": "is not a stream key variable",
        "rtmp://${WEBTV_KEY_TWITCH}.attacker.example/live/x": "placeholder in the server address",
        "rtmp://attacker.example:${WEBTV_KEY_TWITCH}/live/x": "not a valid address",
        "rtmp://user:${WEBTV_KEY_TWITCH}@attacker.example/live/x": "placeholder in the server address",
        "rtmp://attacker.example/${WEBTV_KEY_TWITCH}/x": "placeholder in the application name",
        "${WEBTV_KEY_TWITCH}://attacker.example/live/x": "is not an RTMP address",
    }
    for url, why in refused.items():
        with pytest.raises(ValueError, match=why) as caught:
            resolve(url)
        text = str(caught.value)
        assert text.startswith("outputs: ") and "sk-llm-secret" not in text and "live_1_abc" not in text, text
    # Marked variables work in the stream name and the query; the masked form keeps the placeholder.
    assert resolve_output_url("rtmp://live.twitch.tv/app/${WEBTV_KEY_TWITCH}") == (
        "rtmp://live.twitch.tv/app/live_1_abc", "rtmp://live.twitch.tv/app/${WEBTV_KEY_TWITCH}")
    monkeypatch.setenv("WEBTV_STREAM_KEYS", "HOME_SECRET, OTHER")
    assert resolve("rtmp://h/app/s?secret=${HOME_SECRET}") == ("rtmp://h/app/s?secret=home-secret", ["home-secret"])
    with pytest.raises(ValueError, match="is not a stream key variable"):
        resolve("rtmp://h/app/${WEBTV_LLM_API_KEY}")


def test_facebook_and_query_keys_are_refused_without_echoing_them():
    for url, key in [
        (f"rtmps://live-api-s.facebook.com:443/rtmp/{FACEBOOK_KEY}", FACEBOOK_KEY),
        (f"rtmp://a.example/live/stream?key={QUERY_KEY}", QUERY_KEY),
        (f"rtmp://a.example/live/stream?foo=1&streamKey={QUERY_KEY}", QUERY_KEY),
    ]:
        with pytest.raises(ValueError, match=r"seems to contain a stream key \(shown as \*\*\*\)") as caught:
            check_output_url(url)
        assert key not in str(caught.value), caught.value
    check_output_url("rtmp://a.example/live/stream?key=${WEBTV_KEY_A}")  # a placeholder is fine


# ------------------------------------------------------------------ 15: numbers and addresses
@pytest.fixture
def one_clip_playlist(output_dir):
    folder = os.path.join(output_dir, "WebTV")
    os.makedirs(folder)
    make_clip(os.path.join(folder, "a.mp4"), "red", 0.5, tone=None)
    yield FFConcatPlaylist().write("WebTV/a.mp4", "WebTV/h.ffconcat", "replace", "relative")["result"][0]
    channels.stop_all()


def _start(playlist: str, **changes) -> dict:
    args = dict(
        playlist=playlist, channel="hard", outputs="", local_preview=True, mode="clips", width=160, height=96,
        fps=24.0, video_kbps=300, audio_kbps=64, sample_rate="48000", keyframe_seconds=2.0, preset="veryfast",
        retry_max_seconds=0.5,
    )
    args.update(changes)
    return json.loads(RTMPChannel().start(**args)["result"][0])


@pytest.mark.parametrize("changes, message", [
    ({"outputs": "rtmp://127.0.0.1:99999/live/x"}, r"outputs: .*Port out of range"),
    ({"outputs": "rtmp://[::1/live/x"}, r"outputs: .*Invalid IPv6 URL"),
    ({"outputs": "rtmp://127.0.0.1:0/live/x"}, r"outputs: .*port 0"),
    ({"width": 60000}, r"width: must be at most 3840"),
    ({"height": 60000}, r"height: must be at most 2160"),
    ({"fps": float("nan")}, r"fps: must be a finite number"),
    ({"fps": float("inf")}, r"fps: must be a finite number"),
    ({"video_kbps": float("nan")}, r"video_kbps: nan is not a whole number"),
    ({"keyframe_seconds": float("inf")}, r"keyframe_seconds: must be a finite number"),
    ({"retry_max_seconds": float("nan")}, r"retry_max_seconds: must be a finite number"),
])
def test_bad_numbers_and_addresses_are_refused_before_start(one_clip_playlist, changes, message):
    with pytest.raises(ValueError, match=message):
        _start(one_clip_playlist, **changes)
    assert channels.statuses() == {} and channel_ffmpegs() == []


# ------------------------------------------------------------------ 6: playlists as ffmpeg reads them
def _frames(playlist: str, safe: str = "0") -> int:
    out = run_ffmpeg(["-f", "concat", "-safe", safe, "-i", playlist, "-map", "0:v", "-f", "framemd5", "-"]).stdout.decode()
    return sum(1 for line in out.splitlines() if line and not line.startswith("#"))


def test_playlists_are_split_where_ffmpeg_splits_them(output_dir, tmp_path):
    folder = os.path.join(output_dir, "WebTV")
    os.makedirs(folder)
    a = make_clip(os.path.join(folder, "a.mp4"), "red", 0.25, tone=None)
    elsewhere = make_clip(str(tmp_path / "elsewhere.mp4"), "blue", 0.25, tone=None)
    playlist = os.path.join(folder, "evil.ffconcat")

    def write(body: bytes) -> None:
        with open(playlist, "wb") as f:
            f.write(b"ffconcat version 1.0\n" + body)

    # NUL ends a line for ffmpeg: the second directive is real, and it points outside output/.
    write(b"file 'a.mp4' \0file '" + elsewhere.encode() + b"'\n")
    assert _frames(playlist) == 12  # ffmpeg opens both files
    with pytest.raises(ValueError, match="line 3: unexpected text|outside the output folder"):
        entries = read_ffconcat(playlist)
        live_copy(playlist, entries, "evil")
    # CR alone ends a line too; a form feed or U+2028 does not (ffmpeg reads them as part of the line).
    write(b"file './a.mp4'\rfile './a.mp4'\r\n")
    assert _frames(playlist) == 12 and [e.path for e in read_ffconcat(playlist)] == [a, a]
    for sep in ("\x0c", "\u2028", "\x85", "\x0b"):
        write(f"file './a.mp4'{sep}file '{elsewhere}'\n".encode())
        with pytest.raises(ValueError, match=r"line 2: the name '\./a\.mp4.+file' holds a control character"):
            read_ffconcat(playlist)  # one line, one (odd) name: never a second entry
    # What the writer never writes is refused: other directives, URLs, unterminated quotes.
    for body, why in [
        (b"file './a.mp4'\noption safe 0\n", "directive 'option'"),
        (b"file 'subfile,,start,0,end,0,,:/etc/passwd'\n", "is a URL"),
        (b"file 'http://127.0.0.1/x.mp4'\n", "is a URL"),
        (b"file './a.mp4\n", "unterminated quote"),
        (b"file './a.mp4'\nduration 1:00\n", "not a number of seconds"),
    ]:
        write(body)
        with pytest.raises(ValueError, match=why):
            read_ffconcat(playlist)


@pytest.mark.parametrize("char", ["\x0c", "\u2028", "\u2029", "\x1e", "\x7f"])
def test_names_a_playlist_cannot_hold_are_refused(output_dir, char):
    with pytest.raises(ValueError, match="line break or control character"):
        quote(os.path.join(output_dir, f"a{char}b.mp4"))
    playlist = os.path.join(output_dir, "p.ffconcat")
    with pytest.raises(ValueError, match="line break or control character"):
        write_ffconcat(playlist, [Entry(os.path.join(output_dir, f"a{char}b.mp4"))])
    assert not os.path.exists(playlist)


def test_playlist_mode_reads_a_checked_copy_with_ffmpegs_safe_mode(output_dir):
    folder = os.path.join(output_dir, "WebTV")
    os.makedirs(folder)
    plain = make_clip(os.path.join(folder, "clip_1.mp4"), "red", 0.25, tone=None)
    odd = os.path.join(folder, "odd name's.mp4")
    os.link(plain, odd)
    playlist = os.path.join(folder, "p.ffconcat")
    write_ffconcat(playlist, [Entry(plain, 0.25)])
    copy, safe = live_copy(playlist, read_ffconcat(playlist), "ch")
    assert safe and _frames(copy, safe="1") == 6  # ffmpeg's own check stays on
    write_ffconcat(playlist, [Entry(plain, 0.25), Entry(odd, 0.25)])
    copy, safe = live_copy(playlist, read_ffconcat(playlist), "ch")
    assert not safe and _frames(copy) == 12
    with pytest.raises(RuntimeError, match="Unsafe file name"):
        _frames(copy, safe="1")  # so -safe 0 only on the pack's checked copy


# ------------------------------------------------------------------ 9: the preview server
def _request(port: int, path: str, host: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", host)
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


def test_preview_server_checks_host_bounds_connections_and_never_follows_links(tmp_path):
    folder = tmp_path / "hls"
    folder.mkdir()
    (folder / "live.m3u8").write_text("#EXTM3U\n")
    secret = tmp_path / "secret.m3u8"
    secret.write_text("not for the browser")
    os.symlink(secret, folder / "master.m3u8")
    server = PreviewServer(str(folder), lambda: {"name": "x"})
    try:
        port = server.port
        for host in ("127.0.0.1", f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            assert _request(port, "/hls/live.m3u8", host) == 200, host
        for host in ("attacker.example", f"attacker.example:{port}", f"127.0.0.1.attacker.example:{port}", ""):
            assert _request(port, "/status", host) == 403, host
        assert _request(port, "/hls/master.m3u8", "127.0.0.1") == 404  # a link, even to a file with a served name
        before = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        try:
            time.sleep(1.0)
            assert threading.active_count() - before <= MAX_CONNECTIONS
        finally:
            for sock in idle:
                sock.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if _request(port, "/hls/live.m3u8", "127.0.0.1") == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the preview server did not answer after the idle connections closed")
    finally:
        server.close()


def test_old_segments_from_earlier_launches_are_removed(tmp_path):
    for name in ("seg_3000000.m4s", "seg_3000007.m4s", "init_3.mp4", "seg_4000001.m4s", "init_4.mp4", "live.m3u8", "x.tmp", "keep.txt"):
        (tmp_path / name).write_bytes(b"x")
    os.symlink("/etc/hostname", tmp_path / "seg_1000000.m4s")
    clear_hls(str(tmp_path), keep_launch=4)
    assert sorted(os.listdir(tmp_path)) == ["init_4.mp4", "keep.txt", "live.m3u8", "seg_4000001.m4s", "x.tmp"]
    assert os.path.exists("/etc/hostname")
    clear_hls(str(tmp_path))
    assert os.listdir(tmp_path) == ["keep.txt"]


# ------------------------------------------------------------------ 16: truthful status
def _wait(predicate, timeout: float, what: str, name: str = "hard"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    now = {k: v for k, v in channels.get(name).status().items() if k != "history"}
    pytest.fail(f"timed out after {timeout} s waiting for {what}; status: {json.dumps(now)}")


def _status(name: str = "hard") -> dict:
    return json.loads(ChannelStatus().status(name)["result"][0])


def test_frozen_encoder_is_not_live_and_hls_bytes_are_counted(one_clip_playlist):
    _start(one_clip_playlist)
    _wait(lambda: _status()["state"] == "live", 20, "live")
    _wait(lambda: _status()["outputs"][0]["bytes_sent"] > 0, 10, "HLS bytes counted")
    encoder = next(p for p in channel_ffmpegs() if "libx264" in cmdline(p))
    os.kill(encoder, signal.SIGSTOP)
    try:
        _wait(lambda: _status()["outputs"][0]["state"] == "stalled", 15, "the preview to stall")
        now = _status()
        assert now["state"] == "stalled" and "no new segment" in now["outputs"][0]["last_error"]
    finally:
        os.kill(encoder, signal.SIGCONT)
    _wait(lambda: _status()["state"] == "live" and _status()["outputs"][0]["state"] == "live", 20, "live again")


def test_clip_cut_short_on_air_reports_frames_sent(output_dir):
    folder = os.path.join(output_dir, "WebTV")
    os.makedirs(folder)
    short = make_clip(os.path.join(folder, "short.mp4"), "red", 1.0, tone=None)  # 24 frames on disk
    claimed = ClipInfo(short, 6.0, 320, 180, 24.0, False)  # probed when it was 144 frames long
    settings = channels.ChannelSettings(name="cut", preview=True, fmt=ChannelFormat(160, 96))
    channel = channels.Channel(settings, [claimed])
    channels._channels["cut"] = channel
    channel.start()
    try:
        _wait(lambda: len(channel.status()["history"]) >= 2, 20, "the clip to end", "cut")
        entry = channel.status()["history"][0]
        assert entry["frames"] == 24 and entry["completed"] is False and entry["expected_frames"] == 144, entry
        assert "ended after 24 of 144 frames" in channel.status()["last_error"]
    finally:
        channels.stop("cut")


def test_full_hls_disk_is_reported_and_recovers(output_dir):
    folder = os.path.join(output_dir, "WebTV")
    os.makedirs(folder)
    make_clip(os.path.join(folder, "a.mp4"), "red", 1.0, tone=440)
    playlist = FFConcatPlaylist().write("WebTV/a.mp4", "WebTV/d.ffconcat", "replace", "relative")["result"][0]
    hls = os.path.join(folder, "live", "disk")
    os.makedirs(hls)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", hls], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"mounting a small tmpfs needs root: {mounted.stderr.decode().strip()}")
    try:
        _start(playlist, channel="disk")
        _wait(lambda: _status("disk")["state"] == "live", 20, "live", "disk")
        filler = os.path.join(hls, "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)  # until the disk is full
        _wait(lambda: _status("disk")["outputs"][0]["state"] == "stalled", 20, "the full disk to show", "disk")
        now = _status("disk")
        assert now["state"] == "stalled" and "is full" in now["outputs"][0]["last_error"], now["outputs"]
        os.remove(filler)
        _wait(lambda: _status("disk")["outputs"][0]["state"] == "live", 30, "recovery once space returns", "disk")
        assert _status("disk")["state"] == "live"
    finally:
        channels.stop_all()
        subprocess.run(["umount", "-l", hls], capture_output=True)
    assert channel_ffmpegs() == []
