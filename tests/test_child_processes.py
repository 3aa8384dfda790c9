"""Every child process the pack starts goes through ``nodes/common/ffmpeg.popen`` (issue 11: one place
for die-with-parent, no shell, stdin closed).

The scan reads the pack's own sources (what ships: not tests, benchmarks or scripts) with ``ast`` and
lists every call or reference that can start a process some other way. The behaviour of the helper is
checked on real children through /proc.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time

import pytest

from comfyui_webtv.nodes.common import ffmpeg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join("nodes", "common", "ffmpeg.py")
NOT_SHIPPED = {"tests", "benchmarks", "scripts", "temp", "js", "workflows"}
# Every way the standard library starts a process (names as the modules spell them).
SPAWNERS = {
    "subprocess": {"Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"},
    "os": {"system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp", "spawnl", "spawnle", "spawnlp",
           "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "execl", "execle", "execlp", "execlpe", "execv",
           "execve", "execvp", "execvpe"},
    "asyncio": {"create_subprocess_exec", "create_subprocess_shell"},
    "pty": {"spawn", "fork"},
    "multiprocessing": {"Process", "Pool", "get_context"},
}


def pack_sources() -> list[str]:
    found = []
    for folder, dirs, files in os.walk(ROOT):
        rel = os.path.relpath(folder, ROOT)
        dirs[:] = [d for d in dirs if not d.startswith(".") and not d.endswith(".egg-info") and d != "__pycache__"
                   and (rel != "." or d not in NOT_SHIPPED)]
        found += [os.path.relpath(os.path.join(folder, f), ROOT) for f in files if f.endswith(".py")]
    return sorted(found)


def spawns(path: str, root: str = ROOT) -> list[str]:
    """``file:line name`` for each reference to a process-starting function in ``path``."""
    with open(os.path.join(root, path), encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    annotations = [n.annotation for n in ast.walk(tree) if isinstance(n, (ast.AnnAssign, ast.arg)) and n.annotation]
    annotations += [n.returns for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.returns]
    types = {id(n) for a in annotations for n in ast.walk(a)}  # ``proc: subprocess.Popen`` names a type, starts nothing
    hits = []
    for node in ast.walk(tree):
        if id(node) in types:
            continue
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr in SPAWNERS.get(node.value.id, ()):
            hits.append(f"{path}:{node.lineno} {node.value.id}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module in SPAWNERS:
            hits += [f"{path}:{node.lineno} from {node.module} import {a.name}" for a in node.names
                     if a.name in SPAWNERS[node.module] or a.name == "*"]
    return hits


def test_the_scan_finds_a_process_started_any_other_way(tmp_path):
    """The checker itself: each way of starting a process in a planted module is reported, and nothing else."""
    (tmp_path / "planted.py").write_text(
        "import os, subprocess, asyncio\nfrom subprocess import Popen as P\n"
        "subprocess.Popen(['ffmpeg'])\nsubprocess.run(['ffmpeg'])\nos.system('ffmpeg')\nos.posix_spawn('ffmpeg', [], {})\n"
        "start = subprocess.check_output\nasyncio.create_subprocess_exec('ffmpeg')\nsubprocess.PIPE\nos.path.join('a')\n"
        "proc: subprocess.Popen | None = None\ndef f(p: subprocess.Popen) -> subprocess.Popen: pass\n"
    )
    assert sorted(h.split(" ", 1)[1] for h in spawns("planted.py", str(tmp_path))) == sorted([
        "from subprocess import Popen", "subprocess.Popen", "subprocess.run", "os.system", "os.posix_spawn",
        "subprocess.check_output", "asyncio.create_subprocess_exec",
    ])


def test_every_child_the_pack_starts_goes_through_the_one_helper():
    sources = pack_sources()
    # The modules that start ffmpeg or the publisher are in the scan (a scan of nothing proves nothing).
    for module in ("channel.py", "normalize.py", "outputs.py", "mp4.py"):
        assert os.path.join("nodes", "broadcast", module) in sources
    outside = [hit for path in sources if path != HELPER for hit in spawns(path)]
    assert outside == [], "start these through nodes/common/ffmpeg.popen: " + "; ".join(outside)
    inside = spawns(HELPER)
    assert [h.split(" ", 1)[1] for h in inside] == ["subprocess.Popen"], inside  # popen's own, once


def test_popen_never_uses_a_shell():
    with pytest.raises(ValueError, match="shell"):
        ffmpeg.popen("echo hi", shell=True)


def test_popen_children_read_dev_null_unless_given_stdin():
    child = ffmpeg.popen(["sleep", "30"])
    piped = ffmpeg.popen(["sleep", "30"], stdin=subprocess.PIPE)
    try:
        assert os.readlink(f"/proc/{child.pid}/fd/0") == "/dev/null"
        assert os.readlink(f"/proc/{piped.pid}/fd/0").startswith("pipe:")
    finally:
        for p in (child, piped):
            p.kill()
            p.wait()
            if p.stdin:
                p.stdin.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_started_from_a_thread_dies_with_that_thread_only():
    """Linux signals the child when the *thread* that forked it ends: a long-lived thread keeps it alive,
    and its end (as a killed ComfyUI's) takes the child along, though the child reads no pipe."""
    import threading

    started = []
    release = threading.Event()

    def owner():
        started.append(ffmpeg.popen(["sleep", "60"]))
        release.wait(60)

    thread = threading.Thread(target=owner)
    thread.start()
    deadline = time.monotonic() + 30
    while not started and time.monotonic() < deadline:
        time.sleep(0.05)
    child = started[0]
    try:
        time.sleep(0.5)
        assert child.poll() is None  # alive while its thread lives
        release.set()
        thread.join(30)
        assert child.wait(30) == -9  # SIGKILL, from the kernel, when the thread ended
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
