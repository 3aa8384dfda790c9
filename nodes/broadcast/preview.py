"""The local preview: the channel's HLS folder and a small player page, served on 127.0.0.1.

The page (``player.html``) plays the fMP4 HLS with the browser's own HLS support where there is one
(Safari, iOS) and otherwise through Media Source Extensions (Chrome, Edge, Firefox), with no player
library to fetch. The same files are served through ComfyUI's server by :mod:`.routes`.

Only requests whose ``Host`` is a loopback name are answered (a web page cannot reach the server by
rebinding its own domain to 127.0.0.1), at most MAX_CONNECTIONS at a time with a timeout on idle
sockets, and only regular files directly in the channel folder are served, never through a link.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

HLS_FILE = re.compile(r"^[A-Za-z0-9_.-]+\.(m3u8|m4s|mp4)$")
CONTENT_TYPES = {"m3u8": "application/vnd.apple.mpegurl", "m4s": "video/iso.segment", "mp4": "video/mp4"}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
MAX_CONNECTIONS = 16  # players fetch a playlist and a segment at a time; more are refused
IDLE_SECONDS = 10.0  # a connection that sends nothing this long is closed


@lru_cache(maxsize=1)
def player_page() -> bytes:
    """The player page's HTML."""
    with open(os.path.join(os.path.dirname(__file__), "player.html"), "rb") as f:
        return f.read()


def hls_file(folder: str, name: str) -> tuple[bytes, str] | None:
    """``(content, content type)`` of a preview file, or None for any other name, a link or a non-regular file."""
    match = HLS_FILE.match(name)
    if not folder or not match or name.startswith("."):
        return None
    try:
        fd = os.open(os.path.join(folder, name), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None  # missing, rolled out of the window meanwhile, or a link
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read(), CONTENT_TYPES[match.group(1)]


def loopback_host(host: str | None, port: int) -> bool:
    """True when a request's ``Host`` header names this server by a loopback name (with or without its port)."""
    if not host:
        return False
    host = host.strip().lower()
    return any(host in (name, f"{name}:{port}") for name in LOOPBACK_HOSTS)


class _Server(ThreadingHTTPServer):
    """A threading HTTP server with at most MAX_CONNECTIONS handler threads; further connections are closed."""

    daemon_threads = True

    def __init__(self, *args, **kwargs):
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class PreviewServer:
    """An HTTP server on 127.0.0.1 for one channel: ``/`` the player, ``/hls/*`` the stream, ``/status`` JSON."""

    def __init__(self, folder: str, status: Callable[[], dict], port: int = 0):
        handler = type("PreviewHandler", (_Handler,), {"folder": folder, "status": staticmethod(status)})
        try:
            self._server = _Server(("127.0.0.1", port), handler)
        except OSError as exc:
            raise ValueError(f"preview_port: cannot listen on 127.0.0.1:{port} ({exc.strerror}); choose another port or 0 for a free one.") from None
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
    timeout = IDLE_SECONDS

    def do_GET(self):  # noqa: N802 - http.server's name
        if not loopback_host(self.headers.get("Host"), self.server.server_address[1]):
            return self.send_error(403, "only loopback host names are served")
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return self._send(player_page(), "text/html; charset=utf-8")
        if path == "/status":
            return self._send(json.dumps(self.status()).encode(), "application/json")
        if path.startswith("/hls/"):
            found = hls_file(self.folder, path[5:])
            if found:
                return self._send(*found)
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
