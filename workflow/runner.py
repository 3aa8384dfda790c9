"""The headless graph runner: executes API-format workflows by calling the pack's node classes.

The CLI, the tests and the Metaflow flows all run workflows through :func:`run`, so a workflow in
``workflows/`` is the program, here as in ComfyUI. It follows ComfyUI's rules where they matter to
our nodes: only ancestors of output nodes run, widget values are validated against ``INPUT_TYPES``
(combo membership, min/max, type) before anything runs, list outputs (``OUTPUT_IS_LIST``) map
downstream nodes over their items, hidden inputs (PROMPT, EXTRA_PNGINFO, UNIQUE_ID) are filled,
inputs are passed by keyword, every node start is an interrupt point, and a node's failure is
reported with its id, title and type.
"""

from __future__ import annotations

import json
import math
from graphlib import CycleError, TopologicalSorter
from typing import Callable

from ..nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from ..nodes import host

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


class ValidationError(ValueError):
    """A workflow ComfyUI would refuse before running it; the message names the node and input."""


class NodeError(RuntimeError):
    """A node failed while running; ``node_id`` and ``class_type`` say which."""

    def __init__(self, node_id: str, class_type: str, title: str, error: BaseException):
        self.node_id, self.class_type, self.error = node_id, class_type, error
        super().__init__(f"node {node_id} ({title}): {error}")


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


def _title(node_id: str, node: dict) -> str:
    return node.get("_meta", {}).get("title") or node.get("class_type") or node_id


def _validate_widget(where: str, spec: tuple, value) -> None:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 else {}
    if isinstance(kind, list):
        if value not in kind:
            raise ValidationError(f"{where}={value!r} is not one of {kind}")
        return
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and not isinstance(value, int)):
            raise ValidationError(f"{where}={value!r} is not {kind}")
        if not math.isfinite(value):
            raise ValidationError(f"{where}={value!r} is not a finite number")
        if "min" in opts and value < opts["min"]:
            raise ValidationError(f"{where}={value} is below its minimum {opts['min']}")
        if "max" in opts and value > opts["max"]:
            raise ValidationError(f"{where}={value} is above its maximum {opts['max']}")
    elif kind == "STRING" and not isinstance(value, str):
        raise ValidationError(f"{where}={value!r} is not STRING")
    elif kind == "BOOLEAN" and not isinstance(value, bool):
        raise ValidationError(f"{where}={value!r} is not BOOLEAN")


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def validate(api: dict) -> dict[str, set[str]]:
    """Check the whole workflow before anything runs; returns the graph of nodes to run."""
    if not isinstance(api, dict) or not api:
        raise ValidationError("the workflow is empty or not in API format ({id: {class_type, inputs}})")
    for nid, node in api.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs", {}), dict):
            raise ValidationError(f"node {nid}: not an API-format node ({{class_type, inputs}})")
        if node.get("class_type") not in NODE_CLASS_MAPPINGS:
            raise ValidationError(f"node {nid}: unknown node type {node.get('class_type')!r}")
    stack = [nid for nid, n in api.items() if getattr(NODE_CLASS_MAPPINGS[n["class_type"]], "OUTPUT_NODE", False)]
    if not stack:
        raise ValidationError("the workflow has no output node (Save Video, a playlist or a channel)")
    graph: dict[str, set[str]] = {}
    while stack:
        nid = stack.pop()
        if nid in graph:
            continue
        node = api[nid]
        cls = NODE_CLASS_MAPPINGS[node["class_type"]]
        spec = cls.INPUT_TYPES()
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        sources = set()
        for name, value in node.get("inputs", {}).items():
            where = f"node {nid} ({_title(nid, node)}) input {name!r}"
            if name not in declared:
                raise ValidationError(f"node {nid}: {node['class_type']} has no input {name!r}")
            if _is_link(value):
                src, slot = value
                if src not in api:
                    raise ValidationError(f"{where} links to a missing node {src}")
                if not 0 <= slot < len(NODE_CLASS_MAPPINGS[api[src]["class_type"]].RETURN_TYPES):
                    raise ValidationError(f"{where} links to output {slot} of node {src}, which has no such output")
                sources.add(src)
            elif isinstance(declared[name][0], list) or declared[name][0] in WIDGET_TYPES:
                _validate_widget(where, declared[name], value)
        missing = [n for n in spec.get("required", {}) if n not in node.get("inputs", {})]
        if missing:
            raise ValidationError(f"node {nid} ({_title(nid, node)}): required inputs missing: {', '.join(missing)}")
        graph[nid] = sources
        stack += sources
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as e:
        raise ValidationError(f"the workflow has a cycle through nodes {', '.join(map(str, e.args[1]))}") from None
    return graph


def run(api: dict, extra_pnginfo: dict | None = None,
        on_node: Callable[[str, str, int, int], None] | None = None) -> dict:
    """Run an API-format workflow; returns ``{node_id: {"outputs": [[values per slot]], "ui": [ui dicts]}}``.

    ``on_node(node_id, class_type, index, count)`` is called as each node starts. Validation errors
    raise :class:`ValidationError` before any node runs; a failing node raises :class:`NodeError`;
    a Cancel (:func:`host.request_interrupt`) propagates as the host's interrupt.
    """
    graph = validate(api)
    order = list(TopologicalSorter(graph).static_order())
    results: dict[str, dict] = {}
    for index, nid in enumerate(order):
        host.check_interrupt()
        if on_node:
            on_node(nid, api[nid]["class_type"], index, len(order))
        try:
            results[nid] = _run_node(nid, api[nid], api, results, extra_pnginfo)
        except (ValidationError, NodeError):
            raise
        except Exception as e:  # noqa: BLE001 - named and re-raised, apart from a Cancel
            if host.is_interrupt(e):
                raise
            raise NodeError(nid, api[nid]["class_type"], _title(nid, api[nid]), e) from e
    return results


def _run_node(nid: str, node: dict, api: dict, results: dict, extra_pnginfo: dict | None) -> dict:
    cls = NODE_CLASS_MAPPINGS[node["class_type"]]
    spec = cls.INPUT_TYPES()
    args: dict[str, list] = {}
    for name, value in node.get("inputs", {}).items():
        if _is_link(value):
            src, slot = value
            args[name] = results[src]["outputs"][slot]
        else:
            args[name] = [value]
    hidden_values = {"PROMPT": api, "EXTRA_PNGINFO": extra_pnginfo, "UNIQUE_ID": nid}
    for name, kind in spec.get("hidden", {}).items():
        args[name] = [hidden_values.get(kind)]
    func = getattr(cls(), cls.FUNCTION)
    if getattr(cls, "INPUT_IS_LIST", False):
        calls = [dict(args)]
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
