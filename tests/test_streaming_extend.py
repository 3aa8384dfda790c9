"""The autoregressive StreamingT2V loop on the tiny model: bookkeeping, determinism, memory (§10.7)."""

from __future__ import annotations

import pytest
import torch

from comfyui_webtv.nodes.common import frames as frames_mod
from comfyui_webtv.nodes.streaming import extend as extend_mod
from comfyui_webtv.nodes.streaming import tiny
from comfyui_webtv.nodes.streaming.config import TINY
from comfyui_webtv.nodes.streaming.extend import extend, extension_steps, fit_square
from comfyui_webtv.nodes.streaming.model import load_model
from comfyui_webtv.nodes.diffusion import sampler as sampler_mod
from comfyui_webtv.nodes.diffusion.sampler import decode_latents

from .frame_pages import mapped_rss


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    base, ckpt, _ = tiny.make(str(tmp_path_factory.mktemp("st2v_models")))
    return load_model(ckpt, base)


R = TINY.resolution


def clip(count=16, seed=0):
    return torch.rand(count, 48, 80, 3, generator=torch.Generator().manual_seed(seed))


def test_frame_count_arithmetic():
    # the official count: 16 + 8 (n - 1) frames after n - 1 extension steps (1200 frames: 148 steps)
    for n in range(1, 151):
        assert extension_steps(16, 16 + 8 * (n - 1), 8) == n - 1
    assert extension_steps(16, 1200, 8) == 148 and extension_steps(16, 37, 8) == 3
    assert extension_steps(24, 16, 8) == 0


def test_bookkeeping(model, monkeypatch):
    """Control frames, kept frames and the anchor, chunk by chunk."""
    controls, denoised, decoded, anchors = [], [], [], []
    cam_forward = model.cam.forward
    monkeypatch.setattr(model.cam, "forward", lambda x, t, ctx, control: controls.append(control.clone()) or cam_forward(x, t, ctx, control))
    encoder_forward = model.image_encoder.forward
    monkeypatch.setattr(model.image_encoder, "forward", lambda f: anchors.append(f.clone()) or encoder_forward(f))
    real_denoise = extend_mod.denoise
    monkeypatch.setattr(extend_mod, "denoise", lambda *a, **k: denoised.append(real_denoise(*a, **k)) or denoised[-1])
    real_decode = extend_mod.decode_latents
    monkeypatch.setattr(extend_mod, "decode_latents", lambda m, lat, **k: decoded.append(lat.clone()) or real_decode(m, lat, **k))

    init = clip()
    out = extend(model, init, "a red car", "blurry", total_frames=37, steps=1, seed=3, anchor_index=5)
    assert out.shape == (37, R, R, 3)
    assert torch.equal(out[:16], fit_square(init, R, "crop"))
    assert len(denoised) == 3 and [d.shape[2] for d in decoded] == [8, 8, 5]
    positions = [16, 24, 32]
    for i, position in enumerate(positions):
        expected = out[position - 8 : position].permute(0, 3, 1, 2) * 2 - 1  # last 8 frames of the video so far
        assert torch.equal(controls[i][:8], expected) and torch.equal(controls[i][8:], expected)  # both CFG branches
        assert torch.equal(decoded[i], denoised[i][:, :, 8 : 8 + decoded[i].shape[2]])  # kept frames: window[8:]
    assert len(anchors) == 1  # the anchor's tokens are computed once and stay constant
    anchor = fit_square(init[5:6], R, "crop").permute(0, 3, 1, 2) * 2 - 1
    assert torch.equal(anchors[0][0:1], anchor) and torch.equal(anchors[0][1:], torch.zeros_like(anchor))


def test_same_seed_same_video_and_fewer_frames_per_step(model):
    init = clip(10, seed=1)
    a = extend(model, init, "waves", total_frames=20, steps=1, seed=5, frames_per_step=5)
    b = extend(model, init, "waves", total_frames=20, steps=1, seed=5, frames_per_step=5)
    c = extend(model, init, "waves", total_frames=20, steps=1, seed=6, frames_per_step=5)
    assert a.shape[0] == 20 and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    short = extend(model, init, "waves", total_frames=6, steps=1)  # no extension: the clip, cut
    assert torch.equal(short, fit_square(init[:6], R, "crop"))


def test_decoding_kept_frames_equals_decoding_all_then_slicing(model):
    latents = torch.randn(1, 4, 16, R // 8, R // 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(decode_latents(model, latents[:, :, 8:]), decode_latents(model, latents)[8:], atol=1e-6)


def test_finished_frames_go_to_the_disk_backed_store(model, monkeypatch, output_dir):
    monkeypatch.setattr(frames_mod, "DISK_THRESHOLD_BYTES", 1)
    out = extend(model, clip(8), "rain", total_frames=16, steps=1)
    assert frames_mod.is_on_disk(out) and out.shape[0] == 16


def test_bad_input(model):
    with pytest.raises(ValueError, match="frames: .*last 8 frames, got 7"):
        extend(model, clip(7), "x", total_frames=24)
    with pytest.raises(ValueError, match="anchor_index: 16 is outside"):
        extend(model, clip(16), "x", total_frames=24, anchor_index=16)
    with pytest.raises(ValueError, match="frames_per_step: must be 1 to 8"):
        extend(model, clip(16), "x", total_frames=24, frames_per_step=9)


def test_square_fits():
    wide = torch.rand(2, 18, 32, 3, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    padded = fit_square(wide, 32, "pad")  # 32 x 18 picture centred, black bars above and below
    assert padded.shape == (2, 32, 32, 3) and padded[:, :7].max() == 0 and padded[:, 25:].max() == 0
    assert torch.equal(padded[:, 7:25], wide)
    cropped = fit_square(wide, 18, "crop")  # the centre 18 x 18 square, no resize needed
    assert torch.equal(cropped, wide[:, :, 7:25])
    with pytest.raises(ValueError, match="fit: must be one of crop, pad, stretch"):
        fit_square(wide, 32, "squash")


def test_frame_store_threshold_is_a_setting():
    assert not frames_mod.is_on_disk(frames_mod.new_frames(4, 8, 8, threshold_bytes=4 * 8 * 8 * 3 * 4))
    assert frames_mod.is_on_disk(frames_mod.new_frames(4, 8, 8, threshold_bytes=4 * 8 * 8 * 3 * 4 - 1))


def test_released_frames_leave_the_process_and_keep_their_data(output_dir, tmp_path):
    frames = frames_mod.new_frames(64, 32, 32, on_disk=True)
    data = torch.rand(64, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    frames[:] = data
    size = data.numel() * 4
    assert mapped_rss(frames) == size  # every written page counts in the RSS until released
    frames_mod.release(frames[16:48])
    assert size // 2 - 8192 <= size - mapped_rss(frames) <= size // 2 + 8192  # half of it, give or take a shared page
    frames_mod.release(frames)
    assert mapped_rss(frames) == 0 and torch.equal(frames, data)  # the data comes back from the file
    in_ram = data.clone()
    frames_mod.release(in_ram)
    assert torch.equal(in_ram, data)
    path = tmp_path / "private.f32"  # a private file mapping would lose its writes: release leaves it alone
    path.write_bytes(bytes(64 * 4))
    private = torch.from_file(str(path), shared=False, size=64)
    private[:] = 7
    frames_mod.release(private)
    assert torch.equal(private, torch.full((64,), 7.0))


@pytest.mark.parametrize("releasing", [True, False])
def test_extension_loop_keeps_no_finished_frames_mapped(model, monkeypatch, output_dir, releasing):
    """The loop releases what it wrote and read: the store's resident pages do not grow with the frame count."""
    if not releasing:  # the loop as it was: every finished frame stays in the RSS (shows the check can fail)
        monkeypatch.setattr(extend_mod, "release", lambda frames: None)
        monkeypatch.setattr(sampler_mod, "release", lambda frames: None)
    monkeypatch.setattr(frames_mod, "DISK_THRESHOLD_BYTES", 0)
    out = extend(model, clip(16), "snow", total_frames=48, steps=1)
    frame = R * R * 3 * 4
    assert frames_mod.is_on_disk(out)
    resident = mapped_rss(out)
    if releasing:  # at most what one read maps around itself (the kernel's fault-around, 64 KiB by default)
        assert resident < 8 * frame
    else:
        assert resident >= 40 * frame


@pytest.mark.parametrize("releasing", [True, False])
def test_save_video_and_film_keep_no_disk_frames_resident(monkeypatch, output_dir, tmp_path, releasing):
    """The stages after the loop read (Save Video) and write (FILM) a disk-backed video without keeping it."""
    from comfyui_webtv.nodes.broadcast import mp4
    from comfyui_webtv.nodes.film import interpolate, timing
    from comfyui_webtv.nodes.film import tiny as film_tiny

    if not releasing:  # as it was: every frame read or written stays in the RSS (shows the check can fail)
        monkeypatch.setattr(mp4, "release", lambda frames: None)
        monkeypatch.setattr(frames_mod, "release", lambda frames: None)
    monkeypatch.setattr(frames_mod, "DISK_THRESHOLD_BYTES", 0)
    video = frames_mod.new_frames(48, 64, 64)
    video[:] = torch.rand(48, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    frames_mod.release(video)
    frame = 64 * 64 * 3 * 4
    mp4.write_mp4(video, str(tmp_path / "read.mp4"), 24.0, preset="ultrafast")
    read = mapped_rss(video)
    plan = timing.make_plan(timing.multiplier_times(24, 2), 24, "single_shot", True, 4)
    frames_mod.release(video)
    out = interpolate.interpolate(film_tiny.random_model(), video[:24], plan, batch_size=4)
    assert frames_mod.is_on_disk(out) and out.shape[0] == 47
    if releasing:  # at most the kernel's fault-around (64 KiB) beside the last frames touched
        assert read < 8 * frame and mapped_rss(video) < 8 * frame and mapped_rss(out) < 8 * frame
    else:
        assert read >= 40 * frame and mapped_rss(video) >= 20 * frame and mapped_rss(out) >= 40 * frame
