"""Stand-in for comfy.model_management: records load_models_gpu calls, offloads to make room and
unloads everything the way ComfyUI does (detach each, then drop it from the loaded list)."""

import torch


class InterruptProcessingException(Exception):
    pass


class LoadedModel:
    def __init__(self, model):
        self.model = model


current_loaded_models: list = []
calls: list = []  # (class names of the held modules, memory_required) per load_models_gpu call


def get_torch_device():
    return torch.device("cpu")


def unet_offload_device():
    return torch.device("cpu")


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None, force_full_load=False):
    calls.append(([type(getattr(p.model, "module", p.model)).__name__ for p in models], memory_required))
    for patcher in models:
        if not any(loaded.model is patcher for loaded in current_loaded_models):
            patcher.loads += 1
            patcher.model.to(patcher.load_device)
            current_loaded_models.insert(0, LoadedModel(patcher))


def free_memory(memory_required, device, keep_loaded=()):
    """Offload every loaded model but ``keep_loaded`` (this stand-in frees all it can)."""
    unloaded = [m for m in current_loaded_models if m not in keep_loaded]
    for loaded in unloaded:
        loaded.model.detach(True)
    for loaded in unloaded:
        current_loaded_models.remove(loaded)
    return unloaded


def unload_all_models():
    free_memory(1e30, get_torch_device())


def soft_empty_cache(force=False):
    pass


def throw_exception_if_processing_interrupted():
    pass
