"""The graph runner's item-by-item order: nodes mapped over a list output take one item through the whole
chain before the next item starts, with the same calls and results as ComfyUI's node-by-node order."""

from __future__ import annotations

import pytest

from comfyui_webtv.nodes import NODE_CLASS_MAPPINGS
from comfyui_webtv.workflow import runner

CALLS: list[str] = []


class Words:  # a list output, like the Shot Writer's prompts
    CATEGORY, FUNCTION, OUTPUT_NODE = "test", "run", False
    RETURN_TYPES, OUTPUT_IS_LIST = ("STRING", "STRING"), (True, False)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": ""})}}

    def run(self, text):
        CALLS.append("words")
        return (text.split(), "report")


class Upper:  # mapped per item
    CATEGORY, FUNCTION, OUTPUT_NODE = "test", "run", False
    RETURN_TYPES = ("STRING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"word": ("STRING", {"forceInput": True}), "suffix": ("STRING", {"forceInput": True})}}

    def run(self, word, suffix):
        CALLS.append(f"upper {word}")
        if word == "boom":
            raise ValueError("word: boom is not a word")
        return (word.upper() + suffix,)


class Suffix:  # no list input: runs once, before the chain
    CATEGORY, FUNCTION, OUTPUT_NODE = "test", "run", False
    RETURN_TYPES = ("STRING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "!"})}}

    def run(self, text):
        CALLS.append("suffix")
        return (text,)


class Save:  # an output node mapped per item, as Save Video and the channel are
    CATEGORY, FUNCTION, OUTPUT_NODE = "test", "run", True
    RETURN_TYPES = ("STRING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("STRING", {"forceInput": True})}, "optional": {"report": ("STRING", {"forceInput": True})}}

    def run(self, value, report=None):
        CALLS.append(f"save {value}")
        return {"ui": {"text": [value]}, "result": (value,)}


class Join:  # takes the whole list: after the chain
    CATEGORY, FUNCTION, OUTPUT_NODE, INPUT_IS_LIST = "test", "run", True, True
    RETURN_TYPES = ("STRING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("STRING", {"forceInput": True})}}

    def run(self, values):
        CALLS.append("join")
        return (" ".join(values),)


GRAPH = {
    "1": {"class_type": "TestWords", "inputs": {"text": "a b c"}},
    "2": {"class_type": "TestUpper", "inputs": {"word": ["1", 0], "suffix": ["3", 0]}},
    "3": {"class_type": "TestSuffix", "inputs": {"text": "!"}},
    "4": {"class_type": "TestSave", "inputs": {"value": ["2", 0], "report": ["1", 1]}},
    "5": {"class_type": "TestJoin", "inputs": {"values": ["4", 0]}},
}


@pytest.fixture
def nodes(monkeypatch):
    for name, cls in {"TestWords": Words, "TestUpper": Upper, "TestSuffix": Suffix, "TestSave": Save, "TestJoin": Join}.items():
        monkeypatch.setitem(NODE_CLASS_MAPPINGS, name, cls)
    CALLS.clear()


def test_item_by_item_takes_each_item_through_the_chain_with_the_same_results(nodes):
    whole = runner.run(GRAPH)
    whole_calls = list(CALLS)
    assert whole_calls.index("save A!") > whole_calls.index("upper c")  # ComfyUI's order: node by node
    CALLS.clear()
    starts = []
    items = runner.run(GRAPH, on_node=lambda nid, kind, index, count: starts.append((nid, index, count)), item_by_item=True)
    assert CALLS[CALLS.index("upper a"):CALLS.index("join")] == ["upper a", "save A!", "upper b", "save B!", "upper c", "save C!"]
    assert CALLS[-1] == "join" and sorted(CALLS) == sorted(whole_calls)  # the same calls, once each
    assert items == whole
    assert items["5"]["outputs"] == [["A! B! C!"]] and items["4"]["ui"] == [{"text": ["A!"]}, {"text": ["B!"]}, {"text": ["C!"]}]
    assert [nid for nid, _, _ in starts][-7:] == ["2", "4", "2", "4", "2", "4", "5"]
    assert [index for _, index, _ in starts] == list(range(len(starts))) and starts[-1][2] == len(starts)


def test_item_chain_leaves_out_nodes_fed_only_by_a_whole_list_or_a_single_output(nodes):
    graph = dict(GRAPH, **{"6": {"class_type": "TestSave", "inputs": {"value": ["1", 1]}},  # the report only: once
                           "7": {"class_type": "TestUpper", "inputs": {"word": ["5", 0], "suffix": ["3", 0]}}})
    graph["8"] = {"class_type": "TestSave", "inputs": {"value": ["7", 0]}}
    source, chain = runner.item_chain(graph, runner.validate(graph), ["1", "3", "2", "4", "6", "5", "7", "8"])
    assert (source, chain) == ("1", ["2", "4"])
    assert runner.run(graph, item_by_item=True) == runner.run(graph)
    assert CALLS.count("save report") == 2  # once per run


def test_a_failing_item_is_named_and_stops_the_chain(nodes):
    graph = dict(GRAPH, **{"1": {"class_type": "TestWords", "inputs": {"text": "a boom c"}}})
    with pytest.raises(runner.NodeError, match=r"node 2 \(TestUpper\): word: boom is not a word"):
        runner.run(graph, item_by_item=True)
    assert CALLS == ["words", "suffix", "upper a", "save A!", "upper boom"]  # the first item was saved
