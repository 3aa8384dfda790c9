"""``queue WORKFLOW``: run a workflow on a ComfyUI server through its HTTP API.

Takes a UI-format (converted as the frontend does, using the server's ``/object_info``) or API-format
workflow, applies ``--set NODE.INPUT=VALUE``, posts it to ``/prompt``, follows the run over ``/ws``
(or by polling ``/history`` when the websocket is unavailable), downloads the outputs from ``/view``
and prints a JSON summary. Exit code: 0 success, 1 the run failed (error, interrupt, timeout),
2 the workflow is invalid or ComfyUI refused it, 3 the server cannot be reached. A server behind an
authenticating proxy gets ``Authorization: Bearer $WEBTV_WORKER_TOKEN`` when that variable is set.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import socket
import ssl
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field

from ..nodes.common.files import atomic_path
from ..workflow import format as wf

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_UNREACHABLE = 0, 1, 2, 3
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TOKEN_ENV = "WEBTV_WORKER_TOKEN"  # the bearer token for workers; from the environment only


class Unreachable(Exception):
    """The server did not answer."""


class PushFailed(Exception):
    """The server refused clips sent to a channel; the message has its reason."""


class Rejected(Exception):
    """ComfyUI refused the prompt (HTTP 400 with ``error`` / ``node_errors``)."""

    def __init__(self, body: dict):
        super().__init__("ComfyUI refused the workflow")
        self.body = body


# ---------------------------------------------------------------- a minimal RFC 6455 client

class WebSocket:
    """A blocking websocket client: text and binary messages, fragmentation, ping/pong, close."""

    def __init__(self, sock: socket.socket, leftover: bytes = b""):
        self.sock = sock
        self.buffer = bytearray(leftover)
        self.fragments: list[bytes] = []
        self.fragment_opcode = 0

    @classmethod
    def connect(cls, url: str, timeout: float = 10.0, headers: dict | None = None) -> "WebSocket":
        """Open ``ws://`` or ``wss://`` ``url`` (sending ``headers``) and complete the opening handshake."""
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        if secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        key = base64.b64encode(os.urandom(16)).decode()
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()) + "\r\n"
        )
        sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(4096)
            if not chunk:
                sock.close()
                raise ConnectionError("the server closed the connection during the websocket handshake")
            response += chunk
        head, _, leftover = response.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if " 101 " not in lines[0] + " " or headers.get("sec-websocket-accept") != expected:
            sock.close()
            raise ConnectionError(f"websocket handshake refused: {lines[0]}")
        return cls(sock, leftover)

    def _frame_ready(self) -> tuple[int, int, int] | None:
        """(header length, payload length, mask length) when a whole frame is buffered."""
        buf = self.buffer
        if len(buf) < 2:
            return None
        size, header = buf[1] & 0x7F, 2
        if size == 126:
            if len(buf) < 4:
                return None
            size, header = struct.unpack(">H", buf[2:4])[0], 4
        elif size == 127:
            if len(buf) < 10:
                return None
            size, header = struct.unpack(">Q", buf[2:10])[0], 10
        mask = 4 if buf[1] & 0x80 else 0
        return (header, size, mask) if len(buf) >= header + mask + size else None

    def _read_frame(self) -> tuple[bool, int, bytes]:
        while (layout := self._frame_ready()) is None:
            chunk = self.sock.recv(65536)  # socket.timeout propagates; the buffer keeps partial frames
            if not chunk:
                raise ConnectionError("the websocket connection was closed")
            self.buffer += chunk
        header, size, mask = layout
        fin, opcode = bool(self.buffer[0] & 0x80), self.buffer[0] & 0x0F
        payload = bytes(self.buffer[header + mask : header + mask + size])
        if mask:
            key = self.buffer[header : header + 4]
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        del self.buffer[: header + mask + size]
        return fin, opcode, payload

    def send(self, opcode: int, payload: bytes = b"") -> None:
        """Send one masked frame (clients must mask)."""
        size = len(payload)
        header = bytes([0x80 | opcode])
        if size < 126:
            header += bytes([0x80 | size])
        elif size < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", size)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", size)
        key = os.urandom(4)
        self.sock.sendall(header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload)))

    def recv(self, timeout: float | None = None) -> str | bytes | None:
        """The next message (str for text, bytes for binary), None once the server closed.
        Raises ``socket.timeout`` when nothing complete arrived within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        while True:
            fin, opcode, payload = self._read_frame()
            if opcode == 0x9:
                self.send(0xA, payload)
            elif opcode == 0x8:
                try:
                    self.send(0x8, payload[:2])
                except OSError:
                    pass
                return None
            elif opcode in (0x0, 0x1, 0x2):
                if opcode:
                    self.fragment_opcode, self.fragments = opcode, []
                self.fragments.append(payload)
                if fin:
                    data = b"".join(self.fragments)
                    self.fragments = []
                    return data.decode("utf-8") if self.fragment_opcode == 0x1 else data

    def close(self) -> None:
        try:
            self.send(0x8, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()


# ---------------------------------------------------------------- HTTP

class ComfyClient:
    """The few ComfyUI endpoints the command uses."""

    def __init__(self, server: str, timeout: float = 30.0):
        server = server.rstrip("/")
        if not server.startswith(("http://", "https://")):
            server = "http://" + server
        self.server = server
        self.timeout = timeout
        token = os.environ.get(TOKEN_ENV)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _request(self, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, **({"Content-Type": "application/json"} if data else {})}
        request = urllib.request.Request(self.server + path, data, headers, method="POST" if data else "GET")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError:
            raise  # an answer, handled by the caller
        except (urllib.error.URLError, OSError) as e:
            raise Unreachable(f"cannot reach ComfyUI at {self.server} ({getattr(e, 'reason', e)}); is it running?") from None

    def get_json(self, path: str):
        with self._request(path) as response:
            return json.loads(response.read())

    def post_prompt(self, body: dict) -> dict:
        try:
            with self._request("/prompt", body) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                raise Rejected(json.loads(text)) from None
            except json.JSONDecodeError:
                raise Rejected({"error": {"message": f"HTTP {e.code}", "details": text[:500]}}) from None

    def history(self, prompt_id: str) -> dict | None:
        entry = self.get_json(f"/history/{urllib.parse.quote(prompt_id)}")
        return entry.get(prompt_id)

    def job(self, prompt_id: str) -> dict | None:
        """The jobs API's record of ``prompt_id`` (``/api/jobs/{id}``, ComfyUI 0.4+), or None where the server has none."""
        try:
            job = self.get_json(f"/api/jobs/{urllib.parse.quote(prompt_id, safe='')}")
        except (urllib.error.HTTPError, ValueError):
            return None
        return job if isinstance(job, dict) else None

    def cancel(self, prompt_id: str) -> str:
        """Cancel ``prompt_id``: ``POST /api/jobs/{id}/cancel`` where the server has it, else ``/interrupt``; returns the route used."""
        route = f"/api/jobs/{urllib.parse.quote(prompt_id, safe='')}/cancel"
        try:
            with self._request(route, {}):
                return route
        except urllib.error.HTTPError as e:
            if e.code not in (404, 405):
                raise
        with self._request("/interrupt", {"prompt_id": prompt_id}):
            return "/interrupt"

    def download(self, item: dict, out_dir: str) -> str:
        """Save one output file (``{filename, subfolder, type}``) under ``out_dir``; returns its path."""
        name, subfolder, kind = item.get("filename"), item.get("subfolder") or "", item.get("type") or "output"
        if not all(isinstance(v, str) for v in (name, subfolder, kind)) or kind not in ("output", "temp", "input"):
            raise ValueError(f"refusing to save {item!r}: type must be output, temp or input and the names text")
        parts = [p for p in subfolder.replace("\\", "/").split("/") if p not in ("", ".")]
        bad = not name or name in (".", "..") or any(c in name for c in "/\\\x00") or "\x00" in subfolder
        if bad or ".." in parts or os.path.isabs(subfolder) or any(":" in p for p in parts[:1]):
            raise ValueError(f"refusing to save {item!r}: the path leaves the output folder")
        root = os.path.realpath(out_dir)
        dest = os.path.join(root, *([] if kind == "output" else [kind]), *parts, name)
        if os.path.commonpath([root, os.path.realpath(dest)]) != root:
            raise ValueError(f"refusing to save {item!r}: the path leaves the output folder {root}")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": subfolder, "type": kind})
        with self._request(f"/view?{query}") as response, atomic_path(dest) as tmp, open(tmp, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        return dest

    def push_clips(self, channel: str, clips: list[bytes]) -> dict:
        """Append ``clips`` (mp4 bytes) to ``channel`` on a server running the pack (``POST
        /webtv/channels/{channel}/clips``, multipart); returns the server's answer (saved names and status)."""
        boundary = uuid.uuid4().hex
        parts = [(f"--{boundary}\r\nContent-Disposition: form-data; name=\"clip\"; filename=\"clip_{i + 1:03}.mp4\"\r\n"
                  f"Content-Type: video/mp4\r\n\r\n").encode() + data + b"\r\n" for i, data in enumerate(clips)]
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers = {**self.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        route = f"/webtv/channels/{urllib.parse.quote(channel, safe='')}/clips"
        request = urllib.request.Request(self.server + route, body, headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            reason = e.read().decode("utf-8", "replace")[:500]
            hint = " (is the pack installed there, and up to date?)" if e.code in (404, 405) and "channel" not in reason else ""
            raise PushFailed(f"{self.server} refused the clips for channel {channel!r}: HTTP {e.code}: {reason}{hint}") from None
        except (urllib.error.URLError, OSError) as e:
            raise Unreachable(f"cannot reach ComfyUI at {self.server} ({getattr(e, 'reason', e)}); is it running?") from None

    def websocket(self, client_id: str) -> WebSocket:
        parts = urllib.parse.urlsplit(self.server)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return WebSocket.connect(f"{scheme}://{parts.netloc}{parts.path}/ws?clientId={client_id}", self.timeout, self.headers)


# ---------------------------------------------------------------- errors and progress

def describe_rejection(body: dict, api: dict) -> list[str]:
    """Readable lines for ComfyUI's validation reply (``error`` and per-node ``node_errors``)."""
    error = body.get("error") or {}
    if isinstance(error, str):
        error = {"message": error}
    head = error.get("message") or "the workflow is invalid"
    lines = [f"ComfyUI refused the workflow: {head}" + (f" ({error['details']})" if error.get("details") else "")]
    for nid, entry in (body.get("node_errors") or {}).items():
        node = api.get(str(nid), {})
        title = node.get("_meta", {}).get("title") or entry.get("class_type") or node.get("class_type", "?")
        for e in entry.get("errors") or []:
            extra = e.get("extra_info") or {}
            where = f" input {extra['input_name']!r}" if extra.get("input_name") else ""
            got = f", got {extra['received_value']!r}" if "received_value" in extra else ""
            details = f": {e['details']}" if e.get("details") else ""
            lines.append(f"  node {nid} ({title}){where}: {e.get('message', e.get('type'))}{details}{got}")
    return lines


class Progress:
    """Progress lines on stderr, at most one per node every half second."""

    def __init__(self, api: dict, stream=sys.stderr, quiet: bool = False):
        self.api, self.stream, self.quiet = api, stream, quiet
        self.last: dict[str, float] = {}

    def label(self, node: str) -> str:
        entry = self.api.get(str(node), {})
        return f"[{node}] {entry.get('_meta', {}).get('title') or entry.get('class_type', '?')}"

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def step(self, node: str, value: int, total: int) -> None:
        now = time.monotonic()
        if value >= total or now - self.last.get(node, 0.0) >= 0.5:
            self.last[node] = now
            self.say(f"{self.label(node)}: {value}/{total}")


def follow(ws: WebSocket, prompt_id: str, progress: Progress, deadline: float) -> tuple[str, dict | None]:
    """Read ws messages for ``prompt_id`` until it ends: ("success" | "error" | "interrupted", error)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        try:
            message = ws.recv(timeout=min(remaining, 5.0))
        except TimeoutError:  # socket.timeout: nothing yet
            continue
        if message is None:
            raise ConnectionError("the websocket was closed by the server")
        if isinstance(message, bytes):
            continue  # preview images
        event = json.loads(message)
        kind, data = event.get("type"), event.get("data") or {}
        if data.get("prompt_id", prompt_id) != prompt_id:
            continue
        if kind == "execution_start":
            progress.say(f"running prompt {prompt_id}")
        elif kind == "execution_cached" and data.get("nodes"):
            progress.say(f"cached: {', '.join(progress.label(n) for n in data['nodes'])}")
        elif kind == "executing":
            if data.get("node") is None and "prompt_id" in data:
                return "success", None
            progress.say(f"{progress.label(data['node'])}: running")
        elif kind == "progress":
            progress.step(str(data.get("node")), int(data.get("value", 0)), int(data.get("max", 1)))
        elif kind == "executed":
            progress.say(f"{progress.label(data.get('node'))}: done")
        elif kind == "execution_success":
            return "success", None
        elif kind == "execution_error":
            return "error", {k: data.get(k) for k in ("node_id", "node_type", "exception_type", "exception_message", "traceback")}
        elif kind == "execution_interrupted":
            return "interrupted", {k: data.get(k) for k in ("node_id", "node_type")}


def wait_history(client: ComfyClient, prompt_id: str, deadline: float, poll: float = 0.25) -> dict:
    """The prompt's /history entry once it is complete."""
    while True:
        entry = client.history(prompt_id)  # ComfyUI adds the entry when the run has ended
        if entry:
            return entry
        if time.monotonic() >= deadline:
            raise TimeoutError
        time.sleep(poll)


def _output_files(outputs: dict) -> list[dict]:
    files = []
    for ui in outputs.values():
        for value in ui.values():
            if isinstance(value, list):
                files += [v for v in value if isinstance(v, dict) and v.get("filename")]
    return files


# ---------------------------------------------------------------- the command

def _history_error(entry: dict) -> tuple[str, dict | None]:
    """("success" | "error" | "interrupted", error) from a /history entry's status messages."""
    status = entry.get("status") or {}
    if status.get("status_str") != "error":
        return "success", None
    for kind, data in status.get("messages") or []:
        if kind in ("execution_error", "execution_interrupted"):
            error = {k: data.get(k) for k in ("node_id", "node_type", "exception_type", "exception_message")}
            return ("interrupted" if kind == "execution_interrupted" else "error"), error
    return "error", None


@dataclass
class Run:
    prompt_id: str
    node_errors: dict  # outputs ComfyUI left out while running the others
    status: str = "success"
    error: dict | None = None
    entry: dict = field(default_factory=dict)  # the /history entry
    job_status: str | None = None  # /api/jobs/{id} status where the server has the jobs API


def _run_prompt(client: ComfyClient, body: dict, api: dict, progress: Progress, deadline: float) -> Run:
    """Post ``body`` and wait for the run to end."""
    try:
        ws = client.websocket(body["client_id"])  # before posting, so no message is missed
    except (OSError, ConnectionError) as e:
        ws = None
        progress.say(f"no websocket ({e}); polling /history instead")
    run = None
    try:
        reply = client.post_prompt(body)
        run = Run(reply["prompt_id"], reply.get("node_errors") or {})
        progress.say(f"queued prompt {run.prompt_id} (#{reply.get('number')})")
        if run.node_errors:
            for line in describe_rejection({"error": "some outputs are invalid and will not run", "node_errors": run.node_errors}, api):
                progress.say(line.replace("refused the workflow", "warns"))
        if ws is not None:
            try:
                run.status, run.error = follow(ws, run.prompt_id, progress, deadline)
            except TimeoutError:
                raise
            except (ConnectionError, OSError) as e:
                progress.say(f"websocket lost ({e}); polling /history instead")
        run.entry = wait_history(client, run.prompt_id, deadline)
    except (TimeoutError, KeyboardInterrupt):
        if run is not None:  # the run must not go on burning the server's GPU after we give up on it
            try:
                progress.say(f"cancelling prompt {run.prompt_id} through {client.cancel(run.prompt_id)}")
            except (Unreachable, urllib.error.HTTPError) as e:
                progress.say(f"could not cancel prompt {run.prompt_id} ({e})")
        raise
    finally:
        if ws is not None:
            ws.close()
    if run.status == "success":
        run.status, run.error = _history_error(run.entry)
    job = client.job(run.prompt_id)
    if job is not None:
        run.job_status = job.get("status")
        if run.status == "success" and run.job_status in ("failed", "cancelled"):
            run.status = "interrupted" if run.job_status == "cancelled" else "error"
    return run


def queue_workflow(
    workflow_path: str,
    server: str,
    sets: list[str] = (),
    output_dir: str | None = "comfyui_outputs",
    timeout: float = 3600.0,
    progress_stream=sys.stderr,
    quiet: bool = False,
) -> tuple[int, dict]:
    """Run a workflow file on ``server``; returns (exit code, JSON-ready summary)."""
    started = time.monotonic()
    summary: dict = {"status": "invalid", "server": server, "workflow": workflow_path, "prompt_id": None,
                     "outputs": {}, "files": [], "error": None, "node_errors": {}}

    def done(code: int, status: str, **extra) -> tuple[int, dict]:
        summary.update(status=status, elapsed_s=round(time.monotonic() - started, 3), **extra)
        return code, summary

    client = ComfyClient(server)
    try:
        with open(workflow_path, encoding="utf-8") as f:
            kind, workflow = wf.load_workflow(f.read())
        object_info = client.get_json("/object_info") if kind == "ui" or sets else None
        api = wf.ui_to_api(workflow, object_info) if kind == "ui" else workflow
        for assignment in sets:
            wf.set_input(api, assignment, object_info)
    except OSError as e:
        return done(EXIT_INVALID, "invalid", error={"message": f"workflow: cannot read {workflow_path} ({e.strerror})."})
    except wf.WorkflowError as e:
        return done(EXIT_INVALID, "invalid", error={"message": str(e)})
    except Unreachable as e:
        return done(EXIT_UNREACHABLE, "unreachable", error={"message": str(e)})
    except urllib.error.HTTPError as e:
        return done(EXIT_UNREACHABLE, "unreachable", error={"message": f"{server} answered HTTP {e.code} for {e.url}; is it ComfyUI?"})

    progress = Progress(api, progress_stream, quiet)
    body = {"prompt": api, "client_id": uuid.uuid4().hex}
    if kind == "ui":
        body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}  # savers embed it, as from the editor
    try:
        run = _run_prompt(client, body, api, progress, time.monotonic() + timeout)
    except Rejected as e:
        for line in describe_rejection(e.body, api):
            progress.say(line)
        error = e.body.get("error")
        return done(EXIT_INVALID, "rejected", error=error if isinstance(error, dict) else {"message": str(error)},
                    node_errors=e.body.get("node_errors") or {})
    except TimeoutError:
        return done(EXIT_FAILED, "timeout", error={"message": f"no result within {timeout:g} s"})
    except Unreachable as e:
        return done(EXIT_UNREACHABLE, "unreachable", error={"message": str(e)})
    except urllib.error.HTTPError as e:
        return done(EXIT_FAILED, "server_error", error={"message": f"{server} answered HTTP {e.code} for {e.url}."})

    error = run.error
    summary.update(prompt_id=run.prompt_id, job_status=run.job_status, node_errors=run.node_errors, outputs=run.entry.get("outputs") or {}, error=error)
    if error and error.get("exception_message"):
        progress.say(f"{progress.label(error.get('node_id'))} failed: {error.get('exception_type')}: {error['exception_message']}")
    if output_dir:
        try:
            summary["files"] = [client.download(item, output_dir) for item in _output_files(summary["outputs"])]
        except (Unreachable, urllib.error.HTTPError, ValueError, OSError) as e:
            return done(EXIT_FAILED, "download_failed", error={"message": str(e)})
    return done(EXIT_OK if run.status == "success" else EXIT_FAILED, run.status)


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (``--timeout``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"--timeout: {text!r} is not a positive number of seconds")
    return value


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("queue", help="run a workflow on a ComfyUI server", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workflow", help="workflow JSON, UI format (as saved by ComfyUI) or API format")
    p.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI URL (default %(default)s)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="set an input; NODE is a node id, title or class type (repeatable)")
    p.add_argument("--output-dir", default="comfyui_outputs", help="where the outputs are downloaded (default %(default)s)")
    p.add_argument("--no-download", action="store_true", help="do not download the outputs")
    p.add_argument("--timeout", type=_seconds, default=3600.0, help="seconds to wait for the run (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(handler=_run)


def _run(args) -> int:
    code, summary = queue_workflow(
        args.workflow, args.server, args.sets, None if args.no_download else args.output_dir, args.timeout, quiet=args.quiet
    )
    print(json.dumps(summary, indent=2))
    return code
