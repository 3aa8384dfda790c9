"""The pack's own text-to-video and video-to-video denoising loop over diffusers' blocks, for every stage.

It reproduces diffusers' deprecated ``TextToVideoSDPipeline`` / ``VideoToVideoSDPipeline`` for the
same weights and seed, and opens the loop up for what comes after Zeroscope:

- ``predict(latents, t) -> noise`` is a parameter of :func:`denoise`, so StreamingT2V's conditioned
  UNet and randomized blending's chunk-blended prediction plug into the same loop;
- ``on_step(i, total)`` is called after every step (progress bar and interruption);
- the VAE runs in frame slices, writing decoded frames straight into the output IMAGE (and releasing
  each slice's pages of a disk-backed one, see :func:`~..common.frames.release`);
- the scheduler is a choice (:data:`SCHEDULERS`), built from the model's own scheduler config.

Noise is drawn on the CPU from a seeded generator, so a seed gives the same video on every device.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..common.frames import new_frames, release

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OnStep = Callable[[int, int], None]

# choice -> (diffusers scheduler class, settings over the model's scheduler config)
SCHEDULERS = {
    "DDIM": ("DDIMScheduler", {}),
    "DPM-Solver++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
}
SCHEDULER_TOOLTIP = (
    "Sampler, set up from the model's scheduler config: DDIM (Zeroscope's own), DPM-Solver++ 2M (the official "
    "ModelScope/StreamingT2V first stage; as good at 20-25 steps), UniPC, Euler."
)


def check_scheduler(choice: str) -> str:
    """``choice`` if it is a :data:`SCHEDULERS` name, else an error naming the input and the choices."""
    if choice not in SCHEDULERS:
        raise ValueError(f"scheduler: must be one of {', '.join(SCHEDULERS)}, got {choice!r}.")
    return choice


class LatentVideoModel:
    """Base of the model dataclasses: what the sampler uses (UNet, VAE, text encoder, tokenizer, scheduler config)."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def new_scheduler(self, choice: str | None = None):
        """A fresh scheduler (schedulers keep per-run state): the config's own class, or a :data:`SCHEDULERS` choice."""
        import diffusers

        if choice is None:
            return getattr(diffusers, self.scheduler_config.get("_class_name", "DDIMScheduler")).from_config(self.scheduler_config)
        name, settings = SCHEDULERS[check_scheduler(choice)]
        return getattr(diffusers, name).from_config(self.scheduler_config, **settings)


@dataclass
class PromptEmbeds:
    """Text conditioning: the prompt's hidden states and, with guidance, the negative prompt's."""

    cond: torch.Tensor
    uncond: torch.Tensor | None


def encode_prompt(model: LatentVideoModel, prompt: str, negative_prompt: str, guidance: float) -> PromptEmbeds:
    """Encode the prompt (and the negative prompt when ``guidance > 1``) with the CLIP text encoder."""
    device = model.text_encoder.device

    def encode(text: str) -> torch.Tensor:
        ids = model.tokenizer(
            [text], padding="max_length", max_length=model.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(device)
        return model.text_encoder(ids)[0].to(model.unet.dtype)

    with torch.no_grad():
        return PromptEmbeds(encode(prompt), encode(negative_prompt) if guidance > 1.0 else None)


def noise_predictor(model: LatentVideoModel, embeds: PromptEmbeds, guidance: float, scheduler) -> Predict:
    """The plain UNet prediction with classifier-free guidance (one batched forward pass)."""
    context = embeds.cond if embeds.uncond is None else torch.cat([embeds.uncond, embeds.cond])

    def predict(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch = latents if embeds.uncond is None else torch.cat([latents] * 2)
        batch = scheduler.scale_model_input(batch, t)
        ctx = context.repeat_interleave(latents.shape[0], dim=0) if latents.shape[0] > 1 else context
        noise = model.unet(batch, t, encoder_hidden_states=ctx, return_dict=False)[0]
        if embeds.uncond is None:
            return noise
        uncond, cond = noise.chunk(2)
        return uncond + guidance * (cond - uncond)

    return predict


def frames_as_batch(latents: torch.Tensor) -> torch.Tensor:
    """``[B, C, F, h, w]`` video latents as the ``[B*F, C, h, w]`` image batch a scheduler steps (a view when B is 1)."""
    b, c, f, h, w = latents.shape
    return latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def batch_as_frames(flat: torch.Tensor, batch: int) -> torch.Tensor:
    """The inverse of :func:`frames_as_batch`."""
    n, c, h, w = flat.shape
    return flat.reshape(batch, n // batch, c, h, w).permute(0, 2, 1, 3, 4)


def add_noise(scheduler, latents: torch.Tensor, timestep: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``[B, C, F, h, w]`` latents noised to ``timestep`` by ``scheduler``, with one noise tensor drawn from ``generator``."""
    flat = frames_as_batch(latents)
    noise = torch.randn(flat.shape, generator=generator, dtype=flat.dtype).to(flat.device)
    return batch_as_frames(scheduler.add_noise(flat, noise, timestep), latents.shape[0])


def denoise(
    scheduler,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    predict: Predict,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    on_step: OnStep | None = None,
) -> torch.Tensor:
    """Run ``scheduler`` over ``timesteps``: one ``predict`` and one scheduler step per timestep.

    ``latents`` is ``[B, C, F, h, w]``; the scheduler sees frames as a batch of images, as diffusers'
    video pipelines do, so stateful schedulers advance exactly once per timestep.
    """
    step_kwargs = {}
    params = set(inspect.signature(scheduler.step).parameters)
    if "eta" in params:
        step_kwargs["eta"] = eta
    if "generator" in params:
        step_kwargs["generator"] = generator
    total = len(timesteps)
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            noise = predict(latents, t)
            flat = scheduler.step(frames_as_batch(noise), t, frames_as_batch(latents), **step_kwargs).prev_sample
            latents = batch_as_frames(flat, latents.shape[0])
            if on_step is not None:
                on_step(i + 1, total)
    return latents


def decode_latents(model: LatentVideoModel, latents: torch.Tensor, slice_frames: int = 8, out: torch.Tensor | None = None) -> torch.Tensor:
    """Decode ``[1, C, F, h, w]`` latents to IMAGE ``[F, H, W, 3]``, ``slice_frames`` frames at a time."""
    scale = model.vae.config.scaling_factor
    frames = latents.shape[2]
    height, width = latents.shape[3] * model.vae_scale_factor, latents.shape[4] * model.vae_scale_factor
    out = new_frames(frames, height, width) if out is None else out
    with torch.no_grad():
        for start in range(0, frames, slice_frames):
            part = latents[0, :, start : start + slice_frames].permute(1, 0, 2, 3) / scale
            image = model.vae.decode(part.to(model.vae.dtype)).sample.float()
            out[start : start + part.shape[0]] = ((image / 2 + 0.5).clamp(0, 1)).permute(0, 2, 3, 1).cpu()
            release(out[start : start + part.shape[0]])
    return out


def encode_frames(model: LatentVideoModel, frames: torch.Tensor, generator: torch.Generator, slice_frames: int = 8) -> torch.Tensor:
    """Encode IMAGE frames to ``[1, C, F, h, w]`` latents sampled from the VAE posterior.

    Slices are encoded one at a time; the posterior sample is drawn once for the whole video, which
    gives exactly the latents of a single full-batch encode.
    """
    device, dtype = model.vae.device, model.vae.dtype
    means, stds = [], []
    with torch.no_grad():
        for start in range(0, frames.shape[0], slice_frames):
            part = frames[start : start + slice_frames, ..., :3].permute(0, 3, 1, 2).to(device, dtype) * 2 - 1
            dist = model.vae.encode(part).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
    mean, std = torch.cat(means), torch.cat(stds)
    sample = mean + std * torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(device)
    latents = model.vae.config.scaling_factor * sample
    return latents.permute(1, 0, 2, 3).unsqueeze(0)


def text_to_video(
    model: LatentVideoModel,
    prompt: str,
    negative_prompt: str = "",
    num_frames: int = 24,
    height: int = 320,
    width: int = 576,
    steps: int = 40,
    guidance: float = 9.0,
    seed: int = 0,
    eta: float = 0.0,
    on_step: OnStep | None = None,
    scheduler: str | None = None,
) -> torch.Tensor:
    """Generate IMAGE frames ``[num_frames, height, width, 3]`` from a prompt (``scheduler``: a :data:`SCHEDULERS` choice)."""
    device = model.unet.device
    generator = torch.Generator("cpu").manual_seed(seed)
    embeds = encode_prompt(model, prompt, negative_prompt, guidance)
    scheduler = model.new_scheduler(scheduler)
    scheduler.set_timesteps(steps, device=device)
    f = model.vae_scale_factor
    shape = (1, model.unet.config.in_channels, num_frames, height // f, width // f)
    latents = torch.randn(shape, generator=generator, dtype=model.unet.dtype).to(device) * scheduler.init_noise_sigma
    predict = noise_predictor(model, embeds, guidance, scheduler)
    latents = denoise(scheduler, latents, scheduler.timesteps, predict, generator, eta, on_step)
    return decode_latents(model, latents)


def strength_step_count(steps: int, strength: float) -> int:
    """How many of ``steps`` a video-to-video pass of ``strength`` runs (as diffusers' img2img)."""
    return min(int(steps * strength), steps)


def strength_timesteps(scheduler, steps: int, strength: float) -> torch.Tensor:
    """The tail of the schedule that a video-to-video pass of ``strength`` runs."""
    start = steps - strength_step_count(steps, strength)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start * scheduler.order)
    return scheduler.timesteps[start * scheduler.order :]


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize IMAGE frames (bicubic, clamped to 0..1); a no-op at the same size."""
    if frames.shape[1:3] == (height, width):
        return frames[..., :3]
    resized = F.interpolate(frames[..., :3].permute(0, 3, 1, 2), size=(height, width), mode="bicubic", align_corners=False)
    return resized.clamp(0, 1).permute(0, 2, 3, 1)


def video_to_video(
    model: LatentVideoModel,
    frames: torch.Tensor,
    prompt: str,
    negative_prompt: str = "",
    strength: float = 0.7,
    steps: int = 40,
    guidance: float = 9.0,
    seed: int = 0,
    eta: float = 0.0,
    on_step: OnStep | None = None,
    generator: torch.Generator | None = None,
    embeds: PromptEmbeds | None = None,
    scheduler: str | None = None,
) -> torch.Tensor:
    """Re-render IMAGE ``frames`` with the prompt: encode, noise to ``strength``, denoise, decode."""
    device = model.unet.device
    generator = generator or torch.Generator("cpu").manual_seed(seed)
    embeds = embeds or encode_prompt(model, prompt, negative_prompt, guidance)
    scheduler = model.new_scheduler(scheduler)
    scheduler.set_timesteps(steps, device=device)
    timesteps = strength_timesteps(scheduler, steps, strength)
    latents = encode_frames(model, frames, generator)
    if len(timesteps) == 0:
        return decode_latents(model, latents)
    latents = add_noise(scheduler, latents, timesteps[:1], generator)
    predict = noise_predictor(model, embeds, guidance, scheduler)
    latents = denoise(scheduler, latents, timesteps, predict, generator, eta, on_step)
    return decode_latents(model, latents)
