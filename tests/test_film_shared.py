"""FILM with shared work: features per frame, flows per pair, fusion per time.

Checked against the unshared forward pass (one call per frame made), call counts, ComfyUI core's weight
layout (key names written out below from core's module tree) and its INTERP_MODEL, and precision.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from fractions import Fraction

import pytest
import torch
from safetensors.torch import save_file

from comfyui_webtv.nodes import host
from comfyui_webtv.nodes.common import models as common_models
from comfyui_webtv.nodes.film import nodes, timing, tiny, weights
from comfyui_webtv.nodes.film.interpolate import interpolate, run_model

# ComfyUI core's FILM conv units (comfy_extras/frame_interpolation_models/film_net.py: FilmConv2d holds its
# nn.Conv2d as ``conv``) and the release port's module for each (conv at child ``0``), as fixed strings.
CORE_UNITS = {
    "extract.extract_sublevels.convs.0.0.conv": "extract.extract_sublevels.convs.0.0.0",
    "extract.extract_sublevels.convs.0.1.conv": "extract.extract_sublevels.convs.0.1.0",
    "extract.extract_sublevels.convs.1.0.conv": "extract.extract_sublevels.convs.1.0.0",
    "extract.extract_sublevels.convs.1.1.conv": "extract.extract_sublevels.convs.1.1.0",
    "extract.extract_sublevels.convs.2.0.conv": "extract.extract_sublevels.convs.2.0.0",
    "extract.extract_sublevels.convs.2.1.conv": "extract.extract_sublevels.convs.2.1.0",
    "extract.extract_sublevels.convs.3.0.conv": "extract.extract_sublevels.convs.3.0.0",
    "extract.extract_sublevels.convs.3.1.conv": "extract.extract_sublevels.convs.3.1.0",
    "predict_flow._predictor._convs.0.conv": "predict_flow._predictor._convs.0.0",
    "predict_flow._predictor._convs.1.conv": "predict_flow._predictor._convs.1.0",
    "predict_flow._predictor._convs.2.conv": "predict_flow._predictor._convs.2.0",
    "predict_flow._predictor._convs.3.conv": "predict_flow._predictor._convs.3.0",
    "predict_flow._predictor._convs.4.conv": "predict_flow._predictor._convs.4.0",
    "predict_flow._predictors.0._convs.0.conv": "predict_flow._predictors.0._convs.0.0",
    "predict_flow._predictors.0._convs.1.conv": "predict_flow._predictors.0._convs.1.0",
    "predict_flow._predictors.0._convs.2.conv": "predict_flow._predictors.0._convs.2.0",
    "predict_flow._predictors.0._convs.3.conv": "predict_flow._predictors.0._convs.3.0",
    "predict_flow._predictors.0._convs.4.conv": "predict_flow._predictors.0._convs.4.0",
    "predict_flow._predictors.1._convs.0.conv": "predict_flow._predictors.1._convs.0.0",
    "predict_flow._predictors.1._convs.1.conv": "predict_flow._predictors.1._convs.1.0",
    "predict_flow._predictors.1._convs.2.conv": "predict_flow._predictors.1._convs.2.0",
    "predict_flow._predictors.1._convs.3.conv": "predict_flow._predictors.1._convs.3.0",
    "predict_flow._predictors.1._convs.4.conv": "predict_flow._predictors.1._convs.4.0",
    "predict_flow._predictors.2._convs.0.conv": "predict_flow._predictors.2._convs.0.0",
    "predict_flow._predictors.2._convs.1.conv": "predict_flow._predictors.2._convs.1.0",
    "predict_flow._predictors.2._convs.2.conv": "predict_flow._predictors.2._convs.2.0",
    "predict_flow._predictors.2._convs.3.conv": "predict_flow._predictors.2._convs.3.0",
    "predict_flow._predictors.2._convs.4.conv": "predict_flow._predictors.2._convs.4.0",
    "fuse.convs.0.0.conv": "fuse.convs.0.0.0",
    "fuse.convs.0.1.conv": "fuse.convs.0.1.0",
    "fuse.convs.0.2.conv": "fuse.convs.0.2.0",
    "fuse.convs.1.0.conv": "fuse.convs.1.0.0",
    "fuse.convs.1.1.conv": "fuse.convs.1.1.0",
    "fuse.convs.1.2.conv": "fuse.convs.1.2.0",
    "fuse.convs.2.0.conv": "fuse.convs.2.0.0",
    "fuse.convs.2.1.conv": "fuse.convs.2.1.0",
    "fuse.convs.2.2.conv": "fuse.convs.2.2.0",
    "fuse.convs.3.0.conv": "fuse.convs.3.0.0",
    "fuse.convs.3.1.conv": "fuse.convs.3.1.0",
    "fuse.convs.3.2.conv": "fuse.convs.3.2.0",
    "fuse.output_conv": "fuse.output_conv",
}


def core_state(model, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """``model``'s tensors under core's names."""
    state = model.state_dict()
    return {f"{core}.{p}": state[f"{pack}.{p}"].to(dtype).contiguous()
            for core, pack in CORE_UNITS.items() for p in ("weight", "bias")}


def clip(count, height=40, width=72, seed=0):
    return torch.rand(count, height, width, 3, generator=torch.Generator().manual_seed(seed))


def chw(image):
    return image.permute(2, 0, 1)[None]


def unshared(model, images, plan):
    """Every output frame from whole forward passes: one per frame made, bisection by recursive midpoints."""
    memo = {}

    def at(pair, x):
        if x in (0, 1):
            return chw(images[pair + int(x)])
        if (pair, x) not in memo:
            job = next(j for level in plan.jobs[pair] for j in level if j.x == x)
            memo[(pair, x)] = run_model(model, at(pair, job.a), at(pair, job.b), torch.tensor([[float(job.t)]]))
        return memo[(pair, x)]

    return torch.stack([at(f.pair, f.t)[0].permute(1, 2, 0) for f in plan.frames])


def plans(count, images):
    cuts = timing.detect_cuts(images, 0.5)
    rate = timing.rate_times
    return {
        "x2": (timing.multiplier_times(count, 2), "auto", True),
        "x3": (timing.multiplier_times(count, 3), "auto", True),
        "x4": (timing.multiplier_times(count, 4), "auto", True),
        "x4 bisection": (timing.multiplier_times(count, 4), "bisection", True),
        "8->24": (rate(count, Fraction(8), Fraction(24)), "auto", True),
        "24->60": (rate(count, Fraction(24), Fraction(60)), "auto", True),
        "8->24 t ignored": (rate(count, Fraction(8), Fraction(24)), "auto", False),
        "cuts": (timing.multiplier_times(count, 3), "auto", True, cuts),
    }


@pytest.fixture(scope="module")
def scene():
    dark = clip(3, seed=1) * 0.3
    light = 0.7 + clip(2, seed=2) * 0.3
    return torch.cat([dark, light])  # a cut after frame 2


@pytest.mark.parametrize("mode", list(plans(5, clip(5))))
def test_shared_and_unshared_give_the_same_frames(mode, scene):
    times, strategy, honours_t, *cuts = plans(5, scene)[mode]
    model = tiny.random_model(honours_t=honours_t, seed=3)
    plan = timing.make_plan(times, 5, strategy, honours_t, 4, cuts[0] if cuts else set())
    if mode == "cuts":
        assert plan.cut_pairs == [2] and any(f.hold for f in plan.frames)
    expected = unshared(model, scene, plan)
    for batch_size in (1, 2, 3, 4):
        out = interpolate(model, scene, plan, batch_size=batch_size)
        assert out.shape == expected.shape
        assert (out - expected).abs().max().item() < 1e-5, (mode, batch_size)


def counting(model):
    """Count the frames through ``features`` and the pairs through ``flows`` (samples, not calls)."""
    seen = {"features": [], "flows": [], "synthesize": []}
    for part in seen:
        original = getattr(model, part)

        def counted(*args, _original=original, _part=part):
            seen[_part].append(args[0].shape[0] if _part == "features" else args[0][0].shape[0])
            return _original(*args)

        setattr(model, part, counted)
    return seen


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4])
def test_features_once_per_frame_and_flows_once_per_pair(batch_size):
    images = clip(6, seed=4)
    model = tiny.random_model(seed=5)
    seen = counting(model)
    plan = timing.make_plan(timing.multiplier_times(6, 8), 6, "single_shot", True, 4)
    interpolate(model, images, plan, batch_size=batch_size)
    assert sum(seen["features"]) == 6  # each input frame once, though the middle ones serve two pairs
    assert sum(seen["flows"]) == 5  # each pair once for its 7 times
    assert sum(seen["synthesize"]) == 35
    assert max(seen["flows"] + seen["synthesize"]) <= batch_size
    assert max(seen["features"]) <= batch_size + 1  # a group's new frames, plus the first frame of the clip


def test_bisection_computes_each_made_frame_features_once():
    images = clip(4, seed=6)
    model = tiny.random_model(seed=7)
    seen = counting(model)
    plan = timing.make_plan(timing.multiplier_times(4, 4), 4, "bisection", True, 4)
    interpolate(model, images, plan, batch_size=2)
    # 4 inputs + the midpoint of each of 3 pairs (the quarter frames are never sources).
    assert sum(seen["features"]) == 7 and sum(seen["flows"]) == 9 and sum(seen["synthesize"]) == 9


def test_rate_24_to_60_makes_only_the_frames_it_shows():
    images = clip(5, seed=8)
    model = tiny.random_model(seed=9)
    seen = counting(model)
    plan = timing.make_plan(timing.rate_times(5, Fraction(24), Fraction(60)), 5, "auto", True, 4)
    out = interpolate(model, images, plan, batch_size=4)
    made = sum(f.needs_model for f in plan.frames)
    assert out.shape[0] == math.ceil(5 * 60 / 24) and sum(seen["synthesize"]) == made
    assert sum(seen["flows"]) == 4 and sum(seen["features"]) == 5


# ---------------------------------------------------------------- ComfyUI core's weights


@pytest.fixture
def core_models(tmp_path, monkeypatch):
    """A models folder with one random FILM saved four ways: core's layout in fp32 and fp16 under
    frame_interpolation/, the pack's layout (converted) in film/, and a RIFE-like file core also keeps."""
    model = tiny.random_model(seed=11)
    fi, film = tmp_path / "frame_interpolation", tmp_path / "film"
    fi.mkdir()
    film.mkdir()
    save_file(core_state(model), str(fi / "film_net_fp32.safetensors"))
    save_file(core_state(model, torch.float16), str(fi / "film_net_fp16.safetensors"))
    save_file({"block0.conv0.0.weight": torch.zeros(2, 2, 3, 3)}, str(fi / "rife49.safetensors"))
    src = str(tmp_path / "state.pt")
    torch.save(model.state_dict(), src)
    weights.convert(src, str(film / "pack.safetensors"), time_input="honoured")
    half = {k: v.half().contiguous() for k, v in model.state_dict().items()}
    save_file(half, str(film / "pack_fp16.safetensors"), metadata={"format": "film_net", "time_input": "honoured"})
    monkeypatch.setitem(host._standalone, "models", str(tmp_path))
    yield tmp_path
    common_models.clear_cache()


def test_core_key_table_is_core_module_tree():
    assert weights.core_key_table() == {f"{c}.{p}": f"{k}.{p}" for c, k in CORE_UNITS.items() for p in ("weight", "bias")}


def test_core_files_load_strictly_and_match_the_pack_layout(core_models):
    images = clip(3, seed=12)
    plan = timing.make_plan(timing.multiplier_times(3, 3), 3, "single_shot", True, 4)
    run = {}
    for name in ("film_net_fp32.safetensors", "film_net_fp16.safetensors", "pack.safetensors", "pack_fp16.safetensors"):
        model = weights.load_file(weights.find(name))
        assert model.honours_t
        run[name] = interpolate(model, images, plan, batch_size=2)
    assert torch.equal(run["film_net_fp32.safetensors"], run["pack.safetensors"])
    assert torch.equal(run["film_net_fp16.safetensors"], run["pack_fp16.safetensors"])
    assert not torch.equal(run["film_net_fp16.safetensors"], run["film_net_fp32.safetensors"])  # fp16 rounding seen


def test_core_files_are_offered_and_rife_files_are_not(core_models, output_dir):
    names = nodes.FilmInterpolate.INPUT_TYPES()["required"]["model_name"][0]
    assert names == ["pack.safetensors", "pack_fp16.safetensors", "film_net_fp16.safetensors",
                     "film_net_fp32.safetensors"]
    out, _, report = nodes.FilmInterpolate().interpolate(
        clip(2), model_name="film_net_fp16.safetensors", mode="multiplier", multiplier=2, source_fps=8.0,
        target_fps=24.0, strategy="auto", bisection_depth=4, scene_cut_threshold=1.0, batch_size=2, dtype="auto")
    assert out.shape[0] == 3 and json.loads(report)["model"] == "film_net_fp16.safetensors"


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_core_file_with_a_missing_or_extra_key_is_refused_naming_it(core_models, change):
    state = core_state(tiny.random_model(seed=11))
    if change == "missing":
        del state["predict_flow._predictors.1._convs.3.conv.bias"]
        key = "predict_flow._predictors.1._convs.3.conv.bias"
    else:
        key = "fuse.convs.1.1.conv.scale"
        state[key] = torch.ones(1)
    path = str(core_models / "frame_interpolation" / "broken.safetensors")
    save_file(state, path)
    with pytest.raises(ValueError, match=rf"model_name: .*{change if change == 'missing' else 'unexpected'}.*{key}"):
        weights.load_file(path)


# ---------------------------------------------------------------- core's INTERP_MODEL


def module_with(state: dict[str, torch.Tensor], name: str) -> torch.nn.Module:
    """An ``nn.Module`` whose state_dict is ``state``, under class ``name`` (shaped like core's FILMNet)."""
    root = type(name, (torch.nn.Module,), {})()
    for key, value in state.items():
        *path, leaf = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, torch.nn.Parameter(value, requires_grad=False))
    return root


class FakePatcher:
    """What core's Load Frame Interpolation Model returns: a ModelPatcher with the network at ``.model``.
    (The check against a real ComfyUI is left to the integration run.)"""

    def __init__(self, module):
        self.model = module
        self.load_device = torch.device("cpu")


def test_core_interp_model_is_accepted(core_models, output_dir):
    model = tiny.random_model(seed=11)
    patcher = FakePatcher(module_with(core_state(model, torch.float16), "FILMNet"))
    images = clip(3, seed=13)
    kwargs = dict(mode="frame_rate", multiplier=2, source_fps=8.0, target_fps=24.0, strategy="auto",
                  bisection_depth=4, scene_cut_threshold=1.0, batch_size=2, dtype="auto")
    out, _, report = nodes.FilmInterpolate().interpolate(images, model_name="absent.safetensors",
                                                         interp_model=patcher, **kwargs)
    ref, _, _ = nodes.FilmInterpolate().interpolate(images, model_name="pack_fp16.safetensors", **kwargs)
    assert torch.equal(out, ref) and json.loads(report)["model"] == "interp_model"
    rife = FakePatcher(module_with({"blocks.0.conv0.0.weight": torch.zeros(2, 2, 3, 3)}, "IFNet"))
    with pytest.raises(ValueError, match="interp_model: IFNet is not a FILM model"):
        nodes.FilmInterpolate().interpolate(images, model_name="absent.safetensors", interp_model=rife, **kwargs)
    with pytest.raises(ValueError, match="interp_model: expected the INTERP_MODEL"):
        nodes.FilmInterpolate().interpolate(images, model_name="x", interp_model="film", **kwargs)


# ---------------------------------------------------------------- precision and input checks


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_flows_and_their_time_scaling_in_fp32(dtype):
    reference = tiny.random_model(seed=14)
    model = tiny.random_model(seed=14).to(dtype)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(15))
    with torch.inference_mode():
        levels = model.features(x.to(dtype))
        assert all(level.dtype == dtype for level in levels)
        a, b = [lv[:1] for lv in levels], [lv[1:] for lv in levels]
        flow01, flow10 = model.flows(a, b)
        from0, from1 = model.time_scaled(flow01, flow10, torch.tensor([[0.3]]))
        ref_levels = reference.features(x)
        ref01, _ = reference.flows([lv[:1] for lv in ref_levels], [lv[1:] for lv in ref_levels])
        frame = model.synthesize(a, b, flow01, flow10, torch.tensor([[0.3]]))
    assert all(f.dtype == torch.float32 for f in flow01 + flow10 + from0 + from1)
    assert torch.allclose(from0[0], 0.3 * flow10[0]) and torch.allclose(from1[0], 0.7 * flow01[0])
    scale = max(f.abs().max().item() for f in ref01)
    assert all((f - r).abs().max().item() <= 0.05 * scale + 1e-3 for f, r in zip(flow01, ref01))
    assert frame.dtype == dtype and torch.isfinite(frame.float()).all()


def test_non_finite_rates_and_oversized_outputs_are_refused_before_any_work(tiny_env, monkeypatch):
    free = shutil.disk_usage(host.temp_dir()).free
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2 * free, free, min(free, 10**11)))
    kwargs = dict(model_name=weights.DEFAULT_NAME, mode="frame_rate", multiplier=2, source_fps=8.0, target_fps=24.0,
                  strategy="auto", bisection_depth=4, scene_cut_threshold=1.0, batch_size=2, dtype="auto")
    node = nodes.FilmInterpolate()
    for name, value in (("source_fps", float("nan")), ("target_fps", float("inf")), ("source_fps", -8.0)):
        with pytest.raises(ValueError, match=name):
            node.interpolate(clip(2), **{**kwargs, name: value})

    def no_model(*_):
        raise AssertionError("the model was loaded before the size check")

    monkeypatch.setattr(nodes, "load_cached", no_model)
    frames = torch.zeros(24, 320, 576, 3)
    with pytest.raises(ValueError, match=r"target_fps: the output would be 115200 frames of 576x320 \(254\.8 GB\)"):
        node.interpolate(frames, **{**kwargs, "source_fps": 0.1, "target_fps": 480.0})
    with pytest.raises(ValueError, match=r"source_fps: must be above 0"):
        node.interpolate(frames, **{**kwargs, "source_fps": 0.0})
    with pytest.raises(ValueError, match="multiplier: the output would be"):
        node.interpolate(frames, **{**kwargs, "mode": "multiplier", "multiplier": 10**6})
    assert os.listdir(tiny_env["output"]) == []


def test_static_batches_pad_the_last_one_without_changing_frames(monkeypatch):
    """The shapes torch.compile sees on CUDA: every call padded to one batch size (checked here on CPU)."""
    from comfyui_webtv.nodes.film import interpolate as loop

    shapes = []

    class Static(loop.Runner):
        def __init__(self, *args):
            super().__init__(*args)
            self.static = True
            self.parts = [self._record(p) for p in self.parts]

        def _record(self, part):
            def run(first, *rest):
                shapes.append(first.shape[0] if isinstance(first, torch.Tensor) else first[0].shape[0])
                return part(first, *rest)
            return run

    monkeypatch.setattr(loop, "Runner", Static)
    images = clip(4, seed=16)
    model = tiny.random_model(seed=17)
    plan = timing.make_plan(timing.multiplier_times(4, 3), 4, "single_shot", True, 4)
    out = loop.interpolate(model, images, plan, batch_size=4)
    assert set(shapes) == {4, 5}  # features: batch + 1; flows and fusion: batch (6 times -> 4 + 2 padded)
    assert (out - unshared(model, images, plan)).abs().max().item() < 1e-5
