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


def _station(argv: list[str], capsys) -> tuple[int, dict, str]:
    code = main(["run", *argv])
    captured = capsys.readouterr()
    return code, json.loads(captured.out.strip().splitlines()[-1]), captured.err


def test_run_command_is_the_whole_station(tiny_models_dir, tmp_path, monkeypatch, capsys):
    """``run`` in a fresh folder: no ./models, so the tiny models (announced), the workflow's graph run
    from the theme to the channel, and a summary that tells the truth about what aired and how it ended."""
    monkeypatch.chdir(tmp_path)
    code, summary, err = _station(["--shots", "2", "--on-air", "3", "--tiny-dir", tiny_models_dir], capsys)
    assert code == 0, err[-3000:]
    assert summary["tiny_models"] is True and "TINY RANDOM MODELS" in err.split("[1/")[0]  # the banner comes first
    assert summary["writer"] == "template" and "unusable" not in err  # tiny models: no random LM tried
    assert len(summary["shots"]) == 2 and all("lighthouse keeper" in shot for shot in summary["shots"])
    run_dir = tmp_path / "output" / "WebTV" / "station" / summary["run"]
    assert os.path.dirname(summary["playlist"]) == str(run_dir)
    assert all(os.path.dirname(clip) == str(run_dir) for clip in summary["clips"])
    _assert_clips_with_music(summary["clips"], summary["playlist"])
    channel = summary["channel"]
    assert channel["state"] == "stopped"
    assert {h["path"] for h in channel["history"]} == set(summary["clips"]) and channel["frames_sent"] > 24
    assert channels.statuses() == {}  # stopped, no ffmpeg left behind
    assert "Traceback" not in err and "\r" not in err  # not a terminal: finished counts only, whole lines


def test_each_run_airs_its_own_programme_and_the_workflow_is_the_station(tiny_models_dir, tmp_path, monkeypatch, capsys):
    """A second run airs only its own shot, not the first run's; --resume adds to a programme; the station
    follows its workflow file, and --set overrides any input of it."""
    monkeypatch.chdir(tmp_path)
    common = ["--shots", "1", "--on-air", "1", "--tiny-dir", tiny_models_dir]
    code, first, err = _station(common, capsys)
    assert code == 0, err[-3000:]

    with open(os.path.join(ROOT, "workflows", "ai_webtv_api.json")) as f:
        api = json.load(f)
    next(n for n in api.values() if n["class_type"] == "WebTVShotWriter")["inputs"]["style"] = "charcoal sketch"
    (tmp_path / "changed.json").write_text(json.dumps(api))
    code, second, err = _station([*common, "--workflow", "changed.json", "--channel", "second"], capsys)
    assert code == 0, err[-3000:]
    assert second["run"] != first["run"] and "charcoal sketch" in second["shots"][0]
    assert [e.path for e in read_ffconcat(second["playlist"])] == second["clips"]
    assert {h["path"] for h in second["channel"]["history"]} == set(second["clips"])
    assert second["channel"]["name"] == "second"

    code, third, err = _station([*common, "--resume", first["run"], "--set", "Shot Writer.style=ink wash"], capsys)
    assert code == 0, err[-3000:]
    assert third["run"] == first["run"] and "ink wash" in third["shots"][0]
    programme = [e.path for e in read_ffconcat(third["playlist"])]
    assert programme == first["clips"] + third["clips"] and third["playlist"] == first["playlist"]
    assert channels.statuses() == {}
