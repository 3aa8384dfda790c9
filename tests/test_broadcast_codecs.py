"""Outputs beyond H.264 RTMP: HEVC and AV1 as Enhanced RTMP, a codec per output, MPEG-TS over SRT, WHIP.

The receivers are ffmpeg itself listening on 127.0.0.1 (``-listen 1`` for RTMP, ``mode=listener`` for
SRT) writing what arrives to a file; PyAV (FFmpeg 8, which reads Enhanced FLV) says what was received.
The WHIP server is aiohttp answering the offer with aiortc (a real WebRTC peer: ICE, DTLS, SRTP), which
decodes the frames it receives.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse

import av
import pytest

from comfyui_webtv.nodes.broadcast import channel as channels
from comfyui_webtv.nodes.broadcast.encoder import Encoding
from comfyui_webtv.nodes.broadcast.keys import check_output_url, mask_addresses
from comfyui_webtv.nodes.broadcast.nodes import ChannelStatus, ChannelStop, FFConcatPlaylist, RTMPChannel
from comfyui_webtv.nodes.common.ffmpeg import ffmpeg_exe

from .rtmp_server import channel_ffmpegs, cmdline, free_port, make_clip, need

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

    The channel first checks that an RTMP server accepts TCP connections. That check would end an
    ffmpeg ``-listen 1`` with a failed handshake, and while it starts again the channel's real connection
    can be refused, in step, retry after retry. So for RTMP a relay takes the port: a connection that
    closes without a byte is the check and goes no further; a publisher is relayed to ffmpeg. A listener
    that still ends having received nothing starts again.
    """

    def __init__(self, source: str, path: str, fmt: str):
        self.relay = None
        if source.startswith("rtmp:"):
            url = urllib.parse.urlsplit(source)
            inner = free_port()
            self.relay = _Relay(url.port, inner)
            source = url._replace(netloc=f"127.0.0.1:{inner}").geturl()
        self.cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
        self.cmd += (["-listen", "1"] if self.relay else []) + ["-i", source, "-c", "copy", "-f", fmt, path]
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
        if self.relay:
            self.relay.close()

    def kill(self) -> None:
        """End the listener now (a test that failed)."""
        self._stop.set()
        self.proc.kill()
        self.wait(10)


class _Relay:
    """Accepts on ``port``; relays a connection that sends data to ``inner``, drops one that closes silently."""

    def __init__(self, port: int, inner: int):
        self.inner, self.sock = inner, socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            first = conn.recv(65536)
            if not first:
                return  # the channel's reachability check
            deadline = time.monotonic() + 30
            while True:
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.inner))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        return
                    time.sleep(0.05)
            with upstream:
                upstream.sendall(first)
                back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
                back.start()
                _pump(conn, upstream)
                back.join(30)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(), so the port is free at once
        except OSError:
            pass
        self.sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def run_channel(playlist: str, url: str, codec: str, *receivers, while_live=None) -> dict:
    """Broadcast until the second clip is on air and every output is live, call ``while_live``, stop."""
    RTMPChannel().start(
        playlist=playlist, channel="codecs", outputs=url, local_preview=False, mode="clips", width=160, height=96,
        fps=float(FPS), video_kbps=400, audio_kbps=64, sample_rate="48000", keyframe_seconds=1.0, preset="ultrafast",
        retry_max_seconds=1.0, codec=codec,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # the first clip aired in full: the next one is on air
        state = json.loads(ChannelStatus().status("codecs")["result"][0])
        if (state.get("current_clip") or {}).get("index") == 1 and all(o["state"] == "live" for o in state["outputs"]):
            break
        time.sleep(0.1)
    else:
        ChannelStop().stop("codecs")
        for receiver in receivers:
            receiver.kill()
        pytest.fail(f"the channel did not go live: {json.dumps(state)}; receivers: {[r.errors for r in receivers]}")
    if while_live:
        while_live(state)
    time.sleep(1.0)
    final = json.loads(ChannelStop().stop("codecs")["result"][0])
    for receiver in receivers:
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


@pytest.mark.parametrize("codec,names", [("hevc", {"hevc"}), ("h264", {"h264"}), ("av1", {"libdav1d", "av1"})])
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
    for bad in ("H264", "vp9", ""):
        with pytest.raises(ValueError, match="codec"):
            Encoding(codec=bad)


KEY = "live_424242_sEcReTkEyXyZ"


def command_lines() -> dict[int, str]:
    """Every process's command line, by PID (what any local user can read)."""
    lines = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    lines[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                pass
    return lines


def encoder_video_codecs() -> list[str]:
    """The video encoders named on the channel's encoder command line (the ffmpeg reading raw frames)."""
    import psutil

    for proc in psutil.Process().children(recursive=True):
        try:
            args = proc.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "rawvideo" in args:
            return sorted(args[i + 1] for i, a in enumerate(args) if a == "-c:v")
    pytest.fail("no encoder process found")


def test_each_output_gets_its_codec_from_one_encode_per_codec(playlist, tmp_path, monkeypatch):
    """Four RTMP outputs (hevc twice, av1, and the channel's h264) get three encodes, each output its own codec."""
    monkeypatch.setenv("WEBTV_KEY_CODECS", KEY)
    lines, receivers = [], []
    for i, codec in enumerate(["hevc", "av1", "", "hevc"]):
        port = free_port()
        receivers.append((codec or "h264", Listener(f"rtmp://127.0.0.1:{port}/live/{KEY}", str(tmp_path / f"got{i}.flv"), "flv")))
        lines.append(f"rtmp://127.0.0.1:{port}/live/${{WEBTV_KEY_CODECS}}" + (f"?codec={codec}" if codec else ""))
    seen = {}

    def check(state):
        seen["codecs"] = encoder_video_codecs()
        listeners = {r.proc.pid for _, r in receivers}
        seen["leaks"] = [pid for pid, line in command_lines().items() if KEY in line and pid not in listeners]
        seen["outputs"] = [(o["codec"], o["target"]) for o in state["outputs"]]
        # An output may have joined a little late (the listener restarts after the reachability probe): two more clips.
        since = time.time()
        wait_for(lambda s: sum(h["started_at"] > since for h in s["history"]) >= 2, "two more clips on air")

    final = run_channel(playlist, "\n".join(lines), "h264", *(r for _, r in receivers), while_live=check)
    assert seen["codecs"] == ["libsvtav1", "libx264", "libx265"], seen["codecs"]  # one encode per distinct codec
    assert seen["leaks"] == [], "the stream key is on a command line"
    assert [c for c, _ in seen["outputs"]] == ["hevc", "av1", "h264", "hevc"]
    assert all(KEY not in target for _, target in seen["outputs"])
    assert KEY not in json.dumps(final)
    names = {"hevc": {"hevc"}, "av1": {"libdav1d", "av1"}, "h264": {"h264"}}
    for codec, receiver in receivers:
        name, frames, _ = received(receiver.path)
        assert name in names[codec], f"{receiver.path}: wanted {codec}, received {name}"
        assert frames >= 2 * FPS * CLIP_S, (codec, frames)
    assert channel_ffmpegs() == []


def test_output_codecs_are_checked(monkeypatch):
    """codec= is the pack's own parameter: checked per protocol, taken out of the address, never echoing a key."""
    from comfyui_webtv.nodes.broadcast.outputs import OutputSpec, check_output

    monkeypatch.setenv("WEBTV_KEY_T", KEY)
    spec = OutputSpec.parse("rtmp://127.0.0.1:1935/live/${WEBTV_KEY_T}?x=1&codec=AV1&y=2")
    assert (spec.profile.codec, spec.url) == ("av1", f"rtmp://127.0.0.1:1935/live/{KEY}?x=1&y=2")
    assert OutputSpec.parse("srt://127.0.0.1:9000?codec=hevc&latency=200000").url == "srt://127.0.0.1:9000?latency=200000"
    assert OutputSpec.parse("rtmp://127.0.0.1/live/s", default_codec="hevc").profile.codec == "hevc"
    for bad, why in [
        ("rtmp://h.example/live/s?codec=vp9", "not one of"),
        ("rtmp://h.example/live/s?codec=", "empty codec"),
        ("rtmp://h.example/live/s?codec=h264&codec=hevc", "twice"),
        ("srt://h.example:9000?codec=av1", "SRT outputs cannot send av1"),
        ("https://h.example/whip?codec=hevc", "WHIP outputs cannot send hevc"),
        ("https://h.example/whip?codec=av1", "WHIP outputs cannot send av1"),
        (f"rtmp://h.example/live/s?codec={KEY}", "not one of"),
        ("rtmp://h.example/live/s?bearer=${WEBTV_KEY_T}", "only a WHIP"),
        ("https://h.example/whip?bearer=abcdefghijklmnop", "literal"),
        ("https://h.example/whip?bearer=${HOME}", "not a stream key variable"),
        ("http://h.example/whip", "plain http"),
    ]:
        with pytest.raises(ValueError, match=why) as info:
            check_output(bad)
        assert KEY not in str(info.value) and "abcdefghijklmnop" not in str(info.value), str(info.value)
    masked = mask_addresses('{"outputs": "https://h.example/whip?bearer=abcdefghijklmnop&codec=h264"}')
    assert "abcdefghijklmnop" not in masked and "https://h.example/whip?bearer=***&codec=h264" in masked


TOKEN = "whipTokenZq9xK2mP7vL4nR8s"


class WhipServer:
    """A WHIP endpoint on 127.0.0.1: aiohttp takes the offer, aiortc answers it as a real WebRTC peer (ICE,
    DTLS, SRTP) and decodes what arrives. Offers without ``Bearer <token>`` get 401."""

    def __init__(self, token: str, ssl_context=None):
        self.token, self.posts, self.deletes, self.pcs, self.ssl_context = token, [], 0, [], ssl_context
        self.frames = {"video": 0, "audio": 0}
        self.colours: set[str] = set()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{self.port}/whip"

    async def _start(self) -> int:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/whip", self._offer)
        app.router.add_delete("/whip/session", self._delete)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    async def _offer(self, request):
        from aiohttp import web
        from aiortc import RTCPeerConnection, RTCSessionDescription

        offer = await request.text()
        self.posts.append((request.headers.get("Authorization"), request.headers.get("Content-Type"), offer))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="unknown token")
        pc = RTCPeerConnection()
        self.pcs.append(pc)
        pc.on("track", lambda track: asyncio.ensure_future(self._consume(track)))
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp", headers={"Location": "/whip/session"})

    async def _consume(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                img = frame.to_ndarray(format="rgb24")
                r, g, b = (int(v) for v in img[img.shape[0] // 2, img.shape[1] // 2])
                self.colours.add("red" if r > 200 and g < 60 and b < 60 else "blue" if b > 200 and r < 60 and g < 60 else "other")
            self.frames[track.kind] += 1

    async def _delete(self, request):
        from aiohttp import web

        self.deletes += 1
        return web.Response(status=200)

    async def _stop(self) -> None:
        for pc in self.pcs:
            await pc.close()
        await self.runner.cleanup()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def whip_server(monkeypatch):
    import aioice.ice

    # aioice leaves loopback out of its candidates; the test's WebRTC traffic stays on 127.0.0.1.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    server = WhipServer(TOKEN)
    yield server
    server.close()


def start_whip(playlist: str, url: str) -> None:
    RTMPChannel().start(
        playlist=playlist, channel="codecs", outputs=url, local_preview=False, mode="clips", width=160, height=96,
        fps=float(FPS), video_kbps=400, audio_kbps=64, sample_rate="44100", keyframe_seconds=1.0, preset="ultrafast",
        retry_max_seconds=1.0,
    )


def wait_for(condition, what: str, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = json.loads(ChannelStatus().status("codecs")["result"][0])
        if condition(state):
            return state
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen: {json.dumps(state)}")


def test_whip_output_reaches_a_webrtc_peer(playlist, whip_server, monkeypatch):
    """H.264 + Opus over WebRTC to a WHIP endpoint: the bearer token only in the POST's header, frames decoded."""
    monkeypatch.setenv("WEBTV_KEY_WHIP", TOKEN)
    start_whip(playlist, whip_server.url + "?bearer=${WEBTV_KEY_WHIP}")
    state = wait_for(
        lambda s: whip_server.frames["video"] >= 2 * FPS and whip_server.frames["audio"] >= 50 and s["outputs"][0]["state"] == "live"
        and {"red", "blue"} <= whip_server.colours,
        "two seconds of WebRTC video and sound, both clips, at the peer",
    )
    leaks = [pid for pid, line in command_lines().items() if TOKEN in line]
    final = json.loads(ChannelStop().stop("codecs")["result"][0])
    assert leaks == [], "the bearer token is on a command line"
    assert TOKEN not in json.dumps(state) + json.dumps(final)
    assert state["outputs"][0]["codec"] == "h264+opus"
    (authorization, content_type, offer), = whip_server.posts
    assert authorization == f"Bearer {TOKEN}" and content_type == "application/sdp"
    assert "bearer" not in offer and "H264/90000" in offer and "opus/48000/2" in offer
    deadline = time.monotonic() + 30
    while not whip_server.deletes and time.monotonic() < deadline:  # the session's end is relayed with the token
        time.sleep(0.1)
    assert whip_server.deletes == 1
    assert channel_ffmpegs() == []


def test_whip_refusal_is_reported_without_the_token(playlist, whip_server, monkeypatch):
    monkeypatch.setenv("WEBTV_KEY_WHIP", "wrongTokenAa1Bb2Cc3Dd4Ee5")
    start_whip(playlist, whip_server.url + "?bearer=${WEBTV_KEY_WHIP}")
    state = wait_for(lambda s: "401" in s["outputs"][0].get("last_error", ""), "the refusal")
    ChannelStop().stop("codecs")
    assert whip_server.posts and whip_server.posts[0][0] == "Bearer wrongTokenAa1Bb2Cc3Dd4Ee5"
    assert "the WHIP server answered 401 Unauthorized (is the bearer token right?)" in state["outputs"][0]["last_error"]
    assert "wrongTokenAa1Bb2Cc3Dd4Ee5" not in json.dumps(state)
    assert channel_ffmpegs() == []


def test_whip_relay_takes_one_offer_and_adds_the_token(whip_server):
    """The relay ffmpeg posts to: the offer reaches the server with the bearer token; a refusal is explained;
    a second offer on the same path, or any other path, never reaches the server."""
    from comfyui_webtv.nodes.broadcast.whip import WhipRelay

    relay = WhipRelay(whip_server.url, "wrongTokenAa1Bb2Cc3Dd4Ee5")
    try:
        codes = post_offers([relay.url, relay.url, relay.url.rsplit("/", 1)[0] + "/other"])
    finally:
        relay.close()
    assert codes == [502, 403, 404]
    assert whip_server.posts == [("Bearer wrongTokenAa1Bb2Cc3Dd4Ee5", "application/sdp", "v=0\r\n")]
    assert relay.error == "the WHIP server answered 401 Unauthorized (is the bearer token right?)"
    assert "wrongToken" not in relay.url


def test_flv_stream_is_cut_into_whole_tags_and_rejoins_at_a_keyframe(tmp_path):
    """The AV1 pipe (FLV) reaches outputs in whole tags; a rejoining output's header plus the stream from
    a later keyframe is an FLV that PyAV decodes from its first frame."""
    from comfyui_webtv.nodes.broadcast.encoder import Profile
    from comfyui_webtv.nodes.broadcast.outputs import Fanout, flv_tag_kind, flv_tags
    from comfyui_webtv.nodes.common.ffmpeg import run_ffmpeg

    source = str(tmp_path / "av1.flv")
    run_ffmpeg([
        "-y", "-f", "lavfi", "-i", "testsrc=s=160x96:r=24:d=3", "-f", "lavfi", "-i", "sine=d=3:sample_rate=48000",
        "-c:v", "libsvtav1", "-preset", "12", "-pix_fmt", "yuv420p", "-g", "24", "-svtav1-params", "scd=0:pred-struct=1",
        "-c:a", "aac", "-f", "flv", "-flvflags", "no_duration_filesize", source,
    ])
    data = open(source, "rb").read()

    class Sink:
        def __init__(self):
            self.chunks = []

        def push(self, chunk):
            self.chunks.append(chunk)

    stream, sink = Fanout(Profile("av1")), Sink()
    stream.outputs.append(sink)
    read_r, write_w = os.pipe()
    stream.start(read_r)
    for at in range(0, len(data), 7919):  # pieces that cut tags anywhere
        os.write(write_w, data[at : at + 7919])
    os.close(write_w)
    stream.join(30)
    os.close(read_r)
    assert b"".join(sink.chunks) == data
    for chunk in sink.chunks[1:]:  # every chunk is whole tags
        assert sum(end - start for start, end in flv_tags(chunk)) == len(chunk)
    keys = [start for start, end in flv_tags(data, 13) if data[start] == 9 and flv_tag_kind(data[start:end]) == "key"]
    assert len(keys) >= 2, keys  # a keyframe every second
    after_first = next(end for start, end in flv_tags(data, 13) if start == keys[0])
    tail = data[after_first:]  # what an output that rejoins after the first keyframe gets, from a tag boundary
    assert stream.keyframe_at(tail) == keys[1] - after_first
    rejoined = str(tmp_path / "rejoined.flv")
    with open(rejoined, "wb") as f:
        f.write(stream.header() + tail[stream.keyframe_at(tail) :])
    with av.open(rejoined) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
        assert packets[0].is_keyframe and float(packets[0].pts * packets[0].time_base) >= 0.9
    with av.open(rejoined) as container:
        name, frames = container.streams.video[0].codec_context.name, list(container.decode(video=0))
    assert name in ("libdav1d", "av1") and len(frames) == len(packets)


def test_av1_output_rejoins_at_a_keyframe_after_its_publisher_dies(playlist, tmp_path):
    """The AV1 output's publisher is killed while the preview (H.264) stays live: the output alone restarts
    and rejoins the running AV1 encode at a keyframe behind the FLV header, and the new session decodes."""
    import psutil

    from comfyui_webtv.nodes.broadcast.outputs import PUBLISHER

    port = free_port()
    first, second = str(tmp_path / "first.flv"), str(tmp_path / "second.flv")
    receiver = Listener(f"rtmp://127.0.0.1:{port}/live/test", first, "flv")
    RTMPChannel().start(
        playlist=playlist, channel="codecs", outputs=f"rtmp://127.0.0.1:{port}/live/test?codec=av1", local_preview=True,
        mode="clips", width=160, height=96, fps=float(FPS), video_kbps=400, audio_kbps=64, sample_rate="48000",
        keyframe_seconds=1.0, preset="ultrafast", retry_max_seconds=1.0,
    )
    state = wait_for(lambda s: all(o["state"] == "live" for o in s["outputs"]) and s["encoder"]["frame"], "both outputs live")
    encoded = state["encoder"]["frame"]
    wait_for(lambda s: (s["encoder"]["frame"] or 0) >= encoded + 2 * FPS, "a few keyframes into the stream")
    publishers = [p for p in psutil.Process().children(recursive=True) if PUBLISHER in cmdline(p.pid)]
    assert len(publishers) == 1
    publishers[0].kill()
    receiver.wait()  # the first session ended with its publisher
    receiver = Listener(f"rtmp://127.0.0.1:{port}/live/test", second, "flv")
    state = wait_for(lambda s: s["outputs"][0]["reconnects"] >= 1 and s["outputs"][0]["state"] == "live", "the rejoin")
    sent = state["outputs"][0]["bytes_sent"]
    wait_for(lambda s: s["outputs"][0]["bytes_sent"] >= sent + 50_000, "a second of the new session sent")  # 400 kbit/s
    final = json.loads(ChannelStop().stop("codecs")["result"][0])
    receiver.wait()
    assert state["sessions"] == 1 and final["sessions"] == 1, "the encoder kept running: only the output restarted"
    with av.open(second) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        assert stream.codec_context.name in ("libdav1d", "av1") and packets[0].is_keyframe
    name, frames, _ = received(second)
    assert 0 < len(packets) - 1 <= frames <= len(packets), (frames, len(packets))  # every frame from the first keyframe decodes
    assert channel_ffmpegs() == []


def test_playlist_mode_sends_each_output_its_codec(playlist, tmp_path):
    """The seed-compatible mode (ffmpeg's concat demuxer) gives each encode its own maps and filters too."""
    receivers, lines = [], []
    for i, codec in enumerate(["hevc", ""]):
        port = free_port()
        receivers.append((codec or "h264", Listener(f"rtmp://127.0.0.1:{port}/live/test", str(tmp_path / f"got{i}.flv"), "flv")))
        lines.append(f"rtmp://127.0.0.1:{port}/live/test" + (f"?codec={codec}" if codec else ""))
    RTMPChannel().start(
        playlist=playlist, channel="codecs", outputs="\n".join(lines), local_preview=False, mode="playlist", width=160,
        height=96, fps=float(FPS), video_kbps=400, audio_kbps=64, sample_rate="48000", keyframe_seconds=1.0,
        preset="ultrafast", retry_max_seconds=1.0,
    )
    state = wait_for(lambda s: all(o["state"] == "live" for o in s["outputs"]) and s["encoder"]["frame"], "both outputs live")
    encoded = state["encoder"]["frame"]
    wait_for(lambda s: (s["encoder"]["frame"] or 0) >= encoded + 2 * FPS, "two more seconds encoded")
    ChannelStop().stop("codecs")  # flushes what was encoded to both outputs
    for codec, receiver in receivers:
        receiver.wait()
        name, frames, _ = received(receiver.path)
        assert name == codec and frames >= 2 * FPS, (codec, name, frames)
    assert channel_ffmpegs() == []


def test_av1_local_preview_is_av1_hls(playlist):
    """With av1 as the channel's codec the preview's HLS (fMP4) carries AV1, copied from the FLV pipe."""
    from comfyui_webtv.nodes.broadcast.outputs import hls_progress

    RTMPChannel().start(
        playlist=playlist, channel="codecs", outputs="", local_preview=True, mode="clips", width=160, height=96,
        fps=float(FPS), video_kbps=400, audio_kbps=64, sample_rate="48000", keyframe_seconds=1.0, preset="ultrafast",
        retry_max_seconds=1.0, codec="av1",
    )
    folder = channels.get("codecs").hls_dir
    wait_for(lambda s: s["outputs"][0]["state"] == "live" and len(hls_progress(folder)[1]) >= 2, "two preview segments")
    segments = hls_progress(folder)[1]
    with open(os.path.join(folder, "live.m3u8")) as f:
        init = [line.split('URI="')[1].split('"')[0] for line in f if line.startswith("#EXT-X-MAP")][-1]
    data = b"".join(open(os.path.join(folder, name), "rb").read() for name in [init] + segments[:2])
    ChannelStop().stop("codecs")
    with av.open(io.BytesIO(data)) as container:
        name, frames = container.streams.video[0].codec_context.name, list(container.decode(video=0))
    assert name in ("libdav1d", "av1") and len(frames) >= FPS, (name, len(frames))
    assert channel_ffmpegs() == []


def post_offers(urls: list[str]) -> list[int]:
    """POST a stub SDP offer to each URL; the HTTP error codes."""
    import urllib.error
    import urllib.request

    codes = []
    for url in urls:
        request = urllib.request.Request(url, data=b"v=0\r\n", headers={"Content-Type": "application/sdp"}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        codes.append(info.value.code)
    return codes


def test_whip_relay_checks_https_certificates(tmp_path):
    """Over https the relay sends the token only to a server whose certificate checks out (system store, or WEBTV_CA_FILE)."""
    import ssl

    from comfyui_webtv.nodes.broadcast.whip import WhipRelay

    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    made = subprocess.run(
        [need("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True,
    )
    assert made.returncode == 0, made.stderr.decode()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = WhipServer(TOKEN, context)
    try:
        untrusted = WhipRelay(server.url, TOKEN)
        trusted = WhipRelay(server.url, "wrongTokenAa1Bb2Cc3Dd4Ee5", ca_file=cert)
        try:
            codes = post_offers([untrusted.url, trusted.url])
        finally:
            untrusted.close()
            trusted.close()
    finally:
        server.close()
    assert codes == [502, 502]
    assert "certificate verify failed" in untrusted.error and TOKEN not in untrusted.error, untrusted.error
    assert server.posts == [("Bearer wrongTokenAa1Bb2Cc3Dd4Ee5", "application/sdp", "v=0\r\n")]  # only the trusted one arrived
    assert trusted.error == "the WHIP server answered 401 Unauthorized (is the bearer token right?)"
