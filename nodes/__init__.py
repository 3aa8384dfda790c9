"""Every stage's nodes, gathered for ComfyUI.

The stages (and torch) load on first use of the mappings, so the pieces that need neither (the
``queue`` client, shared file helpers) can be imported alone, e.g. by flow tasks that render on workers.
"""

import importlib

_STAGES = ("zeroscope", "broadcast", "film", "prompts", "music", "streaming")
_MAPPINGS = ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS")


def __getattr__(name: str):
    if name not in _MAPPINGS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import host

    host.register_model_folders()
    classes: dict[str, type] = {}
    names: dict[str, str] = {}
    for stage in _STAGES:
        module = importlib.import_module(f".{stage}.nodes", __name__)
        classes.update(module.NODE_CLASS_MAPPINGS)
        names.update(module.NODE_DISPLAY_NAME_MAPPINGS)
    globals().update(NODE_CLASS_MAPPINGS=classes, NODE_DISPLAY_NAME_MAPPINGS=names)
    return globals()[name]
