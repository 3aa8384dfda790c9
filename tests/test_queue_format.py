"""UI -> API conversion by the frontend's rules, and --set."""

from __future__ import annotations

import glob
import json
import os
import random

import pytest

from comfyui_webtv.workflow import format as wf
from comfyui_webtv.workflow.runner import object_info as pack_object_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _info(required: dict, optional: dict | None = None, display: str = "") -> dict:
    inputs = {"required": required, **({"optional": optional} if optional else {})}
    info = {"input": inputs, "input_order": {k: list(v) for k, v in inputs.items()}, "output": ["IMAGE"]}
    if display:
        info["display_name"] = display
    return json.loads(json.dumps(info))


OBJECT_INFO = {
    "Source": _info({"seed": ("INT", {"default": 0}), "label": ("STRING", {"default": "x"})}, display="Source Node"),
    "Step": _info(
        {
            "image": ("IMAGE", {}),
            "strength": ("FLOAT", {"default": 0.5}),
            "noise": ("INT", {"default": 0, "control_after_generate": True}),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True}),
            "mode": (["a", "b", "c"], {"default": "b"}),
            "scale": ("FLOAT", {"default": 1.0, "control_after_generate": True}),  # FLOAT widgets get no control
        },
        {"info": ("STRING", {"forceInput": True}), "flag": ("BOOLEAN", {"default": True})},
    ),
    "Loader": _info({"name": (["one.png", "two.png"], {"image_upload": True}), "pick": ("COMBO", {"options": ["p", "q"], "control_after_generate": True})}),
    "Sink": _info({"image": ("IMAGE", {}), "prefix": ("STRING", {"default": "out"})}),
}


def _node(nid, kind, widgets=(), inputs=(), outputs=(), mode=0, **extra):
    return {"id": nid, "type": kind, "mode": mode, "inputs": list(inputs), "outputs": list(outputs), "widgets_values": list(widgets), **extra}


def _inp(name, link, kind="IMAGE", widget=False):
    entry = {"name": name, "type": kind, "link": link}
    if widget:
        entry["widget"] = {"name": name}
    return entry


def test_widgets_in_order_control_values_skipped_links_override():
    ui = {
        "nodes": [
            _node(1, "Source", [7, "fixed", "hello"], outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]}]),
            _node(2, "Step", [0.25, 3, "increment", "a cat", "c", 2.0, False], inputs=[_inp("image", 1), _inp("info", None, "STRING"), _inp("text", 2, "STRING", widget=True)], title="My Step"),
            _node(3, "Source", [1, "randomize", "txt"], outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [2]}]),
            _node(4, "Loader", ["two.png", "image", "q", "fixed", ""]),
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 3, 0, 2, 2, "STRING"]],
    }
    api = wf.ui_to_api(ui, OBJECT_INFO)
    assert api["1"] == {"inputs": {"seed": 7, "label": "hello"}, "class_type": "Source", "_meta": {"title": "Source Node"}}
    assert api["2"] == {
        "inputs": {"strength": 0.25, "noise": 3, "text": ["3", 0], "mode": "c", "scale": 2.0, "flag": False, "image": ["1", 0]},
        "class_type": "Step",
        "_meta": {"title": "My Step"},
    }
    assert api["4"]["inputs"] == {"name": "two.png", "pick": "q"}  # upload button and combo filter skipped


def test_missing_trailing_values_take_defaults_and_bad_control_value_is_named():
    ui = {"nodes": [_node(1, "Step", [0.5, 2, "fixed", "t"])], "links": []}
    assert wf.ui_to_api(ui, OBJECT_INFO)["1"]["inputs"] == {"strength": 0.5, "noise": 2, "text": "t", "mode": "b", "scale": 1.0, "flag": True}
    ui = {"nodes": [_node(1, "Source", [7, "hello"])], "links": []}  # control value left out
    with pytest.raises(wf.WorkflowError, match=r"node 1 \(Source\): widgets_values\[1\] is 'hello'.*after 'seed'"):
        wf.ui_to_api(ui, OBJECT_INFO)


def test_muted_bypassed_reroute_primitive_note():
    ui = {
        "nodes": [
            _node(1, "Source", [1, "fixed", "a"], outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]}]),
            # bypassed: its IMAGE input stands in for its IMAGE output
            _node(2, "Step", [0.5, 0, "fixed", "", "a", 1.0, True], inputs=[_inp("image", 1)], outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [2]}], mode=4),
            _node(3, "Reroute", [], inputs=[{"name": "", "type": "*", "link": 2}], outputs=[{"name": "", "type": "IMAGE", "links": [3]}]),
            _node(4, "Sink", ["old"], inputs=[_inp("image", 3), _inp("prefix", 4, "STRING", widget=True)]),
            _node(5, "PrimitiveNode", ["from primitive", "fixed"], outputs=[{"name": "STRING", "type": "STRING", "links": [4, 6], "widget": {"name": "prefix"}}]),
            _node(6, "Source", [2, "fixed", "b"], outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [5]}], mode=2),
            _node(7, "Sink", ["x"], inputs=[_inp("image", 5), _inp("prefix", 6, "STRING", widget=True)]),
            _node(8, "Note", ["explains things"]),
            _node(9, "MarkdownNote", ["# more"]),
        ],
        "links": [
            [1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"],
            [4, 5, 0, 4, 1, "STRING"], [5, 6, 0, 7, 0, "IMAGE"], [6, 5, 0, 7, 1, "STRING"],
        ],
    }
    api = wf.ui_to_api(ui, OBJECT_INFO)
    assert sorted(api) == ["1", "4", "7"]
    assert api["4"]["inputs"] == {"prefix": "from primitive", "image": ["1", 0]}
    assert api["7"]["inputs"] == {"prefix": "from primitive"}  # its source is muted: input removed


def test_object_links_and_dict_widgets():
    ui = {
        "nodes": [
            _node(1, "Source", {"seed": 5, "label": "named"}, outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [9]}]),
            _node(2, "Sink", ["p"], inputs=[_inp("image", 9)]),
        ],
        "links": [{"id": 9, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "IMAGE"}],
    }
    ui["nodes"][0]["widgets_values"] = {"seed": 5, "label": "named"}
    api = wf.ui_to_api(ui, OBJECT_INFO)
    assert api["1"]["inputs"] == {"seed": 5, "label": "named"}
    assert api["2"]["inputs"] == {"prefix": "p", "image": ["1", 0]}


def test_dynamic_prompts():
    rng = random.Random(0)
    assert wf.process_dynamic_prompt("a {red|blue} fox // note\nin snow /* c */!", rng) in ("a red fox \nin snow !", "a blue fox \nin snow !")
    assert wf.process_dynamic_prompt(r"keep \{this\} and {x}", rng) == "keep {this} and x"
    assert wf.process_dynamic_prompt("{a|{b|c}}", random.Random(1)) in ("a", "b", "c")
    seen = {wf.process_dynamic_prompt("{a|b|c}", random.Random(s)) for s in range(30)}
    assert seen == {"a", "b", "c"}
    ui = {"nodes": [_node(1, "Step", [0.5, 0, "fixed", "{only}", "a", 1.0, True])], "links": []}
    assert wf.ui_to_api(ui, OBJECT_INFO)["1"]["inputs"]["text"] == "only"


def test_unknown_type_and_subgraph_are_clear_errors():
    with pytest.raises(wf.WorkflowError, match="type 'Mystery' is not known to this ComfyUI"):
        wf.ui_to_api({"nodes": [_node(3, "Mystery")], "links": []}, OBJECT_INFO)
    sub = {"nodes": [_node(3, "0b7f-uuid")], "links": [], "definitions": {"subgraphs": [{"id": "0b7f-uuid"}]}}
    with pytest.raises(wf.WorkflowError, match="node 3 is a subgraph"):
        wf.ui_to_api(sub, OBJECT_INFO)


def test_set_input():
    api = {"3": {"class_type": "Step", "inputs": {"strength": 0.5, "text": "a"}, "_meta": {"title": "My Step"}},
           "4": {"class_type": "Sink", "inputs": {"prefix": "p"}, "_meta": {"title": "First"}},
           "5": {"class_type": "Sink", "inputs": {"prefix": "q"}, "_meta": {"title": "Other"}}}
    assert wf.set_input(api, "3.strength=0.75", OBJECT_INFO) == ("3", "strength", 0.75)
    assert wf.set_input(api, "My Step.text=12", OBJECT_INFO) == ("3", "text", "12")  # STRING stays text
    assert wf.set_input(api, "Step.flag=false", OBJECT_INFO) == ("3", "flag", False)
    assert wf.set_input(api, "Other.prefix=a=b", OBJECT_INFO) == ("5", "prefix", "a=b")
    assert wf.set_input(api, "3.noise=5", None) == ("3", "noise", 5)  # no object_info: JSON
    for bad, message in [
        ("3.strength", "expected NODE.INPUT=VALUE"),
        ("9.x=1", "no node '9'"),
        ("Sink.prefix=1", "matches nodes 4, 5"),
        ("3.nope=1", "Step has no input 'nope'"),
        ("3.noise=soon", "not an INT"),
        ("3.flag=maybe", "not a BOOLEAN"),
    ]:
        with pytest.raises(wf.WorkflowError, match=message):
            wf.set_input(api, bad, OBJECT_INFO)


def test_load_workflow_detects_format():
    assert wf.load_workflow('{"nodes": [], "links": []}')[0] == "ui"
    assert wf.load_workflow('{"1": {"class_type": "X", "inputs": {}}}')[0] == "api"
    assert wf.load_workflow('{"prompt": {"1": {"class_type": "X", "inputs": {}}}}') == ("api", {"1": {"class_type": "X", "inputs": {}}})
    for text, message in [("{", "not valid JSON"), ('{"a": 1}', "neither the UI format")]:
        with pytest.raises(wf.WorkflowError, match=message):
            wf.load_workflow(text)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "workflows", "*_api.json"))), ids=os.path.basename)
def test_pack_workflows_convert_to_their_api_twins(path):
    ui_path = path.replace("_api.json", ".json")
    if not os.path.exists(ui_path):
        pytest.skip("no UI twin")
    with open(ui_path) as f:
        ui = json.load(f)
    with open(path) as f:
        expected = json.load(f)
    info = pack_object_info()
    foreign = sorted({n["class_type"] for n in expected.values()} - set(info))
    if foreign:
        pytest.skip(f"uses nodes outside the pack ({', '.join(foreign)}): tests/test_comfyui_real.py converts it with ComfyUI's /object_info")
    api = wf.ui_to_api(ui, info)
    assert {k: (v["class_type"], v["inputs"]) for k, v in api.items()} == {k: (v["class_type"], v["inputs"]) for k, v in expected.items()}
