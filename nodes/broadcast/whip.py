"""WHIP signalling relayed on 127.0.0.1, so the ffmpeg that sends WebRTC never holds the bearer token.

FFmpeg's WHIP muxer (the bundled 9.x; PyAV's 8.x fails the DTLS handshake) takes its token only as an
option on its command line, which every local user can read. So ffmpeg POSTs its SDP offer to a relay
in this process instead, at a random one-time path; the relay sends the offer to the server with
``Authorization: Bearer <token>`` (https certificates verified like rtmps://, redirects never followed)
and hands back the answer, its ``Location`` pointed at the relay so that the DELETE ending the session
is relayed (with the token) too. Media (ICE, DTLS, SRTP over UDP) goes straight from ffmpeg to the
server's candidates. The relay takes one offer: a process that reads the path from ffmpeg's command
line cannot start another session with the token.
"""

from __future__ import annotations

import http.client
import secrets
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urljoin, urlsplit

MAX_SDP = 1 << 20  # an SDP offer or answer is a few KiB


class WhipRelay:
    """Relays one WHIP session's offer and teardown from ffmpeg to ``url``; ``error`` says why it failed."""

    def __init__(self, url: str, token: str, ca_file: str | None = None, timeout: float = 15.0):
        self.target, self.error = url, ""
        self._token, self._ca_file, self._timeout = token, ca_file, timeout
        self._path = "/" + secrets.token_urlsafe(16)
        self._resource = ""  # the session's address on the server (its Location)
        self._offered = False
        self._lock = threading.Lock()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                relay._offer(self)

            def do_DELETE(self):  # noqa: N802
                relay._delete(self)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="webtv-whip-relay", daemon=True).start()

    @property
    def url(self) -> str:
        """Where ffmpeg sends its offer (holds no secret)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{self._path}"

    def close(self) -> None:
        """Stop listening."""
        self._server.shutdown()
        self._server.server_close()

    def _request(self, method: str, url: str, body: bytes = b"", content_type: str = "") -> http.client.HTTPResponse:
        parts = urlsplit(url)
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=self._ca_file)
            conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=self._timeout, context=context)
        else:  # plain http only to a loopback host (keys.check_output_url)
            conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=self._timeout)
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        if content_type:
            headers["Content-Type"] = content_type
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else "") or "/", body=body or None, headers=headers)
        return conn.getresponse()

    def _offer(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            first = handler.path == self._path and not self._offered
            self._offered = self._offered or first
        if not first:
            handler.send_error(403 if handler.path == self._path else 404)
            return
        try:
            size = int(handler.headers.get("Content-Length") or 0)
            if not 0 < size <= MAX_SDP:
                raise ValueError(f"an offer of {size} bytes")
            offer = handler.rfile.read(size)
            reply = self._request("POST", self.target, offer, handler.headers.get("Content-Type") or "application/sdp")
            answer = reply.read(MAX_SDP + 1)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            self.error = f"the WHIP server could not be asked: {exc}"
            handler.send_error(502)
            return
        if reply.status not in (200, 201) or len(answer) > MAX_SDP:
            self.error = f"the WHIP server answered {reply.status} {reply.reason}" + (
                " (is the bearer token right?)" if reply.status in (401, 403) else ""
            )
            handler.send_error(502)
            return
        self._resource = urljoin(self.target, reply.getheader("Location") or "")
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.getheader("Content-Type") or "application/sdp")
        handler.send_header("Content-Length", str(len(answer)))
        handler.send_header("Location", f"{self._path}/session")
        handler.end_headers()
        handler.wfile.write(answer)

    def _delete(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path != f"{self._path}/session" or not self._resource or self._resource == self.target:
            handler.send_error(404)
            return
        try:
            status = self._request("DELETE", self._resource).status
        except (OSError, http.client.HTTPException):
            status = 502
        handler.send_response(200 if status < 300 else 502)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
