"""Reading a model's reply: find the JSON, repair common damage, validate it, compose the prompts."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

DIRECTION = re.compile(
    r"\b(left|right|up|upward|upwards|down|downward|downwards|toward|towards|away|forward|forwards|"
    r"backward|backwards|clockwise|counterclockwise|counter-clockwise|across|around|closer|overhead|past|"
    r"north|south|east|west|ascend(s|ing)?|descend(s|ing)?|ris(es|ing)|fall(s|ing)?|"
    r"(zoom(s|ing)?|dolly|dollies|dollying|push(es|ing)?|pull(s|ing)?) (in|out|back))\b",
    re.IGNORECASE,
)
_LITERALS = {"True": "true", "False": "false", "None": "null"}
_SMART_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"'})


class ShotFormatError(ValueError):
    """A reply that is not a usable shot list; the message says what to fix (it is sent back to the model)."""


@dataclass(frozen=True)
class ShotPlan:
    """The validated content of a reply."""

    subject: str
    camera: str
    lighting: str
    shots: tuple[tuple[str, str], ...]  # (prompt, motion)


def _json_span(text: str) -> str:
    """The first JSON object (or array) in ``text``, closed if the reply was cut off."""
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        raise ShotFormatError("the reply contains no JSON object.")
    start = min(starts)
    stack: list[str] = []
    in_string = escaped = False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            stack.append("}" if c == "{" else "]")
        elif c in "}]":
            if not stack or stack.pop() != c:
                raise ShotFormatError(f"the JSON has an unmatched {c!r} at character {i}.")
            if not stack:
                return text[start : i + 1]
    # Cut off: close the open string and containers.
    tail = text[start:].rstrip()
    if in_string:
        tail += '"'
    tail = re.sub(r"[,:]\s*$", "", tail)
    return tail + "".join(reversed(stack))


def _outside_strings(text: str, fix) -> str:
    """Apply ``fix`` to the parts of JSON ``text`` outside string literals."""
    parts = re.split(r'("(?:[^"\\]|\\.)*")', text)
    return "".join(p if i % 2 else fix(p) for i, p in enumerate(parts))


def repair_json(text: str):
    """Parse the JSON in a model reply, repairing code fences, surrounding prose, smart quotes,
    trailing commas, Python literals and a cut-off end. Raises ShotFormatError when it cannot."""
    text = text.translate(_SMART_QUOTES)
    text = re.sub(r"```(?:json|JSON)?", "", text)
    span = _json_span(text)

    def fix(part: str) -> str:
        part = re.sub(r",(\s*[}\]])", r"\1", part)
        return re.sub(r"\b(True|False|None)\b", lambda m: _LITERALS[m.group(1)], part)

    try:
        return json.loads(_outside_strings(span, fix))
    except json.JSONDecodeError as e:
        raise ShotFormatError(f"the JSON does not parse ({e.msg} at character {e.pos}).") from None
    except (RecursionError, ValueError):
        raise ShotFormatError("the JSON is nested too deeply or holds out-of-range values.") from None


def _text(value) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def validate(data, shots: int) -> ShotPlan:
    """Check a parsed reply against the requested shape; extra shots are dropped."""
    if not isinstance(data, dict):
        raise ShotFormatError('the reply must be a JSON object with "subject", "camera", "lighting" and "shots".')
    missing = [k for k in ("subject", "camera", "lighting") if not _text(data.get(k))]
    if missing:
        raise ShotFormatError(f"the keys {', '.join(repr(k) for k in missing)} must be non-empty strings.")
    items = data.get("shots", data.get("captions"))
    if not isinstance(items, list):
        raise ShotFormatError('"shots" must be a list.')
    if len(items) < shots:
        raise ShotFormatError(f"{shots} shots were asked for, the reply has {len(items)}.")
    parsed = []
    for index, item in enumerate(items[:shots], start=1):
        if isinstance(item, str):
            prompt, motion = _text(item), ""
        elif isinstance(item, dict):
            prompt, motion = _text(item.get("prompt")), _text(item.get("motion"))
        else:
            prompt = motion = ""
        if not prompt:
            raise ShotFormatError(f'shot {index} has no "prompt" text.')
        if not DIRECTION.search(f"{prompt} {motion}"):
            raise ShotFormatError(
                f"shot {index} does not name the direction of its motion (left, right, up, down, toward, away, ...)."
            )
        parsed.append((prompt, motion))
    return ShotPlan(_text(data["subject"]), _text(data["camera"]), _text(data["lighting"]), tuple(parsed))


def parse_reply(reply: str, shots: int) -> ShotPlan:
    """Repair and validate a model reply."""
    return validate(repair_json(reply), shots)


def style_keywords(style: str) -> list[str]:
    """Comma-separated style keywords, trimmed, without empties or repeats."""
    seen: dict[str, str] = {}
    for word in style.split(","):
        word = " ".join(word.split())
        if word and word.lower() not in seen:
            seen[word.lower()] = word
    return list(seen.values())


def compose(plan: ShotPlan, style: str) -> list[str]:
    """The final prompts: each shot's text plus, where the model left them out, its motion, the
    shared subject, camera and lighting keywords and the style keywords, so every shot carries them."""
    prompts = []
    for prompt, motion in plan.shots:
        parts = [prompt.rstrip(" .,")]
        for extra in [motion, plan.subject, plan.camera, plan.lighting, *style_keywords(style)]:
            if extra and extra.lower().rstrip(" .") not in ", ".join(parts).lower():
                parts.append(extra.rstrip(" ."))
        prompts.append(", ".join(parts))
    return prompts
