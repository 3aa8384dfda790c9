"""MusicGen behind one interface, whether transformers or audiocraft runs it.

The windowed generator (generate.py) needs four things from a backend: text (and melody)
conditioning, sampling a window of audio codes that continues a code prompt, decoding codes to
audio, and the numbers that relate codes to samples. :class:`TransformersMusicGen` (the default,
``MusicgenForConditionalGeneration`` and ``MusicgenMelodyForConditionalGeneration``) and
:class:`AudiocraftMusicGen` (an optional install, ``audiocraft.models.MusicGen``) both provide them.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Callable

import torch

from . import chroma, sampling
from .sampling import Sampling

# MusicGen was trained on 30-second segments; no window is longer.
TRAINED_WINDOW_SECONDS = 30.0
# T5's limit where a tokenizer states none (facebook/musicgen-* state 512).
PROMPT_TOKENS = 512


class MusicModel:
    """What a MusicGen backend offers the windowed generator."""

    backend: str
    name: str
    path: str
    sample_rate: int
    frame_rate: int
    audio_channels: int
    num_codebooks: int
    supports_melody: bool

    @property
    def hop(self) -> int:
        """Audio samples per code frame (640 for the 32 kHz EnCodec)."""
        return self.sample_rate // self.frame_rate

    def steps_for(self, new_frames: int) -> int:
        """Sampling steps for ``new_frames`` frames (the codebook delay adds a few)."""
        return sampling.steps_for(new_frames, self.num_codebooks, self.audio_channels)

    def max_window_frames(self, condition) -> int:
        """The longest window (prompt + new frames) this model takes with ``condition``."""
        return round(TRAINED_WINDOW_SECONDS * self.frame_rate)

    def modules(self) -> tuple[torch.nn.Module, ...]:
        """The torch modules to move to the device for a run."""
        raise NotImplementedError

    def condition(self, prompts: list[str], guided: bool, melody: torch.Tensor | None = None):
        """Conditioning for ``prompts`` (and a ``[B, T]`` mono melody at ``sample_rate``, melody models only)."""
        raise NotImplementedError

    def generate_codes(self, condition, prompt: torch.Tensor, new_frames: int, params: Sampling,
                       on_step: Callable[[], None] | None = None) -> torch.Tensor:
        """Codes ``[B, K, P + new_frames]`` continuing ``prompt`` ``[B, K, P]`` (``P`` may be 0)."""
        raise NotImplementedError

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, K, T]`` to audio ``[B, audio_channels, T * hop]`` (float32)."""
        raise NotImplementedError


def cache_keyword(module: torch.nn.Module) -> str:
    """The name ``module.forward`` takes (and returns) its KV cache by: ``cache`` from transformers 5.x on,
    ``past_key_values`` before (5.x still accepts that through a shim that logs a deprecation)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


class TransformersMusicGen(MusicModel):
    """A transformers MusicGen or MusicGen Melody with its T5 tokenizer."""

    backend = "transformers"

    def __init__(self, name: str, path: str, model, tokenizer, chroma_config: dict | None = None):
        self.name, self.path, self.model, self.tokenizer = name, path, model, tokenizer
        config = model.config
        self.sample_rate = int(config.audio_encoder.sampling_rate)
        self.frame_rate = int(round(config.audio_encoder.frame_rate))
        self.audio_channels = int(config.decoder.audio_channels)
        self.num_codebooks = int(config.decoder.num_codebooks)
        self.supports_melody = config.model_type == "musicgen_melody"
        start = [model.generation_config.decoder_start_token_id, config.decoder.bos_token_id, config.decoder.pad_token_id]
        self.start_token = int(next(t for t in start if t is not None))
        self.lag = sampling.delays(self.num_codebooks, self.audio_channels)
        self.chroma_config = {**chroma.DEFAULTS, **(chroma_config or {})}

    def modules(self):
        return (self.model,)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def max_window_frames(self, condition) -> int:
        room = self.model.config.decoder.max_position_embeddings - max(self.lag) - 1
        if self.supports_melody:
            room -= condition["prefix"].shape[1]
        return min(super().max_window_frames(condition), room)

    @torch.no_grad()
    def condition(self, prompts, guided, melody=None):
        model, device = self.model, self.device
        dtype = next(model.decoder.parameters()).dtype
        tokens = self.tokenizer(list(prompts), return_tensors="pt", padding=True).to(device)
        limit = self.tokenizer.model_max_length
        limit = limit if 0 < limit < 10**6 else PROMPT_TOKENS  # transformers' "no limit" is 1e30
        if tokens.input_ids.shape[1] > limit:
            raise ValueError(
                f"prompt: is {tokens.input_ids.shape[1]} tokens long; {self.name}'s text encoder reads at most "
                f"{limit}. Shorten it (a few phrases: genre, instruments, mood, tempo)."
            )
        states = model.text_encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        if getattr(model, "enc_to_dec_proj", None) is not None:
            states = model.enc_to_dec_proj(states)
        mask = tokens.attention_mask
        if guided:  # the unconditional half: no text
            states = torch.cat([states, torch.zeros_like(states)])
            mask = torch.cat([mask, torch.zeros_like(mask)])
        states = (states * mask[..., None]).to(dtype)
        if not self.supports_melody:
            return {"states": states, "mask": mask}
        if melody is not None and melody.shape[0] != len(prompts):
            raise ValueError(f"melody: has {melody.shape[0]} item(s) but there are {len(prompts)} prompt(s).")
        null = torch.zeros(len(prompts), 1, model.config.num_chroma, device=device)
        null[..., 0] = 1  # MusicGen Melody's "no melody"
        length = model.config.chroma_length
        if melody is None:
            notes = null
        else:
            c = self.chroma_config
            # only the first `length` chroma frames are used: keep just the samples they see
            melody = melody[:, : (length - 1) * c["hop_length"] + c["n_fft"] // 2]
            notes = chroma.chromagram(melody.to(device), self.sample_rate, c["n_fft"], c["hop_length"], model.config.num_chroma)
        if guided:
            notes = torch.cat([notes, null.expand_as(notes)])
        notes = notes.to(dtype)
        if getattr(model, "audio_enc_to_dec_proj", None) is not None:
            notes = model.audio_enc_to_dec_proj(notes)
        notes = notes.repeat(1, -(-length // notes.shape[1]), 1)[:, :length]  # tile to the chroma window
        return {"prefix": torch.cat([notes, states], dim=1)}

    def _forward(self, condition):
        """The decoder run incrementally, with logits for the last position only (a prompt's are never needed)."""
        body, heads = self.model.decoder.model, self.model.decoder.lm_heads
        named = cache_keyword(body)

        def forward(ids, cache):
            flat = ids.reshape(-1, ids.shape[-1])
            if self.supports_melody:  # the conditioning is a prefix, consumed into the cache on the first call
                prefix = condition["prefix"] if cache is None else None
                out = body(input_ids=flat, encoder_hidden_states=prefix, use_cache=True, **{named: cache})
            else:
                out = body(
                    input_ids=flat, encoder_hidden_states=condition["states"],
                    encoder_attention_mask=condition["mask"], use_cache=True, **{named: cache},
                )
            last = out.last_hidden_state[:, -1]
            return torch.stack([head(last) for head in heads], dim=1), getattr(out, named)

        return forward

    def generate_codes(self, condition, prompt, new_frames, params, on_step=None):
        return sampling.sample_codes(
            self._forward(condition), prompt.to(self.device), new_frames, self.lag, self.start_token, params, on_step
        )

    @torch.no_grad()
    def decode(self, codes):
        codec = self.model.audio_encoder  # fp32 whatever the language model's dtype (see loader)
        codes = codes.to(self.device)
        scales = [None] * codes.shape[0]
        if self.audio_channels == 2:  # stereo models interleave left and right codebooks
            parts = [codec.decode(codes[None, :, side::2], audio_scales=scales).audio_values for side in (0, 1)]
            audio = torch.cat(parts, dim=1)
        else:
            audio = codec.decode(codes[None], audio_scales=scales).audio_values
        return audio.float()


def audiocraft_params(params: Sampling, temperature_name: str = "temperature") -> dict:
    """``Sampling`` as keyword arguments of audiocraft's ``LMModel.generate`` (``temp`` before audiocraft 1.2)."""
    return {
        "use_sampling": params.temperature > 0,
        temperature_name: params.temperature if params.temperature > 0 else 1.0,
        "top_k": params.top_k,
        "top_p": params.top_p,
        "cfg_coef": params.guidance,
        "two_step_cfg": False,
    }


class AudiocraftMusicGen(MusicModel):
    """An ``audiocraft.models.MusicGen`` (checkpoint pair ``state_dict.bin`` + ``compression_state_dict.bin``)."""

    backend = "audiocraft"

    def __init__(self, name: str, path: str, model):
        self.name, self.path, self.model = name, path, model
        self.sample_rate = int(model.sample_rate)
        self.frame_rate = int(round(model.frame_rate))
        self.audio_channels = int(model.audio_channels)
        self.num_codebooks = int(model.lm.num_codebooks)
        self.supports_melody = "self_wav" in model.lm.condition_provider.conditioners
        self.window_seconds = min(float(model.max_duration), TRAINED_WINDOW_SECONDS)

    def modules(self):
        return (self.model.lm, self.model.compression_model)

    @property
    def device(self) -> torch.device:
        return next(self.model.lm.parameters()).device

    def max_window_frames(self, condition) -> int:
        return round(self.window_seconds * self.frame_rate)

    def _autocast(self):
        device = self.device
        if device.type == "cpu":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.float16)

    @torch.no_grad()
    def condition(self, prompts, guided, melody=None):
        self.model.device = self.device  # audiocraft builds its null melody on model.device
        wavs = None if melody is None else [m[None].to(self.device) for m in melody]
        attributes, _ = self.model._prepare_tokens_and_attributes(list(prompts), None, melody_wavs=wavs)
        return attributes

    @torch.no_grad()
    def generate_codes(self, condition, prompt, new_frames, params, on_step=None):
        length = prompt.shape[-1]
        callback = (lambda done, total: on_step()) if on_step is not None else None
        named = "temperature" if "temperature" in inspect.signature(self.model.lm.generate).parameters else "temp"
        with self._autocast():
            return self.model.lm.generate(
                prompt.to(self.device) if length else None, condition,
                max_gen_len=length + new_frames, callback=callback, **audiocraft_params(params, named),
            )

    @torch.no_grad()
    def decode(self, codes):
        return self.model.compression_model.decode(codes.to(self.device), None).float()
