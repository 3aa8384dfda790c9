"""Shot writing node: a theme in, one text-to-video prompt per shot out."""

from __future__ import annotations

import json

from .backends import select
from .writer import write_shots

BACKENDS = ["auto", "openai_compatible", "local", "template"]


class ShotWriter:
    DESCRIPTION = (
        "Writes a sequence of text-to-video prompts from a theme. The prompts repeat the same subject, "
        "camera and lighting keywords in every shot and name each shot's motion and its direction. A "
        "language model writes them (an OpenAI-compatible chat endpoint, or a local transformers model "
        "from models/llm); its JSON reply is validated, repaired or asked again when malformed. Without "
        "a model a deterministic template expands the theme, so the workflow runs offline. The prompts "
        "output is a list: a text-to-video node wired to it runs once per shot. The endpoint's API key "
        "is read from the WEBTV_LLM_API_KEY environment variable (or the file named by "
        "WEBTV_LLM_API_KEY_FILE), never from the workflow."
    )
    CATEGORY = "WebTV/Prompts"
    FUNCTION = "write"
    RETURN_TYPES = ("STRING", "STRING", "STRING")
    RETURN_NAMES = ("prompts", "combined", "report")
    OUTPUT_IS_LIST = (True, False, False)
    OUTPUT_TOOLTIPS = (
        "One prompt per shot, as a list: downstream nodes run once per shot.",
        "All prompts, one per line (for a music prompt, a caption file or a Show Text node).",
        "JSON: which backend wrote the shots, attempts, problems found, shared keywords.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "theme": ("STRING", {"multiline": True, "default": "", "tooltip": "What the sequence is about: who or what, where, what happens. The first sentence is the subject for the template."}),
                "shots": ("INT", {"default": 6, "min": 1, "max": 100, "tooltip": "Number of shots (clips of 2 to 3 seconds each)."}),
                "style": ("STRING", {"default": "cinematic, photorealistic", "tooltip": "Comma-separated style keywords added to every shot."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True, "tooltip": "Sampling seed of the model; for the template, the order of the camera moves."}),
                "backend": (BACKENDS, {"default": "auto", "tooltip": "auto: the endpoint if a URL is set, else a local model if one is in models/llm, else the template. The others force one way."}),
                "endpoint_url": ("STRING", {"default": "", "tooltip": "OpenAI-compatible chat endpoint, e.g. http://127.0.0.1:8080/v1 or https://api.openai.com/v1. Key from WEBTV_LLM_API_KEY, never here."}),
                "model": ("STRING", {"default": "", "tooltip": "The endpoint's model name, or a folder under models/llm for the local backend (auto picks the first local one when empty)."}),
            }
        }

    def write(self, theme, shots, style, seed, backend, endpoint_url, model):
        result = write_shots(
            theme, shots, style, seed,
            backends=select(backend, endpoint_url, model, shots),
            strict=backend != "auto",
        )
        return (result.prompts, "\n".join(result.prompts), json.dumps(result.report()))


NODE_CLASS_MAPPINGS = {"WebTVShotWriter": ShotWriter}
NODE_DISPLAY_NAME_MAPPINGS = {"WebTVShotWriter": "Shot Writer (WebTV)"}
