"""The local preview: the channel's HLS and player page on 127.0.0.1 play in headless Chromium.

Chromium is Debian's ``chromium`` driven by playwright-core (``npm ci`` in tests/browser, run by
scripts/setup). The page's own MSE player is what plays (Chromium has no native HLS here), and the
browser may reach nothing but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from comfyui_webtv.nodes.broadcast import channel as channels
from comfyui_webtv.nodes.broadcast.nodes import FFConcatPlaylist, RTMPChannel

from .rtmp_server import channel_ffmpegs, make_clip

BROWSER = os.path.join(os.path.dirname(__file__), "browser")


@pytest.fixture
def preview_channel(output_dir):
    folder = os.path.join(output_dir, "WebTV")
    os.makedirs(folder)
    make_clip(os.path.join(folder, "a.mp4"), "red", 2.0, tone=440)
    make_clip(os.path.join(folder, "b.mp4"), "blue", 2.0, tone=660)
    playlist = FFConcatPlaylist().write("WebTV/*.mp4", "WebTV/preview.ffconcat", "replace", "relative")["result"][0]
    result = RTMPChannel().start(
        playlist=playlist, channel="preview", outputs="", local_preview=True, mode="clips", width=320, height=180,
        fps=24.0, video_kbps=400, audio_kbps=96, sample_rate="48000", keyframe_seconds=2.0, preset="veryfast",
    )
    status = json.loads(result["result"][0])
    yield status
    channels.stop_all()
    assert channel_ffmpegs() == []


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def test_preview_serves_page_status_and_hls(preview_channel):
    url = preview_channel["preview_url"]
    assert url.startswith("http://127.0.0.1:")
    assert b"MediaSource" in get(url)
    deadline = time.monotonic() + 15
    while b"#EXT-X-MAP" not in (playlist := _try(url + "hls/live.m3u8")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert b"#EXT-X-MAP" in playlist, "no HLS segment within 15 s"
    master = get(url + "hls/master.m3u8").decode()
    assert 'CODECS="avc1.4d' in master and "mp4a.40.2" in master  # H.264 Main + AAC-LC
    assert json.loads(get(url + "status"))["name"] == "preview"
    for bad in ("hls/../../etc/passwd", "hls/.hidden.m3u8", "hls/live.txt", "nothing"):
        with pytest.raises(urllib.error.HTTPError):
            get(url + bad)


def _try(url: str) -> bytes:
    try:
        return get(url)
    except OSError:
        return b""


def test_preview_plays_in_headless_chromium(preview_channel, tmp_path):
    node = shutil.which("node")
    if not node:
        pytest.fail("node is not installed (Debian nodejs); scripts/setup installs it", pytrace=False)
    if not os.path.exists("/usr/bin/chromium") and not os.environ.get("CHROMIUM"):
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium (scripts/setup does this)", pytrace=False)
    if not os.path.isdir(os.path.join(BROWSER, "node_modules", "playwright-core")):
        pytest.fail("playwright-core is missing: run `npm ci` in tests/browser (scripts/setup does this)", pytrace=False)
    run = subprocess.run(
        [node, "preview_plays.mjs", preview_channel["preview_url"], str(tmp_path / "chromium-profile")],
        cwd=BROWSER, capture_output=True, text=True, timeout=90,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    first, second = report["first"], report["second"]
    assert report["blocked"] == []
    assert first["player"]["mode"] == "mse" and first["player"]["errors"] == 0, first
    assert (second["width"], second["height"]) == (320, 180)
    assert not second["paused"]
    assert second["time"] - first["time"] > 1.5, f"currentTime went from {first['time']} to {second['time']}"


def test_comfyui_routes_serve_status_and_preview(preview_channel):
    """The routes registered on ComfyUI's server (aiohttp, as ComfyUI runs it)."""
    try:
        from aiohttp import web
        from aiohttp.test_utils import TestClient, TestServer
    except ImportError:
        pytest.fail("aiohttp (a ComfyUI dependency) is not installed: pip install aiohttp", pytrace=False)
    from comfyui_webtv.nodes.broadcast import routes

    async def scenario():
        table = web.RouteTableDef()
        routes.register(table)
        app = web.Application()
        app.add_routes(table)
        async with TestClient(TestServer(app)) as client:
            everything = await (await client.get("/webtv/channels")).json()
            assert everything["preview"]["name"] == "preview"
            assert (await (await client.get("/webtv/channels/preview/status")).json())["mode"] == "clips"
            moved = await client.get("/webtv/channels/preview/preview", allow_redirects=False)
            assert moved.status == 302 and moved.headers["Location"] == "/webtv/channels/preview/preview/"
            page = await client.get("/webtv/channels/preview/preview/")
            assert page.status == 200 and "MediaSource" in await page.text()
            deadline = time.monotonic() + 15
            while (listing := await client.get("/webtv/channels/preview/preview/hls/live.m3u8")).status != 200:
                assert time.monotonic() < deadline, "no HLS playlist within 15 s"
                await asyncio.sleep(0.2)
            assert listing.headers["Content-Type"] == "application/vnd.apple.mpegurl" and "#EXT-X-MAP" in await listing.text()
            for bad in ("/webtv/channels/nope/status", "/webtv/channels/preview/preview/hls/..%2F..%2Fetc%2Fpasswd",
                        "/webtv/channels/preview/preview/hls/x.txt"):
                assert (await client.get(bad)).status == 404, bad

    asyncio.run(scenario())
