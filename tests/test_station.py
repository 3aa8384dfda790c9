"""The AI WebTV end to end on tiny models: the ai_webtv workflow and the `run` command, from a theme to
mp4s with music in the playlist and on the local preview."""

from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest

from comfyui_webtv.workflow import runner as wx
from comfyui_webtv.cli import main
from comfyui_webtv.nodes.broadcast import channel as channels
from comfyui_webtv.nodes.broadcast.playlist import read_ffconcat
from media_probe import probe
from test_workflows import ROOT, _capped

pytestmark = pytest.mark.slow


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read()


def _hls(preview_url: str) -> bytes:
    try:
        return _get(preview_url + "hls/live.m3u8")
    except OSError:
        return b""  # not written yet


def _wait_on_air(name: str, timeout: float = 60.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = channels.get(name).status()
        if status["frames_sent"] > 0 and status["outputs"][0]["state"] == "live":
            return status
        time.sleep(0.25)
    raise AssertionError(f"channel {name} not on air: {channels.get(name).status()}")


def _assert_clips_with_music(clips: list[str], playlist: str) -> None:
    assert len(clips) == 2 and len(set(clips)) == 2
    for clip in clips:
        info = probe(clip)
        assert info.video_codec == "h264" and info.fps == 24.0 and info.audio_codec == "aac"
        assert abs(info.audio_duration - info.video_duration) <= 1 / 24
    assert [e.path for e in read_ffconcat(playlist)] == clips


def test_ai_webtv_workflow_from_theme_to_the_local_preview(tiny_env):
    api = _capped(wx.load(os.path.join(ROOT, "workflows", "ai_webtv_api.json")))
    try:
        results = wx.run(api)
        prompts = results["1"]["outputs"][0]
        assert len(prompts) == 2 and all("lighthouse keeper" in p for p in prompts)
        clips = results["10"]["outputs"][0]
        _assert_clips_with_music(clips, results["11"]["outputs"][0][-1])
        status = _wait_on_air("ai_webtv")
        assert status["clips"] == 2
        page = _get(status["preview_url"]).decode()
        assert "<video" in page
        end = time.monotonic() + 30
        while b"#EXTINF" not in (manifest := _hls(status["preview_url"])) and time.monotonic() < end:
            time.sleep(0.5)
        assert b"#EXTINF" in manifest
    finally:
        channels.stop_all()


def test_run_command_is_the_whole_station(tiny_models_dir, tmp_path, capsys):
    out = tmp_path / "output"
    code = main([
        "run", "--shots", "2", "--llm", "template", "--on-air", "3", "--models", str(tmp_path / "no-models"),
        "--tiny-dir", tiny_models_dir, "--output", str(out),
    ])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["tiny_models"] is True
    _assert_clips_with_music(summary["clips"], summary["playlist"])
    played = {h["path"] for h in summary["channel"]["history"]}
    assert played == set(summary["clips"]) and summary["channel"]["frames_sent"] > 24
    assert channels.statuses() == {}  # stopped, no ffmpeg left behind
