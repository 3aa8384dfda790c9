"""Fitting audio to a video: channels, sample rate and length, exact to the sample.

The target length of ``frames`` frames at ``fps`` is ``round(frames * rate / fps)`` samples. Audio
is made stereo, resampled with a windowed-sinc filter (no torchaudio needed), then cut, looped
(with a short crossfade at each loop point) or padded with silence to exactly that length, and
faded in and out.
"""

from __future__ import annotations

import math

import torch

from ..broadcast.mp4 import check_audio

BROADCAST_RATES = (48000, 44100)
WHEN_SHORTER = ("loop", "pad with silence")
LOOP_CROSSFADE_SECONDS = 0.05


def video_samples(frames: int, fps: float, sample_rate: int) -> int:
    """Samples that last exactly as long as ``frames`` frames at ``fps`` (to the nearest sample)."""
    if frames < 1:
        raise ValueError(f"images: needs at least 1 frame, got {frames}.")
    if fps <= 0:
        raise ValueError(f"fps: must be positive, got {fps}.")
    return int(round(frames * sample_rate / fps))


def to_stereo(waveform: torch.Tensor) -> torch.Tensor:
    """``[B, C, T]`` to two channels: mono is doubled, 5.1 (FL FR FC LFE BL BR) is downmixed, other layouts averaged."""
    channels = waveform.shape[1]
    if channels == 2:
        return waveform
    if channels == 1:
        return waveform.expand(-1, 2, -1).clone()
    if channels == 6:
        fl, fr, fc, _, bl, br = waveform.unbind(1)
        c = 1 / math.sqrt(2)
        stereo = torch.stack([fl + c * fc + c * bl, fr + c * fc + c * br], dim=1)
        return stereo / (1 + 2 * c)
    return waveform.mean(dim=1, keepdim=True).expand(-1, 2, -1).clone()


def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """``[B, C, T]`` to ``[B, T]`` by averaging the channels."""
    return waveform.mean(dim=1)


def _sinc_kernels(up: int, down: int, zeros: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """Polyphase filters ``[up, 1, down + 2 * pad]`` and ``pad``: phase ``r`` makes output ``q * up + r``."""
    cutoff = rolloff * min(1.0, up / down)  # of the input's Nyquist
    half_width = zeros / cutoff  # in input samples
    pad = math.ceil(half_width)
    offsets = torch.arange(-pad, down + pad, dtype=torch.float64)
    phase = torch.arange(up, dtype=torch.float64)[:, None] * down / up
    tau = phase - offsets[None, :]  # distance from each output instant to each input sample
    window = torch.where(tau.abs() < half_width, torch.cos(math.pi * tau / (2 * half_width)) ** 2, 0.0)
    kernels = cutoff * torch.sinc(cutoff * tau) * window
    return kernels[:, None, :].float(), pad


def resample(waveform: torch.Tensor, from_rate: int, to_rate: int, zeros: int = 24, rolloff: float = 0.945) -> torch.Tensor:
    """Band-limited resampling of ``[..., T]`` to ``ceil(T * to_rate / from_rate)`` samples."""
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample_rate: must be positive, got {from_rate} -> {to_rate}.")
    if from_rate == to_rate:
        return waveform
    g = math.gcd(from_rate, to_rate)
    down, up = from_rate // g, to_rate // g
    length = waveform.shape[-1]
    out_length = -(-length * up // down)
    kernels, pad = _sinc_kernels(up, down, zeros, rolloff)
    flat = waveform.reshape(-1, 1, length).float()
    blocks = -(-out_length // up)  # output blocks of `up` samples, one per `down` input samples
    padded = torch.nn.functional.pad(flat, (pad, max(blocks * down + pad - length, 0)))
    out = torch.nn.functional.conv1d(padded, kernels.to(flat.device), stride=down)[..., :blocks]
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)[:, :out_length]
    return out.reshape(*waveform.shape[:-1], out_length).to(waveform.dtype)


def fit_length(waveform: torch.Tensor, samples: int, when_shorter: str, crossfade: int) -> torch.Tensor:
    """``[B, C, T]`` cut to ``samples``, or extended by looping (crossfaded) or by silence."""
    if when_shorter not in WHEN_SHORTER:
        raise ValueError(f"when_shorter: {when_shorter!r} is not one of {', '.join(WHEN_SHORTER)}.")
    length = waveform.shape[-1]
    if length >= samples:
        return waveform[..., :samples].clone()
    out = waveform.new_zeros(*waveform.shape[:-1], samples)
    out[..., :length] = waveform
    if when_shorter == "pad with silence":
        return out
    crossfade = min(crossfade, length // 4)
    ramp = (torch.arange(crossfade, dtype=torch.float64) + 0.5) / max(crossfade, 1)
    ramp = (0.5 - 0.5 * torch.cos(math.pi * ramp)).to(waveform)
    end = length
    while end < samples:  # each repeat starts `crossfade` early, fading over the previous tail
        start = end - crossfade
        if crossfade:
            out[..., start:end] = torch.lerp(out[..., start:end], waveform[..., :crossfade], ramp)
        count = min(length - crossfade, samples - end)
        out[..., end : end + count] = waveform[..., crossfade : crossfade + count]
        end += count
    return out


def apply_fades(waveform: torch.Tensor, fade_in: int, fade_out: int) -> torch.Tensor:
    """Raised-cosine fade-in over the first ``fade_in`` and fade-out over the last ``fade_out`` samples."""
    length = waveform.shape[-1]
    for count, at_start in ((min(fade_in, length), True), (min(fade_out, length), False)):
        if count <= 0:
            continue
        gain = (0.5 - 0.5 * torch.cos(math.pi * (torch.arange(count, dtype=torch.float64) + 0.5) / count)).to(waveform)
        if at_start:
            waveform[..., :count] *= gain
        else:
            waveform[..., length - count :] *= gain.flip(0)
    return waveform


def fit_audio_to_video(audio: dict, frames: int, fps: float, sample_rate: int = 48000, when_shorter: str = "loop",
                       fade_in: float = 0.0, fade_out: float = 0.0) -> dict:
    """AUDIO made stereo at ``sample_rate`` and exactly as long as ``frames`` frames at ``fps``."""
    check_audio(audio, "audio")
    if int(sample_rate) not in BROADCAST_RATES:
        raise ValueError(f"sample_rate: {sample_rate} is not a broadcast rate; use 48000 or 44100.")
    waveform = audio["waveform"].float()
    if waveform.shape[-1] == 0:
        raise ValueError("audio: is empty (0 samples); connect audio that has sound.")
    for name, value in (("fade_in", fade_in), ("fade_out", fade_out)):
        if value < 0:
            raise ValueError(f"{name}: must be 0 or more seconds, got {value}.")
    samples = video_samples(frames, fps, sample_rate)
    stereo = resample(to_stereo(waveform), int(audio["sample_rate"]), sample_rate)
    fitted = fit_length(stereo, samples, when_shorter, round(LOOP_CROSSFADE_SECONDS * sample_rate))
    fitted = apply_fades(fitted, round(fade_in * sample_rate), round(fade_out * sample_rate))
    return {"waveform": fitted, "sample_rate": int(sample_rate)}
