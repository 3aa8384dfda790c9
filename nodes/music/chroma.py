"""Melody conditioning for MusicGen Melody: a one-hot chromagram computed in torch (no torchaudio)."""

from __future__ import annotations

import numpy as np
import torch

# facebook/musicgen-melody's preprocessor_config.json
DEFAULTS = {"sampling_rate": 32000, "n_fft": 16384, "hop_length": 4096, "num_chroma": 12}


def chromagram(wav: torch.Tensor, sample_rate: int, n_fft: int, hop_length: int, num_chroma: int = 12) -> torch.Tensor:
    """``[B, T]`` mono audio to ``[B, frames, num_chroma]``: for each hop, 1 at the strongest pitch class.

    The power spectrogram (Hann window, centred, normalised by the window's energy) is projected
    onto pitch classes with librosa's chroma filters, as MusicGen Melody was trained.
    """
    from transformers.audio_utils import chroma_filter_bank

    wav = wav.float()
    if wav.shape[-1] < n_fft:
        missing = n_fft - wav.shape[-1]
        wav = torch.nn.functional.pad(wav, (missing // 2, missing - missing // 2))
    window = torch.hann_window(n_fft, device=wav.device)
    spec = torch.stft(wav, n_fft, hop_length, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = spec.abs().pow(2) / window.pow(2).sum()
    filters = chroma_filter_bank(num_frequency_bins=n_fft, num_chroma=num_chroma, sampling_rate=sample_rate, tuning=0)
    raw = torch.einsum("cf,bft->btc", torch.from_numpy(np.asarray(filters)).float().to(wav.device), power)
    return torch.nn.functional.one_hot(raw.argmax(-1), num_chroma).to(wav.dtype)
