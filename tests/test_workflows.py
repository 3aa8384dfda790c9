"""Every workflow in workflows/: UI files match the node definitions, UI and API twins agree, and each
API workflow runs on tiny models through the test executor."""

from __future__ import annotations

import glob
import os

import pytest

from comfyui_webtv.workflow import runner as wx
from comfyui_webtv import NODE_CLASS_MAPPINGS
from comfyui_webtv.nodes.broadcast import channel as channels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UI_FILES = sorted(f for f in glob.glob(os.path.join(ROOT, "workflows", "*.json")) if not f.endswith("_api.json"))
API_FILES = sorted(glob.glob(os.path.join(ROOT, "workflows", "*_api.json")))
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}

# The example workflows carry real settings (576 x 320, 40 steps...). Tiny random models keep the real
# architecture, whose attention cost grows with the square of the frame size, so CI runs each workflow
# with these widgets capped. Everything else (graph, models, other widgets) runs as shipped.
CI_CAPS = {"width": 64, "height": 64, "frames": 8, "steps": 2, "shots": 2}


def _ids(files):
    return [os.path.basename(f) for f in files]


def _skip_foreign(path: str) -> None:
    """Skip a workflow that uses nodes outside the pack (core video nodes): the real-ComfyUI suite runs it."""
    data = wx.load(path)
    types = {n["type"] for n in data["nodes"]} if "nodes" in data else {n["class_type"] for n in data.values()}
    foreign = sorted(types - set(NODE_CLASS_MAPPINGS) - FRONTEND_ONLY)
    if foreign:
        pytest.skip(f"uses nodes outside the pack ({', '.join(foreign)}): tests/test_comfyui_real.py runs it in ComfyUI")


def widgets_of(class_type: str) -> list[tuple[str, tuple]]:
    """The node's widgets in the order the frontend serialises them, control widgets included."""
    spec = NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()
    widgets = []
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
            if not (isinstance(kind, list) or kind in wx.WIDGET_TYPES) or opts.get("forceInput"):
                continue
            widgets.append((name, entry))
            if opts.get("control_after_generate") or (name == "seed" and kind == "INT"):
                widgets.append((f"{name} control", (sorted(CONTROL_VALUES),)))
    return widgets


def _matches(value, entry) -> bool:
    kind = entry[0]
    if isinstance(kind, list):
        return isinstance(value, str)  # combo options depend on the models installed
    return {
        "INT": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "FLOAT": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "STRING": lambda v: isinstance(v, str),
        "BOOLEAN": lambda v: isinstance(v, bool),
    }[kind](value)


@pytest.mark.parametrize("path", UI_FILES, ids=_ids(UI_FILES))
def test_ui_workflow_matches_node_definitions(path):
    _skip_foreign(path)
    ui = wx.load(path)
    assert ui.get("version") == 0.4 and {"nodes", "links", "last_node_id", "last_link_id"} <= set(ui)
    nodes = {n["id"]: n for n in ui["nodes"]}
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node["type"] in NODE_CLASS_MAPPINGS, f"unknown node type {node['type']}"
        widgets = widgets_of(node["type"])
        values = node.get("widgets_values", [])
        assert len(values) == len(widgets), f"node {node['id']} {node['type']}: {len(values)} values for {[w[0] for w in widgets]}"
        for (name, entry), value in zip(widgets, values):
            if name.endswith(" control"):
                assert value == "fixed", f"node {node['id']}: {name} should be 'fixed' for reproducible examples"
            else:
                assert _matches(value, entry), f"node {node['id']}: {name}={value!r} does not fit {entry[0]}"
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        out_type = NODE_CLASS_MAPPINGS[nodes[src]["type"]].RETURN_TYPES[src_slot]
        dst_input = nodes[dst]["inputs"][dst_slot]
        spec = NODE_CLASS_MAPPINGS[nodes[dst]["type"]].INPUT_TYPES()
        declared = {**spec.get("required", {}), **spec.get("optional", {})}[dst_input["name"]][0]
        assert dst_input["link"] == link_id and link_id in nodes[src]["outputs"][src_slot]["links"]
        assert kind == out_type and out_type in dst_input["type"].split(","), f"link {link_id}: {out_type} -> {dst_input['type']} ({kind})"
        assert out_type in declared.split(",") or "*" in (declared, out_type), f"link {link_id}: {out_type} into {declared}"


@pytest.mark.parametrize("path", UI_FILES, ids=_ids(UI_FILES))
def test_ui_and_api_twins_describe_the_same_graph(path):
    from comfyui_webtv.workflow.format import ui_to_api

    _skip_foreign(path)
    twin = path[: -len(".json")] + "_api.json"
    assert os.path.exists(twin), f"{os.path.basename(path)} has no API twin"
    strip = lambda api: {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
    assert strip(ui_to_api(wx.load(path), wx.object_info())) == strip(wx.load(twin))


def _capped(api: dict) -> dict:
    for node in api.values():
        for name, cap in CI_CAPS.items():
            value = node["inputs"].get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                node["inputs"][name] = min(value, cap)
    return api


@pytest.mark.slow
@pytest.mark.parametrize("path", API_FILES, ids=_ids(API_FILES))
def test_api_workflow_runs_on_tiny_models(path, tiny_env):
    _skip_foreign(path)
    try:
        results = wx.run(_capped(wx.load(path)), extra_pnginfo={"workflow": {"source": os.path.basename(path)}})
    finally:
        channels.stop_all()  # a channel outlives its prompt run by design; the test ends it
    saved = [r for nid, r in results.items() if wx.load(path)[nid]["class_type"] == "WebTVSaveVideo"]
    for result in saved:
        for video in result["outputs"][0]:
            assert os.path.getsize(video) > 0 and video.startswith(os.path.realpath(tiny_env["output"]))
    assert any(r["ui"] for r in results.values()), "no output node reported anything"
