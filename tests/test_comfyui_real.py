"""The pack inside a real ComfyUI, on 127.0.0.1 with --cpu: one ComfyUI version per run.

Skipped unless ``COMFYUI_DIR`` names a ComfyUI checkout; its Python is ``COMFYUI_PYTHON`` (default this
interpreter; it needs the pack's requirements). Run once per version, e.g. 0.3.64 and 0.33.0::

    COMFYUI_DIR=/work/comfy/v0364/src COMFYUI_PYTHON=/work/comfy/v0364/venv/bin/python pytest tests/test_comfyui_real.py
    COMFYUI_DIR=/work/comfy/v033/src COMFYUI_PYTHON=/work/comfy/v033/venv/bin/python \\
        COMFYUI_FRONTEND_ROOT=/path/to/comfyui_frontend_package/static pytest tests/test_comfyui_real.py

``COMFYUI_FRONTEND_ROOT`` (optional) is the ``static/`` folder of an unpacked ``comfyui-frontend-package``
wheel (e.g. 1.58.1): a second ComfyUI serves it with ``--front-end-root`` and the UI workflows load in it
with the Vue node renderer on.

The pack is symlinked into a fresh base directory's custom_nodes beside a probe (a custom node file the
test writes there, reading ``comfy.model_management``), tiny models are made in its models/. Checked: the
pack imports, every node is in /object_info, the extension is served, each API workflow runs through the
queue command with its outputs in /history and ``GET /api/jobs`` answering 200 after it, Cancel stops
each long node while it runs, our models go through model management and ``POST /free`` unloads them,
and (with Chromium and playwright-core) each UI workflow loads in the real frontend, in both renderers,
with no missing-node warning and the same API prompt as ``ui_to_api``.
"""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from comfyui_webtv import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from comfyui_webtv.cli import queue as q
from comfyui_webtv.cli.tiny import make_tiny_models
from comfyui_webtv.workflow.format import ui_to_api
from workflow_layout import measured, node_box, overlaps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK = "ComfyUI-WebTV"
COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
FRONTEND_ROOT = os.environ.get("COMFYUI_FRONTEND_ROOT", "")
API_WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "*_api.json")))
UI_WORKFLOWS = sorted(set(glob.glob(os.path.join(ROOT, "workflows", "*.json"))) - set(API_WORKFLOWS))
BROWSER = os.path.join(ROOT, "tests", "browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
FAKE_TYPE = "WebTVNoSuchNodeForTheTest"
# Frontends whose Vue node renderer is a beta (1.27, as ComfyUI 0.3.64 ships it): it renders only the widget
# types it has a component for (shouldRenderAsVue), so no extension DOM widget shows, and it ignores saved
# node sizes (every node at least 430 wide, notes at 199 x 163), so no layout can be checked against it.
VUE_BETA = ("1.27.",)

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not os.path.isfile(os.path.join(COMFYUI_DIR, "main.py")), reason="COMFYUI_DIR does not point at a ComfyUI checkout"),
]

# A custom node file the test installs beside the pack: it records the pack's modules that go through
# model_management.load_models_gpu (weakly, to see them freed) with the memory_required asked for them,
# reads ComfyUI's loaded models (not the pack's cache) and the pack's cache keys, and offloads every model
# as load_models_gpu does to make room for another (free_memory, not unload_all_models).
PROBE = '''
import gc, sys, weakref
import comfy.model_management as mm
from aiohttp import web
from server import PromptServer

NODE_CLASS_MAPPINGS = {}
_seen = []
_memory = []
_load_models_gpu = mm.load_models_gpu


def _ours(patchers):
    held = [getattr(p, "model", None) for p in patchers if p is not None]
    return [h.module for h in held if type(h).__name__ == "_Held" and "ComfyUI-WebTV" in type(h).__module__]


def _recording(models, memory_required=0, *args, **kwargs):
    ours = _ours(models)
    _seen.extend((type(m).__name__, weakref.ref(m)) for m in ours)
    if ours:
        _memory.append(memory_required)
    return _load_models_gpu(models, memory_required, *args, **kwargs)


mm.load_models_gpu = _recording


def _cache_keys():
    for name, module in list(sys.modules.items()):
        if name.endswith("nodes.common.models") and hasattr(module, "cached_keys"):
            return [repr(k) for k in module.cached_keys()]
    return None


@PromptServer.instance.routes.post("/webtv_test/offload")
async def offload(request):
    mm.free_memory(1e30, mm.get_torch_device())
    return web.json_response({})


@PromptServer.instance.routes.get("/webtv_test/models")
async def models(request):
    if request.query.get("reset"):
        _seen.clear()
        _memory.clear()
    gc.collect()
    return web.json_response({
        "loaded": [type(m).__name__ for m in _ours([lm.model for lm in list(mm.current_loaded_models)])],
        "through_load_models_gpu": sorted({name for name, _ in _seen}),
        "alive": sum(ref() is not None for _, ref in _seen),
        "cache": _cache_keys(),
        "memory_required": list(_memory),
    })
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _post(url: str, body: dict, timeout: float = 10.0):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


class ComfyUI:
    """A ComfyUI process with the pack (and the probe), in its own process group, stopped with it."""

    def __init__(self, base: str, *extra_args: str):
        self.base = base
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(base, "comfyui.log")
        os.makedirs(os.path.join(base, "custom_nodes"), exist_ok=True)
        os.symlink(ROOT, os.path.join(base, "custom_nodes", PACK))
        with open(os.path.join(base, "custom_nodes", "webtv_test_probe.py"), "w") as f:
            f.write(PROBE)
        make_tiny_models(os.path.join(base, "models"))
        python = os.environ.get("COMFYUI_PYTHON", sys.executable)
        args = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--disable-auto-launch", "--base-directory", base, *extra_args]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, cwd=COMFYUI_DIR, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                self.stats = json.loads(_get(self.url + "/system_stats", 2))
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"ComfyUI did not answer within 300 s:\n{self.log_text()[-4000:]}")
                time.sleep(0.5)

    def log_text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def json(self, path: str):
        return json.loads(_get(self.url + path, 30))

    def status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code

    def has_jobs_api(self) -> bool:
        return self.status("/api/jobs") != 404

    def stop(self) -> None:
        """Ctrl-C (so the pack's shutdown hooks stop channels), then kill what is left of the group."""
        for sig, wait in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                if sig == signal.SIGINT:
                    os.killpg(self.proc.pid, signal.SIGKILL)  # ffmpeg children of a channel, if any
            except (subprocess.TimeoutExpired, ProcessLookupError):
                continue
            break
        self.log.close()


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    server = ComfyUI(str(tmp_path_factory.mktemp("comfyui_base")))
    yield server
    server.stop()


def test_pack_imports_without_failure(comfyui):
    log = comfyui.log_text()
    ours = [line for line in log.splitlines() if f"custom_nodes/{PACK}" in line and "seconds" in line]
    assert ours, log[-3000:]
    assert not any("IMPORT FAILED" in line for line in ours), "\n".join(ours)
    assert f"Cannot import {os.path.join(comfyui.base, 'custom_nodes', PACK)}" not in log


def test_every_node_is_in_object_info(comfyui):
    info = comfyui.json("/object_info")
    for name, cls in NODE_CLASS_MAPPINGS.items():
        assert name in info, name
        assert info[name]["python_module"] == f"custom_nodes.{PACK}"
        assert info[name]["display_name"] == NODE_DISPLAY_NAME_MAPPINGS[name]
        assert info[name]["output_node"] == bool(getattr(cls, "OUTPUT_NODE", False))
    assert info["WebTVSaveVideo"]["output"] == ["STRING", "VIDEO"]


def test_extension_is_served(comfyui):
    assert f"/extensions/{PACK}/webtv.js" in comfyui.json("/extensions")
    with open(os.path.join(ROOT, "js", "webtv.js"), "rb") as f:
        assert _get(f"{comfyui.url}/extensions/{PACK}/webtv.js") == f.read()


# As in test_workflows: tiny random models keep the real architecture, so sizes are capped for CPU runs,
# here through the queue command's --set. A run may take minutes on a loaded 2-core machine (the
# StreamingT2V workflows took over 400 s at load 40): RUN_TIMEOUT only catches a hang.
RUN_TIMEOUT = 1800
CI_CAPS = {"width": 64, "height": 64, "frames": 8, "steps": 2, "shots": 2}


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _cap_sets(api: dict, skip: str | None = None) -> list[str]:
    return [
        f"{nid}.{name}={cap}"
        for nid, node in api.items()
        if nid != skip
        for name, cap in CI_CAPS.items()
        if isinstance(node["inputs"].get(name), int) and not isinstance(node["inputs"][name], bool) and node["inputs"][name] > cap
    ]


def _missing_core_nodes(comfyui: ComfyUI, types: set[str]) -> list[str]:
    info = comfyui.json("/object_info")
    return sorted(t for t in types - set(NODE_CLASS_MAPPINGS) - FRONTEND_ONLY if t not in info)


def _check_jobs_api(comfyui: ComfyUI, prompt_id: str) -> None:
    """``GET /api/jobs`` (the frontend's queue panel) and the job itself answer 200 where the server has
    the jobs API; every ui item it reads as an output has a string format, if any."""
    if not comfyui.has_jobs_api():
        return
    assert comfyui.status("/api/jobs") == 200, comfyui.log_text()[-3000:]
    assert comfyui.status(f"/api/jobs/{prompt_id}") == 200, comfyui.log_text()[-3000:]
    jobs = comfyui.json("/api/jobs")
    assert prompt_id in json.dumps(jobs)


@pytest.mark.parametrize("path", API_WORKFLOWS, ids=os.path.basename)
def test_api_workflow_runs(comfyui, path, tmp_path):
    api = _load(path)
    missing = _missing_core_nodes(comfyui, {n["class_type"] for n in api.values()})
    if missing:
        pytest.skip(f"ComfyUI {comfyui.stats['system']['comfyui_version']} lacks the core nodes {missing}")
    code, summary = q.queue_workflow(path, comfyui.url, _cap_sets(api), str(tmp_path), timeout=RUN_TIMEOUT, quiet=True)
    if code != 0:
        _post(comfyui.url + "/interrupt", {})
    assert code == 0, json.dumps(summary, indent=1) + comfyui.log_text()[-3000:]
    entry = comfyui.json(f"/history/{summary['prompt_id']}")[summary["prompt_id"]]
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"] and entry["outputs"] == summary["outputs"]
    for file in summary["files"]:
        assert os.path.getsize(file) > 0
    _check_jobs_api(comfyui, summary["prompt_id"])


def test_core_video_reaches_the_channel(comfyui):
    """Core CreateVideo -> our channel: the VIDEO was saved under the output folder and is on the channel."""
    api = _load(os.path.join(ROOT, "workflows", "core_video_channel_api.json"))
    if _missing_core_nodes(comfyui, {"CreateVideo"}):
        pytest.skip("this ComfyUI has no core CreateVideo node")
    files = glob.glob(os.path.join(comfyui.base, "output", "WebTV", "video_*.mp4"))
    if not files:
        pytest.skip("core_video_channel_api.json did not run (see test_api_workflow_runs)")
    playlist = os.path.join(comfyui.base, "output", "WebTV", f"{api['4']['inputs']['channel']}_video.ffconcat")
    with open(playlist) as f:
        text = f.read()
    assert os.path.basename(sorted(files)[-1]) in text
    assert api["4"]["inputs"]["channel"] in comfyui.json("/webtv/channels")


# ---------------------------------------------------------------- Cancel

# Each long node, a workflow that has it, and what makes it long (the rest stays at CI sizes).
LONG_NODES = {
    "ZeroscopeTextToVideo": ("zeroscope_t2v_xl_api.json", {"steps": 200}),
    "ZeroscopeXLUpscale": ("zeroscope_t2v_xl_api.json", {"steps": 200}),
    "StreamingT2VExtend": ("streaming_long_video_api.json", {"steps": 200}),
    "RandomizedBlendingEnhance": ("streaming_long_video_api.json", {"steps": 200}),
    "WebTVFilmInterpolate": ("film_retime_api.json", {"mode": "multiplier", "multiplier": 64, "batch_size": 1}),
    "WebTVMusicGen": ("music_video_api.json", {"duration_mode": "seconds", "seconds": 600.0}),
}


def _cancel_case(class_type: str) -> tuple[dict, str]:
    name, boost = LONG_NODES[class_type]
    api = _load(os.path.join(ROOT, "workflows", name))
    target = next(nid for nid, node in api.items() if node["class_type"] == class_type)
    for nid, node in api.items():
        for key, cap in CI_CAPS.items():
            value = node["inputs"].get(key)
            if isinstance(value, int) and not isinstance(value, bool) and nid != target:
                node["inputs"][key] = min(value, cap)
    for key in ("width", "height", "frames"):
        if isinstance(api[target]["inputs"].get(key), int):
            api[target]["inputs"][key] = min(api[target]["inputs"][key], CI_CAPS[key])
    api[target]["inputs"].update(boost)
    if "seed" in api[target]["inputs"]:
        api[target]["inputs"]["seed"] = random.randrange(1 << 30)  # never served from the cache
    return api, target


@pytest.mark.parametrize("class_type", sorted(LONG_NODES))
def test_cancel_stops_a_long_node_while_it_runs(comfyui, class_type):
    api, target = _cancel_case(class_type)
    client = q.ComfyClient(comfyui.url)
    client_id = uuid.uuid4().hex
    ws = client.websocket(client_id)
    try:
        try:
            prompt_id = client.post_prompt({"prompt": api, "client_id": client_id})["prompt_id"]
        except q.Rejected as e:
            pytest.fail(f"ComfyUI refused the {class_type} case: {json.dumps(e.body)[:3000]}")
        deadline = time.monotonic() + RUN_TIMEOUT  # the chain before the target runs first
        running = interrupted = None
        events = []
        while time.monotonic() < deadline and interrupted is None:
            try:
                message = ws.recv(timeout=5.0)
            except TimeoutError:
                continue
            if not isinstance(message, str):
                continue
            event = json.loads(message)
            kind, data = event.get("type"), event.get("data") or {}
            if data.get("prompt_id", prompt_id) != prompt_id:
                continue
            events.append(kind if kind != "executing" else f"executing {data.get('node')}")
            if kind == "progress" and str(data.get("node")) == target and running is None:
                running = (data.get("value"), data.get("max"))
                _post(comfyui.url + "/interrupt", {})
            elif kind in ("execution_success", "execution_error"):
                pytest.fail(f"{class_type} was not interrupted: {kind} {json.dumps(data)[:2000]} after {events[-20:]}")
            elif kind == "execution_interrupted":
                interrupted = data
        assert running is not None and interrupted is not None, events[-30:]
        assert str(interrupted["node_id"]) == target and interrupted["node_type"] == class_type, interrupted
        assert running[0] < running[1]
    finally:
        ws.close()
    entry = q.wait_history(client, prompt_id, time.monotonic() + 60)
    assert entry["status"]["status_str"] == "error"
    assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]]
    _check_jobs_api(comfyui, prompt_id)


# ---------------------------------------------------------------- model management

def test_models_go_through_model_management_and_free_unloads_them(comfyui, tmp_path):
    path = os.path.join(ROOT, "workflows", "zeroscope_t2v_xl_api.json")
    api = _load(path)
    seeds = [f"{nid}.seed={random.randrange(1 << 30)}" for nid, n in api.items() if "seed" in n["inputs"]]
    comfyui.json("/webtv_test/models?reset=1")
    code, summary = q.queue_workflow(path, comfyui.url, _cap_sets(api) + seeds, str(tmp_path), timeout=RUN_TIMEOUT, quiet=True)
    assert code == 0, json.dumps(summary, indent=1)
    during = comfyui.json("/webtv_test/models")
    # Zeroscope's UNet, VAE and text encoder, each wrapped in a ModelPatcher, went through load_models_gpu.
    assert {"UNet3DConditionModel", "AutoencoderKL", "CLIPTextModel"} <= set(during["through_load_models_gpu"]), during
    assert during["cache"], during
    assert during["memory_required"] and min(during["memory_required"]) > 0, during  # room for activations asked
    # ComfyUI offloads every model to make room for another: ours leave the device, and the Zeroscope models
    # (held by ComfyUI too, as its loader nodes' outputs) stay cached and alive (the next run's
    # load_models_gpu moves them back, nothing is read from disk).
    # Only this workflow's models: a model an earlier prompt loaded is no longer held by ComfyUI, and goes.
    names = {n["inputs"]["model_name"] for n in api.values() if n["class_type"] == "ZeroscopeLoader"}
    zeroscope = [k for k in during["cache"] if any(f"/{name}'" in k for name in names)]
    assert len(zeroscope) == len(names) == 2, during
    _post(comfyui.url + "/webtv_test/offload", {})
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        offloaded = comfyui.json("/webtv_test/models")
        assert offloaded["loaded"] == [], offloaded
        assert set(zeroscope) <= set(offloaded["cache"]) and offloaded["alive"] == during["alive"], (during, offloaded)
        time.sleep(0.5)
    _post(comfyui.url + "/free", {"unload_models": True, "free_memory": True})
    deadline = time.monotonic() + 90
    while True:
        after = comfyui.json("/webtv_test/models")
        if (not after["loaded"] and not after["cache"] and not after["alive"]) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert after["loaded"] == [] and after["cache"] == [], after  # model management holds none of ours
    assert after["alive"] == 0, after  # and nothing keeps our weights alive
    # ComfyUI still runs prompts, and the next run loads the models again through model management.
    comfyui.json("/webtv_test/models?reset=1")
    code, summary = q.queue_workflow(path, comfyui.url, _cap_sets(api), str(tmp_path), timeout=RUN_TIMEOUT, quiet=True)
    assert code == 0, json.dumps(summary, indent=1)
    assert "UNet3DConditionModel" in comfyui.json("/webtv_test/models")["through_load_models_gpu"]


# ---------------------------------------------------------------- the frontend

def _browser_ready() -> bool:
    return os.path.exists(CHROMIUM) and os.path.isdir(os.path.join(BROWSER, "node_modules", "playwright-core"))


needs_browser = pytest.mark.skipif(not _browser_ready(), reason="needs chromium and playwright-core (cd tests/browser && npm ci)")


def _load_in_frontend(url: str, profile: str, vue: bool, files: list[str]) -> dict:
    proc = subprocess.run(
        ["node", os.path.join(BROWSER, "comfyui_workflows.mjs"), url + "/", profile, "on" if vue else "off", *files],
        capture_output=True, text=True, timeout=600, cwd=BROWSER,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fake_workflow(tmp_path) -> str:
    """live_channel.json with one node type nobody has, and its Note moved onto its channel node."""
    fake = _load(os.path.join(ROOT, "workflows", "live_channel.json"))
    node = next(n for n in fake["nodes"] if n["type"] == "WebTVFFConcatPlaylist")
    node["type"] = FAKE_TYPE
    note = next(n for n in fake["nodes"] if n["type"] == "Note")
    note["pos"] = list(next(n for n in fake["nodes"] if n["type"] == "WebTVRTMPChannel")["pos"])
    path = str(tmp_path / "fake.json")
    with open(path, "w") as f:
        json.dump(fake, f)
    return path


def _check_frontend(server: ComfyUI, tmp_path, vue: bool) -> dict:
    # First prove the check sees a missing node: the same file with one node type nobody has.
    # With Vue nodes, also that the boxes it measures show an overlap: the Note moved onto the channel.
    fake_path = _fake_workflow(tmp_path)
    fake = _load_in_frontend(server.url, str(tmp_path / "fake_profile"), vue, [fake_path])
    assert FAKE_TYPE in (next(iter(fake["workflows"].values()))["missing"] or ""), fake
    if vue:
        moved = _load(fake_path)
        ids = sorted(n["id"] for n in moved["nodes"] if n["type"] in ("Note", "WebTVRTMPChannel"))
        found = overlaps(measured(moved, fake["workflows"][fake_path]["rects"]))
        assert any(f.startswith(f"node {ids[0]} ") and f" node {ids[1]} " in f for f in found), found
    report = _load_in_frontend(server.url, str(tmp_path / "profile"), vue, UI_WORKFLOWS)
    assert "ComfyUI-WebTV.preview" in report["extensions"]
    noise = [e for e in report["errors"] if "webtv" in e.lower() or "failed to fetch jobs" in e.lower()]
    assert not noise, noise
    assert report["vueSetting"] in (vue, None), report["vueSetting"]
    info = server.json("/object_info")
    for path in UI_WORKFLOWS:
        ui = _load(path)
        loaded = report["workflows"][path]
        assert loaded["missing"] is None, (path, loaded["missing"])
        assert loaded["nodes"] == len(ui["nodes"]), path
        ours = ui_to_api(ui, info)
        assert {k: (v["class_type"], v["inputs"]) for k, v in loaded["output"].items()} == {
            k: (v["class_type"], v["inputs"]) for k, v in ours.items()
        }, path
        if vue:  # every node is a Vue component in the DOM, not drawn on the canvas, and none overlaps
            assert loaded["domNodes"] == len(ui["nodes"]), (path, loaded["domNodes"])
            drawn = measured(ui, loaded["rects"])
            for node, box in zip(ui["nodes"], (node_box(n) for n in drawn["nodes"])):  # where the file puts it
                file_box = node_box(node)
                assert box[0] < file_box[2] and file_box[0] < box[2] and box[1] < file_box[3] and file_box[1] < box[3], (path, node["id"], box, file_box)
            if not str(report["frontend"]).startswith(VUE_BETA):
                # a Vue node is never narrower than its saved size (else the boxes were read at the wrong zoom)
                assert all(d["size"][0] >= n["size"][0] - 1 for d, n in zip(drawn["nodes"], ui["nodes"])), (path, loaded["rects"])
                assert overlaps(drawn) == [], (path, report["frontend"], overlaps(drawn), loaded["rects"])
    return report


@needs_browser
@pytest.mark.parametrize("vue", [False, True], ids=["canvas", "vue-nodes"])
def test_ui_workflows_load_in_the_frontend(comfyui, tmp_path, vue):
    _check_frontend(comfyui, tmp_path, vue)


@needs_browser
@pytest.mark.parametrize("vue", [False, True], ids=["canvas", "vue-nodes"])
def test_editor_run_shows_one_player_and_the_channel_status(comfyui, tmp_path, vue):
    """Run from the editor, in either renderer (set explicitly: the server keeps the setting for every later
    page): Save Video shows one player (the editor's own where it has one, else ours) and our file link;
    the channel node shows its live status from the server's events."""
    workflow = os.path.join(ROOT, "workflows", "live_channel.json")
    proc = subprocess.run(
        ["node", os.path.join(BROWSER, "comfyui_run_in_editor.mjs"), comfyui.url + "/", str(tmp_path / "profile"),
         "on" if vue else "off", workflow, json.dumps(CI_CAPS)],
        capture_output=True, text=True, timeout=400, cwd=BROWSER,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert facts["vueSetting"] in (vue, None), facts
    if vue and not facts["panelsInPage"] and str(facts["frontend"]).startswith(VUE_BETA):
        pytest.skip(f"frontend {facts['frontend']}'s Vue node renderer (beta) renders no extension DOM widgets")
    assert facts["panelsInPage"], facts
    assert not facts["runErrors"], facts
    shown = [v for v in facts["videos"] if v["shown"]]
    assert len(shown) == 1 and "subfolder=WebTV" in shown[0]["src"], facts
    assert facts["link"] and facts["link"].startswith("WebTV/clip_"), facts
    assert "● ON AIR" in facts["states"], facts
    assert not [e for e in facts.get("errors", []) if "failed to fetch jobs" in e.lower()], facts


@pytest.fixture(scope="module")
def newest_frontend(tmp_path_factory):
    if not os.path.isfile(os.path.join(FRONTEND_ROOT, "index.html")):
        pytest.skip("COMFYUI_FRONTEND_ROOT does not name an unpacked comfyui-frontend-package static/ folder")
    server = ComfyUI(str(tmp_path_factory.mktemp("comfyui_newest")), "--front-end-root", FRONTEND_ROOT)
    yield server
    server.stop()


@needs_browser
def test_ui_workflows_load_in_the_newest_frontend_with_vue_nodes(newest_frontend, tmp_path):
    _check_frontend(newest_frontend, tmp_path, vue=True)
