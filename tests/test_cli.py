"""The command line a new user meets: help without torch, bad arguments refused before any model loads
(one line, exit code 2), and model downloads from a stand-in for the Hugging Face Hub on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest

from comfyui_webtv.cli import main
from comfyui_webtv.nodes.common import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Written out here, not read from the code under test: every command a user can run.
COMMANDS = ("run", "download-models", "make-tiny-models", "convert-film", "convert-streaming-t2v", "queue")


def _python(*args: str, env: dict | None = None, cwd: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *args], env={**base, **(env or {})}, cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _imported(importtime_stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines: ``import time: self | cumulative | name``."""
    return {line.rsplit("|", 1)[-1].strip() for line in importtime_stderr.splitlines() if line.startswith("import time:")}


# ---------------------------------------------------------------- help


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["download-models", "--help"]], ids=" ".join)
def test_help_imports_no_torch(argv):
    out = _python("-X", "importtime", "-m", "comfyui_webtv", *argv)
    assert out.returncode == 0, out.stderr[-2000:]
    imported = _imported(out.stderr)
    assert "argparse" in imported  # the importtime listing is really there
    heavy = {m for m in imported if m.split(".")[0] in ("torch", "diffusers", "transformers", "numpy", "av", "huggingface_hub")}
    assert not heavy, f"--help imported {sorted(heavy)[:10]}"
    assert "``" not in out.stdout


def test_help_lists_every_command_with_one_line():
    out = _python("-m", "comfyui_webtv", "--help")
    lines = out.stdout.splitlines()
    for command in COMMANDS:
        at = next(i for i, line in enumerate(lines) if re.match(rf"^    {re.escape(command)}(\s|$)", line))
        described = lines[at][4 + len(command):].strip() or lines[at + 1].strip()
        assert len(described) > 20, f"{command}: {described!r}"


def test_run_help_describes_every_option_with_its_default():
    from comfyui_webtv.cli import parser_for

    run = parser_for("run")._subparsers._group_actions[0].choices["run"]
    text = run.format_help()
    for action in run._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and len(action.help) > 10, f"{action.option_strings} has no help"
    for option in ("--shots", "--theme", "--width", "--channel", "--on-air", "--output", "--tiny-dir"):
        block = text[text.index(f"  {option} "):].split("\n  --")[0]
        assert "(workflow:" in block or "(default:" in block, block
    with open(os.path.join(ROOT, "workflows", "ai_webtv_api.json")) as f:
        shots = next(n["inputs"]["shots"] for n in json.load(f).values() if n["class_type"] == "WebTVShotWriter")
    assert f"(workflow: {shots})" in text


# ---------------------------------------------------------------- bad arguments


def _run(argv: list[str]) -> int:
    try:
        return main(["run", *argv])
    except SystemExit as e:  # argparse's own checks
        return e.code


@pytest.fixture
def no_model_loads(tmp_path, monkeypatch):
    """A fresh working folder (default models/ and output/ inside it) where loading any model fails the test."""
    monkeypatch.chdir(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(models, "cached", refuse)
    monkeypatch.setattr("comfyui_webtv.cli.tiny.make_tiny_models", refuse)
    return tmp_path


BAD = {
    "shots 0": (["--shots", "0"], "--shots"),
    "negative seed": (["--seed", "-1"], "--seed"),
    "odd width": (["--width", "33"], "--width"),
    "zero fps": (["--fps", "0"], "--fps"),
    "negative on-air": (["--on-air", "-2"], "--on-air"),
    "not a streaming scheme": (["--rtmp", "ftp://127.0.0.1/app/stream"], "rtmp://"),
    "no host": (["--rtmp", "rtmp:///app/stream"], "--rtmp"),
    "port out of range": (["--rtmp", "rtmp://127.0.0.1:70000/app/stream"], "--rtmp"),
    "not a key variable": (["--rtmp", "rtmp://127.0.0.1/app/${HOME}"], "HOME"),
    "literal key": (["--rtmp", "rtmp://127.0.0.1/app/live_123456_abcdefXYZ"], "--rtmp"),
    "unset key": (["--rtmp", "rtmp://127.0.0.1/app/${WEBTV_KEY_TEST_UNSET}"], "WEBTV_KEY_TEST_UNSET"),
    "missing models folder": (["--models", "no/such/dir"], "--models"),
    "empty models folder": (["--models", "."], "--download"),
    "set below minimum": (["--set", "Shot Writer.shots=0"], "shots"),
    "set unknown node": (["--set", "Nope.value=1"], "Nope"),
    "set unknown input": (["--set", "Shot Writer.colour=red"], "colour"),
    "set not a number": (["--set", "Shot Writer.shots=many"], "many"),
    "resume unknown run": (["--resume", "20000101-000000"], "--resume"),
    "resume outside": (["--resume", "../elsewhere"], "--resume"),
    "output is a file": (["--output", "a-file"], "--output"),
    "missing workflow": (["--workflow", "nope.json"], "--workflow"),
    "offline download": (["--download"], "HF_HUB_OFFLINE"),
}


@pytest.mark.parametrize("argv,named", BAD.values(), ids=BAD.keys())
def test_bad_argument_exits_2_with_one_line_before_any_model_loads(argv, named, no_model_loads, monkeypatch, capsys):
    monkeypatch.delenv("WEBTV_KEY_TEST_UNSET", raising=False)
    monkeypatch.delenv("WEBTV_KEY_TEST_UNSET_FILE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (no_model_loads / "a-file").write_text("not a folder")
    assert _run(argv) == 2
    captured = capsys.readouterr()
    message = captured.err.strip()
    assert "\n" not in message and "Traceback" not in message, message
    assert "error:" in message and named in message, message
    assert captured.out == ""  # no summary: nothing ran
    assert not (no_model_loads / "output").exists() and not (no_model_loads / ".tiny-models").exists()


def test_a_stream_key_from_the_environment_passes_the_check(no_model_loads, monkeypatch, capsys):
    """The key check looks at the environment, not at the address: with the key set, the same address gets
    past it (and stops at the next problem, the named models folder)."""
    monkeypatch.setenv("WEBTV_KEY_TEST", "live_123_abc")
    code = _run(["--rtmp", "rtmp://127.0.0.1/app/${WEBTV_KEY_TEST}", "--models", "no/such/dir"])
    message = capsys.readouterr().err
    assert code == 2 and "--models" in message and "WEBTV_KEY_TEST" not in message and "live_123_abc" not in message


# ---------------------------------------------------------------- a stand-in for the Hugging Face Hub


class HubStandIn:
    """The Hub endpoints huggingface_hub calls to download a repository: revision info, the recursive tree,
    and ``resolve`` (HEAD for metadata, GET with Range to resume). ``cut`` ends the first GET of the named
    files (``owner/repo/path``, or a release file's name) half way, as a dropped connection does. Plain
    release files are served under ``/releases/``."""

    def __init__(self, repos: dict[str, dict[str, bytes]], releases: dict[str, bytes] | None = None, cut: tuple = ()):
        self.repos, self.releases, self.cut = repos, releases or {}, set(cut)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                standin.serve(self, body=False)

            def do_GET(self):
                standin.serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def commit(repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    @staticmethod
    def oid(data: bytes) -> str:
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        self.requests.append((h.command, path, h.headers.get("Range")))
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
        if m and m.group(1) in self.repos:
            files = self.repos[m.group(1)]
            return self.json(h, {"id": m.group(1), "modelId": m.group(1), "sha": self.commit(m.group(1)), "private": False,
                                 "siblings": [{"rfilename": p} for p in sorted(files)]}, body)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        if m and m.group(1) in self.repos:
            files = self.repos[m.group(1)]
            return self.json(h, [{"type": "file", "oid": self.oid(d), "size": len(d), "path": p} for p, d in sorted(files.items())], body)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m and m.group(1) in self.repos and m.group(3) in self.repos[m.group(1)]:
            data = self.repos[m.group(1)][m.group(3)]
            return self.file(h, data, body, f"{m.group(1)}/{m.group(3)}", {"X-Repo-Commit": self.commit(m.group(1)), "ETag": f'"{self.oid(data)}"'})
        if path.startswith("/releases/") and path[len("/releases/"):] in self.releases:
            name = path[len("/releases/"):]
            return self.file(h, self.releases[name], body, name, {})
        h.send_response(404)
        h.send_header("Content-Length", "0")
        h.send_header("X-Error-Code", "EntryNotFound")
        h.end_headers()

    def json(self, h, value, body: bool) -> None:
        data = json.dumps(value).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)

    def file(self, h, data: bytes, body: bool, name: str, headers: dict) -> None:
        start = 0
        ranged = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
        if ranged:
            start = int(ranged.group(1))
        h.send_response(206 if ranged else 200)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(data) - start))
        if ranged:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if not body:
            return
        if name in self.cut:
            self.cut.discard(name)
            h.wfile.write(data[start:start + (len(data) - start) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)  # the connection drops half way through the file
            return
        h.wfile.write(data[start:])


def _tree(folder: str) -> dict[str, bytes]:
    files = {}
    for base, _, names in os.walk(folder):
        for name in names:
            if "TINY_RANDOM_MODEL" not in name:
                full = os.path.join(base, name)
                with open(full, "rb") as f:
                    files[os.path.relpath(full, folder).replace(os.sep, "/")] = f.read()
    return files


BIG = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def hub_repos(tiny_models_dir) -> dict[str, dict[str, bytes]]:
    """The three Hub repositories the station needs, holding the tiny models in the real layouts, plus files
    the run does not need (the ModelScope original weights, the audiocraft weights) that must not be fetched."""
    repos = {f"cerspense/{name}": _tree(os.path.join(tiny_models_dir, "zeroscope", name)) for name in ("zeroscope_v2_576w", "zeroscope_v2_XL")}
    repos["facebook/musicgen-small"] = _tree(os.path.join(tiny_models_dir, "musicgen", "musicgen-small"))
    for files in repos.values():
        files["README.md"] = b"# model card\n"
    repos["cerspense/zeroscope_v2_576w"]["zs2_576w/text2video_pytorch_model.pth"] = b"\0" * 4096
    repos["cerspense/zeroscope_v2_576w"]["zs2_576w/open_clip_pytorch_model.safetensors"] = b"\0" * 4096
    unet = repos["cerspense/zeroscope_v2_XL"]
    unet[BIG] = _padded_safetensors(unet[BIG], 24 << 20)
    repos["facebook/musicgen-small"]["state_dict.bin"] = b"\0" * 4096
    return repos


def _padded_safetensors(data: bytes, size: int) -> bytes:
    """The same tensors in a file of at least ``size`` bytes: the JSON header padded with spaces, as the format allows.

    huggingface_hub writes what it receives in 10 MB chunks, so only a file past that size shows a resume."""
    n = int.from_bytes(data[:8], "little")
    pad = max(0, size - len(data))
    return (n + pad).to_bytes(8, "little") + data[8:8 + n] + b" " * pad + data[8 + n:]


def _hub_env(standin: HubStandIn, tmp_path) -> dict:
    return {
        "HF_ENDPOINT": standin.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ETAG_TIMEOUT": "30", "HF_HUB_DOWNLOAD_TIMEOUT": "60",
        # Anything not on 127.0.0.1 goes to a closed port: nothing in this test can reach the internet.
        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost",
    }


def _with_film(tiny_models_dir: str, models_dir) -> None:
    """The FILM weights come from a release file, not the Hub (tested separately): put them in place."""
    os.makedirs(models_dir / "film")
    shutil.copy(os.path.join(tiny_models_dir, "film", "film_net_fp32.safetensors"), models_dir / "film")


@pytest.mark.slow
def test_download_models_fetches_what_run_needs_with_progress_and_resumes(hub_repos, tiny_models_dir, tmp_path):
    big = BIG
    standin = HubStandIn(hub_repos, cut={f"cerspense/zeroscope_v2_XL/{big}"})
    target = tmp_path / "models"
    _with_film(tiny_models_dir, target)
    try:
        out = _python("-m", "comfyui_webtv", "download-models", "--models", str(target), env=_hub_env(standin, tmp_path))
        if out.returncode != 0:  # the client gave up on the dropped connection: the same command continues it
            assert "Traceback" not in out.stderr and out.stderr.strip().splitlines()[-1].startswith("download-models: error:"), out.stderr[-3000:]
            out = _python("-m", "comfyui_webtv", "download-models", "--models", str(target), env=_hub_env(standin, tmp_path))
        assert out.returncode == 0, out.stderr[-3000:]
    finally:
        standin.close()
    for repo, kind_name in (("cerspense/zeroscope_v2_576w", "zeroscope/zeroscope_v2_576w"), ("cerspense/zeroscope_v2_XL", "zeroscope/zeroscope_v2_XL"),
                            ("facebook/musicgen-small", "musicgen/musicgen-small")):
        folder = target / kind_name
        for name, data in hub_repos[repo].items():
            wanted = name.endswith((".json", ".txt", ".safetensors", ".model")) and not name.startswith("zs2_576w/")
            assert (folder / name).exists() == wanted, f"{repo}/{name}: fetched {(folder / name).exists()}, wanted {wanted}"
            if wanted:
                assert (folder / name).read_bytes() == data, f"{repo}/{name} differs from the Hub's file"
    gets = [(p, r) for m, p, r in standin.requests if m == "GET" and p.endswith(f"zeroscope_v2_XL/resolve/{HubStandIn.commit('cerspense/zeroscope_v2_XL')}/{big}")
            or m == "GET" and p.endswith(f"zeroscope_v2_XL/resolve/main/{big}")]
    size = len(hub_repos["cerspense/zeroscope_v2_XL"][big])
    assert gets[0][1] is None and any(r and 0 < int(re.match(r"bytes=(\d+)-", r).group(1)) < size for _, r in gets[1:]), f"no resumed GET: {gets}"
    assert re.search(r"100%|\d+(\.\d+)?[kM]?B/s", out.stderr), "no progress bar"
    assert not any("/releases/" in p for _, p, _ in standin.requests)
    # What was fetched (the resumed file included) loads through the code that loads real weights.
    loaded = _python("-c", "from comfyui_webtv.nodes import host; from comfyui_webtv.nodes.zeroscope import loader;"
                     f"host.configure(models_dir={str(target)!r});"
                     "model = loader.load_model(loader.resolve_folder('zeroscope_v2_XL'));"
                     "print(sum(p.numel() for p in model.unet.parameters()))")
    assert loaded.returncode == 0 and int(loaded.stdout.split()[-1]) > 0, loaded.stderr[-2000:]


@pytest.mark.slow
def test_download_is_refused_offline_without_a_request(hub_repos, tmp_path):
    standin = HubStandIn(hub_repos)
    try:
        env = {**_hub_env(standin, tmp_path), "HF_HUB_OFFLINE": "1"}
        out = _python("-m", "comfyui_webtv", "download-models", "--models", str(tmp_path / "models"), env=env)
        run = _python("-m", "comfyui_webtv", "run", "--download", "--output", str(tmp_path / "out"), env=env, cwd=str(tmp_path))
    finally:
        standin.close()
    for result in (out, run):
        assert result.returncode == 2, result.stderr[-2000:]
        assert "HF_HUB_OFFLINE" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert standin.requests == [] and not (tmp_path / "models").exists() and not (tmp_path / "out").exists()


def test_film_release_file_resumes_and_converts(tiny_models_dir, tmp_path, monkeypatch):
    """FILM's weights are a TorchScript release file: fetched (resuming a dropped transfer), converted to
    safetensors in the film folder, loadable by the FILM loader."""
    from comfyui_webtv.cli import download
    from comfyui_webtv.nodes.film import tiny as film_tiny
    from comfyui_webtv.nodes.film import weights

    src = film_tiny.save_torchscript(str(tmp_path / "film_net_fp32.pt"), film_tiny.random_model())
    data = open(src, "rb").read()
    standin = HubStandIn({}, releases={f"{weights.RELEASE_TAG}/film_net_fp32.pt": data}, cut={f"{weights.RELEASE_TAG}/film_net_fp32.pt"})
    monkeypatch.setattr(weights, "RELEASES", standin.url + "/releases")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    folder = tmp_path / "models" / "film"
    try:
        with pytest.raises(ConnectionError, match="run again to resume"):
            download.fetch_film("film_net_fp32.safetensors", str(folder))
        part = folder / "film_net_fp32.pt.part"
        assert 0 < part.stat().st_size < len(data)
        path = download.fetch_film("film_net_fp32.safetensors", str(folder))
    finally:
        standin.close()
    ranges = [r for m, p, r in standin.requests if m == "GET"]
    assert ranges == [None, f"bytes={len(data) // 2}-"]
    assert sorted(os.listdir(folder)) == ["film_net_fp32.safetensors"]
    model = weights.load_file(path)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in film_tiny.random_model().parameters())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        download.fetch_film("film_net_fp32.safetensors", str(tmp_path / "elsewhere"))


@pytest.mark.slow
def test_run_with_download_fetches_then_airs_on_the_downloaded_models(hub_repos, tiny_models_dir, tmp_path):
    """``run --download`` into a named, empty models folder: the models come from the Hub stand-in, and the
    station runs on them (no tiny fallback), at small sizes given on the command line."""
    standin = HubStandIn(hub_repos)
    models_dir = tmp_path / "models"
    _with_film(tiny_models_dir, models_dir)
    small = ["--width", "64", "--height", "64", "--xl-width", "128", "--xl-height", "96", "--steps", "2", "--frames", "8",
             "--channel-width", "320", "--channel-height", "180"]
    try:
        out = _python("-m", "comfyui_webtv", "run", "--download", "--models", str(models_dir), "--shots", "1", "--on-air", "1",
                      "--llm", "template", *small, env=_hub_env(standin, tmp_path), cwd=str(tmp_path))
    finally:
        standin.close()
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["tiny_models"] is False and "TINY RANDOM MODELS" not in out.stderr
    assert len(summary["clips"]) == 1 and summary["channel"]["state"] == "stopped"
    assert (models_dir / "zeroscope" / "zeroscope_v2_XL" / BIG).read_bytes() == hub_repos["cerspense/zeroscope_v2_XL"][BIG]
    assert any(p.endswith("/revision/main") for _, p, _ in standin.requests)
