"""Shared fixtures: standalone folders, tiny models built once per session."""

from __future__ import annotations

import pytest
import torch

from comfyui_webtv.cli.tiny import make_tiny_models
from comfyui_webtv.nodes import host
from comfyui_webtv.nodes.common import models

# Tiny models: thread start-up costs more than it saves, and CI shares its two cores with ffmpeg.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> str:
    """A ComfyUI-style models folder holding every tiny model (``make-tiny-models``)."""
    path = str(tmp_path_factory.mktemp("models"))
    make_tiny_models(path)
    return path


@pytest.fixture
def output_dir(tmp_path, monkeypatch) -> str:
    """A fresh standalone output folder (temp folder beside it)."""
    out = tmp_path / "output"
    out.mkdir()
    monkeypatch.setitem(host._standalone, "output", str(out))
    return str(out)


@pytest.fixture
def tiny_env(tiny_models_dir, output_dir, monkeypatch) -> dict:
    """Standalone host pointed at the tiny models and a fresh output folder."""
    monkeypatch.setitem(host._standalone, "models", tiny_models_dir)
    yield {"models": tiny_models_dir, "output": output_dir}
    models.clear_cache()
