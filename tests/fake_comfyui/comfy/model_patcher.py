"""Stand-in for comfy.model_patcher: a patcher that holds a model, counts its loads and runs its
ON_DETACH callbacks when model management unloads it."""

from .patcher_extension import CallbacksMP


class ModelPatcher:
    def __init__(self, model, load_device, offload_device):
        self.model, self.load_device, self.offload_device = model, load_device, offload_device
        self.callbacks: list = []
        self.loads = 0

    def add_callback(self, kind, callback):
        self.callbacks.append((kind, callback))

    def detach(self, unpatch_all=True):
        self.model.to(self.offload_device)
        for kind, callback in self.callbacks:
            if kind == CallbacksMP.ON_DETACH:
                callback(self, unpatch_all)
        return self.model
