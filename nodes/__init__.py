"""Every stage's nodes, gathered for ComfyUI."""

from . import host
from .broadcast import nodes as _broadcast
from .film import nodes as _film
from .music import nodes as _music
from .prompts import nodes as _prompts
from .streaming import nodes as _streaming
from .zeroscope import nodes as _zeroscope

host.register_model_folders()

_STAGES = (_zeroscope, _broadcast, _film, _prompts, _music, _streaming)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _stage in _STAGES:
    NODE_CLASS_MAPPINGS.update(_stage.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_stage.NODE_DISPLAY_NAME_MAPPINGS)
