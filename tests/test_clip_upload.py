"""The pack's route that takes clips for a live channel (``POST /webtv/channels/{name}/clips``), served by
the route code itself on an aiohttp server on 127.0.0.1 (as ComfyUI's server holds it), sent with the
``queue`` client: clips land under the output folder and go on air; every refusal is clear, leaves no
file and never echoes the token."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import urllib.error
import urllib.request

import pytest

from comfyui_webtv.cli.queue import TOKEN_ENV, ComfyClient, PushFailed
from comfyui_webtv.nodes.broadcast import channel as channels
from comfyui_webtv.nodes.broadcast import routes
from comfyui_webtv.nodes.broadcast.normalize import ChannelFormat

from media_probe import probe
from rtmp_server import make_clip

TOKEN = "upload-token-8c1e"


class PackServer:
    """An aiohttp server on 127.0.0.1 holding the pack's routes, as ComfyUI's ``PromptServer`` does."""

    def __init__(self):
        from aiohttp import web

        table = web.RouteTableDef()
        routes.register(table)
        app = web.Application()
        app.add_routes(table)
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()


def start_channel(name: str, clip: str) -> None:
    """A channel on the HLS preview only, in clips mode, with one clip."""
    channels.start(channels.ChannelSettings(name=name, fmt=ChannelFormat(160, 96)), [clip])


def wait_on_air(name: str, paths: set[str], timeout: float = 120.0) -> None:
    """Until one of ``paths`` is the channel's clip on air (a real event, generous wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = (channels.get(name).status().get("current_clip") or {}).get("path")
        if current in paths:
            return
        time.sleep(0.2)
    raise AssertionError(f"none of {sorted(paths)} went on air within {timeout:g} s; status: {channels.get(name).status()}")


def received(output_dir: str, name: str) -> list[str]:
    folder = os.path.join(output_dir, "WebTV", "received", name)
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def post(url: str, body: bytes, headers: dict) -> tuple[int, str]:
    request = urllib.request.Request(url, body, headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_clips_are_appended_to_a_live_channel_and_go_on_air(output_dir, monkeypatch, tmp_path):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    first = make_clip(os.path.join(output_dir, "first.mp4"), "red", 0.5, size=(160, 96))
    sent = [make_clip(str(tmp_path / f"{c}.mp4"), c, 0.5, size=(160, 96)) for c in ("lime", "blue")]
    data = [open(p, "rb").read() for p in sent]
    start_channel("push", first)
    try:
        with PackServer() as server:
            answer = ComfyClient(server.url).push_clips("push", data)
        names = answer["received"]
        assert answer["channel"] == "push" and len(names) == 2
        assert all(n.startswith("WebTV/received/push/") and n.endswith(".mp4") for n in names)
        for name, clip in zip(names, data):
            with open(os.path.join(output_dir, name), "rb") as f:
                assert f.read() == clip  # byte for byte, under the output folder
        assert answer["status"]["clips"] == 3 == channels.get("push").status()["clips"]
        paths = {os.path.join(os.path.realpath(output_dir), n) for n in names}
        wait_on_air("push", paths)
        assert probe(os.path.join(output_dir, names[0])).frames == 12
    finally:
        channels.stop("push")


def test_refusals_are_clear_and_leave_nothing(output_dir, monkeypatch, tmp_path):
    clip = make_clip(os.path.join(output_dir, "first.mp4"), "red", 0.5, size=(160, 96))
    data = open(clip, "rb").read()
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with PackServer() as server:
        url = f"{server.url}/webtv/channels/up/clips"
        # a server without a token takes no clips at all, whatever is sent
        with pytest.raises(PushFailed, match=f"HTTP 403: this server takes no clips: start ComfyUI with {TOKEN_ENV} set"):
            ComfyClient(server.url).push_clips("up", [data])
        start_channel("up", clip)
        try:
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {TOKEN}"}):
                code, text = post(url, b"x", headers)
                assert code == 403 and TOKEN not in text
            monkeypatch.setenv(TOKEN_ENV, TOKEN)  # the server's (and, in this one process, the client's) token
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
                code, text = post(url, b"x", headers)
                assert code == 401 and "missing or wrong bearer token" in text and TOKEN not in text
            client = ComfyClient(server.url)
            with pytest.raises(PushFailed, match="HTTP 404: channel: no channel named 'nowhere'"):
                client.push_clips("nowhere", [data])
            code, text = post(url, data, {"Authorization": f"Bearer {TOKEN}", "Content-Type": "video/mp4"})
            assert code == 415 and "multipart/form-data" in text
            with pytest.raises(PushFailed, match="HTTP 400: .*clips"):  # not a video: the probe names it
                client.push_clips("up", [data, b"\x00not a video" * 100])
            with pytest.raises(PushFailed, match="HTTP 400: no clip received"):
                client.push_clips("up", [])
            monkeypatch.setenv(routes.UPLOAD_LIMIT_ENV, str(len(data) * 1.5 / (1 << 20)))
            with pytest.raises(PushFailed, match=f"HTTP 413: the upload is over .* bytes.*{routes.UPLOAD_LIMIT_ENV}"):
                client.push_clips("up", [data, data])
            assert channels.get("up").status()["clips"] == 1  # nothing was appended
        finally:
            channels.stop("up")
    assert received(output_dir, "up") == []  # no clip, no partial file left behind
