"""Randomized blending (design note §6.4): enhance a long video chunk by chunk without visible seams.

The video is cut into chunks of ``C`` frames that overlap by ``O``. One noise tensor covers the whole
video. At every denoising step each chunk's guided prediction is computed; in each overlap the cut
between the earlier and the later chunk is drawn at random (frames ``[s, s + k)`` keep the earlier chunk's
prediction, frames from ``s + k`` on take the later one's), and then the scheduler steps the **whole
video once**. That is what stateful schedulers (Euler, DPM multistep) need, and for frame-local
first-order steps it equals stepping each chunk and blending the results.

Memory: the model only ever sees one chunk at a time (moved to the device and back); the whole-video
latents, the blended prediction and the scheduler step stay on the CPU. Latents are 8 x 8 times smaller
spatially than frames (4 channels against 3): at Zeroscope XL's 1024 x 576 a frame is 7 MB as an
IMAGE and 0.15 MB as a latent, so 1200 frames need about 0.2 GB per whole-video latent tensor while
their pixels (1200 x 7 MB) go to a disk-backed IMAGE, written slice by slice as they are decoded.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..common.frames import new_frames, release
from .sampler import (
    LatentVideoModel, OnStep, add_noise, decode_latents, denoise, encode_frames, encode_prompt, noise_predictor,
    resize_frames, strength_timesteps,
)

ChunkPredict = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
FITS = ("stretch", "crop", "pad", "pad, crop back")
LENGTH_MODES = ("trim", "pad")
RANGE_MODES = ("code", "paper")


def chunk_grid(frames: int, chunk: int, overlap: int, length_mode: str = "trim") -> tuple[list[int], int]:
    """Chunk starts and the number of frames the grid covers.

    ``trim`` (the official code) drops the frames past the last full chunk: 240 frames at 24/8 -> 232.
    ``pad`` extends the grid over every frame (the caller pads, then crops back).
    """
    if chunk < 1:
        raise ValueError(f"chunk_length: must be at least 1, got {chunk}.")
    if not 0 <= overlap < chunk:
        raise ValueError(f"overlap: must be 0 to chunk_length - 1 ({chunk - 1}), got {overlap}.")
    if frames < chunk:
        raise ValueError(
            f"frames: the video has {frames} frames, fewer than chunk_length {chunk}; lower chunk_length to at most "
            f"{frames} or connect a longer video."
        )
    if length_mode not in LENGTH_MODES:
        raise ValueError(f"length_mode: must be one of {', '.join(LENGTH_MODES)}, got {length_mode!r}.")
    stride = chunk - overlap
    count = (frames - overlap) // stride if length_mode == "trim" else math.ceil((frames - overlap) / stride)
    return [i * stride for i in range(count)], count * stride + overlap


def cut_offset(generator: torch.Generator, overlap: int, index: int, range_mode: str = "code") -> int:
    """Frames of the overlap that stay with the earlier chunk: 0 for the first chunk, else random.

    ``code`` (the official code): uniform on ``0 .. O-1``; ``paper``: uniform on ``0 .. O``.
    """
    if index == 0 or overlap == 0:
        return 0
    high = overlap if range_mode == "code" else overlap + 1
    return int(torch.randint(0, high, (1,), generator=generator))


def blended_predictor(predict_chunk: ChunkPredict, starts: list[int], chunk: int, overlap: int,
                      generator: torch.Generator, range_mode: str = "code") -> Callable:
    """``predict(latents, t)`` over the whole video from per-chunk predictions cut at random offsets.

    ``predict_chunk(latents[:, :, s:s+C], t, chunk_index)`` returns the chunk's guided prediction.
    Offsets are drawn afresh for every chunk at every evaluation.
    """
    if range_mode not in RANGE_MODES:
        raise ValueError(f"offset_range: must be one of {', '.join(RANGE_MODES)}, got {range_mode!r}.")

    def predict(latents: torch.Tensor, t) -> torch.Tensor:
        blended = torch.empty_like(latents)
        for index, start in enumerate(starts):
            prediction = predict_chunk(latents[:, :, start : start + chunk], t, index)
            k = cut_offset(generator, overlap, index, range_mode)
            blended[:, :, start + k : start + chunk] = prediction[:, :, k:].to(blended)
        return blended

    return predict


def fit_frames(frames: torch.Tensor, width: int, height: int, fit: str) -> torch.Tensor:
    """IMAGE frames to ``width x height``: stretch, crop (fill, centre crop) or pad (fit, black bars)."""
    h, w = frames.shape[1:3]
    if fit == "stretch" or (h, w) == (height, width):
        return resize_frames(frames, height, width)
    if fit == "crop":
        scale = max(height / h, width / w)
        size = (max(height, round(h * scale)), max(width, round(w * scale)))
        big = resize_frames(frames, *size)
        top, left = (size[0] - height) // 2, (size[1] - width) // 2
        return big[:, top : top + height, left : left + width]
    box = pad_box(h, w, width, height)
    inner = resize_frames(frames, box[2], box[3])
    out = torch.zeros(frames.shape[0], height, width, 3, dtype=inner.dtype)
    out[:, box[0] : box[0] + box[2], box[1] : box[1] + box[3]] = inner
    return out


def pad_box(h: int, w: int, width: int, height: int) -> tuple[int, int, int, int]:
    """``(top, left, inner_height, inner_width)`` of an ``h x w`` picture fitted into ``width x height``."""
    scale = min(height / h, width / w)
    ih, iw = min(height, round(h * scale)), min(width, round(w * scale))
    return (height - ih) // 2, (width - iw) // 2, ih, iw


def enhance(
    model: LatentVideoModel,
    frames: torch.Tensor,
    prompt: str,
    negative_prompt: str = "",
    chunk: int = 24,
    overlap: int = 8,
    strength: float = 0.6,
    steps: int = 30,
    guidance: float = 7.5,
    seed: int = 0,
    eta: float = 0.0,
    width: int = 1024,
    height: int = 576,
    fit: str = "stretch",
    length_mode: str = "trim",
    range_mode: str = "code",
    slice_frames: int = 8,
    on_step: OnStep | None = None,
    on_chunk: Callable[[], None] | None = None,
    scheduler: str | None = None,
) -> torch.Tensor:
    """Re-render a long IMAGE video with a video-to-video model and randomized blending.

    Frames are encoded slice by slice, noised to ``strength`` with one noise tensor, denoised with the
    blended prediction and decoded slice by slice into a (disk-backed when large) IMAGE.
    ``on_step`` follows the denoising steps, ``on_chunk`` every chunk's model evaluation; ``scheduler`` is a
    :data:`~.sampler.SCHEDULERS` choice (the model's own when None).
    """
    if fit not in FITS:
        raise ValueError(f"fit: must be one of {', '.join(FITS)}, got {fit!r}.")
    count = frames.shape[0]
    starts, covered = chunk_grid(count, chunk, overlap, length_mode)
    used = min(count, covered)
    device = model.unet.device
    generator = torch.Generator("cpu").manual_seed(seed)
    cuts = torch.Generator("cpu").manual_seed((seed + 1) % 2**64)
    embeds = encode_prompt(model, prompt, negative_prompt, guidance)

    factor = model.vae_scale_factor
    latents = torch.empty(1, model.unet.config.in_channels, covered, height // factor, width // factor)
    for start in range(0, used, slice_frames):
        part = fit_frames(frames[start : min(start + slice_frames, used)], width, height, fit)
        latents[:, :, start : start + part.shape[0]] = encode_frames(model, part, generator, slice_frames).float().cpu()
        release(frames[start : start + part.shape[0]])
    if covered > used:  # pad mode: repeat the last frame's latent, cropped away after decoding
        latents[:, :, used:] = latents[:, :, used - 1 : used]

    scheduler = model.new_scheduler(scheduler)
    scheduler.set_timesteps(steps)
    timesteps = strength_timesteps(scheduler, steps, strength)
    if len(timesteps):
        latents = add_noise(scheduler, latents, timesteps[:1], generator)  # ONE noise tensor for the whole video
        guided = noise_predictor(model, embeds, guidance, scheduler)
        dtype = model.unet.dtype

        def predict_chunk(x: torch.Tensor, t: torch.Tensor, index: int) -> torch.Tensor:
            prediction = guided(x.to(device, dtype), t.to(device)).float().cpu()
            if on_chunk is not None:
                on_chunk()
            return prediction

        predict = blended_predictor(predict_chunk, starts, chunk, overlap, cuts, range_mode)
        latents = denoise(scheduler, latents, timesteps, predict, generator, eta, on_step)

    crop = fit == "pad, crop back"
    box = pad_box(frames.shape[1], frames.shape[2], width, height) if crop else (0, 0, height, width)
    out = new_frames(used, box[2], box[3])
    with torch.no_grad():
        for start in range(0, used, slice_frames):
            part = latents[:, :, start : min(start + slice_frames, used)].to(device)
            target = out[start : start + part.shape[2]]
            if crop:
                image = decode_latents(model, part, slice_frames)
                target[:] = image[:, box[0] : box[0] + box[2], box[1] : box[1] + box[3]]
                release(target)
            else:
                decode_latents(model, part, slice_frames, out=target)
    return out
