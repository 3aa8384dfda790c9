"""Shared fixtures: standalone folders, tiny models built once per session."""

from __future__ import annotations

import pathlib

import pytest
import torch

from comfyui_webtv.cli.tiny import make_tiny_models
from comfyui_webtv.nodes import host
from comfyui_webtv.nodes.common import models

# Tiny models: thread start-up costs more than it saves, and CI shares its two cores with ffmpeg.
torch.set_num_threads(1)

PACK_ROOT = pathlib.Path(__file__).resolve().parent.parent


class _PackRootAsFolder:
    """Collect the pack's root as a plain folder, not a package.

    The root holds the pack's ``__init__.py``; as a pytest Package it is imported as a loose module,
    whose relative imports fail when the clone's name is not an identifier (``ComfyUI-WebTV``).
    """

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path, parent):
        if path.resolve() == PACK_ROOT:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config):
    # A conftest's own hooks do not apply to its parent folder; a registered plugin applies everywhere.
    config.pluginmanager.register(_PackRootAsFolder(), "webtv-pack-root-as-folder")


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
