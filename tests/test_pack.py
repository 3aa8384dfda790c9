"""The pack as ComfyUI sees it: importable from a hyphenated custom_nodes folder, every node well formed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from comfyui_webtv import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, WEB_DIRECTORY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pack_loads_from_a_hyphenated_custom_nodes_folder(tmp_path):
    """Import the pack the way ComfyUI's loader does: a module named after the folder path, with a stub
    top-level ``nodes`` module in the way to catch any bare ``import nodes``."""
    custom = tmp_path / "custom_nodes"
    custom.mkdir()
    (custom / "ComfyUI-WebTV").symlink_to(ROOT, target_is_directory=True)
    (tmp_path / "nodes.py").write_text("raise ImportError('the pack imported ComfyUI\\'s top-level nodes module')\n")
    script = (
        "import importlib.util, sys\n"
        f"path = {str(custom / 'ComfyUI-WebTV')!r}\n"
        "name = path.replace('.', '_x_')\n"
        "spec = importlib.util.spec_from_file_location(name, path + '/__init__.py', submodule_search_locations=[path])\n"
        "module = importlib.util.module_from_spec(spec); sys.modules[name] = module; spec.loader.exec_module(module)\n"
        "print(len(module.NODE_CLASS_MAPPINGS), module.WEB_DIRECTORY)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(len(NODE_CLASS_MAPPINGS)), "./js"]


def test_web_directory_holds_only_extension_modules():
    """ComfyUI imports every .js under WEB_DIRECTORY as a frontend extension module."""
    scripts = [os.path.join(d, f) for d, _, files in os.walk(os.path.join(ROOT, WEB_DIRECTORY)) for f in files if f.endswith(".js")]
    assert scripts
    for script in scripts:
        with open(script) as f:
            assert "app.registerExtension(" in f.read(), f"{script} is not an extension module"


@pytest.mark.parametrize("name", sorted(NODE_CLASS_MAPPINGS))
def test_node_contract(name):
    cls = NODE_CLASS_MAPPINGS[name]
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and spec.get("required") is not None
    assert isinstance(cls.RETURN_TYPES, tuple) and callable(getattr(cls(), cls.FUNCTION))
    assert cls.CATEGORY.startswith("WebTV/") and cls.DESCRIPTION.strip()
    assert name in NODE_DISPLAY_NAME_MAPPINGS
    if hasattr(cls, "RETURN_NAMES"):
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
    if hasattr(cls, "OUTPUT_IS_LIST"):
        assert len(cls.OUTPUT_IS_LIST) == len(cls.RETURN_TYPES)
    for section in ("required", "optional"):
        for input_name, entry in spec.get(section, {}).items():
            kind = entry[0]
            assert isinstance(kind, (str, list)), f"{name}.{input_name}: bad type {kind!r}"
            opts = entry[1] if len(entry) > 1 else {}
            assert opts.get("tooltip", "").strip(), f"{name}.{input_name} has no tooltip"
            if kind in ("INT", "FLOAT") and "default" in opts:
                assert opts.get("min", float("-inf")) <= opts["default"] <= opts.get("max", float("inf"))
            if isinstance(kind, list) and "default" in opts:
                assert opts["default"] in kind, f"{name}.{input_name}: default not among the options"
