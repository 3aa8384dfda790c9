"""Shot prompts without a language model: a deterministic expansion of the theme.

The theme's first sentence is the subject; every shot repeats it with the same camera and lighting
keywords, and walks through shot sizes and camera moves (each naming its direction) in an order
chosen by the seed.
"""

from __future__ import annotations

import random
import re

from .parse import ShotPlan

CAMERA = "cinematic 35mm film, steady camera"
LIGHTING = "soft natural light"
SHOT_SIZES = (
    "establishing wide shot",
    "medium shot",
    "close-up",
    "low-angle shot",
    "over-the-shoulder shot",
    "high-angle shot",
)
MOTIONS = (
    "slow pan from left to right",
    "camera dollies in toward the subject",
    "tracking shot moving from right to left",
    "slow tilt up",
    "camera pulls back away from the subject",
    "crane shot rising upward",
    "slow pan from right to left",
    "slow zoom in toward the subject",
)
MAX_SUBJECT_WORDS = 30


def subject_of(theme: str) -> str:
    """The theme's first sentence, whitespace collapsed, at most 30 words, without end punctuation
    (a leading article in lower case)."""
    first = re.split(r"(?<=[.!?])\s|\n", theme.strip(), maxsplit=1)[0]
    words = first.split()[:MAX_SUBJECT_WORDS]
    if words and words[0] in ("A", "An", "The"):
        words[0] = words[0].lower()  # it follows "wide shot of"
    return " ".join(words).rstrip(" .!?,;:")


def template_plan(theme: str, shots: int, seed: int) -> ShotPlan:
    """``shots`` shots about ``theme``; the same inputs always give the same plan."""
    subject = subject_of(theme)
    if not subject:
        raise ValueError("theme: is empty; describe the sequence (who or what, where, what happens).")
    order = random.Random(seed).sample(MOTIONS, len(MOTIONS))
    plan = []
    for i in range(shots):
        size, motion = SHOT_SIZES[i % len(SHOT_SIZES)], order[i % len(order)]
        plan.append((f"{size} of {subject}, {motion}", motion))
    return ShotPlan(subject, CAMERA, LIGHTING, tuple(plan))
