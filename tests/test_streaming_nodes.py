"""StreamingT2V nodes: schema, tiny end-to-end runs through the registered folders, converter (§10.10)."""

from __future__ import annotations

import os

import pytest
import torch

from comfyui_webtv.cli import main as cli_main
from comfyui_webtv.nodes import NODE_CLASS_MAPPINGS, host
from comfyui_webtv.nodes.streaming import nodes
from comfyui_webtv.nodes.streaming.config import TINY
from comfyui_webtv.nodes.zeroscope.nodes import ZeroscopeLoader


def test_schema():
    for node_id, cls in nodes.NODE_CLASS_MAPPINGS.items():
        assert NODE_CLASS_MAPPINGS[node_id] is cls and node_id in nodes.NODE_DISPLAY_NAME_MAPPINGS
        assert cls.DESCRIPTION and cls.CATEGORY == "WebTV/StreamingT2V" and hasattr(cls, cls.FUNCTION)
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, (kind, options) in spec.get(section, {}).items():
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
                if name == "seed":
                    assert options["control_after_generate"] is True


def test_tiny_end_to_end(tiny_env):
    loader_spec = nodes.StreamingT2VLoader.INPUT_TYPES()["required"]
    assert "streaming_t2v.ckpt" in loader_spec["checkpoint"][0]
    assert "open_clip_pytorch_model.bin" in loader_spec["image_encoder"][0]
    (model,) = nodes.StreamingT2VLoader().load("streaming_t2v.ckpt", "text-to-video-ms-1.7b", "from checkpoint", "auto")
    updates = []
    remove = host.add_progress_listener(lambda value, total: updates.append((value, total)))
    clip = torch.rand(12, 40, 72, 3, generator=torch.Generator().manual_seed(0))
    (long,) = nodes.StreamingT2VExtend().extend(model, clip, "a boat", "", 28, 2, 7.5, 1.0, 3, 0, 8, "crop", True, True)
    remove()
    assert long.shape == (28, TINY.resolution, TINY.resolution, 3) and 0 <= long.min() and long.max() <= 1
    assert updates[-1] == (4, 4)  # 2 chunks x 2 steps
    (xl,) = ZeroscopeLoader().load("zeroscope_v2_XL", "auto", False)
    (enhanced,) = nodes.RandomizedBlendingEnhance().enhance(xl, long, "a boat", "", 1, 0.5, 4, 7.5, 8, 4, 64, 48, "stretch", "trim")
    assert enhanced.shape == (28, 48, 64, 3) and torch.isfinite(enhanced).all()
    stop = host.add_progress_listener(lambda value, total: host.request_interrupt())
    try:
        with pytest.raises(host.Interrupted):  # every progress update is an interrupt point
            nodes.StreamingT2VExtend().extend(model, clip, "a boat", "", 200, 2, 7.5, 1.0, 3, 0, 8, "crop", False, False)
    finally:
        stop()
    with pytest.raises(ValueError, match="prompt: is empty"):
        nodes.StreamingT2VExtend().extend(model, clip, " ", "", 28, 2, 7.5, 1.0, 3, 0, 8, "crop", False, False)
    with pytest.raises(ValueError, match="frames: needs at least 8"):
        nodes.StreamingT2VExtend().extend(model, clip[:5], "x", "", 28, 2, 7.5, 1.0, 3, 0, 8, "crop", False, False)
    with pytest.raises(ValueError, match="fewer than chunk_length 24"):
        nodes.RandomizedBlendingEnhance().enhance(xl, long[:20], "x", "", 1, 0.5, 4, 7.5, 24, 8, 64, 48, "stretch", "trim")


def test_converter_node_and_command(tiny_env):
    node = nodes.StreamingT2VConvertCheckpoint()
    result = node.convert("streaming_t2v.ckpt", "bf16", "st2v_bf16.safetensors", False)
    path = result["result"][0]
    assert os.path.dirname(path) == os.path.join(tiny_env["models"], "streaming_t2v")
    assert "st2v_bf16.safetensors" in nodes.StreamingT2VLoader.INPUT_TYPES()["required"]["checkpoint"][0]
    (model,) = nodes.StreamingT2VLoader().load("st2v_bf16.safetensors", "text-to-video-ms-1.7b",
                                               "open_clip_pytorch_model.bin", "fp32")
    assert model.unet.dtype == torch.float32  # CPU runs fp32 whatever the file holds
    for bad in ("../escape.safetensors", "model.ckpt", "streaming_t2v.ckpt"):
        with pytest.raises(ValueError, match="filename"):
            node.convert("streaming_t2v.ckpt", "fp16", bad, True)
    src = os.path.join(tiny_env["models"], "streaming_t2v", "streaming_t2v.ckpt")
    out = os.path.join(tiny_env["output"], "cli.safetensors")
    assert cli_main(["convert-streaming-t2v", src, out, "--dtype", "fp16"]) == 0 and os.path.isfile(out)
