"""Music of any length: windowed continuation of MusicGen's code stream, decoded chunk by chunk.

MusicGen samples at most a 30-second window. Longer music is made as audiocraft's ``extend_stride``
does: the first window is sampled from the text alone; every further window is prompted with the
last ``context`` seconds of codes of the one before and adds ``window - context`` seconds. The
prompt codes come back unchanged, so the windows form one continuous stream of codes.

That stream is turned into audio by :class:`StreamDecoder`, in fixed chunks with a little code
context on each side; neighbouring chunks are joined with a short crossfade between two decodes
of the same codes, so there is no seam to hear. Nothing grows with the duration except the output
waveform itself, which is allocated once (disk-backed when large, like long IMAGE batches): only
the current window's codes, its attention cache and one decode chunk are held.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..common.frames import new_frames
from .backends import MusicModel
from .sampling import Sampling


@dataclass(frozen=True)
class Windowing:
    """Window lengths in seconds (the defaults are audiocraft's: 30 s windows, 18 s stride)."""

    window: float = 30.0
    context: float = 12.0
    decode_chunk: float = 5.0
    decode_context: float = 0.5
    crossfade: float = 0.1


def new_waveform(batch: int, channels: int, samples: int) -> torch.Tensor:
    """A zeroed ``[B, C, T]`` float32 waveform, memory-mapped from the temp folder when large."""
    return new_frames(batch, channels, samples, channels=1).view(batch, channels, samples)


def plan_windows(total_frames: int, window_frames: int, context_frames: int) -> list[tuple[int, int]]:
    """``(start, end)`` frame ranges of the windows; each starts ``context_frames`` before the previous end."""
    if not 0 <= context_frames < window_frames:
        raise ValueError(f"context ({context_frames} frames) must be shorter than the window ({window_frames} frames).")
    windows = [(0, min(window_frames, total_frames))]
    while windows[-1][1] < total_frames:
        start = windows[-1][1] - context_frames
        windows.append((start, min(start + window_frames, total_frames)))
    return windows


def _ramp(length: int, like: torch.Tensor) -> torch.Tensor:
    """A raised-cosine ramp from 0 to 1 over ``length`` samples (both ends excluded)."""
    x = (torch.arange(length, dtype=torch.float64) + 0.5) / length
    return (0.5 - 0.5 * torch.cos(math.pi * x)).to(like)


class StreamDecoder:
    """Decodes a growing stream of codes into ``out`` ``[B, C, T]``, a bounded chunk at a time.

    A chunk spans ``chunk`` frames; consecutive chunks overlap by ``2 * context`` frames and are
    joined ``context`` frames into the overlap, where both decodes have code context on both sides,
    with a ``crossfade``-sample raised-cosine crossfade. The first chunk starts at frame 0 and the
    last one ends at the stream's end, which need no context.
    """

    def __init__(self, decode: Callable[[torch.Tensor], torch.Tensor], out: torch.Tensor, hop: int,
                 chunk: int, context: int, crossfade: int):
        if chunk <= 2 * context:
            raise ValueError(f"decode chunk ({chunk} frames) must be longer than twice its context ({context} frames).")
        self.decode, self.out, self.hop = decode, out, hop
        self.chunk, self.context = chunk, context
        self.crossfade = min(crossfade, 2 * context * hop)
        self.codes: torch.Tensor | None = None  # frames [self.base, self.base + width) of the stream
        self.base = 0
        self.next_start = 0  # first frame of the next chunk
        self.joins: list[int] = []  # sample positions where two chunks meet

    @property
    def end(self) -> int:
        """The frame index just past the last code pushed."""
        return self.base + (0 if self.codes is None else self.codes.shape[-1])

    def push(self, codes: torch.Tensor) -> None:
        """Append frames ``[B, K, n]`` to the stream and decode every chunk now complete."""
        codes = codes.cpu()
        self.codes = codes if self.codes is None else torch.cat([self.codes, codes], dim=-1)
        while self.end - self.next_start >= self.chunk:
            self._decode(self.next_start + self.chunk, last=False)

    def finish(self) -> None:
        """Decode what is left; the stream ends here."""
        if self.end > self.next_start:
            self._decode(self.end, last=True)
        self.codes = None

    def _decode(self, stop: int, last: bool) -> None:
        start, hop, half = self.next_start, self.hop, self.crossfade // 2
        audio = self.decode(self.codes[..., start - self.base : stop - self.base])
        limit = self.out.shape[-1]
        first = start * hop  # output sample of audio[..., 0]
        join = 0 if start == 0 else (start + self.context) * hop
        write = join
        if start > 0:  # crossfade from the previous chunk over [join - half, join + half)
            a, b = max(join - half, 0), min(join + half, limit)
            if b > a:
                ramp = _ramp(b - a, self.out)
                self.out[..., a:b] = torch.lerp(self.out[..., a:b], audio[..., a - first : b - first].to(self.out), ramp)
                self.joins.append(join)
            write = max(b, a)
        stop_sample = min(stop * hop if last else (stop - self.context) * hop + half, limit)
        if stop_sample > write:
            self.out[..., write:stop_sample] = audio[..., write - first : stop_sample - first].to(self.out)
        self.next_start = stop - 2 * self.context
        keep = self.next_start - self.base
        self.codes, self.base = self.codes[..., keep:], self.next_start


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generators for the block and restore them after (the sampling draws from them)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def total_samples(seconds: float, sample_rate: int) -> int:
    """Samples in ``seconds`` at ``sample_rate`` (rounded to the nearest sample)."""
    return int(round(seconds * sample_rate))


def melody_window(melody: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """The melody that conditions the window starting at sample ``start``, as audiocraft's extension does:
    the melody as given for the first window; for every later one, ``length`` samples (a full window,
    the last window too) of the looped melody from ``start``."""
    if start == 0:
        return melody
    return melody[:, torch.arange(start, start + length) % melody.shape[-1]]


def generate_music(
    model: MusicModel,
    prompts: list[str],
    samples: int,
    params: Sampling,
    seed: int,
    windowing: Windowing = Windowing(),
    melody: torch.Tensor | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_window: Callable[[int, int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """``samples`` samples of music per prompt, ``[B, C, samples]`` at ``model.sample_rate``.

    ``melody`` (``[B, T]`` mono at the model's rate, melody models only) is looped to cover the
    whole piece, each window conditioned on a full window of it from its start (:func:`melody_window`). ``on_progress(done, total)`` runs after
    every sampled token step (the progress and interrupt point); ``on_window(start, end, codes)``
    after every window with its frame range and codes.
    """
    if samples <= 0:
        raise ValueError(f"duration: must be more than 0 samples, got {samples}.")
    if melody is not None and not model.supports_melody:
        raise ValueError(f"melody: '{model.name}' is not a melody model; use musicgen-melody or disconnect the melody.")
    if melody is not None and melody.shape[-1] == 0:
        raise ValueError("melody: is empty; connect audio with at least one sample.")
    hop, rate = model.hop, model.frame_rate
    frames = -(-samples // hop)
    guided = params.guidance > 1
    device = getattr(model, "device", torch.device("cpu"))
    condition = model.condition(prompts, guided)  # a melody only changes it window by window, not its size
    window = min(round(windowing.window * rate), model.max_window_frames(condition))
    context = round(windowing.context * rate)
    if context >= window:
        raise ValueError(
            f"context_seconds: {windowing.context} s must be shorter than the window "
            f"({window / rate:g} s for this model); lower it."
        )
    out = new_waveform(len(prompts), model.audio_channels, samples)
    decoder = StreamDecoder(
        model.decode, out, hop,
        chunk=round(windowing.decode_chunk * rate),
        context=round(windowing.decode_context * rate),
        crossfade=round(windowing.crossfade * model.sample_rate),
    )
    windows = plan_windows(frames, window, context)
    new = [end - prev for (_, end), prev in zip(windows, [0] + [end for _, end in windows])]
    total_steps = sum(model.steps_for(n) for n in new)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total_steps)

    tail = torch.zeros(len(prompts), model.num_codebooks, 0, dtype=torch.long)
    with seeded(seed, device):
        for (start, end), count in zip(windows, new):
            if melody is not None:
                condition = model.condition(prompts, guided, melody_window(melody, start * hop, window * hop))
            codes = model.generate_codes(condition, tail, count, params, step).cpu()
            decoder.push(codes[..., tail.shape[-1] :])
            if on_window is not None:
                on_window(start, end, codes)
            tail = codes[..., -context:] if context else codes[..., :0]
    decoder.finish()
    return out
