"""Hostile workflow inputs, one per case, each with the precise outcome (issue 11).

Every case runs under the ``hostile`` fixture (see conftest): afterwards no partial file, nothing
outside output/, no child process left and the LLM key in no log or error.
"""

from __future__ import annotations

import http.server
import json
import math
import os
import threading
import time

import pytest
import torch

from comfyui_webtv.cli import queue as q
from comfyui_webtv.nodes import host
from comfyui_webtv.nodes.broadcast.mp4 import next_output_file, write_mp4
from comfyui_webtv import NODE_CLASS_MAPPINGS
from comfyui_webtv.nodes.common import frames as frame_store
from comfyui_webtv.nodes.prompts import backends
from comfyui_webtv.nodes.prompts.writer import write_shots
from comfyui_webtv.workflow import runner


FRAMES = torch.rand(3, 16, 16, 3)
WebTVSaveVideo = NODE_CLASS_MAPPINGS["WebTVSaveVideo"]


def refused(hostile, call, *names):
    """Run ``call``; it must raise a clear error naming every one of ``names``."""
    with pytest.raises(Exception) as err:
        call()
    text = str(err.value)
    hostile["errors"].append(text)
    assert not isinstance(err.value, (TypeError, AttributeError, KeyError, IndexError, RecursionError)), text
    for name in names:
        assert name in text, f"{name!r} not named in: {text}"
    return text


# ---------------------------------------------------------------- point 5: one path guard

ESCAPES = [".", "..", "WebTV/..", "../x", "WebTV/../../x", "/etc/webtv", "a\x00b", "", "   ", "./"]


@pytest.mark.parametrize("relative", ESCAPES)
def test_output_path_refuses(hostile, relative):
    refused(hostile, lambda: host.output_path(relative), "filename_prefix")


def test_output_path_refuses_symlinked_folder_out(hostile, tmp_path):
    os.symlink(str(tmp_path), os.path.join(hostile["output"], "out"))
    refused(hostile, lambda: host.output_path("out/x.mp4"), "filename_prefix", "outside the output folder")
    os.remove(os.path.join(hostile["output"], "out"))


@pytest.mark.parametrize("relative", ["WebTV/clip", "a/b/c", os.path.join("x", "y.mp4")])
def test_output_path_accepts(hostile, relative):
    assert host.output_path(relative).startswith(os.path.realpath(hostile["output"]) + os.sep)


def test_output_path_accepts_absolute_inside(hostile):
    inside = os.path.join(hostile["output"], "z.mp4")
    assert host.output_path(inside) == os.path.realpath(inside)


@pytest.mark.parametrize("prefix", [".", "WebTV/..", "..", "/tmp/escape", "x\x00y", " lead", ""])
def test_save_video_prefix_cannot_escape(hostile, prefix):
    refused(hostile, lambda: WebTVSaveVideo().save(images=FRAMES, fps=8.0, filename_prefix=prefix, crf=30), "filename_prefix")
    assert not any(n.endswith(".mp4") for n in os.listdir(os.path.dirname(hostile["output"])))


def test_save_video_prefix_through_the_runner(hostile, tiny_env):
    api = {
        "1": {"class_type": "ZeroscopeLoader", "inputs": {"model_name": "zeroscope_v2_576w", "dtype": "auto", "download_if_missing": False}},
        "2": {"class_type": "ZeroscopeTextToVideo", "inputs": {
            "model": ["1", 0], "prompt": "a boat", "negative_prompt": "", "seed": 1, "frames": 2, "steps": 1,
            "guidance": 7.0, "width": 64, "height": 64, "scheduler": "DPM-Solver++ 2M"}},
        "3": {"class_type": "WebTVSaveVideo", "inputs": {"images": ["2", 0], "fps": 8.0, "filename_prefix": "WebTV/..", "crf": 30}},
    }
    with pytest.raises(runner.NodeError) as err:
        runner.run(api)
    assert "filename_prefix" in str(err.value)
    assert not any(n.endswith(".mp4") for n in os.listdir(os.path.dirname(hostile["output"])))


# ---------------------------------------------------------------- point 15 on Save Video

@pytest.mark.parametrize("fps", [math.nan, math.inf, -math.inf, 0.0, -1.0])
def test_save_video_fps(hostile, fps):
    refused(hostile, lambda: WebTVSaveVideo().save(images=FRAMES, fps=fps, filename_prefix="WebTV/f", crf=30), "fps")


@pytest.mark.parametrize("rate", [math.nan, math.inf, 0, -8000, 44100.5, "44100", True])
def test_save_video_audio_sample_rate(hostile, rate):
    audio = {"waveform": torch.zeros(1, 1, 100), "sample_rate": rate}
    refused(hostile, lambda: WebTVSaveVideo().save(images=FRAMES, fps=8.0, filename_prefix="WebTV/a", crf=30, audio=audio),
            "audio", "sample_rate")


@pytest.mark.parametrize("audio", [{}, {"waveform": torch.zeros(100), "sample_rate": 8000}, {"waveform": [0.0], "sample_rate": 8000}, "noise"])
def test_save_video_audio_shape(hostile, audio):
    refused(hostile, lambda: WebTVSaveVideo().save(images=FRAMES, fps=8.0, filename_prefix="WebTV/a", crf=30, audio=audio), "audio")


@pytest.mark.parametrize("images", [torch.rand(3, 16, 16), torch.rand(0, 16, 16, 3), torch.rand(2, 16, 16, 2), "frames"])
def test_save_video_images(hostile, images):
    refused(hostile, lambda: WebTVSaveVideo().save(images=images, fps=8.0, filename_prefix="WebTV/i", crf=30), "images")


# ---------------------------------------------------------------- points 13, 14 and issue 12.7

def _probe_tags(path: str) -> dict:
    import av

    with av.open(path) as c:
        return dict(c.metadata)


def test_save_video_metadata_over_128kib_is_not_on_argv(hostile):
    workflow = {"nodes": [{"id": i, "title": "x" * 200} for i in range(1000)]}  # ~220 KiB of JSON
    result = WebTVSaveVideo().save(images=FRAMES, fps=8.0, filename_prefix="WebTV/big", crf=30,
                                   prompt={"1": {"class_type": "A=B;#\\", "inputs": {}}}, extra_pnginfo={"workflow": workflow})
    tags = _probe_tags(result["result"][0])
    assert json.loads(tags["workflow"]) == workflow
    assert json.loads(tags["prompt"])["1"]["class_type"] == "A=B;#\\"


@pytest.mark.parametrize("pasted", ["rtmp://live.twitch.tv/app/live_123456789_AbCdEfGhIjKlMnOpQrStUvWxYz",
                                    "rtmps://live-api-s.facebook.com:443/rtmp/FB-1234567890-0-AbCdEfGhIj_klm",
                                    "rtmp://a.rtmp.youtube.com/live2?key=abcd-efgh-ijkl-mnop"])
def test_key_pasted_into_a_widget_never_reaches_metadata(hostile, pasted):
    secret = pasted.rsplit("/", 1)[-1].split("=")[-1]
    channel = {"class_type": "WebTVRTMPChannel", "inputs": {"outputs": pasted + "\nrtmp://127.0.0.1/live/${WEBTV_KEY_X}"}}
    workflow = {"nodes": [{"id": 1, "type": "WebTVRTMPChannel", "widgets_values": [pasted]}]}
    result = WebTVSaveVideo().save(images=FRAMES, fps=8.0, filename_prefix="WebTV/pasted", crf=30,
                                   prompt={"1": channel}, extra_pnginfo={"workflow": workflow})
    tags = _probe_tags(result["result"][0])
    assert secret not in tags["prompt"] and secret not in tags["workflow"]
    assert "***" in tags["workflow"] and "${WEBTV_KEY_X}" in json.loads(tags["prompt"])["1"]["inputs"]["outputs"]


def test_disable_metadata_switch(hostile, monkeypatch):
    monkeypatch.setenv("COMFYUI_WEBTV_DISABLE_METADATA", "1")
    result = WebTVSaveVideo().save(images=FRAMES, fps=8.0, filename_prefix="WebTV/nometa", crf=30,
                                   generation_info="seed 1", prompt={"1": {}}, extra_pnginfo={"workflow": {"a": 1}})
    tags = _probe_tags(result["result"][0])
    assert not {"prompt", "workflow", "comment"} & set(tags)


def test_disable_metadata_reads_comfyui_args(monkeypatch):
    import sys
    import types

    args = types.SimpleNamespace(disable_metadata=True)
    monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))
    monkeypatch.setitem(sys.modules, "comfy.cli_args", types.SimpleNamespace(args=args))
    monkeypatch.setattr(host, "IN_COMFYUI", True)
    assert host.metadata_disabled() is True
    args.disable_metadata = False
    assert host.metadata_disabled() is False


def test_stale_part_and_scratch_removed_on_start(hostile):
    folder = os.path.join(hostile["output"], "WebTV")
    os.makedirs(folder)
    stale = os.path.join(folder, ".clip_00001_.abc123.part.mp4")
    fresh = os.path.join(folder, ".clip_00002_.def456.part.mp4")
    scratch = os.path.join(host.temp_dir(), "webtv-mp4-old")
    os.makedirs(scratch)
    for path in (stale, fresh, os.path.join(scratch, "audio.f32")):
        open(path, "wb").close()
    old = time.time() - 3600
    for path in (stale, scratch):
        os.utime(path, (old, old))
    path, _, _ = next_output_file("WebTV/clip", "mp4")
    write_mp4(FRAMES, path, 8.0, crf=30)
    assert not os.path.exists(stale) and not os.path.exists(scratch)
    assert os.path.exists(fresh)  # a writer still at work keeps its part
    os.remove(fresh)


def test_ffmpeg_child_dies_with_its_parent(hostile):
    import subprocess
    import sys

    code = ("import sys,time; from comfyui_webtv.nodes.common.ffmpeg import popen; "
            "p = popen(['sleep', '60']); print(p.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, 9)
        pytest.fail("ffmpeg-style child outlived its killed parent")


# ---------------------------------------------------------------- point 10: frame store reservation

def test_frame_store_huge_request_is_a_clear_error(hostile):
    text = refused(hostile, lambda: frame_store.new_frames(10**6, 1080, 1920, on_disk=True), "frame store")
    assert host.temp_dir() in text and f"{10**6 * 1080 * 1920 * 3 * 4:,}" in text
    assert not [n for n in os.listdir(host.temp_dir()) if n.startswith("webtv-frames-")]


def test_frame_store_on_small_tmpfs(hostile, monkeypatch, tmp_path):
    import subprocess

    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        monkeypatch.setattr(host, "temp_dir", lambda: str(small))
        text = refused(hostile, lambda: frame_store.new_frames(24, 512, 512, on_disk=True), "frame store", str(small))
        assert f"{24 * 512 * 512 * 3 * 4:,}" in text
        ok = frame_store.new_frames(2, 64, 64, on_disk=True)
        ok.fill_(0.5)  # reserved pages: writing cannot SIGBUS
        del ok
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


# ---------------------------------------------------------------- points 2, 12: the LLM endpoint

GOOD_REPLY = {"choices": [{"message": {"content": json.dumps({
    "subject": "a red boat", "camera": "slow pan", "lighting": "dusk",
    "shots": [{"prompt": "the boat drifts left", "motion": "left"}]})}}]}


class _Server:
    def __init__(self, behaviour):
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                seen.append(dict(self.headers))
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                behaviour(self)

            do_GET = do_POST

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def llm_server():
    servers = []

    def start(behaviour):
        servers.append(_Server(behaviour))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _json(handler, body, code=200):
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@pytest.mark.parametrize("url", ["http://example.com/v1", "http://10.0.0.5:8080/v1", "ftp://127.0.0.1/v1",
                                 "http://[::1", "file:///etc/passwd", "http://", "javascript:alert(1)"])
def test_endpoint_url_refused(hostile, url):
    refused(hostile, lambda: backends.select("openai_compatible", url, "m", 1), "endpoint_url")


def test_key_goes_to_loopback_without_a_base_url(hostile, llm_server):
    server = llm_server(lambda h: _json(h, GOOD_REPLY))
    assert backends.OpenAIChat(server.url, "m").complete([{"role": "user", "content": "hi"}], 1)
    assert server.seen[0].get("Authorization") == f"Bearer {hostile['secret']}"


def test_key_withheld_from_a_url_other_than_the_configured_one(hostile, llm_server, monkeypatch):
    server = llm_server(lambda h: _json(h, GOOD_REPLY))
    monkeypatch.setenv("WEBTV_LLM_BASE_URL", "https://api.openai.com/v1")
    backends.OpenAIChat(server.url, "m").complete([{"role": "user", "content": "hi"}], 1)
    assert "Authorization" not in server.seen[0]
    monkeypatch.setenv("WEBTV_LLM_BASE_URL", server.url + "/")
    backends.OpenAIChat(server.url, "m").complete([{"role": "user", "content": "hi"}], 1)
    assert server.seen[1].get("Authorization") == f"Bearer {hostile['secret']}"


def test_https_elsewhere_gets_no_key():
    os.environ.pop("WEBTV_LLM_BASE_URL", None)
    assert backends.key_for("https://attacker.example/v1/chat/completions") is None


def test_redirect_is_not_followed_with_the_key(hostile, llm_server):
    target = llm_server(lambda h: _json(h, GOOD_REPLY))

    def redirect(h):
        h.send_response(307)
        h.send_header("Location", target.url.replace("127.0.0.1", "localhost") + "/chat/completions")
        h.send_header("Content-Length", "0")
        h.end_headers()

    server = llm_server(redirect)
    refused(hostile, lambda: backends.OpenAIChat(server.url, "m").complete([{"role": "user", "content": "hi"}], 1), "endpoint_url", "redirect")
    assert target.seen == []


def _drip(h):
    """A reply that trickles one byte every 50 ms for 30 s."""
    h.send_response(200)
    h.send_header("Content-Length", "100000")
    h.end_headers()
    try:
        for _ in range(600):
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(0.05)
    except OSError:
        pass


def test_drip_feeding_server_hits_the_deadline(hostile, llm_server):
    server = llm_server(_drip)
    chat = backends.OpenAIChat(server.url, "m", timeout=1.5, attempts=1)
    started = time.monotonic()
    refused(hostile, lambda: chat.complete([{"role": "user", "content": "hi"}], 1), "in time")
    assert time.monotonic() - started < 25  # the 30 s drip is cut by the deadline, whatever the load


def test_drip_feeding_server_honours_cancel(hostile, llm_server):
    server = llm_server(_drip)
    chat = backends.OpenAIChat(server.url, "m", timeout=300, attempts=1)
    threading.Timer(0.5, host.request_interrupt).start()
    try:
        with pytest.raises(BaseException) as err:
            chat.complete([{"role": "user", "content": "hi"}], 1)
        assert host.is_interrupt(err.value)
    finally:
        host.clear_interrupt() if hasattr(host, "clear_interrupt") else None


def test_huge_reply_is_capped(hostile, llm_server, monkeypatch):
    monkeypatch.setattr(backends, "REPLY_MAX_BYTES", 2**20)

    def huge(h):
        h.send_response(200)
        h.send_header("Content-Length", str(3 * 2**30))
        h.end_headers()
        try:
            for _ in range(64):
                h.wfile.write(b"[" * 65536)
        except OSError:
            pass

    server = llm_server(huge)
    chat = backends.OpenAIChat(server.url, "m", attempts=1)
    refused(hostile, lambda: chat.complete([{"role": "user", "content": "hi"}], 1), "MiB")


def test_nested_json_reply_falls_back_to_the_template(hostile, llm_server):
    nested = "[" * 100000 + "]" * 100000
    server = llm_server(lambda h: _json(h, {"choices": [{"message": {"content": nested}}]}))
    result = write_shots("a red boat at sea", 1, "cinematic", 1, backends.select("auto", server.url, "", 1), retries=0)
    assert result.source == "template"
    deep = llm_server(lambda h: (h.send_response(200), h.end_headers(), h.wfile.write(b"[" * 100000 + b"]" * 100000)))
    result = write_shots("a red boat at sea", 1, "cinematic", 1, backends.select("auto", deep.url, "", 1), retries=0)
    assert result.source == "template"


def test_error_reply_does_not_echo_the_key(hostile, llm_server):
    server = llm_server(lambda h: _json(h, {"error": f"bad key {hostile['secret']}"}, 401))
    refused(hostile, lambda: backends.OpenAIChat(server.url, "m").complete([{"role": "user", "content": "hi"}], 1), "401")


# ---------------------------------------------------------------- point 8: the local model name

@pytest.mark.parametrize("name", ["/etc", "/", "../../etc", "llm/../../x", "a\x00b", "..", "~/.ssh"])
def test_local_model_name_confined(hostile, name):
    refused(hostile, lambda: backends.select("local", "", name, 1), "model")


# ---------------------------------------------------------------- point 7: queue's downloads

@pytest.mark.parametrize("item", [
    {"filename": "x.mp4", "subfolder": "", "type": "../../escape"},
    {"filename": "x.mp4", "subfolder": "", "type": "/tmp"},
    {"filename": "x.mp4", "subfolder": "../..", "type": "output"},
    {"filename": "x.mp4", "subfolder": "/etc", "type": "output"},
    {"filename": "../x.mp4", "subfolder": "", "type": "output"},
    {"filename": "a/b.mp4", "subfolder": "", "type": "output"},
    {"filename": "a\x00.mp4", "subfolder": "", "type": "output"},
    {"filename": "..", "subfolder": "", "type": "output"},
    {"filename": 5, "subfolder": "", "type": "output"},
    {"filename": "x.mp4", "subfolder": ["a"], "type": "output"},
])
def test_queue_download_confined(hostile, item, tmp_path):
    client = q.ComfyClient("http://127.0.0.1:9")  # never contacted: refused before any request
    out = str(tmp_path / "downloads")
    refused(hostile, lambda: client.download(item, out), "refusing to save")
    assert not os.path.exists(out) or not os.listdir(out)


def test_queue_download_symlinked_subfolder(hostile, tmp_path):
    out = tmp_path / "downloads"
    out.mkdir()
    os.symlink(str(tmp_path), str(out / "link"))
    refused(hostile, lambda: q.ComfyClient("http://127.0.0.1:9").download({"filename": "x.mp4", "subfolder": "link", "type": "output"}, str(out)),
            "leaves the output folder")


# ---------------------------------------------------------------- issue 12.8: cancel through the jobs API

@pytest.mark.parametrize("jobs_api", [True, False])
def test_queue_cancels_on_timeout(hostile, llm_server, tmp_path, jobs_api):
    posts = []

    def comfy(h):
        path = h.path
        posts.append((h.command, path))
        if path.startswith("/prompt"):
            return _json(h, {"prompt_id": "p1", "number": 1, "node_errors": {}})
        if path.startswith("/history"):
            return _json(h, {})
        if path.startswith("/api/jobs/") and jobs_api:
            return _json(h, {"cancelled": True} if path.endswith("/cancel") else {"id": "p1", "status": "in_progress"})
        if path == "/interrupt":
            return _json(h, {})
        return _json(h, {"error": "not found"}, 404)

    server = llm_server(comfy)
    wf_path = os.path.join(hostile["output"], "wf.json")
    with open(wf_path, "w") as f:
        json.dump({"1": {"class_type": "WebTVSaveVideo", "inputs": {}}}, f)
    code, summary = q.queue_workflow(str(wf_path), server.url.removesuffix("/v1"), output_dir=None, timeout=1.0, quiet=True)
    assert (code, summary["status"]) == (q.EXIT_FAILED, "timeout")
    cancels = [p for m, p in posts if m == "POST" and ("cancel" in p or p == "/interrupt")]
    assert cancels == (["/api/jobs/p1/cancel"] if jobs_api else ["/api/jobs/p1/cancel", "/interrupt"])


def test_queue_reads_job_status(hostile, llm_server):
    server = llm_server(lambda h: _json(h, {"id": "p1", "status": "cancelled"}))
    assert q.ComfyClient(server.url.removesuffix("/v1")).job("p1")["status"] == "cancelled"


# ---------------------------------------------------------------- point 15: shot writer inputs

@pytest.mark.parametrize("kwargs,name", [
    ({"theme": ""}, "theme"), ({"theme": "   "}, "theme"), ({"shots": 0}, "shots"), ({"shots": -3}, "shots"),
    ({"backend": "shell"}, "backend"), ({"backend": "openai_compatible", "endpoint_url": ""}, "endpoint_url"),
])
def test_shot_writer_inputs(hostile, kwargs, name):
    node = NODE_CLASS_MAPPINGS["WebTVShotWriter"]()
    args = {"theme": "a boat", "shots": 2, "style": "cinematic", "seed": 1, "backend": "template", "endpoint_url": "", "model": "", **kwargs}
    refused(hostile, lambda: getattr(node, node.FUNCTION)(**args), name)


def test_shot_writer_huge_theme_reaches_the_local_model_bounded(hostile, tiny_env, monkeypatch):
    """Point 11: a 100k-character theme (which ran the local LM past 180 s) reaches the model cut to
    THEME_MAX_TOKENS per message; the template path alone could not show it (it never tokenizes)."""
    from comfyui_webtv.nodes.prompts import instructions, tiny

    theme = "boat " * 20000
    lm = backends.LocalLM(tiny.NAME, max_new_tokens=2)
    model, tokenizer = backends.load_local(lm.path)
    assert len(tokenizer(theme)["input_ids"]) > 10 * backends.THEME_MAX_TOKENS  # far over the bound uncut
    lengths, generate = [], model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: lengths.append(kw["input_ids"].shape[1]) or generate(**kw))
    messages = instructions.messages(theme, 2, "")
    lm.complete(messages, 1)
    assert lengths and lengths[0] <= len(messages) * backends.THEME_MAX_TOKENS + 64  # + the chat template's markers
    result = write_shots(theme, 2, "cinematic", 1, [])  # and the template still writes the shots
    assert result.source == "template" and len(result.prompts) == 2
