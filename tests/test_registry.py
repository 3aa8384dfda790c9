"""Comfy Registry metadata: what the registry and ComfyUI's pyproject reader ask for, and the publish workflow."""

from __future__ import annotations

import importlib.metadata
import os
import tomllib
import urllib.parse
import xml.etree.ElementTree as ET

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


def _repo_path(url: str, repository: str) -> str | None:
    """The path inside this repository that ``url`` serves (a raw or blob/raw/tree link on its default
    branch), or None for a URL elsewhere."""
    owner_repo = urllib.parse.urlsplit(repository).path.strip("/").removesuffix(".git")
    parts = urllib.parse.urlsplit(url)
    path = parts.path.strip("/")
    if parts.netloc == "raw.githubusercontent.com" and path.startswith(owner_repo + "/"):
        return path[len(owner_repo) + 1:].split("/", 1)[1]  # after the branch
    if parts.netloc == "github.com" and path.startswith(owner_repo + "/"):
        kind, _branch, rest = path[len(owner_repo) + 1:].split("/", 2)
        assert kind in ("blob", "raw", "tree"), url
        return rest
    return None


def test_every_repository_url_and_path_in_tool_comfy_exists():
    """The registry shows the Icon (and any Banner) from these URLs: each that points into this repository
    names a file that is here; ``includes`` names folders that are here."""
    comfy, repository = PYPROJECT["tool"]["comfy"], PYPROJECT["project"]["urls"]["Repository"]
    checked = []
    for key, value in comfy.items():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str):
                continue
            if item.startswith(("http://", "https://")):
                assert item.startswith("https://"), (key, item)
                relative = _repo_path(item, repository)
                if relative is not None:
                    assert os.path.isfile(os.path.join(ROOT, *relative.split("/"))), (key, item)
                    checked.append(relative)
            elif key == "includes":
                assert os.path.isdir(os.path.join(ROOT, item)), (key, item)
                checked.append(item)
    assert _repo_path(comfy["Icon"], repository) in checked  # the icon is ours, so this test sees it


def test_icon_is_a_small_square_svg():
    """The registry's icon: a square image of at most 400 px, here an SVG that parses."""
    relative = _repo_path(PYPROJECT["tool"]["comfy"]["Icon"], PYPROJECT["project"]["urls"]["Repository"])
    assert relative.endswith(".svg")
    root = ET.parse(os.path.join(ROOT, relative)).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    _, _, width, height = (float(v) for v in root.get("viewBox").split())
    assert width == height
    assert float(root.get("width")) == float(root.get("height")) <= 400
    assert not root.findall(".//{http://www.w3.org/2000/svg}script")
