"""The queue command against a ComfyUI test double on 127.0.0.1 (/object_info, /prompt, /ws, /history, /view)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import queue as queue_module
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from comfyui_webtv.cli import queue as q
from comfyui_webtv.workflow import format as wf
from comfyui_webtv.workflow.runner import object_info as pack_object_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UI = os.path.join(ROOT, "workflows", "zeroscope_t2v_xl.json")
API = os.path.join(ROOT, "workflows", "zeroscope_t2v_xl_api.json")
MP4 = b"\x00\x00\x00\x18ftypisom" + os.urandom(256)


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if size < 126:
        head += bytes([size])
    elif size < 1 << 16:
        head += bytes([126]) + struct.pack(">H", size)
    else:
        head += bytes([127]) + struct.pack(">Q", size)
    return head + payload


def _read_client_frame(rfile) -> tuple[int, bytes, bool]:
    b0, b1 = rfile.read(2)
    size = b1 & 0x7F
    if size == 126:
        size = struct.unpack(">H", rfile.read(2))[0]
    elif size == 127:
        size = struct.unpack(">Q", rfile.read(8))[0]
    masked = bool(b1 & 0x80)
    key = rfile.read(4) if masked else b""
    data = rfile.read(size)
    if masked:
        data = bytes(c ^ key[i % 4] for i, c in enumerate(data))
    return b0 & 0x0F, data, masked


class FakeComfyUI:
    """Speaks the few ComfyUI endpoints the command uses. ``scenario``: success, error, interrupt,
    no_ws (the websocket route is missing), never (the run never ends)."""

    def __init__(self, scenario: str = "success"):
        self.scenario = scenario
        self.object_info = pack_object_info()
        self.prompts: list[dict] = []
        self.ws_clients: dict[str, queue_module.Queue] = {}
        self.client_frames: list[tuple[int, bytes, bool]] = []
        self.history: dict[str, dict] = {}
        self.files = {("WebTV", "zeroscope_00001_.mp4", "output"): MP4, ("", "preview.png", "temp"): b"\x89PNG tiny"}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _json(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if url.path == "/object_info":
                    return self._json(200, outer.object_info)
                if url.path.startswith("/history/"):
                    pid = url.path.rsplit("/", 1)[1]
                    return self._json(200, {pid: outer.history[pid]} if pid in outer.history else {})
                if url.path == "/view":
                    data = outer.files.get((query.get("subfolder", ""), query.get("filename"), query.get("type")))
                    if data is None:
                        return self._json(404, {})
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    return self.wfile.write(data)
                if url.path == "/ws" and outer.scenario != "no_ws":
                    return self._websocket(query["clientId"])
                return self._json(404, {"error": "not found"})

            def _websocket(self, client_id):
                key = self.headers["Sec-WebSocket-Key"]
                accept = base64.b64encode(hashlib.sha1((key + q.WS_GUID).encode()).digest()).decode()
                self.send_response(101, "Switching Protocols")
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.end_headers()
                events = outer.ws_clients.setdefault(client_id, queue_module.Queue())
                # first a status message, a ping (the client must answer) and a binary preview frame
                self.wfile.write(_frame(1, json.dumps({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}}).encode()))
                self.wfile.write(_frame(9, b"are you there"))
                self.wfile.flush()
                outer.client_frames.append(_read_client_frame(self.rfile))
                self.wfile.write(_frame(2, b"\x00\x00\x00\x01binary preview"))
                while True:
                    event = events.get()
                    if event is None:
                        break
                    text = json.dumps(event).encode()
                    if event["type"] == "executed":  # fragmented: text frame + continuation
                        self.wfile.write(_frame(1, text[:10], fin=False) + _frame(0, text[10:]))
                    else:
                        self.wfile.write(_frame(1, text))
                    self.wfile.flush()
                try:
                    outer.client_frames.append(_read_client_frame(self.rfile))
                except (ValueError, OSError):
                    pass  # the client went away without a close frame
                self.close_connection = True

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/prompt":
                    return self._json(404, {})
                outer.prompts.append(body)
                status, reply = outer.validate(body["prompt"])
                if status != 200:
                    return self._json(status, reply)
                self._json(200, reply)
                threading.Thread(target=outer.run, args=(reply["prompt_id"], body), daemon=True).start()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def validate(self, prompt: dict) -> tuple[int, dict]:
        for nid, node in prompt.items():
            if node["class_type"] not in self.object_info:
                return 400, {"error": {"type": "invalid_prompt", "message": f"Cannot execute because node {node['class_type']} does not exist.", "details": f"Node ID '#{nid}'", "extra_info": {}}, "node_errors": {}}
        node_errors = {}
        for nid, node in prompt.items():
            spec = self.object_info[node["class_type"]]["input"]["required"]
            for name, value in node["inputs"].items():
                config = spec.get(name)
                if config and config[0] == "INT" and isinstance(value, int) and value < config[1].get("min", value):
                    node_errors[nid] = {"errors": [{"type": "value_smaller_than_min", "message": f"Value {value} smaller than min of {config[1]['min']}", "details": name, "extra_info": {"input_name": name, "input_config": config, "received_value": value}}], "dependent_outputs": ["5"], "class_type": node["class_type"]}
        if node_errors:
            return 400, {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}}, "node_errors": node_errors}
        partial = {}
        if self.scenario == "partial":  # ComfyUI runs the valid outputs and names the invalid ones
            partial = {"9": {"errors": [{"type": "required_input_missing", "message": "Required input is missing", "details": "images", "extra_info": {"input_name": "images"}}], "dependent_outputs": ["9"], "class_type": "WebTVSaveVideo"}}
        return 200, {"prompt_id": str(uuid.uuid4()), "number": len(self.prompts) - 1, "node_errors": partial}

    def run(self, pid: str, body: dict) -> None:
        """Play the scenario's ws messages, then store the history entry (a little later, as ComfyUI does)."""
        events = self.ws_clients.setdefault(body["client_id"], queue_module.Queue())
        send = lambda kind, **data: events.put({"type": kind, "data": data})  # noqa: E731
        send("execution_start", prompt_id=pid, timestamp=0)
        send("execution_cached", nodes=["1"], prompt_id=pid, timestamp=0)
        ui = {"images": [{"filename": "zeroscope_00001_.mp4", "subfolder": "WebTV", "type": "output", "format": "video/mp4"}], "animated": [True]}
        messages = [["execution_start", {"prompt_id": pid}]]
        if self.scenario == "never":
            send("executing", node="3", display_node="3", prompt_id=pid)
            return
        for node in ("3", "4"):
            send("executing", node=node, display_node=node, prompt_id=pid)
            for value in (1, 2, 3):
                send("progress", value=value, max=3, prompt_id=pid, node=node)
        if self.scenario == "error":
            error = {"prompt_id": pid, "node_id": "4", "node_type": "ZeroscopeXLUpscale", "executed": ["3"], "exception_message": "frames: needs at least 1 frame", "exception_type": "ValueError", "traceback": ["..."], "current_inputs": {}, "current_outputs": {}}
            send("execution_error", **error)
            messages.append(["execution_error", error])
            outputs, status = {}, "error"
        elif self.scenario == "interrupt":
            send("execution_interrupted", prompt_id=pid, node_id="4", node_type="ZeroscopeXLUpscale", executed=["3"])
            messages.append(["execution_interrupted", {"prompt_id": pid, "node_id": "4", "node_type": "ZeroscopeXLUpscale"}])
            outputs, status = {}, "error"
        else:
            send("executing", node="5", display_node="5", prompt_id=pid)
            send("executed", node="5", display_node="5", output=ui, prompt_id=pid)
            send("executing", node="6", display_node="6", prompt_id=pid)
            send("executed", node="6", display_node="6", output={"images": [{"filename": "preview.png", "subfolder": "", "type": "temp"}]}, prompt_id=pid)
            send("execution_success", prompt_id=pid, timestamp=1)
            outputs, status = {"5": ui, "6": {"images": [{"filename": "preview.png", "subfolder": "", "type": "temp"}]}}, "success"
        events.put(None)
        time.sleep(0.3)
        self.history[pid] = {"prompt": [0, pid, body["prompt"], {}, ["5"]], "outputs": outputs, "status": {"status_str": status, "completed": status == "success", "messages": messages}, "meta": {}}

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        for events in self.ws_clients.values():
            events.put(None)
        self.httpd.shutdown()
        self.httpd.server_close()


def _queue(server, *sets, workflow=UI, out=None, timeout=30.0):
    stream = io.StringIO()
    code, summary = q.queue_workflow(workflow, server.url if hasattr(server, "url") else server, list(sets), out, timeout, progress_stream=stream)
    return code, summary, stream.getvalue()


def test_ui_workflow_is_converted_set_posted_followed_and_downloaded(tmp_path):
    with FakeComfyUI() as server:
        code, summary, log = _queue(server, "3.seed=7", "Zeroscope v2 XL.dtype=fp16", "WebTVSaveVideo.filename_prefix=WebTV/x", out=str(tmp_path))
    assert code == 0, (summary, log)
    (body,) = server.prompts
    with open(API) as f:
        expected = json.load(f)
    expected["3"]["inputs"]["seed"] = 7
    expected["2"]["inputs"]["dtype"] = "fp16"
    expected["5"]["inputs"]["filename_prefix"] = "WebTV/x"
    assert {k: v["inputs"] for k, v in body["prompt"].items()} == {k: v["inputs"] for k, v in expected.items()}
    with open(UI) as f:
        assert body["extra_data"]["extra_pnginfo"]["workflow"] == json.load(f)
    assert list(server.ws_clients) == [body["client_id"]]
    # the client answered the ping with a masked pong carrying the same payload, and closed cleanly
    assert server.client_frames[0] == (0xA, b"are you there", True)
    assert server.client_frames[1][0] == 0x8 and server.client_frames[1][2]
    assert summary["status"] == "success" and summary["prompt_id"] and summary["error"] is None
    video = os.path.join(str(tmp_path), "WebTV", "zeroscope_00001_.mp4")
    assert summary["files"] == [video, os.path.join(str(tmp_path), "temp", "preview.png")]
    with open(video, "rb") as f:
        assert f.read() == MP4
    assert summary["outputs"]["5"]["images"][0]["format"] == "video/mp4"
    for line in ("cached: [1] Zeroscope v2 576w", "[3] Zeroscope Text to Video: 3/3", "[4] Zeroscope XL Upscale: running", "[5] Save Video (WebTV): done"):
        assert line in log


def test_api_workflow_without_download(tmp_path):
    with FakeComfyUI() as server:
        code, summary, _ = _queue(server, workflow=API, out=None)
    assert code == 0 and summary["files"] == [] and "extra_data" not in server.prompts[0]
    with open(API) as f:
        assert server.prompts[0]["prompt"] == json.load(f)


def test_node_errors_are_reported_clearly():
    with FakeComfyUI() as server:
        code, summary, log = _queue(server, "Zeroscope Text to Video.frames=-2")
    assert code == q.EXIT_INVALID and summary["status"] == "rejected"
    assert summary["node_errors"]["3"]["errors"][0]["type"] == "value_smaller_than_min"
    assert "ComfyUI refused the workflow: Prompt outputs failed validation" in log
    assert "node 3 (Zeroscope Text to Video) input 'frames': Value -2 smaller than min of 1: frames, got -2" in log


def test_partly_invalid_prompt_runs_and_warns():
    with FakeComfyUI("partial") as server:
        code, summary, log = _queue(server)
    assert code == 0 and summary["status"] == "success"
    assert summary["node_errors"]["9"]["class_type"] == "WebTVSaveVideo"
    assert "ComfyUI warns: some outputs are invalid and will not run" in log
    assert "node 9 (WebTVSaveVideo) input 'images': Required input is missing: images" in log


def test_unknown_node_type_is_refused(tmp_path):
    path = tmp_path / "api.json"
    path.write_text(json.dumps({"1": {"class_type": "NoSuchNode", "inputs": {}}}))
    with FakeComfyUI() as server:
        code, summary, log = _queue(server, workflow=str(path))
    assert code == q.EXIT_INVALID
    assert "Cannot execute because node NoSuchNode does not exist. (Node ID '#1')" in log


@pytest.mark.parametrize("scenario, status", [("error", "error"), ("interrupt", "interrupted")])
def test_failed_runs_exit_1(scenario, status):
    with FakeComfyUI(scenario) as server:
        code, summary, log = _queue(server)
    assert code == q.EXIT_FAILED and summary["status"] == status
    assert summary["error"]["node_id"] == "4"
    if scenario == "error":
        assert "[4] Zeroscope XL Upscale failed: ValueError: frames: needs at least 1 frame" in log


def test_without_websocket_history_is_polled(tmp_path):
    with FakeComfyUI("no_ws") as server:
        code, summary, log = _queue(server, out=str(tmp_path))
    assert code == 0 and len(summary["files"]) == 2
    assert "no websocket" in log


def test_timeout():
    with FakeComfyUI("never") as server:
        code, summary, _ = _queue(server, timeout=1.0)
    assert code == q.EXIT_FAILED and summary["status"] == "timeout"


def test_unreachable_and_invalid(tmp_path):
    with FakeComfyUI() as server:
        url = server.url
    code, summary, _ = _queue(url)
    assert code == q.EXIT_UNREACHABLE and "cannot reach ComfyUI" in summary["error"]["message"]
    with FakeComfyUI() as server:
        assert _queue(server, "3.nope=1")[0] == q.EXIT_INVALID
        assert _queue(server, workflow=str(tmp_path / "missing.json"))[0] == q.EXIT_INVALID
    assert server.prompts == []


def test_download_refuses_paths_outside(tmp_path):
    client = q.ComfyClient("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="leaves the output folder"):
        client.download({"filename": "x.mp4", "subfolder": "../..", "type": "output"}, str(tmp_path))


def test_command_line(tmp_path):
    with FakeComfyUI() as server:
        proc = subprocess.run(
            [sys.executable, "-m", "comfyui_webtv", "queue", UI, "--server", server.url, "--set", "3.seed=9", "--output-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
        )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "success" and os.path.isfile(summary["files"][0])
    assert server.prompts[0]["prompt"]["3"]["inputs"]["seed"] == 9
    assert "queued prompt" in proc.stderr


def test_websocket_client_large_and_fragmented_messages():
    """Frames of every length encoding, reassembled, against a raw socket peer."""
    import socket

    a, b = socket.socketpair()
    ws = q.WebSocket(a)
    big = json.dumps({"x": "y" * 70000}).encode()
    b.sendall(_frame(1, b"short") + _frame(1, b"m" * 300) + _frame(1, big[:5], fin=False) + _frame(0, big[5:]) + _frame(8, struct.pack(">H", 1000)))
    assert ws.recv(2) == "short"
    assert ws.recv(2) == "m" * 300
    assert ws.recv(2) == big.decode()
    assert ws.recv(2) is None
    a.close()
    b.close()
    c, d = socket.socketpair()
    with pytest.raises(TimeoutError):  # nothing sent: socket.timeout
        q.WebSocket(c).recv(0.05)
    d.sendall(_frame(1, b"x" * 200)[:50])  # half a frame: still a timeout, the part is kept
    ws = q.WebSocket(c)
    with pytest.raises(TimeoutError):
        ws.recv(0.05)
    d.sendall(_frame(1, b"x" * 200)[50:])
    assert ws.recv(1) == "x" * 200
    c.close()
    d.close()


def test_rejection_text_for_plain_errors():
    assert q.describe_rejection({"error": "bad things"}, {}) == ["ComfyUI refused the workflow: bad things"]
    assert wf.WorkflowError.__mro__[1] is ValueError
