"""The bridge's standalone side: Cancel is never swallowed, server events reach listeners, and the
model cache keeps models outside ComfyUI (inside ComfyUI: tests/test_comfyui_real.py)."""

from __future__ import annotations

import ast
import glob
import os

import torch

from comfyui_webtv.nodes import host
from comfyui_webtv.nodes.common import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROAD = {"Exception", "BaseException"}


def _broad_handlers(tree: ast.AST):
    for node in ast.walk(tree):
        if not isinstance(node, ast.ExceptHandler):
            continue
        names = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
        if node.type is None or any(isinstance(n, ast.Name) and n.id in BROAD for n in names):
            yield node


def test_no_broad_except_swallows_a_cancel():
    """ComfyUI 0.3.64's interrupt is an Exception: every broad handler in code that runs inside ComfyUI (the
    nodes and the runner; not modules run as their own child process) re-raises it (host.is_interrupt) or
    re-raises whatever it caught."""
    offenders = []
    for path in glob.glob(os.path.join(ROOT, "nodes", "**", "*.py"), recursive=True) + glob.glob(os.path.join(ROOT, "workflow", "*.py")):
        rel = os.path.relpath(path, ROOT)
        with open(path, encoding="utf-8") as f:
            source = f.read()
        if 'if __name__ == "__main__":' in source:
            continue
        tree = ast.parse(source, rel)
        for handler in _broad_handlers(tree):
            body = ast.Module(body=handler.body, type_ignores=[])
            reraises = any(isinstance(n, ast.Raise) and n.exc is None for n in handler.body)
            checks = any(isinstance(n, ast.Attribute) and n.attr == "is_interrupt" for n in ast.walk(body))
            if not (reraises or checks):
                offenders.append(f"{rel}:{handler.lineno}")
    assert offenders == []


def test_is_interrupt_standalone():
    assert host.is_interrupt(host.Interrupted("x"))
    assert not host.is_interrupt(ValueError("x")) and not host.is_interrupt(KeyboardInterrupt())


def test_send_event_reaches_listeners_standalone():
    heard = []
    remove = host.add_event_listener(lambda event, data: heard.append((event, data)))
    host.send_event("webtv.test", {"a": 1})
    remove()
    host.send_event("webtv.test", {"a": 2})
    assert heard == [("webtv.test", {"a": 1})]


def test_cache_and_on_device_standalone():
    loads = []
    net = torch.nn.Linear(2, 2)

    def load():
        loads.append(1)
        return net

    assert not host.managed_models()
    try:
        assert models.cached(("t", 1), load, 1) is net and models.cached(("t", 1), load, 1) is net
        assert len(loads) == 1 and ("t", 1) in models.cached_keys()
        models.cached(("t", 1), load, 2)  # a replaced file loads again
        assert len(loads) == 2
        with models.on_device(net, None) as device:
            assert device == host.torch_device() and net.weight.device.type == device.type
        assert net.weight.device == host.offload_device()
    finally:
        models.clear_cache()
    assert ("t", 1) not in models.cached_keys()
