"""Where a UI workflow's nodes and groups lie on the canvas, and what overlaps (tests/test_workflow_layout.py,
and the real-frontend check in tests/test_comfyui_real.py with the sizes a renderer gave the nodes)."""

from __future__ import annotations

TITLE = 30  # LiteGraph's node title bar, drawn above ``pos``
GROUP_TITLE = 1.4  # a group's title band, in units of its font size
PLAYER_NODES = {"WebTVSaveVideo"}  # output nodes that grow a video player under their widgets after a run
PLAYER_ASPECT = 9 / 16
PLAYER_EXTRA = 40  # the file link under the player


def node_box(node: dict, after_run: bool = False) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` of a node with its title bar; after a run, with room for the player it grows."""
    x, y = node["pos"][:2] if isinstance(node["pos"], list) else (node["pos"]["0"], node["pos"]["1"])
    w, h = node["size"][:2] if isinstance(node["size"], list) else (node["size"]["0"], node["size"]["1"])
    if after_run and node["type"] in PLAYER_NODES:
        h += w * PLAYER_ASPECT + PLAYER_EXTRA
    return (x, y - TITLE, x + w, y + h)


def group_box(group: dict) -> tuple[float, float, float, float]:
    x, y, w, h = group["bounding"]
    return (x, y, x + w, y + h)


def group_body(group: dict) -> tuple[float, float, float, float]:
    """The part of a group under its title band, where its nodes go."""
    x0, y0, x1, y1 = group_box(group)
    return (x0, y0 + group.get("font_size", 24) * GROUP_TITLE, x1, y1)


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _inside(inner, outer) -> bool:
    return inner[0] >= outer[0] and inner[1] >= outer[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def _name(node: dict) -> str:
    return f"node {node['id']} {node.get('title') or node['type']}"


def overlaps(workflow: dict, after_run: bool = False) -> list[str]:
    """Every overlap in ``workflow``: groups with groups, nodes with nodes (notes included), nodes that reach
    into a group they are not inside, nodes in a group's title band."""
    nodes = [n for n in workflow["nodes"] if not (n.get("flags") or {}).get("collapsed")]
    groups = workflow.get("groups", [])
    found = []
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            if _overlap(group_box(a), group_box(b)):
                found.append(f"group {a['title']!r} overlaps group {b['title']!r}")
    boxes = [(n, node_box(n, after_run)) for n in nodes]
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1 :]:
            if _overlap(box_a, box_b):
                found.append(f"{_name(a)} overlaps {_name(b)}")
        for group in groups:
            if _overlap(box_a, group_box(group)) and not _inside(box_a, group_body(group)):
                found.append(f"{_name(a)} reaches into group {group['title']!r}")
    return found


def measured(workflow: dict, rects: dict) -> dict:
    """``workflow`` with each node where a renderer drew it: ``rects`` maps node ids to ``[x0, y0, x1, y1]``
    boxes in graph coordinates, title bar included (the Vue renderer's DOM boxes)."""
    nodes = []
    for node in workflow["nodes"]:
        x0, y0, x1, y1 = rects[str(node["id"])]
        nodes.append({**node, "pos": [x0, y0 + TITLE], "size": [x1 - x0, y1 - y0 - TITLE]})
    return {**workflow, "nodes": nodes}
