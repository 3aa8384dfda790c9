"""Every UI workflow is laid out so nothing overlaps when it is opened and after a run (when Save Video
has grown its player): groups, nodes, notes."""

from __future__ import annotations

import glob
import json
import os

import pytest

from workflow_layout import overlaps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UI_FILES = sorted(f for f in glob.glob(os.path.join(ROOT, "workflows", "*.json")) if not f.endswith("_api.json"))


def test_checker_finds_overlaps():
    """The checker itself, on hand-made layouts: a clean one, and each kind of fault."""
    node = lambda i, x, y, w=200, h=100, kind="X": {"id": i, "type": kind, "pos": [x, y], "size": [w, h], "flags": {}}
    group = lambda title, x, y, w, h: {"title": title, "bounding": [x, y, w, h], "font_size": 24}
    clean = {"nodes": [node(1, 20, 80), node(2, 260, 80)], "groups": [group("a", 0, 0, 480, 220), group("b", 500, 0, 100, 100)]}
    assert overlaps(clean) == [] and overlaps(clean, after_run=True) == []
    assert overlaps({"nodes": [], "groups": [group("a", 0, 0, 300, 300), group("b", 290, 0, 100, 100)]}) == ["group 'a' overlaps group 'b'"]
    assert overlaps({"nodes": [node(1, 0, 40), node(2, 150, 100, kind="Note")], "groups": []}) == ["node 1 X overlaps node 2 Note"]
    assert overlaps({"nodes": [node(1, 400, 80)], "groups": [group("a", 0, 0, 480, 220)]}) == ["node 1 X reaches into group 'a'"]
    assert overlaps({"nodes": [node(1, 20, 40)], "groups": [group("a", 0, 0, 480, 220)]}) == ["node 1 X reaches into group 'a'"]  # title band
    grown = {"nodes": [node(1, 0, 40, kind="WebTVSaveVideo"), node(2, 0, 200)], "groups": []}
    assert overlaps(grown) == [] and overlaps(grown, after_run=True) == ["node 1 WebTVSaveVideo overlaps node 2 X"]


@pytest.mark.parametrize("after_run", [False, True], ids=["opened", "after-a-run"])
@pytest.mark.parametrize("path", UI_FILES, ids=os.path.basename)
def test_nothing_overlaps(path, after_run):
    with open(path, encoding="utf-8") as f:
        workflow = json.load(f)
    assert overlaps(workflow, after_run) == []
