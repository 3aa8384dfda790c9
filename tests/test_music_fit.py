"""Fit Audio to Video: exact lengths, resampling, channels, loops, fades and bad input (no models)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from comfyui_webtv.nodes.music import fit
from comfyui_webtv.nodes.music.nodes import FitAudioToVideo


def sine(freq: float, rate: int, seconds: float, channels: int = 1) -> torch.Tensor:
    t = torch.arange(round(rate * seconds), dtype=torch.float64) / rate
    return torch.sin(2 * math.pi * freq * t).float().expand(1, channels, -1).clone()


@pytest.mark.parametrize(
    "frames,fps,rate,expected",
    [(24, 8.0, 48000, 144000), (24, 8.0, 44100, 132300), (100, 24000 / 1001, 48000, 200200), (7, 30.0, 44100, 10290)],
)
def test_video_samples_are_exact(frames, fps, rate, expected):
    assert fit.video_samples(frames, fps, rate) == expected


@pytest.mark.parametrize("src,dst", [(32000, 48000), (32000, 44100), (48000, 32000), (44100, 48000), (44101, 48000),
                                     (48000, 44101), (22050, 44100)])
def test_resample_keeps_a_tone_and_gives_the_exact_length(src, dst):
    wave = sine(1000.0, src, 0.25)
    out = fit.resample(wave, src, dst)
    assert out.shape[-1] == math.ceil(wave.shape[-1] * dst / src)
    expected = sine(1000.0, dst, out.shape[-1] / dst)[..., : out.shape[-1]]
    edge = dst // 100  # the filter sees zeros past both ends
    error = (out - expected)[..., edge:-edge].abs().max().item()
    assert error < 1e-4, error


@pytest.mark.parametrize("src,dst", [(32000, 44100), (48000, 32000)])
def test_both_resampling_paths_give_the_same_samples(src, dst, monkeypatch):
    """Rates with a large filter bank go output by output; on common rates that path must agree with the
    polyphase convolution."""
    wave = torch.randn(2, 2, 5000, generator=torch.Generator().manual_seed(0))
    polyphase = fit.resample(wave, src, dst)
    monkeypatch.setattr(fit, "POLYPHASE_TAPS", 0)
    monkeypatch.setattr(fit, "GATHER_BLOCK", 777)  # blocks that do not divide the length
    assert torch.allclose(fit.resample(wave, src, dst), polyphase, atol=1e-5)


def test_resampling_memory_follows_the_audio_not_the_rates(tmp_path):
    """44101 -> 48000 once built a 48000 x 44155 filter bank (8.5 GB, 17 GB at its peak). A fresh process,
    address space capped so that a regression fails instead of taking the machine, fits 2 s of it."""
    code = textwrap.dedent("""
        import json, resource
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
        import torch
        torch.set_num_threads(1)
        from comfyui_webtv.nodes.music import fit
        audio = {"waveform": torch.randn(1, 2, 2 * 44101), "sample_rate": 44101}
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = fit.fit_audio_to_video(audio, 48, 24.0, 48000)["waveform"]
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({"shape": list(out.shape), "finite": bool(torch.isfinite(out).all()), "grown_kib": grown}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [1, 2, 96000] and result["finite"]
    assert result["grown_kib"] < 128 * 1024, result  # the audio is 1.4 MB; the old filter bank alone 8.5 GB


def test_resample_removes_what_the_new_rate_cannot_hold():
    tone = sine(20000.0, 48000, 0.25)  # above 16 kHz, the Nyquist frequency of 32 kHz
    out = fit.resample(tone, 48000, 32000)
    assert out[..., 400:-400].abs().max().item() < 0.02


def test_fit_converts_to_broadcast_stereo_and_exact_length():
    audio = {"waveform": sine(440.0, 32000, 1.0), "sample_rate": 32000}
    video = torch.zeros(24, 8, 8, 3)
    (out,) = FitAudioToVideo().fit(audio, video, 8.0, "44100", "loop", 0.0, 0.0)
    assert out["sample_rate"] == 44100
    assert out["waveform"].shape == (1, 2, 132300)
    assert torch.equal(out["waveform"][:, 0], out["waveform"][:, 1])


def test_longer_audio_is_cut_to_the_sample():
    audio = {"waveform": torch.randn(2, 2, 96000) * 0.1, "sample_rate": 48000}
    out = fit.fit_audio_to_video(audio, 10, 8.0, 48000)
    assert out["waveform"].shape == (2, 2, 60000)
    assert torch.allclose(out["waveform"], audio["waveform"][..., :60000])


def test_shorter_audio_loops_with_a_crossfade_or_pads_with_silence():
    wave = torch.rand(1, 2, 4800) - 0.5
    audio = {"waveform": wave, "sample_rate": 48000}
    padded = fit.fit_audio_to_video(audio, 3, 10.0, 48000, "pad with silence")["waveform"]
    assert padded.shape[-1] == 14400
    assert torch.equal(padded[..., :4800], wave) and not padded[..., 4800:].any()

    looped = fit.fit_audio_to_video(audio, 3, 10.0, 48000, "loop")["waveform"]
    xf = min(round(fit.LOOP_CROSSFADE_SECONDS * 48000), 4800 // 4)
    assert looped.shape[-1] == 14400
    assert torch.equal(looped[..., : 4800 - xf], wave[..., : 4800 - xf])
    # the second pass continues right after the crossfade, unchanged
    assert torch.equal(looped[..., 4800 : 2 * 4800 - 2 * xf], wave[..., xf : 4800 - xf])
    # inside the crossfade the loop moves from the end of the audio to its start
    ramp_mid = looped[..., 4800 - xf // 2]
    assert torch.allclose(ramp_mid, 0.5 * (wave[..., 4800 - xf // 2] + wave[..., xf - xf // 2]), atol=0.05)


def test_fades_start_and_end_at_silence_and_leave_the_middle():
    audio = {"waveform": torch.ones(1, 2, 48000), "sample_rate": 48000}
    out = fit.fit_audio_to_video(audio, 8, 8.0, 48000, fade_in=0.25, fade_out=0.5)["waveform"]
    assert out[..., 0].abs().max() < 1e-3 and out[..., -1].abs().max() < 1e-3
    assert torch.all(out[..., 12000:24000] == 1)
    assert torch.all(out[..., 1:12000] >= out[..., :11999])  # rising
    assert torch.all(out[..., 24001:] <= out[..., 24000:-1])  # falling


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_any_channel_count_becomes_stereo(channels):
    wave = torch.rand(1, channels, 3200)
    out = fit.fit_audio_to_video({"waveform": wave, "sample_rate": 48000}, 1, 15.0, 48000)["waveform"]
    assert out.shape == (1, 2, 3200)
    if channels == 2:
        assert torch.equal(out, wave)
    if channels == 6:  # centre goes to both sides, LFE is dropped
        c = 1 / math.sqrt(2)
        left = (wave[:, 0] + c * wave[:, 2] + c * wave[:, 4]) / (1 + 2 * c)
        assert torch.allclose(out[:, 0], left)


@pytest.mark.parametrize(
    "audio,kwargs,match",
    [
        ([1, 2, 3], {}, "audio: expected ComfyUI AUDIO"),
        ({"waveform": torch.zeros(2, 100), "sample_rate": 48000}, {}, "audio: waveform must be"),
        ({"waveform": torch.zeros(1, 2, 100), "sample_rate": 0}, {}, "audio sample_rate: must be above 0"),
        ({"waveform": torch.zeros(1, 2, 100), "sample_rate": math.nan}, {}, "audio sample_rate: must be a finite number"),
        ({"waveform": torch.zeros(1, 2, 100), "sample_rate": math.inf}, {}, "audio sample_rate: must be a finite number"),
        ({"waveform": torch.zeros(1, 2, 100), "sample_rate": 48000}, {"sample_rate": "nan"}, "sample_rate: 'nan' is not a broadcast"),
        ({"waveform": torch.zeros(1, 2, 100), "sample_rate": 48000}, {"sample_rate": math.inf}, "sample_rate: inf is not a broadcast"),
        ({"waveform": torch.zeros(1, 2, 100), "sample_rate": 48000}, {"fade_out": math.nan}, "fade_out: must be a finite number"),
        ({"waveform": torch.zeros(1, 2, 100), "sample_rate": 48000}, {"fade_in": math.inf}, "fade_in: must be a finite number"),
        ({"waveform": torch.zeros(1, 2, 100), "sample_rate": 48000}, {"fps": math.nan}, "fps: must be a finite number"),
        ({"waveform": torch.zeros(1, 2, 100), "sample_rate": 48000}, {"fps": math.inf}, "fps: must be a finite number"),
        ({"waveform": torch.zeros(1, 2, 0), "sample_rate": 48000}, {}, "audio: is empty"),
        ({"waveform": torch.zeros(1, 2, 100), "sample_rate": 48000}, {"sample_rate": 22050}, "sample_rate: 22050"),
        ({"waveform": torch.zeros(1, 2, 100), "sample_rate": 48000}, {"fade_in": -1.0}, "fade_in: must be at least 0"),
        ({"waveform": torch.zeros(1, 2, 100), "sample_rate": 48000}, {"fps": 0.0}, "fps: must be at least 0.1"),
        ({"waveform": torch.zeros(1, 2, 100), "sample_rate": 48000}, {"when_shorter": "stretch"}, "when_shorter: 'stretch'"),
    ],
)
def test_bad_input_is_named(audio, kwargs, match):
    args = {"frames": 8, "fps": 8.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        fit.fit_audio_to_video(audio, **args)


def test_fit_node_names_a_bad_video():
    audio = {"waveform": torch.zeros(1, 2, 100), "sample_rate": 48000}
    with pytest.raises(ValueError, match="video: expected an IMAGE"):
        FitAudioToVideo().fit(audio, torch.zeros(8, 8, 3), 8.0, "48000", "loop", 0.0, 0.0)
