"""What the language model is asked: the shot-writing instruction and the correction after a bad reply.

The rules come from the AI WebTV's prompt template: one coherent sequence, the same subject, camera
and lighting keywords repeated in every shot, the motion and its direction named, no timestamps,
no mixing of 3D renders with live-action footage, and a JSON answer.
"""

from __future__ import annotations

import json

SYSTEM = (
    "You are the shot writer of a TV channel whose clips are made by a text-to-video model "
    "(Zeroscope). Each shot becomes one clip of about 2 to 3 seconds. Text-to-video models keep "
    "nothing from one clip to the next, so continuity only comes from the words: repeat the same "
    "subject, camera and lighting keywords in every shot. Each shot must show visible motion and "
    "name its direction (for example: walks from left to right, camera dollies in toward the "
    "subject, pans right, tilts up, drifts away from the camera). Write each prompt in this order: "
    "content type, description of the action, style, composition, camera, extra keywords. Never "
    "write timestamps, shot numbers or phrases such as 'continued from'. Never mix 3D renders with "
    "live-action footage. Answer with one JSON object and nothing else."
)

EXAMPLE = {
    "subject": "an old lighthouse keeper with a grey beard and a yellow raincoat",
    "camera": "35mm film, shallow depth of field",
    "lighting": "stormy dusk, cold blue light",
    "shots": [
        {
            "prompt": "documentary footage, an old lighthouse keeper with a grey beard and a yellow raincoat climbs the spiral stairs, 35mm film, shallow depth of field, stormy dusk, cold blue light",
            "motion": "he climbs upward, camera tilts up",
        }
    ],
}


def user_message(theme: str, shots: int, style: str) -> str:
    """The request for ``shots`` prompts about ``theme``, in the JSON shape :mod:`.parse` reads."""
    style_line = f"Use these style keywords in every shot: {style}.\n" if style.strip() else ""
    return (
        f"Theme of the sequence:\n{theme.strip()}\n\n"
        f"Write exactly {shots} shots that tell this as one coherent sequence.\n"
        f"{style_line}"
        "Reply with a JSON object with these keys:\n"
        '- "subject": the main subject, described with the keywords every shot repeats;\n'
        '- "camera": the camera keywords every shot repeats (lens, film stock, framing style);\n'
        '- "lighting": the lighting and time-of-day keywords every shot repeats;\n'
        f'- "shots": a list of exactly {shots} objects, each with "prompt" (the full text-to-video '
        'prompt, containing the subject, camera and lighting keywords) and "motion" (what moves and '
        "in which direction).\n"
        f"Example of the shape (one shot shown):\n{json.dumps(EXAMPLE)}"
    )


def messages(theme: str, shots: int, style: str) -> list[dict[str, str]]:
    """The chat messages of the first request."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": user_message(theme, shots, style)},
    ]


def correction(reply: str, problem: str, shots: int) -> list[dict[str, str]]:
    """Messages to append after an unusable ``reply``: the reply itself and what was wrong with it."""
    return [
        {"role": "assistant", "content": reply},
        {
            "role": "user",
            "content": (
                f"That reply could not be used: {problem} Answer again with only the JSON object: "
                f'"subject", "camera", "lighting" and "shots" (exactly {shots} objects with '
                '"prompt" and "motion"), no text before or after it.'
            ),
        },
    ]
