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
from ..common import checks

BROADCAST_RATES = (48000, 44100)
WHEN_SHORTER = ("loop", "pad with silence")
LOOP_CROSSFADE_SECONDS = 0.05
MIN_FPS = 0.1  # the widgets' minimum: at most 10 s of audio per frame
MAX_FADE_SECONDS = 3600.0
POLYPHASE_TAPS = 1 << 22  # largest polyphase filter bank (floats); past it, outputs are computed in blocks
GATHER_BLOCK = 1 << 14  # outputs per block when they are


def video_samples(frames: int, fps: float, sample_rate: int) -> int:
    """Samples that last exactly as long as ``frames`` frames at ``fps`` (to the nearest sample)."""
    if frames < 1:
        raise ValueError(f"images: needs at least 1 frame, got {frames}.")
    return int(round(frames * sample_rate / checks.finite("fps", fps, low=MIN_FPS)))


def checked_audio(audio: dict, name: str = "audio") -> tuple[torch.Tensor, int]:
    """:func:`check_audio`, with a sample rate that is not a positive finite number named first."""
    if isinstance(audio, dict) and "sample_rate" in audio:
        checks.positive(f"{name} sample_rate", audio["sample_rate"])
    return check_audio(audio, name)


def broadcast_rate(value) -> int:
    """``value`` (a number or the node's choice string) as one of :data:`BROADCAST_RATES`."""
    rate = next((r for r in BROADCAST_RATES if str(value) == str(r) or value == r), None)
    if rate is None:
        raise ValueError(f"sample_rate: {value!r} is not a broadcast rate; use 48000 or 44100.")
    return rate


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


def _sinc(tau: torch.Tensor, cutoff: float, half_width: float) -> torch.Tensor:
    """The filter's taps at distances ``tau`` (input samples, float64): windowed sinc, raised-cosine window."""
    window = torch.where(tau.abs() < half_width, torch.cos(math.pi * tau / (2 * half_width)) ** 2, 0.0)
    return (cutoff * torch.sinc(cutoff * tau) * window).float()


def _polyphase(flat: torch.Tensor, down: int, up: int, cutoff: float, half_width: float, pad: int,
               out_length: int) -> torch.Tensor:
    """``[N, 1, T]`` resampled by one strided convolution: ``up`` filters spanning ``down + 2 * pad`` inputs,
    filter ``r`` making outputs ``q * up + r``."""
    offsets = torch.arange(-pad, down + pad, dtype=torch.float64)
    phase = torch.arange(up, dtype=torch.float64)[:, None] * down / up
    kernels = _sinc(phase - offsets[None, :], cutoff, half_width)[:, None, :]
    blocks = -(-out_length // up)  # output blocks of `up` samples, one per `down` input samples
    padded = torch.nn.functional.pad(flat, (pad, max(blocks * down + pad - flat.shape[-1], 0)))
    out = torch.nn.functional.conv1d(padded, kernels.to(flat.device), stride=down)[..., :blocks]
    return out.transpose(1, 2).reshape(flat.shape[0], -1)[:, :out_length]


def _gathered(flat: torch.Tensor, down: int, up: int, cutoff: float, half_width: float, pad: int,
              out_length: int) -> torch.Tensor:
    """``[N, 1, T]`` resampled output by output, in blocks: each output's ``2 * pad + 1`` taps, from one
    filter per phase that occurs (``min(up, out_length)`` of them)."""
    padded = torch.nn.functional.pad(flat[:, 0], (pad, pad + 1))
    taps = torch.arange(-pad, pad + 1, device=flat.device)
    phases = torch.arange(min(up, out_length), device=flat.device).split(GATHER_BLOCK)
    bank = torch.cat([_sinc(((p * down) % up).double()[:, None] / up - taps.double()[None, :], cutoff, half_width)
                      for p in phases])
    out = padded.new_empty(flat.shape[0], out_length)
    for start in range(0, out_length, GATHER_BLOCK):
        n = torch.arange(start, min(start + GATHER_BLOCK, out_length), device=flat.device)
        inputs = (n * down).div(up, rounding_mode="floor")[:, None] + taps[None, :] + pad
        out[:, start : start + n.shape[0]] = torch.einsum("cnt,nt->cn", padded[:, inputs], bank[n % up])
    return out


def resample(waveform: torch.Tensor, from_rate: int, to_rate: int, zeros: int = 24, rolloff: float = 0.945) -> torch.Tensor:
    """Band-limited resampling of ``[..., T]`` to ``ceil(T * to_rate / from_rate)`` samples.

    Common rate pairs run as one polyphase convolution; pairs whose filter bank would be large (rates
    with a small common divisor, such as 44101 -> 48000) go output by output, so memory follows the
    audio's length, never the rates' least common multiple.
    """
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample_rate: must be positive, got {from_rate} -> {to_rate}.")
    if from_rate == to_rate:
        return waveform
    g = math.gcd(from_rate, to_rate)
    down, up = from_rate // g, to_rate // g
    length = waveform.shape[-1]
    out_length = -(-length * up // down)
    cutoff = rolloff * min(1.0, up / down)  # of the input's Nyquist
    half_width = zeros / cutoff  # in input samples
    pad = math.ceil(half_width)
    flat = waveform.reshape(-1, 1, length).float()
    run = _polyphase if up * (down + 2 * pad) <= POLYPHASE_TAPS else _gathered
    out = run(flat, down, up, cutoff, half_width, pad, out_length)
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
    checked_audio(audio, "audio")
    sample_rate = broadcast_rate(sample_rate)
    waveform = audio["waveform"].float()
    if waveform.shape[-1] == 0:
        raise ValueError("audio: is empty (0 samples); connect audio that has sound.")
    fade_in, fade_out = (checks.finite(name, value, low=0.0, high=MAX_FADE_SECONDS) for name, value in (("fade_in", fade_in), ("fade_out", fade_out)))
    samples = video_samples(frames, fps, sample_rate)
    stereo = resample(to_stereo(waveform), int(audio["sample_rate"]), sample_rate)
    fitted = fit_length(stereo, samples, when_shorter, round(LOOP_CROSSFADE_SECONDS * sample_rate))
    fitted = apply_fades(fitted, round(fade_in * sample_rate), round(fade_out * sample_rate))
    return {"waveform": fitted, "sample_rate": int(sample_rate)}
