"""The FILM frame loop and node on a tiny random model: exact frames, holds, batching, progress, memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from comfyui_webtv.nodes import host
from comfyui_webtv.nodes.common import frames as common_frames
from comfyui_webtv.nodes.common import models as common_models
from comfyui_webtv.nodes.film import nodes, tiny, weights
from comfyui_webtv.nodes.film.interpolate import run_model

NAME = weights.DEFAULT_NAME


def clip(count=6, height=40, width=72, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(count, height, width, 3, generator=g)


def run_node(images, **overrides):
    args = dict(model_name=NAME, mode="frame_rate", multiplier=2, source_fps=8.0, target_fps=24.0, strategy="auto",
                bisection_depth=4, scene_cut_threshold=1.0, batch_size=4, dtype="auto")
    args.update(overrides)
    out, fps, report = nodes.FilmInterpolate().interpolate(images, **args)
    return out, fps, json.loads(report)


def pair(images, i, j):
    return images[i].permute(2, 0, 1)[None], images[j].permute(2, 0, 1)[None]


@pytest.fixture
def ignoring_t(tmp_path, monkeypatch):
    """A models folder whose film_net_fp32.safetensors ignores t, as release v1.0.0 does."""
    src = str(tmp_path / "film_net_fp32.pt")
    torch.save(tiny.random_model(seed=5).state_dict(), src)
    os.makedirs(tmp_path / "film")
    weights.convert(src, str(tmp_path / "film" / NAME), time_input="ignored")
    monkeypatch.setitem(host._standalone, "models", str(tmp_path))
    yield
    common_models.clear_cache()


def test_retime_8_to_24_interpolates_at_exact_times(tiny_env):
    images = clip(count=6)
    out, fps, report = run_node(images)
    assert out.shape == (18, 40, 72, 3) and fps == 24.0
    assert report["strategy"] == "single_shot" and report["weights_honour_t"] is True
    assert report["max_time_error_frames"] == 0 and report["model_calls"] == 10
    model = nodes.load_cached(NAME, torch.float32)
    for k in range(6):
        assert torch.equal(out[3 * k], images[k])  # input frames pass through untouched
    for k in (0, 4):
        for step, t in ((1, 1 / 3), (2, 2 / 3)):
            expected = run_model(model, *pair(images, k, k + 1), torch.tensor([[t]]))[0].permute(1, 2, 0)
            assert torch.allclose(out[3 * k + step], expected, atol=1e-5)
    assert torch.equal(out[16], images[5]) and torch.equal(out[17], images[5])  # the last period holds


def test_results_are_deterministic_and_independent_of_batch_size(tiny_env):
    images = clip(count=3, height=64, width=64, seed=1)
    a, _, _ = run_node(images, mode="multiplier", multiplier=3, batch_size=1)
    b, _, _ = run_node(images, mode="multiplier", multiplier=3, batch_size=1)
    c, _, _ = run_node(images, mode="multiplier", multiplier=3, batch_size=3)
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-5)
    assert a.shape[0] == 7


def test_weights_that_ignore_t_are_bisected(ignoring_t, output_dir):
    images = clip(count=3, height=40, width=40, seed=2)
    out, _, report = run_node(images)
    assert report["strategy"] == "bisection" and report["weights_honour_t"] is False
    assert report["max_time_error_frames"] == pytest.approx(1 / 48)
    model = nodes.load_cached(NAME, torch.float32)
    half = torch.tensor([[0.5]])

    def mid(a, b):
        return run_model(model, a, b, half)

    x0, x1 = pair(images, 0, 1)
    m_1_2 = mid(x0, x1)
    m_1_4, m_3_4 = mid(x0, m_1_2), mid(m_1_2, x1)
    m_3_8, m_5_8 = mid(m_1_4, m_1_2), mid(m_1_2, m_3_4)
    # 1/3 -> 5/16 (between 1/4 and 3/8), 2/3 -> 11/16 (between 5/8 and 3/4)
    assert torch.allclose(out[1], mid(m_1_4, m_3_8)[0].permute(1, 2, 0), atol=1e-5)
    assert torch.allclose(out[2], mid(m_5_8, m_3_4)[0].permute(1, 2, 0), atol=1e-5)
    with pytest.raises(ValueError, match="single_shot"):
        run_node(images, strategy="single_shot")


def test_scene_cuts_hold_instead_of_morphing(tiny_env):
    dark = clip(count=3, seed=3) * 0.3
    light = 0.7 + clip(count=3, seed=4) * 0.3
    images = torch.cat([dark, light])
    out, _, report = run_node(images, mode="multiplier", multiplier=4, scene_cut_threshold=0.5)
    assert report["scene_cuts_after_frames"] == [2] and report["held_frames"] == 3
    for k in (9, 10, 11):  # times 2.25, 2.5, 2.75
        assert torch.equal(out[k], images[2])
    assert torch.equal(out[12], images[3])
    assert not torch.equal(out[5], images[1])  # pairs without a cut are interpolated


def test_progress_per_output_frame_and_interruption(tiny_env):
    images = clip(count=4)
    seen = []
    remove = host.add_progress_listener(lambda value, total: seen.append((value, total)))
    try:
        out, _, _ = run_node(images, mode="multiplier", multiplier=3)
    finally:
        remove()
    assert len(seen) == out.shape[0] == 10 and seen[-1] == (10, 10)

    def stop(value, total):
        if value == 2:
            host.request_interrupt()

    remove = host.add_progress_listener(stop)
    try:
        with pytest.raises(host.Interrupted):
            run_node(images, mode="multiplier", multiplier=3)
    finally:
        remove()


def test_model_is_cached_across_runs(tiny_env):
    first = nodes.load_cached(NAME, torch.float32)
    run_node(clip(count=2))
    assert nodes.load_cached(NAME, torch.float32) is first


def test_long_outputs_go_to_the_disk_backed_store(tiny_env, monkeypatch):
    monkeypatch.setattr(common_frames, "DISK_THRESHOLD_BYTES", 0)
    out, _, _ = run_node(clip(count=2))
    assert common_frames.is_on_disk(out)


def test_bad_inputs_give_clear_errors(tiny_env):
    with pytest.raises(ValueError, match="frames: needs at least 2"):
        run_node(clip(count=1))
    with pytest.raises(ValueError, match="frames: the batches have different sizes"):
        run_node([clip(count=2), clip(count=2, height=48)])
    with pytest.raises(ValueError, match="target_fps"):
        run_node(clip(count=2), source_fps=24.0, target_fps=8.0)
    with pytest.raises(FileNotFoundError, match="film_net_v9.safetensors"):
        run_node(clip(count=2), model_name="film_net_v9.safetensors")
    out, _, _ = run_node([clip(count=2), clip(count=2, seed=1)], mode="multiplier")
    assert out.shape[0] == 7


MEMORY_SCRIPT = """
import json, sys, torch
from comfyui_webtv.nodes.film import interpolate, timing, tiny
torch.set_num_threads(1)
n = int(sys.argv[1])
images = torch.rand(n, 32, 32, 3)
plan = timing.make_plan(timing.multiplier_times(n, 2), n, "single_shot", True, 4)
out = interpolate.interpolate(tiny.random_model(), images, plan, batch_size=16)
assert out.shape[0] == 2 * n - 1
with open("/proc/self/status") as f:  # VmHWM: this process's own peak (ru_maxrss counts the parent's)
    peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"peak_kb": peak,
                  "io_kb": (images.nbytes + out.nbytes) // 1024}))
"""


def test_memory_stays_flat_on_a_1200_frame_input(tmp_path):
    def peak(count):
        env = dict(os.environ, COMFYUI_WEBTV_OUTPUT=str(tmp_path / "output"))
        result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(count)], capture_output=True, text=True,
                                env=env, check=True)
        return json.loads(result.stdout.strip().splitlines()[-1])

    short, long = peak(120), peak(1200)
    growth_mb = (long["peak_kb"] - short["peak_kb"]) / 1024
    io_growth_mb = (long["io_kb"] - short["io_kb"]) / 1024  # the input and output themselves
    assert growth_mb < io_growth_mb + 24, (short, long)
