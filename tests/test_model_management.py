"""The model cache and the nodes inside a ComfyUI stand-in (``tests/fake_comfyui``, in a child process):
every run asks ``load_models_gpu`` for room for its activations, a model that ComfyUI offloads to make
room stays cached while ComfyUI holds it too (loaded again, nothing read from disk) and is freed with it,
and one that ComfyUI unloads with every model ("Unload models", ``POST /free``) is let go. The same in real ComfyUI:
tests/test_comfyui_real.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE = os.path.join(ROOT, "tests", "fake_comfyui")

CHILD = r'''
import gc, json, sys, time, weakref
import torch
import comfy.model_management as mm
from comfyui_webtv.nodes import host
from comfyui_webtv.nodes.common import models

assert host.IN_COMFYUI and host.managed_models()
report = {}


def wait(condition, what):
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


# ---- the cache across offloading and unloading
loads = []


def load():
    loads.append(1)
    return torch.nn.Sequential(torch.nn.Linear(4, 4))


def ours_loaded(module):
    return any(loaded.model.model.module is module for loaded in mm.current_loaded_models)


device = mm.get_torch_device()
net = models.cached("net", load)  # `net` stands for ComfyUI holding the model (a loader node's output)
with models.on_device(net, memory_required=12345):
    pass
report["first_call"] = mm.calls[-1]
mm.free_memory(1 << 40, device)  # another model needs the room: ComfyUI offloads ours
time.sleep(1.0)  # the release runs on its own thread
report["kept_while_held"] = "net" in models.cached_keys() and models.cached("net", load) is net
with models.on_device(models.cached("net", load)):
    report["loaded_again"] = ours_loaded(net)
report["read_from_disk_after_offload"] = len(loads) - 1
mm.free_memory(1 << 40, device)
alive = weakref.ref(net)
del net  # ComfyUI lets go too (its caches freed)
wait(lambda: gc.collect() is not None and alive() is None, "an offloaded model nothing holds was kept")
report["listed_once_freed"] = "net" in models.cached_keys()
net = models.cached("net", load)
with models.on_device(net):
    pass
mm.unload_all_models()  # Unload models / POST /free
wait(lambda: "net" not in models.cached_keys(), "the cache kept a model after unload_all_models")
models.cached("net", load)
report["loads"] = len(loads)
models.clear_cache()
mm.free_memory(1 << 40, device)

# ---- the nodes' estimates
from comfyui_webtv.nodes import NODE_CLASS_MAPPINGS as N

mm.calls.clear()
(model,) = N["ZeroscopeLoader"]().load(model_name="zeroscope_v2_576w", dtype="fp32", download_if_missing=False)
video = N["ZeroscopeTextToVideo"]().generate(
    model=model, prompt="a lighthouse", negative_prompt="", seed=1, frames=4, steps=1, guidance=9.0,
    width=64, height=48,
)[0]
report["zeroscope"] = mm.calls[-1]
mm.calls.clear()
for batch_size in (1, 2):
    N["WebTVFilmInterpolate"]().interpolate(
        frames=video, model_name=sys.argv[1], mode="multiplier", multiplier=2, source_fps=8.0, target_fps=16.0,
        strategy="auto", bisection_depth=2, scene_cut_threshold=1.0, batch_size=batch_size, dtype="fp32",
    )
report["film"] = [call for call in mm.calls]
print(json.dumps(report))
'''


def _run_child(tmp_path) -> dict:
    from comfyui_webtv.nodes.film import tiny as film_tiny
    from comfyui_webtv.nodes.zeroscope import tiny as zeroscope_tiny

    models = tmp_path / "models"
    zeroscope_tiny.make(str(models))
    film = [os.path.basename(p) for p in film_tiny.make(str(models)) if p.endswith((".pt", ".pth", ".safetensors"))]
    env = {**os.environ, "PYTHONPATH": FAKE, "FAKE_COMFYUI_BASE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", CHILD, film[0]], capture_output=True, text=True, timeout=600,
                          cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cache_follows_model_management_and_nodes_ask_for_activation_room(tmp_path):
    report = _run_child(tmp_path)
    # on_device hands its estimate to load_models_gpu with the module's patcher
    assert report["first_call"] == [["Sequential"], 12345]
    # offloaded to make room while ComfyUI holds it: still cached, loaded again, not read from disk again;
    # once nothing else holds it, freed (not kept by the cache)
    assert report["kept_while_held"] and report["loaded_again"] and report["read_from_disk_after_offload"] == 0
    assert not report["listed_once_freed"]
    # unloaded with every model: forgotten, read from disk on the next use (loads: first, after the
    # weak release, after unload_all_models)
    assert report["loads"] == 3

    names, memory = report["zeroscope"]
    assert sorted(names) == ["AutoencoderKL", "CLIPTextModel", "UNet3DConditionModel"]
    # 4 frames of 64 x 48 in fp32: the VAE decoding 4 frames (4 * 64 * 48 px * 512 values * 4 bytes) is
    # more than the UNet on 2 x 4 x 8 x 6 latents (1/100 MiB per latent value and byte)
    assert memory == max(4 * 64 * 48 * 512 * 4, 2 * 4 * 8 * 6 * 4 * (1 << 20) // 100) == 25165824
    (one, m1), (two, m2) = report["film"]
    assert one == two and len(one) == 1
    assert m1 == 48 * 64 * 2048 and m2 == 2 * m1  # FILM: 2 KiB per pixel of each pair in a batch
