"""Tiny random FILM models in the release formats: TorchScript archives with the 82 official keys, and safetensors."""

from __future__ import annotations

import os
import tempfile
import warnings

import torch

from ..common.models import claim_tiny_path
from . import weights
from .model import FilmConfig, FilmNet

# The real architecture and parameter names at a small width.
TINY_CONFIG = FilmConfig(filters=4, flow_filters=(4, 4, 8, 8))


def random_model(config: FilmConfig = TINY_CONFIG, honours_t: bool = True, seed: int = 0) -> FilmNet:
    """A randomly initialised FILM (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FilmNet(config, honours_t=honours_t).eval().requires_grad_(False)


def save_torchscript(path: str, model: FilmNet, dtype: torch.dtype = torch.float32) -> str:
    """Save ``model`` as the releases are saved: ``torch.jit.script(model).save(path)``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=weights.JIT_DEPRECATED)
        scripted = torch.jit.script(FilmNet(model.config, model.honours_t).to(dtype))
    scripted.load_state_dict(model.state_dict())
    scripted.save(path)
    return path


def make(models_dir: str) -> list[str]:
    """``models_dir/film/film_net_fp32.safetensors``: a tiny model converted from a TorchScript archive (honours t)."""
    dst = claim_tiny_path(os.path.join(models_dir, "film", weights.DEFAULT_NAME))
    with tempfile.TemporaryDirectory() as tmp:
        src = save_torchscript(os.path.join(tmp, "film_net_fp32.pt"), random_model())
        return [weights.convert(src, dst)]
