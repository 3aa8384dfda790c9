"""Comfy Registry metadata: what the registry and ComfyUI's pyproject reader ask for, and the publish workflow."""

from __future__ import annotations

import importlib.metadata
import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

with open(os.path.join(ROOT, "pyproject.toml"), "rb") as _f:
    PYPROJECT = tomllib.load(_f)


def test_project_metadata_for_the_registry():
    project, comfy = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    assert "comfyui" not in project["name"].lower()  # the registry's advice: the name without "ComfyUI"
    assert project["urls"]["Repository"].startswith("https://github.com/")
    classifiers = project["classifiers"]
    assert any(c.startswith("Operating System :: ") for c in classifiers)
    assert any(c.startswith(("Environment :: GPU :: ", "Environment :: NPU :: ")) for c in classifiers)
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["Icon"].startswith("https://")
    assert comfy["requires-comfyui"].startswith(">=")


def test_installed_under_the_registry_name_with_the_same_import_package():
    assert importlib.metadata.distribution(PYPROJECT["project"]["name"]).version == PYPROJECT["project"]["version"]
    assert "comfyui_webtv" in PYPROJECT["tool"]["setuptools"]["package-dir"]
    # extras that pull other extras name the pack by its project name (else pip looks for it on an index)
    for extra, requirements in PYPROJECT["project"]["optional-dependencies"].items():
        for requirement in requirements:
            if "[" in requirement:
                assert requirement.split("[")[0] == PYPROJECT["project"]["name"], (extra, requirement)


def test_publish_workflow_uses_the_registry_action_with_a_secret_token():
    with open(os.path.join(ROOT, ".github", "workflows", "publish.yml"), encoding="utf-8") as f:
        text = f.read()
    assert "uses: Comfy-Org/publish-node-action@" in text
    assert "personal_access_token: ${{ secrets.REGISTRY_ACCESS_TOKEN }}" in text
