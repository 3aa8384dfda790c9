"""Randomized blending: chunk grid, cut ownership and its distribution, one noise, one step (§10.8)."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from comfyui_webtv.nodes.diffusion import blending
from comfyui_webtv.nodes.diffusion.blending import blended_predictor, chunk_grid, cut_offset, enhance
from comfyui_webtv.nodes.zeroscope.loader import load_model
from comfyui_webtv.nodes.diffusion.sampler import denoise
from comfyui_webtv.nodes.zeroscope.tiny import save_tiny_model


SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                 set_alpha_to_one=False, steps_offset=1)


def frame_local(x: torch.Tensor, t, index: int = 0) -> torch.Tensor:
    """A prediction that depends only on each frame's own latents (the same for every chunk)."""
    return 0.3 * x + 0.01 * torch.sin(x * float(t) / 100)


def test_chunk_grid_arithmetic():
    starts, covered = chunk_grid(240, 24, 8)
    assert covered == 232 and starts == list(range(0, 217, 16)) and starts[-1] + 24 == 232  # official trim
    assert chunk_grid(80, 24, 8)[1] == 72
    assert chunk_grid(24, 24, 8) == ([0], 24)
    starts, covered = chunk_grid(240, 24, 8, "pad")
    assert covered == 248 and len(starts) == 15 and starts[-1] + 24 == covered
    assert chunk_grid(48, 24, 0) == ([0, 24], 48)
    with pytest.raises(ValueError, match="frames: the video has 20 frames, fewer than chunk_length 24"):
        chunk_grid(20, 24, 8)
    with pytest.raises(ValueError, match="overlap: must be 0 to chunk_length - 1"):
        chunk_grid(100, 24, 24)


def test_frame_local_prediction_gives_the_unchunked_result():
    starts, covered = chunk_grid(40, 12, 4)
    x = torch.randn(1, 4, covered, 4, 4)
    predict = blended_predictor(frame_local, starts, 12, 4, torch.Generator().manual_seed(0))
    assert torch.equal(predict(x, torch.tensor(500)), frame_local(x, torch.tensor(500)))
    for make in (lambda: DDIMScheduler(**SCHEDULER), lambda: EulerDiscreteScheduler(**{k: v for k, v in SCHEDULER.items() if k not in ("clip_sample", "set_alpha_to_one")})):
        plain, chunked = make(), make()
        for s in (plain, chunked):
            s.set_timesteps(6)
        whole = denoise(plain, x * plain.init_noise_sigma, plain.timesteps, frame_local)
        blended = denoise(chunked, x * chunked.init_noise_sigma, chunked.timesteps, predict)
        assert torch.allclose(blended, whole, atol=1e-6)


def chunk_ids(x: torch.Tensor, t, index: int) -> torch.Tensor:
    return torch.full_like(x, float(index))


@pytest.mark.parametrize("mode,values", [("code", range(0, 5)), ("paper", range(0, 6))])
def test_overlap_ownership_and_offset_distribution(mode, values):
    chunk, overlap = 12, 5  # overlaps shorter than the stride: each frame is shared by two chunks at most
    starts, covered = chunk_grid(4 * (chunk - overlap) + overlap, chunk, overlap)
    predict = blended_predictor(chunk_ids, starts, chunk, overlap, torch.Generator().manual_seed(1), mode)
    x = torch.zeros(1, 1, covered, 1, 1)
    seen = Counter()
    draws = 1500
    for _ in range(draws):
        owner = predict(x, 0)[0, 0, :, 0, 0]
        assert torch.equal(owner[: chunk - overlap], torch.zeros(chunk - overlap))
        for i, s in enumerate(starts[1:], start=1):
            overlap_owner = owner[s : s + overlap]
            k = int((overlap_owner == i - 1).sum())
            # frames before s + k from the earlier chunk, from s + k on from the later one
            assert torch.equal(overlap_owner[:k], torch.full((k,), float(i - 1)))
            assert torch.equal(overlap_owner[k:], torch.full((overlap - k,), float(i)))
            seen[k] += 1
        assert torch.equal(owner[-(chunk - overlap):], torch.full((chunk - overlap,), float(len(starts) - 1)))
    assert set(seen) == set(values)  # "code" never keeps the whole overlap with the earlier chunk
    expected = draws * (len(starts) - 1) / len(values)
    assert all(abs(seen[v] - expected) < 0.15 * expected for v in values)  # uniform


def test_zero_overlap_gives_independent_chunks():
    starts, covered = chunk_grid(30, 10, 0)
    x = torch.randn(1, 4, covered, 4, 4)
    predict = blended_predictor(lambda c, t, i: c * (i + 1), starts, 10, 0, torch.Generator())
    out = predict(x, 0)
    for i, s in enumerate(starts):
        assert torch.equal(out[:, :, s : s + 10], x[:, :, s : s + 10] * (i + 1))
    assert cut_offset(torch.Generator(), 0, 3) == 0


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_blend_then_one_step_equals_step_per_chunk_then_blend(eta):
    """DDIM: one step on the blended prediction == per-chunk steps with the shared variance noise, blended."""
    scheduler = DDIMScheduler(**SCHEDULER)
    scheduler.set_timesteps(10)
    t = scheduler.timesteps[3]
    chunk, overlap = 8, 4
    starts, covered = chunk_grid(20, chunk, overlap)
    x = torch.randn(covered, 4, 4, 4)
    variance = torch.randn_like(x)  # shared over the whole video, so overlaps see the same noise
    offsets = [0, 2, 3, 1]

    def per_chunk_prediction(i):
        return torch.sin(x[starts[i] : starts[i] + chunk] * (i + 2))

    blended = torch.empty_like(x)
    expected = torch.empty_like(x)
    for i, s in enumerate(starts):
        k = offsets[i]
        blended[s + k : s + chunk] = per_chunk_prediction(i)[k:]
        stepped = copy.deepcopy(scheduler).step(per_chunk_prediction(i), t, x[s : s + chunk], eta=eta,
                                                variance_noise=variance[s : s + chunk]).prev_sample
        expected[s + k : s + chunk] = stepped[k:]
    once = scheduler.step(blended, t, x, eta=eta, variance_noise=variance).prev_sample
    assert torch.allclose(once, expected, atol=1e-6)


def test_stateful_scheduler_advances_once_per_timestep():
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    scheduler.set_timesteps(7)
    calls = []
    step = scheduler.step
    scheduler.step = lambda *a, **k: calls.append(1) or step(*a, **k)
    starts, covered = chunk_grid(28, 8, 4)
    predict = blended_predictor(frame_local, starts, 8, 4, torch.Generator().manual_seed(0))
    denoise(scheduler, torch.randn(1, 4, covered, 4, 4) * scheduler.init_noise_sigma, scheduler.timesteps, predict)
    assert len(calls) == 7 and scheduler.step_index == 7


# ---------------------------------------------------------------- the enhancer on a tiny Zeroscope XL

@pytest.fixture(scope="module")
def xl(tmp_path_factory):
    return load_model(save_tiny_model(str(tmp_path_factory.mktemp("xl") / "zeroscope_v2_XL"), seed=1))


def test_enhance_one_noise_evaluations_and_seed(xl, monkeypatch):
    added = []
    new_scheduler = xl.new_scheduler

    def spied(choice=None):
        s = new_scheduler(choice)
        add = s.add_noise
        s.add_noise = lambda original, noise, t: added.append(noise.shape) or add(original, noise, t)
        return s

    monkeypatch.setattr(xl, "new_scheduler", spied)
    forwards = []
    hook = xl.unet.register_forward_hook(lambda *a: forwards.append(1))
    frames = torch.rand(21, 40, 40, 3, generator=torch.Generator().manual_seed(0))
    out = enhance(xl, frames, "a lake", chunk=8, overlap=4, strength=0.5, steps=4, seed=9, width=64, height=48)
    hook.remove()
    assert out.shape == (20, 48, 64, 3) and 0 <= out.min() and out.max() <= 1  # trimmed to the grid: 20
    assert added == [torch.Size([20, 4, 6, 8])]  # ONE noise tensor for the whole video
    assert len(forwards) == 4 * 2  # 4 chunks x 2 steps run: exactly what plain chunked enhancement costs
    again = enhance(xl, frames, "a lake", chunk=8, overlap=4, strength=0.5, steps=4, seed=9, width=64, height=48)
    other = enhance(xl, frames, "a lake", chunk=8, overlap=4, strength=0.5, steps=4, seed=10, width=64, height=48)
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_enhance_pad_mode_and_fits(xl):
    frames = torch.rand(21, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    padded = enhance(xl, frames, "x", chunk=8, overlap=4, strength=0.3, steps=2, width=64, height=32, length_mode="pad",
                     fit="pad, crop back")
    assert padded.shape == (21, 32, 32, 3)  # every frame kept; bars cropped away again
    kept = enhance(xl, frames, "x", chunk=8, overlap=4, strength=0.3, steps=2, width=64, height=32, fit="pad")
    assert kept.shape == (20, 32, 64, 3)
    fitted = blending.fit_frames(frames[:2], 64, 32, "pad")  # the enhancer's input: black bars left and right
    assert fitted[:, :, :16].max() == 0 and fitted[:, :, 48:].max() == 0 and torch.equal(fitted[:, :, 16:48], frames[:2])
    with pytest.raises(ValueError, match="fewer than chunk_length 24"):
        enhance(xl, frames[:20], "x")
    assert blending.fit_frames(frames[:2], 48, 16, "crop").shape == (2, 16, 48, 3)
