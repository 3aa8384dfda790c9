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
        on_node: Callable[[str, str, int, int], None] | None = None, item_by_item: bool = False) -> dict:
    """Run an API-format workflow; returns ``{node_id: {"outputs": [[values per slot]], "ui": [ui dicts]}}``.

    ``on_node(node_id, class_type, index, count)`` is called as each node starts. Validation errors
    raise :class:`ValidationError` before any node runs; a failing node raises :class:`NodeError`;
    a Cancel (:func:`host.request_interrupt`) propagates as the host's interrupt.

    ``item_by_item``: the nodes mapped over a list output (:func:`item_chain`) take one item through
    the whole chain before the next starts (``on_node`` is then called per node and item), so the
    first item's results (a saved clip, a channel update) come before the last item is generated.
    The calls and their inputs are those of ComfyUI's order (each node over every item in turn).
    """
    graph = validate(api)
    order = list(TopologicalSorter(graph).static_order())
    source, chain = item_chain(api, graph, order) if item_by_item else (None, [])
    needed = set(chain)
    for nid in chain:  # every ancestor of the chain runs before it
        needed |= _ancestors(graph, nid)
    before = [nid for nid in order if nid in needed and nid not in chain]
    after = [nid for nid in order if nid not in needed]
    results: dict[str, dict] = {}
    started = 0

    def start(nid: str, count: int) -> None:
        nonlocal started
        host.check_interrupt()
        if on_node:
            on_node(nid, api[nid]["class_type"], started, count)
        started += 1

    def guarded(nid: str, work: Callable[[], None]) -> None:
        try:
            work()
        except (ValidationError, NodeError):
            raise
        except Exception as e:  # noqa: BLE001 - named and re-raised, apart from a Cancel
            if host.is_interrupt(e):
                raise
            raise NodeError(nid, api[nid]["class_type"], _title(nid, api[nid]), e) from e

    for nid in before if chain else order:
        start(nid, len(order))
        guarded(nid, lambda: results.__setitem__(nid, _run_node(nid, api[nid], api, results, extra_pnginfo)))
    if not chain:
        return results
    lists = NODE_CLASS_MAPPINGS[api[source]["class_type"]].OUTPUT_IS_LIST
    items = max(len(results[src]["outputs"][slot]) for src, slot in _links_from(api, chain, {source}) if lists[slot])
    if items == 0 or any(len(results[src]["outputs"][slot]) > items for src, slot in _links_from(api, chain, set(before))):
        chain, after = [], [nid for nid in order if nid not in before]  # not one item per call: ComfyUI's order
    calls = {nid: _Calls(nid, api[nid], api, results, extra_pnginfo) for nid in chain}
    total = len(before) + items * len(chain) + len(after)
    for item in range(items if chain else 0):
        for nid in chain:
            start(nid, total)
            guarded(nid, lambda: calls[nid].call(item))
    for nid in after:
        start(nid, total)
        guarded(nid, lambda: results.__setitem__(nid, _run_node(nid, api[nid], api, results, extra_pnginfo)))
    return results


def item_chain(api: dict, graph: dict[str, set[str]], order: list[str]) -> tuple[str | None, list[str]]:
    """The first list output's item chain: ``(list node, chain in run order)``.

    The chain holds the nodes mapped one call per item over that node's list output: each takes its
    input from the list node, from the chain, or from nodes that do not depend on the list node, and
    neither takes whole lists (``INPUT_IS_LIST``) nor makes them (``OUTPUT_IS_LIST``)."""
    def kind(nid: str):
        return NODE_CLASS_MAPPINGS[api[nid]["class_type"]]

    for source in order:
        lists = getattr(kind(source), "OUTPUT_IS_LIST", ())
        if not any(lists):
            continue
        downstream = {nid for nid in order if source in _ancestors(graph, nid)}
        chain: list[str] = []
        for nid in order:
            cls = kind(nid)
            if nid not in downstream or getattr(cls, "INPUT_IS_LIST", False) or any(getattr(cls, "OUTPUT_IS_LIST", ())):
                continue
            links = [v for v in api[nid].get("inputs", {}).values() if _is_link(v)]
            mapped = any(src in chain or (src == source and lists[slot]) for src, slot in links)
            if mapped and all(src == source or src in chain or src not in downstream for src in graph[nid]):
                chain.append(nid)
        if chain:
            return source, chain
    return None, []


def _ancestors(graph: dict[str, set[str]], nid: str) -> set[str]:
    found, stack = set(), list(graph[nid])
    while stack:
        src = stack.pop()
        if src not in found:
            found.add(src)
            stack += graph[src]
    return found


def _links_from(api: dict, chain: list[str], sources: set[str]) -> list[tuple[str, int]]:
    """(node, slot) of every link into the chain from ``sources``."""
    return [tuple(v) for nid in chain for v in api[nid].get("inputs", {}).values() if _is_link(v) and v[0] in sources]


class _Calls:
    """One node of an item chain, called item by item; its results grow in ``results`` as in a whole run."""

    def __init__(self, nid: str, node: dict, api: dict, results: dict, extra_pnginfo: dict | None):
        self.cls = NODE_CLASS_MAPPINGS[node["class_type"]]
        self.node, self.api, self.results, self.extra = node, api, results, extra_pnginfo
        self.out = results[nid] = {"outputs": [[] for _ in self.cls.RETURN_TYPES], "ui": []}
        self.nid = nid

    def call(self, item: int) -> None:
        args = _arguments(self.nid, self.node, self.cls, self.api, self.results, self.extra)
        _call(self.cls, {k: v[min(item, len(v) - 1)] for k, v in args.items()}, self.out)


def _arguments(nid: str, node: dict, cls, api: dict, results: dict, extra_pnginfo: dict | None) -> dict[str, list]:
    """Each input's values (a list: one per item) from the widgets, the results so far and the hidden inputs."""
    args: dict[str, list] = {}
    for name, value in node.get("inputs", {}).items():
        if _is_link(value):
            src, slot = value
            args[name] = results[src]["outputs"][slot]
        else:
            args[name] = [value]
    hidden_values = {"PROMPT": api, "EXTRA_PNGINFO": extra_pnginfo, "UNIQUE_ID": nid}
    for name, kind in cls.INPUT_TYPES().get("hidden", {}).items():
        args[name] = [hidden_values.get(kind)]
    return args


def _call(cls, kwargs: dict, out: dict) -> None:
    """One call of a node; its return values are added to ``out`` (outputs per slot, ui)."""
    ret = getattr(cls(), cls.FUNCTION)(**kwargs)
    if isinstance(ret, dict):
        out["ui"].append(ret.get("ui"))
        ret = ret.get("result", ())
    is_list = getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES))
    for slot, value in enumerate(ret):
        out["outputs"][slot] += list(value) if is_list[slot] else [value]


def _run_node(nid: str, node: dict, api: dict, results: dict, extra_pnginfo: dict | None) -> dict:
    cls = NODE_CLASS_MAPPINGS[node["class_type"]]
    args = _arguments(nid, node, cls, api, results, extra_pnginfo)
    if getattr(cls, "INPUT_IS_LIST", False):
        calls = [dict(args)]
    else:
        count = max((len(v) for v in args.values()), default=1)
        calls = [{k: v[min(i, len(v) - 1)] for k, v in args.items()} for i in range(count)]
    out = {"outputs": [[] for _ in cls.RETURN_TYPES], "ui": []}
    for kwargs in calls:
        _call(cls, kwargs, out)
    return out


def load(path: str) -> dict:
    """Read a workflow file."""
    with open(path) as f:
        return json.load(f)
