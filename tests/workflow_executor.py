"""A test helper that runs API-format workflows by calling the pack's node classes as ComfyUI would.

Not a product feature: it lets CI execute every workflow in ``workflows/`` without a ComfyUI install.
It follows ComfyUI's rules where they matter to our nodes: only ancestors of output nodes run, widget
values are validated against INPUT_TYPES (combo membership, min/max), list outputs (OUTPUT_IS_LIST)
map downstream nodes over their items, and hidden inputs (PROMPT, EXTRA_PNGINFO, UNIQUE_ID) are filled.
"""

from __future__ import annotations

import json
from graphlib import TopologicalSorter

from comfyui_webtv import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


def object_info() -> dict:
    """The pack's nodes in the shape of ComfyUI's ``GET /object_info``."""
    info = {}
    for name, cls in NODE_CLASS_MAPPINGS.items():
        inputs = cls.INPUT_TYPES()
        outputs = list(cls.RETURN_TYPES)
        info[name] = {
            "input": inputs,
            "input_order": {section: list(inputs.get(section, {})) for section in ("required", "optional", "hidden") if section in inputs},
            "output": outputs,
            "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(outputs))),
            "output_name": list(getattr(cls, "RETURN_NAMES", outputs)),
            "name": name,
            "display_name": NODE_DISPLAY_NAME_MAPPINGS.get(name, name),
            "description": getattr(cls, "DESCRIPTION", ""),
            "python_module": "custom_nodes.ComfyUI-WebTV",
            "category": cls.CATEGORY,
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        }
    return info


class ValidationError(ValueError):
    """A workflow ComfyUI would refuse before running it."""


def _validate_widget(node_id: str, name: str, spec: tuple, value) -> None:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 else {}
    if isinstance(kind, list):
        if value not in kind:
            raise ValidationError(f"node {node_id}: {name}={value!r} is not one of {kind}")
        return
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and not isinstance(value, int)):
            raise ValidationError(f"node {node_id}: {name}={value!r} is not {kind}")
        if "min" in opts and value < opts["min"]:
            raise ValidationError(f"node {node_id}: {name}={value} is below {opts['min']}")
        if "max" in opts and value > opts["max"]:
            raise ValidationError(f"node {node_id}: {name}={value} is above {opts['max']}")
    elif kind == "STRING" and not isinstance(value, str):
        raise ValidationError(f"node {node_id}: {name}={value!r} is not STRING")
    elif kind == "BOOLEAN" and not isinstance(value, bool):
        raise ValidationError(f"node {node_id}: {name}={value!r} is not BOOLEAN")


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def execute(api: dict, extra_pnginfo: dict | None = None) -> dict:
    """Run an API-format workflow; returns ``{node_id: {"outputs": [[values per slot]], "ui": [ui dicts]}}``."""
    for node_id, node in api.items():
        if node["class_type"] not in NODE_CLASS_MAPPINGS:
            raise ValidationError(f"node {node_id}: unknown node type {node['class_type']}")
    wanted: set[str] = set()
    stack = [nid for nid, n in api.items() if getattr(NODE_CLASS_MAPPINGS[n["class_type"]], "OUTPUT_NODE", False)]
    if not stack:
        raise ValidationError("workflow has no output node")
    while stack:
        nid = stack.pop()
        if nid in wanted:
            continue
        wanted.add(nid)
        stack += [v[0] for v in api[nid]["inputs"].values() if _is_link(v)]
    graph = {nid: {v[0] for v in api[nid]["inputs"].values() if _is_link(v)} for nid in wanted}
    results: dict[str, dict] = {}
    for nid in TopologicalSorter(graph).static_order():
        results[nid] = _run_node(nid, api[nid], api, results, extra_pnginfo)
    return results


def _run_node(nid: str, node: dict, api: dict, results: dict, extra_pnginfo: dict | None) -> dict:
    cls = NODE_CLASS_MAPPINGS[node["class_type"]]
    spec = cls.INPUT_TYPES()
    declared = {**spec.get("required", {}), **spec.get("optional", {})}
    args: dict[str, list] = {}
    for name, value in node["inputs"].items():
        if name not in declared:
            raise ValidationError(f"node {nid}: {node['class_type']} has no input {name!r}")
        if _is_link(value):
            src, slot = value
            args[name] = results[src]["outputs"][slot]
        else:
            if isinstance(declared[name][0], list) or declared[name][0] in WIDGET_TYPES:
                _validate_widget(nid, name, declared[name], value)
            args[name] = [value]
    missing = [n for n in spec.get("required", {}) if n not in args]
    if missing:
        raise ValidationError(f"node {nid}: required inputs missing: {missing}")
    hidden_values = {"PROMPT": api, "EXTRA_PNGINFO": extra_pnginfo, "UNIQUE_ID": nid}
    for name, kind in spec.get("hidden", {}).items():
        args[name] = [hidden_values.get(kind)]
    func = getattr(cls(), cls.FUNCTION)
    if getattr(cls, "INPUT_IS_LIST", False):
        calls = [{k: v for k, v in args.items()}]
    else:
        count = max((len(v) for v in args.values()), default=1)
        calls = [{k: v[min(i, len(v) - 1)] for k, v in args.items()} for i in range(count)]
    outputs: list[list] = [[] for _ in cls.RETURN_TYPES]
    is_list = getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES))
    uis = []
    for kwargs in calls:
        ret = func(**kwargs)
        if isinstance(ret, dict):
            uis.append(ret.get("ui"))
            ret = ret.get("result", ())
        for slot, value in enumerate(ret):
            outputs[slot] += list(value) if is_list[slot] else [value]
    return {"outputs": outputs, "ui": uis}


def load(path: str) -> dict:
    """Read a workflow file."""
    with open(path) as f:
        return json.load(f)
