"""ComfyUI workflow formats: UI (what the editor saves) to API (what ``POST /prompt`` takes).

The conversion follows the frontend's ``graphToPrompt``: widget values are matched to inputs by
position in ``/object_info`` ``input_order`` (required, then optional), the extra values the
frontend keeps after some widgets (control_after_generate, combo filter, upload button) are
skipped, links become ``[source id, output index]`` (overriding a widget of the same name), muted
(mode 2) and bypassed (mode 4) nodes are left out, a link through a bypassed node goes to the
bypassed node's input of the matching type, Reroutes pass their link through, a PrimitiveNode's
value is written into the widgets it feeds, Notes are dropped, and an input whose source was
left out is removed.
"""

from __future__ import annotations

import json
import random
from typing import Any

MUTED, BYPASSED = 2, 4
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize", "increment-wrap")  # the last for combos
NOTE_TYPES = {"Note", "MarkdownNote"}
REROUTE, PRIMITIVE = "Reroute", "PrimitiveNode"
FRONTEND_ONLY = NOTE_TYPES | {REROUTE, PRIMITIVE}
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload", "3d_upload")


class WorkflowError(ValueError):
    """A workflow that cannot be converted or edited; the message names the node and the fix."""


# ---------------------------------------------------------------- format detection

def is_ui_workflow(data: Any) -> bool:
    """True for the editor's format (a dict with a ``nodes`` list)."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def is_api_workflow(data: Any) -> bool:
    """True for the API format: ``{id: {"class_type": ..., "inputs": {...}}}``."""
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(v, dict) and "class_type" in v for v in data.values())
    )


def load_workflow(text: str) -> tuple[str, dict]:
    """Parse a workflow file's text; returns ("ui" | "api", data)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise WorkflowError(f"workflow: not valid JSON ({e}).") from None
    if is_ui_workflow(data):
        return "ui", data
    if isinstance(data, dict) and is_api_workflow(data.get("prompt")):
        data = data["prompt"]  # a saved /prompt body
    if is_api_workflow(data):
        return "api", data
    raise WorkflowError(
        "workflow: neither the UI format (a 'nodes' list) nor the API format ({id: {class_type, inputs}}); "
        "save it from ComfyUI with Workflow > Save or Export (API)."
    )


# ---------------------------------------------------------------- widgets from /object_info

def _input_specs(info: dict) -> list[tuple[str, Any, dict]]:
    """(name, type, options) of the required then optional inputs, in ``input_order``."""
    specs = []
    inputs = info.get("input", {})
    order = info.get("input_order", {})
    for section in ("required", "optional"):
        entries = inputs.get(section) or {}
        for name in order.get(section) or list(entries):
            if name not in entries:
                continue
            spec = entries[name]
            kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
            options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
            specs.append((name, kind, options))
    return specs


def _is_widget(kind: Any, options: dict) -> bool:
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _is_combo(kind: Any) -> bool:
    return isinstance(kind, list) or kind == "COMBO"


def widget_slots(info: dict) -> list[tuple[str | None, Any, dict]]:
    """The node's widgets as the frontend lays them out in ``widgets_values``.

    Each entry is (input name, type, options); entries with name None are frontend-only widgets
    (the control_after_generate combo, a combo's filter, an upload button) whose values are kept in
    the UI file but never sent to the server.
    """
    slots: list[tuple[str | None, Any, dict]] = []
    for name, kind, options in _input_specs(info):
        if not _is_widget(kind, options):
            continue
        slots.append((name, kind, options))
        control = False
        if kind == "INT":  # the frontend's legacy rule: seed and noise_seed get one unless told otherwise
            control = options.get("control_after_generate", name in ("seed", "noise_seed"))
        elif _is_combo(kind):
            control = options.get("control_after_generate", False)
        if control:
            slots.append((None, "control_after_generate", {}))
            if _is_combo(kind):
                slots.append((None, "control_filter_list", {}))
        if _is_combo(kind) and any(options.get(o) for o in UPLOAD_OPTIONS):
            slots.append((None, "upload", {}))
    return slots


def process_dynamic_prompt(text: str, rng: random.Random | None = None) -> str:
    """The frontend's dynamic prompt rule for STRING widgets with ``dynamicPrompts``.

    Comments (``//`` to the end of the line, ``/* */``) are removed, ``{a|b|c}`` picks one option
    (nested groups allowed) and a backslash escapes the next character.
    """
    rng = rng or random.Random()

    def parse(i: int, stop: str) -> tuple[list[str], int]:
        options, current = [], []
        while i < len(text):
            c = text[i]
            if c == "\\" and i + 1 < len(text):
                current.append(text[i + 1])
                i += 2
            elif text.startswith("//", i):
                end = text.find("\n", i)
                i = len(text) if end < 0 else end
            elif text.startswith("/*", i):
                end = text.find("*/", i + 2)
                i = len(text) if end < 0 else end + 2
            elif c == "{":
                inner, i = parse(i + 1, "}")
                current.append(rng.choice(inner))
            elif c == "|" and stop == "}":
                options.append("".join(current))
                current = []
                i += 1
            elif c == "}" and stop == "}":
                options.append("".join(current))
                return options, i + 1
            else:
                current.append(c)
                i += 1
        options.append("".join(current))
        if stop == "}":  # unclosed group: keep the brace literally, like the text it came from
            return ["{" + "|".join(options)], i
        return options, i

    return parse(0, "")[0][0]


# ---------------------------------------------------------------- UI -> API

def _links(ui: dict) -> dict[int, tuple[int, int, int, int, str]]:
    """link id -> (origin node, origin slot, target node, target slot, type), from either link shape."""
    table = {}
    for link in ui.get("links") or []:
        if isinstance(link, list):
            lid, origin, oslot, target, tslot, kind = (link + [None] * 6)[:6]
        else:
            lid, origin, oslot = link.get("id"), link.get("origin_id"), link.get("origin_slot")
            target, tslot, kind = link.get("target_id"), link.get("target_slot"), link.get("type")
        table[lid] = (origin, oslot, target, tslot, kind)
    return table


def _types_match(a: Any, b: Any) -> bool:
    """LiteGraph's isValidConnection for type names (``*`` and comma lists)."""
    if a in ("*", "", None) or b in ("*", "", None):
        return True
    a_set = {t.strip().upper() for t in str(a).split(",")}
    b_set = {t.strip().upper() for t in str(b).split(",")}
    return bool(a_set & b_set)


def _bypass_input(node: dict, slot: int, want: Any) -> int:
    """Index of the bypassed ``node``'s input that stands in for its output ``slot``; -1 if none."""
    inputs = node.get("inputs") or []
    if want in ("*", "", None):
        return slot if slot < len(inputs) else (0 if inputs else -1)
    outputs = node.get("outputs") or []
    out_type = outputs[slot].get("type") if slot < len(outputs) else want
    if slot < len(inputs) and _types_match(inputs[slot].get("type"), out_type):
        return slot
    for i, inp in enumerate(inputs):
        if inp.get("type") == want:
            return i
    for i, inp in enumerate(inputs):
        if _types_match(inp.get("type"), want):
            return i
    return -1


def _resolve(link_id: Any, want: Any, nodes: dict, links: dict) -> tuple[str, int] | None:
    """Follow a link through Reroutes and bypassed nodes to the real output, or None."""
    seen = set()
    while link_id is not None and link_id in links and link_id not in seen:
        seen.add(link_id)
        origin_id, oslot, *_ = links[link_id]
        origin = nodes.get(origin_id)
        if origin is None:
            return None
        if origin.get("type") == REROUTE:
            inputs = origin.get("inputs") or []
            link_id = inputs[0].get("link") if inputs else None
        elif origin.get("type") in FRONTEND_ONLY:
            return None  # a PrimitiveNode's value was already written into the widget
        elif origin.get("mode") == BYPASSED:
            index = _bypass_input(origin, int(oslot), want)
            if index < 0:
                return None
            link_id = origin["inputs"][index].get("link")
        else:
            return str(origin_id), int(oslot)
    return None


def _widget_values(node: dict, slots: list, info: dict) -> dict[str, Any]:
    """Widget name -> value from the node's ``widgets_values`` (defaults where the file has none)."""
    raw = node.get("widgets_values")
    names = [s for s in slots if s[0] is not None]
    values: dict[str, Any] = {}
    if isinstance(raw, dict):  # some packs save widgets by name
        for name, _, options in names:
            values[name] = raw.get(name, options.get("default"))
        return values
    raw = raw or []
    node_label = f"node {node.get('id')} ({node.get('type')})"
    for index, (name, kind, options) in enumerate(slots):
        present = index < len(raw)
        if name is None:
            if kind == "control_after_generate" and present and raw[index] not in CONTROL_VALUES and raw[index] is not None:
                raise WorkflowError(
                    f"{node_label}: widgets_values[{index}] is {raw[index]!r} where the frontend keeps the "
                    f"control_after_generate value ({', '.join(CONTROL_VALUES)}) after "
                    f"{slots[index - 1][0]!r}; add \"fixed\" after that value."
                )
            continue
        if present:
            values[name] = raw[index]
        elif "default" in options:
            values[name] = options["default"]
        elif _is_combo(kind):
            choices = kind if isinstance(kind, list) else options.get("options") or []
            if choices:
                values[name] = choices[0]
    return values


def ui_to_api(ui_workflow: dict, object_info: dict, rng: random.Random | None = None) -> dict:
    """Convert a UI-format workflow to the API format the frontend would post to ``/prompt``.

    ``object_info`` is ComfyUI's ``GET /object_info`` (class name -> definition with ``input``,
    ``input_order``, ``display_name``, ...). ``rng`` drives dynamic prompts (``{a|b}``) in inputs
    that declare ``dynamicPrompts``.
    """
    if not is_ui_workflow(ui_workflow):
        raise WorkflowError("workflow: not the UI format (no 'nodes' list).")
    definitions = (ui_workflow.get("definitions") or {}).get("subgraphs") or []
    subgraph_ids = {d.get("id") for d in definitions if isinstance(d, dict)}
    nodes = {n["id"]: n for n in ui_workflow["nodes"]}
    links = _links(ui_workflow)

    widgets: dict[Any, dict[str, Any]] = {}
    for nid, node in nodes.items():
        kind = node.get("type")
        if kind in FRONTEND_ONLY:
            continue
        if kind in subgraph_ids:
            raise WorkflowError(
                f"node {nid} is a subgraph; convert the subgraph back to nodes in ComfyUI, "
                "or export the workflow with Export (API)."
            )
        if kind not in object_info:
            raise WorkflowError(
                f"node {nid}: type {kind!r} is not known to this ComfyUI (/object_info); install the "
                "node pack that provides it, or remove the node."
            )
        info = object_info[kind]
        widgets[nid] = _widget_values(node, widget_slots(info), info)
        for name, _kind, options in _input_specs(info):
            if options.get("dynamicPrompts") and isinstance(widgets[nid].get(name), str):
                widgets[nid][name] = process_dynamic_prompt(widgets[nid][name], rng)

    # PrimitiveNode.applyToGraph: its value goes into every widget it is linked to.
    for node in nodes.values():
        if node.get("type") != PRIMITIVE:
            continue
        values = node.get("widgets_values") or []
        if not values:
            continue
        for output in node.get("outputs") or []:
            for lid in output.get("links") or []:
                if lid not in links:
                    continue
                _, _, target_id, tslot, _ = links[lid]
                target = nodes.get(target_id)
                if target is None or target_id not in widgets:
                    continue
                inputs = target.get("inputs") or []
                widget = inputs[tslot].get("widget") if tslot is not None and tslot < len(inputs) else None
                if widget and widget.get("name"):
                    widgets[target_id][widget["name"]] = values[0]

    api: dict[str, dict] = {}
    ordered = sorted(widgets, key=lambda i: (nodes[i].get("order", 0), str(i)))
    for nid in ordered:
        node = nodes[nid]
        if node.get("mode") in (MUTED, BYPASSED):
            continue
        info = object_info[node["type"]]
        inputs = {k: ({"__value__": v} if isinstance(v, list) else v) for k, v in widgets[nid].items()}
        for inp in node.get("inputs") or []:
            source = _resolve(inp.get("link"), inp.get("type"), nodes, links)
            if source is not None:
                inputs[inp["name"]] = [source[0], source[1]]
        title = node.get("title") or info.get("display_name") or node["type"]
        api[str(nid)] = {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title}}

    for entry in api.values():  # inputs whose source node was left out
        for name, value in list(entry["inputs"].items()):
            if isinstance(value, list) and len(value) == 2 and value[0] not in api:
                del entry["inputs"][name]
    return api


# ---------------------------------------------------------------- --set node.input=value

def find_node(api: dict, selector: str) -> str:
    """The id of the node named by ``selector``: an id, a title, or a class type used once."""
    if selector in api:
        return selector
    for key in ("title", "class_type"):
        hits = [
            nid for nid, entry in api.items()
            if (entry.get("_meta", {}).get("title") if key == "title" else entry.get("class_type")) == selector
        ]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise WorkflowError(f"--set: {selector!r} matches nodes {', '.join(sorted(hits))}; use the node id.")
    known = ", ".join(f"{nid} ({e.get('_meta', {}).get('title') or e['class_type']})" for nid, e in api.items())
    raise WorkflowError(f"--set: no node {selector!r}; nodes are {known}.")


def _coerce(text: str, kind: Any, where: str) -> Any:
    if kind == "STRING" or _is_combo(kind):
        return text
    try:
        if kind == "INT":
            return int(text)
        if kind == "FLOAT":
            return float(text)
    except ValueError:
        raise WorkflowError(f"--set {where}: {text!r} is not a{'n INT' if kind == 'INT' else ' FLOAT'}.") from None
    if kind == "BOOLEAN":
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise WorkflowError(f"--set {where}: {text!r} is not a BOOLEAN (true or false).")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_input(api: dict, assignment: str, object_info: dict | None = None) -> tuple[str, str, Any]:
    """Apply ``node.input=value`` to ``api`` in place; returns (node id, input, value).

    ``node`` is an id, a title or a class type; the value is converted to the input's type from
    ``object_info`` when given (JSON otherwise, falling back to the raw text).
    """
    target, sep, text = assignment.partition("=")
    selector, dot, name = target.rpartition(".")
    if not sep or not dot or not selector or not name:
        raise WorkflowError(f"--set {assignment!r}: expected NODE.INPUT=VALUE, for example 3.seed=7 or \"Shot Writer.theme=...\".")
    nid = find_node(api, selector)
    class_type = api[nid]["class_type"]
    kind = None
    if object_info and class_type in object_info:
        specs = {n: k for n, k, _ in _input_specs(object_info[class_type])}
        if name not in specs:
            raise WorkflowError(
                f"--set {target}: {class_type} has no input {name!r}; inputs are {', '.join(specs)}."
            )
        kind = specs[name]
    value = _coerce(text, kind, target)
    api[nid].setdefault("inputs", {})[name] = value
    return nid, name, value
