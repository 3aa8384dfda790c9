"""The Metaflow flows run end to end on tiny models: flows/season.py through the embedded runner and on
ComfyUI stand-ins (the pack's graph runner behind ComfyUI's HTTP API on 127.0.0.1, from test_queue),
with retries and a failing shot; flows/grid.py over a 2 x 2 grid. Each flow runs as its command line
does, in a subprocess, with Metaflow's local datastore in a temp folder; results are read back through
Metaflow's client API and checked against the mp4 files themselves (PyAV), not the flow's bookkeeping.
"""

from __future__ import annotations

import base64
import json
import os
import queue as queue_module
import re
import subprocess
import sys
import threading
import time

import pytest

from comfyui_webtv.cli.queue import TOKEN_ENV
from comfyui_webtv.nodes import host
from comfyui_webtv.workflow import runner
from comfyui_webtv.nodes.broadcast import channel as channels
from media_probe import probe
from rtmp_server import make_clip
from test_clip_upload import PackServer, received, start_channel
from test_queue import FakeComfyUI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEASON = os.path.join(ROOT, "flows", "season.py")
GRID = os.path.join(ROOT, "flows", "grid.py")
COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
TOKEN = "test-worker-token-3f9a"
SMALL = {"Text to Video.width": 64, "Text to Video.height": 64, "Text to Video.frames": 4, "Text to Video.steps": 2,
         "XL Upscale.width": 64, "XL Upscale.height": 64, "XL Upscale.steps": 2}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def metaflow(tmp_path_factory):
    """Metaflow with its datastore and home in a temp folder (read from the environment when imported)."""
    root = str(tmp_path_factory.mktemp("metaflow"))
    env = {"METAFLOW_HOME": os.path.join(root, "home"), "METAFLOW_DATASTORE_SYSROOT_LOCAL": root,
           "METAFLOW_DEFAULT_DATASTORE": "local", "METAFLOW_DEFAULT_METADATA": "local", "USERNAME": "webtv-test"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import metaflow as mf

    assert mf.metaflow_config.DATASTORE_SYSROOT_LOCAL == root, "metaflow was imported before this fixture set its datastore"
    mf.namespace(None)
    yield mf
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def settings(tmp_path) -> str:
    """flows/season.json with small sizes, one retry at once, no GPU asked."""
    with open(os.path.join(ROOT, "flows", "season.json")) as f:
        data = json.load(f)
    data["sets"].update(SMALL)
    data["tiny_sets"] = SMALL
    data["task"].update(retries=1, minutes_between_retries=0, gpus=0, memory_mb=2000, timeout_minutes=10)
    data["worker_timeout_s"] = 300
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(data))
    return str(path)


def flow_cwd(metaflow) -> str:
    """Where flows (and ``card get``) run: the datastore's folder. Metaflow 2.19 stores local cards under
    the ``.metaflow`` found from the current folder, not under METAFLOW_DATASTORE_SYSROOT_LOCAL."""
    return metaflow.metaflow_config.DATASTORE_SYSROOT_LOCAL


def run_flow(metaflow, flow: str, settings: str, tmp, *args: str, env: dict | None = None):
    """``python FLOW --config settings SETTINGS run ARGS``; returns (process, client Run or None)."""
    id_file = os.path.join(str(tmp), "run_id")
    if os.path.exists(id_file):
        os.remove(id_file)
    cmd = [sys.executable, flow, "--config", "settings", settings, "run", "--run-id-file", id_file, *args]
    proc = subprocess.run(cmd, cwd=flow_cwd(metaflow), env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=1500)
    run = None
    if os.path.exists(id_file):
        with open(id_file) as f:
            run = metaflow.Run(f"{'SeasonFlow' if flow == SEASON else 'GridFlow'}/{f.read().strip()}")
    return proc, run


def card_html(task, card_id: str) -> str:
    """A task's card, read through Metaflow's client API (one card of that id)."""
    from metaflow.cards import get_cards

    (card,) = get_cards(task, id=card_id)
    return card.get()


def card_data(task, card_id: str) -> str:
    """A task's card components as JSON text (the card's HTML holds them base64-encoded)."""
    (encoded,) = re.findall(r'__MF_DATA__\["[^"]+"\] = "([^"]+)"', card_html(task, card_id))
    return json.dumps(json.loads(base64.b64decode(encoded)))


def check_season(run, shots: int, tmp_path) -> list:
    """The season's clips: ``shots`` valid mp4s with audio, in shot order, listed exactly by the playlist."""
    assert run.successful
    data = run.data
    prompts = [s["prompt"] for s in run["start"].task.data.shot_list]
    assert len(prompts) == shots and len(data.clips) == shots
    infos = []
    for i, clip in enumerate(data.clips):
        path = tmp_path / f"clip_{i}.mp4"
        path.write_bytes(clip)
        info = probe(str(path))
        assert info.frames > 0 and info.video_codec == "h264" and info.audio_codec == "aac", info
        assert info.audio_duration == pytest.approx(info.video_duration, abs=0.1)
        # the order, from the mp4's own metadata: shot i was generated from prompt i with seed i
        generated = json.loads(info.tags["comment"])
        assert generated["prompt"] == prompts[i] and generated["seed"] == i
        infos.append(info)
    by_shot = {t.data.info["shot"]: t.data.clip for t in run["render"]}
    assert [by_shot[i + 1] for i in range(shots)] == data.clips
    folder = os.path.dirname(data.playlist_path)
    listed = [line.split("'")[1] for line in data.playlist.splitlines() if line.startswith("file ")]
    assert [os.path.normpath(os.path.join(folder, p)) for p in listed] == data.clip_paths
    with open(data.playlist_path) as f:
        assert f.read() == data.playlist
    for path, clip in zip(data.clip_paths, data.clips):
        with open(path, "rb") as f:
            assert f.read() == clip
    return infos


def test_season_embedded_two_workers(metaflow, settings, tiny_models_dir, tmp_path):
    proc, run = run_flow(metaflow, SEASON, settings, tmp_path, "--theme", "a fox crossing a frozen lake", "--shots", "4",
                         "--max-workers", "2", "--models", str(tmp_path / "no-models"), "--tiny-dir", tiny_models_dir,
                         "--output", str(tmp_path / "output"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_season(run, 4, tmp_path)
    assert all(t.data.info["where"] == "embedded" for t in run["render"])
    assert run.data.clip_paths[0].startswith(str(tmp_path / "output" / "WebTV" / "season" / run.id))
    task = next(iter(run["render"]))
    shot_card = card_data(task, "shot")
    assert json.dumps(task.data.info["prompt"])[1:-1] in shot_card and shot_card.count('"src": "data:image/png;base64,') == 1
    assert card_data(run["end"].task, "season").count('"src": "data:image/png;base64,') == 4
    # the README's command finds the same card from the datastore's folder
    saved = tmp_path / "card.html"
    got = subprocess.run([sys.executable, SEASON, "card", "get", task.pathspec.split("/", 1)[1], "--id", "shot", str(saved)], cwd=flow_cwd(metaflow),
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-2000:]
    assert saved.read_text(encoding="utf-8") == card_html(task, "shot")


class StandIn(FakeComfyUI):
    """A ComfyUI on 127.0.0.1 that runs each prompt with the pack's graph runner (one at a time, as
    ComfyUI does), refuses requests without the worker token, and fails chosen shots on purpose."""

    lock = threading.Lock()  # one runner at a time in this process, across stand-ins

    def __init__(self, fail: dict | None = None):
        super().__init__()
        self.fail = dict(fail or {})  # filename_prefix -> times to fail
        self.received: list[str] = []
        self.authorized: list[bool] = []
        outer, base = self, self.httpd.RequestHandlerClass

        class Guarded(base):
            def _allowed(self) -> bool:
                ok = self.headers.get("Authorization") == f"Bearer {TOKEN}"
                outer.authorized.append(ok)
                if not ok:
                    self.close_connection = True
                    self._json(401, {"error": "missing or wrong bearer token"})
                return ok

            def do_GET(self):
                if self._allowed():
                    super().do_GET()

            def do_POST(self):
                if self._allowed():
                    super().do_POST()

        self.httpd.RequestHandlerClass = Guarded

    def run(self, pid: str, body: dict) -> None:
        events = self.ws_clients.setdefault(body["client_id"], queue_module.Queue())
        send = lambda kind, **data: events.put({"type": kind, "data": {**data, "prompt_id": pid}})  # noqa: E731
        prompt = body["prompt"]
        prefix = next((n["inputs"].get("filename_prefix") for n in prompt.values() if n["class_type"] == "WebTVSaveVideo"), "")
        self.received.append(prefix)
        send("execution_start")
        outputs, messages = {}, [["execution_start", {"prompt_id": pid}]]
        try:
            if self.fail.get(prefix, 0) > 0:
                self.fail[prefix] -= 1
                raise RuntimeError("the GPU fell off the bus")
            with self.lock:
                results = runner.run(prompt, on_node=lambda nid, *_: send("executing", node=nid))
            for nid, result in results.items():
                items = [i for ui in result["ui"] if ui for i in ui.get("images", [])]
                for item in items:
                    with open(os.path.join(host.output_dir(), item["subfolder"], item["filename"]), "rb") as f:
                        self.files[(item["subfolder"], item["filename"], item["type"])] = f.read()
                if items:
                    outputs[nid] = {"images": items}
            send("execution_success")
            status = "success"
        except Exception as e:  # noqa: BLE001 - reported the way ComfyUI reports a failing node
            error = {"prompt_id": pid, "node_id": "3", "node_type": "ZeroscopeTextToVideo", "exception_type": type(e).__name__,
                     "exception_message": str(e), "traceback": []}
            send("execution_error", **error)
            messages.append(["execution_error", error])
            status = "error"
        events.put(None)
        time.sleep(0.1)
        self.history[pid] = {"prompt": [0, pid, prompt, {}, list(outputs)], "outputs": outputs,
                             "status": {"status_str": status, "completed": status == "success", "messages": messages}}


def test_season_on_two_comfyui_workers_retries_a_failed_shot_and_goes_on_air_there(metaflow, settings, tiny_env, tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # the server's token for its clip route
    start_channel("season", make_clip(os.path.join(tiny_env["output"], "slate.mp4"), "red", 0.5, size=(160, 96)))
    try:
        with StandIn() as a, StandIn(fail={"WebTV/season/shot_002": 1}) as b, PackServer() as server:
            proc, run = run_flow(metaflow, SEASON, settings, tmp_path, "--theme", "a fox crossing a frozen lake", "--shots", "4",
                                 "--max-workers", "2", "--workers", f"{a.url}, {b.url}", "--output", str(tmp_path / "output"),
                                 "--channel", "season", "--channel-server", server.url, env={TOKEN_ENV: TOKEN})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        check_season(run, 4, tmp_path)
        # the episode went to the server's channel through its route: the same bytes, in shot order, in its rotation
        assert run.data.channel_status["clips"] == 5 == channels.get("season").status()["clips"]
        folder = os.path.join(tiny_env["output"], "WebTV", "received", "season")
        names = received(tiny_env["output"], "season")
        assert [open(os.path.join(folder, n), "rb").read() for n in names] == run.data.clips
    finally:
        channels.stop("season")
    # spread over the workers in turn; shot 2 failed once on its worker and its retry completed
    assert sorted(a.received) == ["WebTV/season/shot_001", "WebTV/season/shot_003"]
    assert sorted(b.received) == ["WebTV/season/shot_002", "WebTV/season/shot_002", "WebTV/season/shot_004"]
    attempts = {t.data.info["shot"]: t.data.info["attempt"] for t in run["render"]}
    assert attempts == {1: 0, 2: 1, 3: 0, 4: 0}
    assert "the GPU fell off the bus" in proc.stdout + proc.stderr
    # the token went with every request and is nowhere in the run's stored parameters and artifacts
    assert a.authorized and b.authorized and all(a.authorized + b.authorized)
    for artifact in run["start"].task.artifacts:
        assert TOKEN not in repr(artifact.data)


WORKER_TASK = """
import json, sys
import rendering, season  # what a render task process imports
done = rendering.run_on_worker(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], 300)
clip = next(f for f in done.files if f.endswith(".mp4"))
info, sheet = rendering.describe(clip), rendering.png(rendering.contact_sheet(clip))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "diffusers", "numpy"))
print(json.dumps({"frames": info["frames"], "png": sheet[:8].hex(), "heavy": heavy, "queue": "comfyui_webtv.cli.queue" in sys.modules}))
"""


def test_a_worker_task_imports_no_torch(tiny_env, tmp_path):
    """A task that renders on a worker runs the queue client, reads the clip back and draws its card
    picture without importing torch (checked in a fresh process, where nothing else loaded it)."""
    sets = ["3.width=64", "3.height=64", "3.frames=4", "3.steps=2", "4.width=64", "4.height=64", "4.steps=2"]
    with StandIn() as worker:
        proc = subprocess.run([sys.executable, "-c", WORKER_TASK, os.path.join(ROOT, "workflows", "zeroscope_t2v_xl_api.json"),
                               json.dumps(sets), worker.url, str(tmp_path / "out")], cwd=os.path.join(ROOT, "flows"),
                              env={**os.environ, TOKEN_ENV: TOKEN}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["queue"] and result["frames"] > 0 and result["png"] == b"\x89PNG\r\n\x1a\n".hex()
    assert "torch" not in result["heavy"] and not any(m.startswith(("torch", "transformers", "diffusers")) for m in result["heavy"])


def test_a_shot_that_keeps_failing_fails_the_run_naming_it(metaflow, settings, tiny_env, tmp_path):
    with StandIn(fail={"WebTV/season/shot_002": 99}) as worker:
        proc, run = run_flow(metaflow, SEASON, settings, tmp_path, "--theme", "a fox crossing a frozen lake", "--shots", "2",
                             "--workers", worker.url, "--output", str(tmp_path / "output"), env={TOKEN_ENV: TOKEN})
    assert proc.returncode != 0
    log = proc.stdout + proc.stderr
    assert "shot 2 of 2" in log and "the GPU fell off the bus" in log and "shot 1 of 2" not in log
    assert worker.received.count("WebTV/season/shot_002") == 2  # the first try and one retry
    assert run is not None and not run.successful


def test_season_without_the_token_is_refused(metaflow, settings, tiny_env, tmp_path):
    with StandIn() as worker:
        proc, run = run_flow(metaflow, SEASON, settings, tmp_path, "--shots", "1", "--workers", worker.url,
                             "--output", str(tmp_path / "output"), env={TOKEN_ENV: ""})
    assert proc.returncode != 0 and "shot 1 of 1" in proc.stdout + proc.stderr
    assert worker.authorized and not any(worker.authorized) and worker.received == []


SLATE_CHANNEL = {  # a clips-mode channel on the server's HLS preview, from one clip already in its output folder
    "1": {"class_type": "WebTVFFConcatPlaylist", "inputs": {"clips": "slate.mp4", "filename": "WebTV/slate.ffconcat",
                                                         "mode": "replace", "paths": "relative"}},
    "2": {"class_type": "WebTVRTMPChannel", "inputs": {
        "playlist": ["1", 0], "channel": "season", "outputs": "", "local_preview": True, "mode": "clips", "width": 160,
        "height": 96, "fps": 24.0, "video_kbps": 300, "audio_kbps": 64, "sample_rate": "48000", "keyframe_seconds": 2.0,
        "preset": "veryfast"}},
}


@pytest.mark.comfyui
@pytest.mark.skipif(not os.path.isfile(os.path.join(COMFYUI_DIR, "main.py")), reason="COMFYUI_DIR does not point at a ComfyUI checkout")
def test_season_on_a_real_comfyui(metaflow, settings, tmp_path, monkeypatch):
    """Two shots rendered by a real ComfyUI with the pack, then appended to a channel on air there
    through the pack's clip route (the server started with the token in its environment)."""
    from comfyui_webtv.cli.queue import ComfyClient, queue_workflow
    from test_comfyui_real import ComfyUI

    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # inherited by ComfyUI and by the flow
    base = tmp_path / "comfyui_base"
    (base / "output").mkdir(parents=True)
    make_clip(str(base / "output" / "slate.mp4"), "red", 0.5, size=(160, 96))
    server = ComfyUI(str(base))
    try:
        slate = tmp_path / "slate_api.json"
        slate.write_text(json.dumps(SLATE_CHANNEL))
        code, summary = queue_workflow(str(slate), server.url, output_dir=None, timeout=300, quiet=True)
        assert code == 0, summary
        proc, run = run_flow(metaflow, SEASON, settings, tmp_path, "--shots", "2", "--workers", server.url,
                             "--output", str(tmp_path / "output"), "--channel", "season", "--channel-server", server.url)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + server.log_text()[-3000:]
        check_season(run, 2, tmp_path)
        assert all(t.data.info["where"] == server.url for t in run["render"])
        status = ComfyClient(server.url).get_json("/webtv/channels/season/status")
        assert status["clips"] == 3 == run.data.channel_status["clips"]
        assert [open(os.path.join(base, "output", "WebTV", "received", "season", n), "rb").read()
                for n in received(str(base / "output"), "season")] == run.data.clips
    finally:
        server.stop()


def test_grid_over_seed_and_prompt(metaflow, settings, tiny_env, tmp_path):
    grid = ('Zeroscope Text to Video.seed=5,6; Zeroscope Text to Video.prompt=["a red fox, snow", "a grey owl"]; '
            "3.width=64; 3.height=64; 3.frames=4; 3.steps=2; 4.width=64; 4.height=64; 4.steps=2")
    with StandIn() as worker:
        proc, run = run_flow(metaflow, GRID, os.path.join(ROOT, "flows", "grid.json"), tmp_path, "--workflow",
                             "zeroscope_t2v_xl_api.json", "--set", grid, "--workers", worker.url, "--max-workers", "2",
                             env={TOKEN_ENV: TOKEN})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert run.successful
    seen = set()
    for result in run.data.results:
        combination = result["combination"]
        ((name, clip),) = result["outputs"].items()
        assert name.endswith(".mp4")
        path = tmp_path / "clip.mp4"
        path.write_bytes(clip)
        generated = json.loads(probe(str(path)).tags["comment"])  # what the clip was really made from
        assert str(generated["seed"]) == combination["Zeroscope Text to Video.seed"]
        assert generated["prompt"] == combination["Zeroscope Text to Video.prompt"]
        seen.add((generated["seed"], generated["prompt"]))
    assert seen == {(5, "a red fox, snow"), (5, "a grey owl"), (6, "a red fox, snow"), (6, "a grey owl")}
    tagged = {json.dumps(t.data.combination, sort_keys=True) for t in run["render"]}
    assert tagged == {json.dumps(r["combination"], sort_keys=True) for r in run.data.results}
    assert card_data(run["end"].task, "grid").count('"src": "data:image/png;base64,') == 4
