"""The pack inside a real ComfyUI, on 127.0.0.1 with --cpu. Skipped unless COMFYUI_DIR names a ComfyUI
checkout (its Python: COMFYUI_PYTHON, default this interpreter).

The pack is symlinked into a fresh base directory's custom_nodes, tiny models are made in its models/.
Checked: the pack imports, every node is in /object_info, the extension is served, each API workflow
runs through the queue command with its outputs in /history, and (with Chromium and playwright-core)
each UI workflow loads in the real frontend with no missing nodes and converts to the same API
prompt as ``ui_to_api``.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from comfyui_webtv import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from comfyui_webtv.cli import queue as q
from comfyui_webtv.cli.tiny import make_tiny_models
from comfyui_webtv.workflow.format import ui_to_api

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK = "ComfyUI-WebTV"
COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
API_WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "*_api.json")))
UI_WORKFLOWS = sorted(set(glob.glob(os.path.join(ROOT, "workflows", "*.json"))) - set(API_WORKFLOWS))
BROWSER = os.path.join(ROOT, "tests", "browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not os.path.isfile(os.path.join(COMFYUI_DIR, "main.py")), reason="COMFYUI_DIR does not point at a ComfyUI checkout"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


class ComfyUI:
    """A ComfyUI process with the pack, started in its own process group and stopped with it."""

    def __init__(self, base: str):
        self.base = base
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(base, "comfyui.log")
        os.makedirs(os.path.join(base, "custom_nodes"), exist_ok=True)
        os.symlink(ROOT, os.path.join(base, "custom_nodes", PACK))
        make_tiny_models(os.path.join(base, "models"))
        python = os.environ.get("COMFYUI_PYTHON", sys.executable)
        args = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--disable-auto-launch", "--base-directory", base]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, cwd=COMFYUI_DIR, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                _get(self.url + "/system_stats", 2)
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"ComfyUI did not answer within 240 s:\n{self.log_text()[-4000:]}")
                time.sleep(0.5)

    def log_text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def json(self, path: str):
        return json.loads(_get(self.url + path))

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


def test_extension_is_served(comfyui):
    assert f"/extensions/{PACK}/webtv.js" in comfyui.json("/extensions")
    with open(os.path.join(ROOT, "js", "webtv.js"), "rb") as f:
        assert _get(f"{comfyui.url}/extensions/{PACK}/webtv.js") == f.read()


# As in test_workflows: tiny random models keep the real architecture, so sizes are capped for CPU runs,
# here through the queue command's --set.
CI_CAPS = {"width": 64, "height": 64, "frames": 8, "steps": 2}


def _cap_sets(path: str) -> list[str]:
    with open(path) as f:
        api = json.load(f)
    return [
        f"{nid}.{name}={cap}"
        for nid, node in api.items()
        for name, cap in CI_CAPS.items()
        if isinstance(node["inputs"].get(name), int) and not isinstance(node["inputs"][name], bool) and node["inputs"][name] > cap
    ]


@pytest.mark.parametrize("path", API_WORKFLOWS, ids=os.path.basename)
def test_api_workflow_runs(comfyui, path, tmp_path):
    code, summary = q.queue_workflow(path, comfyui.url, _cap_sets(path), str(tmp_path), timeout=300, quiet=True)
    if code != 0:
        urllib.request.urlopen(urllib.request.Request(comfyui.url + "/interrupt", b"{}", method="POST"), timeout=10)
    assert code == 0, json.dumps(summary, indent=1) + comfyui.log_text()[-3000:]
    entry = comfyui.json(f"/history/{summary['prompt_id']}")[summary["prompt_id"]]
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"] and entry["outputs"] == summary["outputs"]
    for file in summary["files"]:
        assert os.path.getsize(file) > 0


def _browser_ready() -> bool:
    return os.path.exists(CHROMIUM) and os.path.isdir(os.path.join(BROWSER, "node_modules", "playwright-core"))


@pytest.mark.skipif(not _browser_ready(), reason="needs chromium and playwright-core (cd tests/browser && npm ci)")
def test_ui_workflows_load_in_the_frontend(comfyui, tmp_path):
    proc = subprocess.run(
        ["node", os.path.join(BROWSER, "comfyui_workflows.mjs"), comfyui.url + "/", str(tmp_path / "profile"), *UI_WORKFLOWS],
        capture_output=True, text=True, timeout=300, cwd=BROWSER,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "ComfyUI-WebTV.preview" in report["extensions"]
    assert not [e for e in report["errors"] if "webtv" in e.lower()], report["errors"]
    info = comfyui.json("/object_info")
    for path in UI_WORKFLOWS:
        with open(path) as f:
            ui = json.load(f)
        loaded = report["workflows"][path]
        assert not loaded["missingDialog"], path
        assert loaded["nodes"] == len(ui["nodes"]), path
        ours = ui_to_api(ui, info)
        assert {k: (v["class_type"], v["inputs"]) for k, v in loaded["output"].items()} == {
            k: (v["class_type"], v["inputs"]) for k, v in ours.items()
        }, path


@pytest.mark.skipif(not _browser_ready(), reason="needs chromium and playwright-core (cd tests/browser && npm ci)")
def test_editor_run_shows_one_player_and_the_channel_status(comfyui, tmp_path):
    """Run from the editor: Save Video shows one player (the editor's own where it has one, else ours)
    and our file link; the channel node shows its live status."""
    workflow = os.path.join(ROOT, "workflows", "live_channel.json")
    proc = subprocess.run(
        ["node", os.path.join(BROWSER, "comfyui_run_in_editor.mjs"), comfyui.url + "/", str(tmp_path / "profile"), workflow, json.dumps(CI_CAPS)],
        capture_output=True, text=True, timeout=400, cwd=BROWSER,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    shown = [v for v in facts["videos"] if v["shown"]]
    assert len(shown) == 1 and "subfolder=WebTV" in shown[0]["src"], facts
    assert facts["link"] and facts["link"].startswith("WebTV/clip_"), facts
    assert "● ON AIR" in facts["states"], facts
