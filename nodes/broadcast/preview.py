"""The local preview: the channel's HLS folder and a small player page, served on 127.0.0.1.

The page (``player.html``) plays the fMP4 HLS with the browser's own HLS support where there is one
(Safari, iOS) and otherwise through Media Source Extensions (Chrome, Edge, Firefox), with no player
library to fetch. The same files are served through ComfyUI's server by :mod:`.routes`.
"""

from __future__ import annotations

import json
import os
import re
import threading
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

HLS_FILE = re.compile(r"^[A-Za-z0-9_.-]+\.(m3u8|m4s|mp4)$")
CONTENT_TYPES = {"m3u8": "application/vnd.apple.mpegurl", "m4s": "video/iso.segment", "mp4": "video/mp4"}


@lru_cache(maxsize=1)
def player_page() -> bytes:
    """The player page's HTML."""
    with open(os.path.join(os.path.dirname(__file__), "player.html"), "rb") as f:
        return f.read()


def hls_file(folder: str, name: str) -> tuple[str, str] | None:
    """``(path, content type)`` of a preview file, or None for any other name (no traversal)."""
    match = HLS_FILE.match(name)
    if not folder or not match or name.startswith("."):
        return None
    path = os.path.join(folder, name)
    return (path, CONTENT_TYPES[match.group(1)]) if os.path.isfile(path) else None


class PreviewServer:
    """An HTTP server on 127.0.0.1 for one channel: ``/`` the player, ``/hls/*`` the stream, ``/status`` JSON."""

    def __init__(self, folder: str, status: Callable[[], dict], port: int = 0):
        handler = type("PreviewHandler", (_Handler,), {"folder": folder, "status": staticmethod(status)})
        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError as exc:
            raise ValueError(f"preview_port: cannot listen on 127.0.0.1:{port} ({exc.strerror}); choose another port or 0 for a free one.") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2)


class _Handler(BaseHTTPRequestHandler):
    folder = ""
    status: Callable[[], dict]

    def do_GET(self):  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return self._send(player_page(), "text/html; charset=utf-8")
        if path == "/status":
            return self._send(json.dumps(self.status()).encode(), "application/json")
        if path.startswith("/hls/"):
            found = hls_file(self.folder, path[5:])
            if found:
                try:
                    with open(found[0], "rb") as f:
                        return self._send(f.read(), found[1])
                except FileNotFoundError:
                    pass  # deleted by the rolling window meanwhile
        self.send_error(404)

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - keep ComfyUI's console quiet
        pass
