"""The aftermath every hostile input is checked for: no partial file, nothing written outside the
output folder, no child process left, no secret in any output, log or error."""

from __future__ import annotations

import os
import time

import pytest

SECRET = "sk-adversarial-SECRET-7f3a91"


def _children() -> list[int]:
    me = str(os.getpid())
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me and " Z " not in stat.rsplit(")", 1)[1][:4]:
                found.append(int(pid))
    return found


def _tree(path: str) -> dict[str, int]:
    files = {}
    for root, dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            files[full] = os.lstat(full).st_size
    return files


@pytest.fixture
def hostile(tmp_path, output_dir, monkeypatch, caplog):
    """A standalone host with an LLM key in the environment; after the test, the aftermath checks."""
    monkeypatch.setenv("WEBTV_LLM_API_KEY", SECRET)
    monkeypatch.delenv("WEBTV_LLM_BASE_URL", raising=False)
    before_children = set(_children())
    outside_before = {p for p in _tree(str(tmp_path)) if not p.startswith(output_dir + os.sep)}
    errors: list[str] = []
    yield {"output": output_dir, "tmp": str(tmp_path), "errors": errors, "secret": SECRET}
    deadline = time.monotonic() + 10
    while set(_children()) - before_children and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(_children()) - before_children, "a child process was left running"
    written = _tree(str(tmp_path))
    parts = [p for p in written if ".part" in os.path.basename(p)]
    assert not parts, f"partial files left: {parts}"
    temp = os.path.join(str(tmp_path), "temp")
    outside = {p for p in written if not p.startswith(output_dir + os.sep) and not p.startswith(temp + os.sep)}
    assert outside <= outside_before, f"files written outside output/: {outside - outside_before}"
    for path in written:
        if os.path.isfile(path) and written[path] < 50_000_000:
            with open(path, "rb") as f:
                assert SECRET.encode() not in f.read(), f"the secret is in {path}"
    for text in [caplog.text, *errors]:
        assert SECRET not in text, "the secret is in a log line or an error"
