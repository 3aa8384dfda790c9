"""The frontend extension (js/webtv.js) in headless Chromium with a stand-in ComfyUI ``app``.

Setup: ``apt-get install -y chromium`` and ``cd tests/browser && npm ci`` (playwright-core).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from comfyui_webtv import NODE_CLASS_MAPPINGS, WEB_DIRECTORY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROWSER = os.path.join(ROOT, "tests", "browser")
JS_DIR = os.path.normpath(os.path.join(ROOT, WEB_DIRECTORY))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

LIVE = {
    "name": "webtv", "state": "live", "uptime_s": 3725.4, "on_air_s": 3700.0, "reconnects": 1,
    "current_clip": {"index": 2, "path": "/srv/output/WebTV/clip_00003_.mp4", "frame": 12, "frames": 24, "slate": False},
    "last_error": "", "preview_url": "http://127.0.0.1:45123/",
}
WAITING = {**LIVE, "state": "waiting", "uptime_s": 3727.9, "reconnects": 2, "current_clip": None, "last_error": "no clips yet"}


def _js_source() -> str:
    with open(os.path.join(JS_DIR, "webtv.js"), encoding="utf-8") as f:
        return f.read()


def test_web_directory_holds_only_extension_modules():
    files = [os.path.relpath(os.path.join(d, f), JS_DIR) for d, _, fs in os.walk(JS_DIR) for f in fs]
    scripts = [f for f in files if f.endswith(".js")]
    assert scripts == ["webtv.js"]
    for name in scripts:
        with open(os.path.join(JS_DIR, name), encoding="utf-8") as f:
            source = f.read()
        assert 'import { app } from "../../scripts/app.js";' in source
        assert "app.registerExtension(" in source


def test_extension_matches_the_pack():
    """Node names and the status route used by the JS exist on the Python side."""
    source = _js_source()
    names = re.findall(r'"(WebTV[A-Za-z]+)"', source)
    assert {"WebTVSaveVideo", "WebTVRTMPChannel"} <= set(names)
    for name in names:
        assert name in NODE_CLASS_MAPPINGS, name
        if name != "WebTVSaveVideo":
            assert "channel" in NODE_CLASS_MAPPINGS[name].INPUT_TYPES()["required"], name
    assert 'const CHANNELS_ROUTE = "/webtv/channels";' in source
    with open(os.path.join(ROOT, "nodes", "broadcast", "routes.py"), encoding="utf-8") as f:
        routes = f.read()
    assert '"/webtv/channels"' in routes and '"/webtv/channels/{name}/preview/"' in routes


class ExtensionPage:
    """Serves the extension as ComfyUI does, the stand-ins, an mp4 under /api/view and channel statuses."""

    def __init__(self, mp4: bytes):
        self.status_requests: list[str] = []
        outer = self
        files = {
            "/": (os.path.join(BROWSER, "webtv_extension.html"), "text/html"),
            "/webtv_extension_page.js": (os.path.join(BROWSER, "webtv_extension_page.js"), "text/javascript"),
            "/comfyui_standin/node.js": (os.path.join(BROWSER, "comfyui_standin", "node.js"), "text/javascript"),
            "/scripts/app.js": (os.path.join(BROWSER, "comfyui_standin", "scripts", "app.js"), "text/javascript"),
            "/scripts/api.js": (os.path.join(BROWSER, "comfyui_standin", "scripts", "api.js"), "text/javascript"),
            "/extensions/ComfyUI-WebTV/webtv.js": (os.path.join(JS_DIR, "webtv.js"), "text/javascript"),
        }

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body: bytes, kind: str):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if url.path in files:
                    path, kind = files[url.path]
                    with open(path, "rb") as f:
                        return self._send(200, f.read(), kind)
                if url.path == "/api/view" and query.get("subfolder") == "WebTV" and query.get("type") == "output" and query.get("filename", "").endswith(".mp4"):
                    return self._send(200, mp4, "video/mp4")
                if url.path == "/api/webtv/channels":
                    outer.status_requests.append(url.path)
                    return self._send(200, json.dumps({"webtv": LIVE}).encode(), "application/json")
                if url.path == "/waiting":
                    return self._send(200, json.dumps(WAITING).encode(), "application/json")
                if url.path == "/requests":
                    return self._send(200, json.dumps(outer.status_requests).encode(), "application/json")
                if url.path == "/favicon.ico":
                    return self._send(204, b"", "image/x-icon")
                self._send(404, b"", "text/plain")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _browser_ready() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    if not shutil.which("node"):
        return "no node (apt-get install -y nodejs npm)"
    if not os.path.isdir(os.path.join(BROWSER, "node_modules", "playwright-core")):
        return "playwright-core is not installed (cd tests/browser && npm ci)"
    return None


@pytest.mark.skipif(_browser_ready() is not None, reason=str(_browser_ready()))
def test_extension_renders_preview_and_status_in_chromium(tmp_path, output_dir):
    from comfyui_webtv.nodes.broadcast.mp4 import write_mp4

    frames = torch.linspace(0, 1, 12).view(12, 1, 1, 1).expand(12, 48, 64, 3).contiguous()
    clip = write_mp4(frames, os.path.join(output_dir, "clip.mp4"), 12.0, crf=30)
    with open(clip, "rb") as f:
        mp4 = f.read()
    with ExtensionPage(mp4) as page:
        proc = subprocess.run(
            ["node", os.path.join(BROWSER, "extension_probe.mjs"), page.url, str(tmp_path / "profile")],
            capture_output=True, text=True, timeout=180, cwd=BROWSER, env={**os.environ, "CHROMIUM": CHROMIUM},
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    out = report["result"]
    assert "failed" not in out, out.get("failed")
    assert report["errors"] == []
    assert out["extensions"] == ["ComfyUI-WebTV.preview"]

    video = out["video"]
    assert video["src"] == "/api/view?filename=clip_00001_.mp4&subfolder=WebTV&type=output"
    assert video["error"] is None and video["readyState"] >= 1
    assert (video["width"], video["height"]) == (64, 48) and abs(video["duration"] - 1.0) < 0.1
    assert video["playing"] and video["loop"]
    assert video["link"] == "WebTV/clip_00001_.mp4" and video["frontendSaw"]
    assert video["widgets"] == [["webtv_video", False]]
    assert out["videoAfter"] == {"players": 1, "src": "/api/view?filename=clip_00002_.mp4&subfolder=WebTV&type=output"}
    assert out["imageOnlyPlayers"] == 0
    assert out["ownPlayerShown"]
    assert out["withNativePlayer"] == {"shown": False, "paused": True, "link": "WebTV/clip_00003_.mp4"}
    assert out["withNativeWidget"] is False

    preview = "/api/webtv/channels/webtv/preview/"
    assert out["first"] == {"state": "● ON AIR", "clip": "clip_00003_.mp4 (12/24)", "uptime": "01:02:05", "reconnects": "1",
                            "error": "none", "preview": preview, "previewShown": True, "panels": 1}
    assert out["second"] == {"state": "WAITING", "clip": "none", "uptime": "01:02:07", "reconnects": "2",
                             "error": "no clips yet", "preview": preview, "previewShown": True, "panels": 1}
    assert out["executed"] == {"state": "RECONNECTING", "clip": "slate (waiting for clips)", "uptime": "1d 01:01:01",
                               "reconnects": "7", "error": "rtmp: connection refused", "preview": preview,
                               "previewShown": False, "panels": 1}
    assert out["otherChannelIgnored"] and out["removedUnchanged"]
    assert out["missing"]["state"] == "OFF AIR" and out["missing"]["reconnects"] == "-"
    # One read of the route per node, then only server events: no polling.
    assert out["firstRequests"] == 1 and out["requests"] == 2 and out["requestsAfterRemoval"] == 0
    assert out["otherUntouched"]
    assert len(page.status_requests) == 2


def test_extension_draws_nothing_and_listens_to_the_channel_event():
    """Nodes 2.0 (Vue) never runs canvas drawing hooks: the extension uses only DOM widgets and lifecycle
    hooks, and gets live status from the server event the channel sends."""
    from comfyui_webtv.nodes.broadcast import channel

    source = _js_source()
    for hook in ("onDrawBackground", "onDrawForeground", "onMouseDown", "getContext(", "drawImage", "setInterval"):
        assert hook not in source, hook
    assert channel.STATUS_EVENT == "webtv.channel"
    assert 'const STATUS_EVENT = "webtv.channel";' in source and "api.addEventListener(STATUS_EVENT" in source


def test_channel_status_goes_out_as_a_server_event_and_ui_holds_only_text():
    """The channel nodes' ui output is safe for ComfyUI's jobs API (every ui item is read as an output
    file there); the status travels through host.send_event."""
    from comfyui_webtv.nodes import host
    from comfyui_webtv.nodes.broadcast import nodes

    heard = []
    remove = host.add_event_listener(lambda event, data: heard.append((event, data)))
    try:
        out = nodes._status_result({**LIVE, "mode": "clips", "frames_sent": 3, "outputs": [{"target": "hls", "state": "live"}],
                                    "format": {"width": 64, "height": 48, "fps": 8.0, "sample_rate": 44100}})
    finally:
        remove()
    assert list(out["ui"]) == ["text"] and all(isinstance(t, str) for t in out["ui"]["text"])
    assert heard and heard[0][0] == "webtv.channel" and heard[0][1]["state"] == "live"
    assert json.loads(out["result"][0])["format"]["width"] == 64
