"""Input checks shared by every node: one clear ``ValueError`` naming the input and the fix.

ComfyUI checks a widget's min and max, but NaN and infinity pass both comparisons, links bypass
widgets, and the engines are called without ComfyUI too; so nodes check what they use.
"""

from __future__ import annotations

import math

SEED_MAX = 2**64 - 1


def finite(name: str, value, *, low: float | None = None, high: float | None = None,
           low_open: bool = False) -> float:
    """``value`` as a float that is finite and in range; ``low_open`` excludes ``low`` itself."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {value!r} is not a number.") from None
    if not math.isfinite(number):
        raise ValueError(f"{name}: must be a finite number, got {value!r}.")
    if low is not None and (number <= low if low_open else number < low):
        raise ValueError(f"{name}: must be {'above' if low_open else 'at least'} {low:g}, got {number:g}.")
    if high is not None and number > high:
        raise ValueError(f"{name}: must be at most {high:g}, got {number:g}.")
    return number


def positive(name: str, value) -> float:
    """A finite number above zero (a frame rate, a duration, a sample rate)."""
    return finite(name, value, low=0.0, low_open=True)


def integer(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (bools and fractional numbers refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{name}: {value!r} is not a whole number.")
    number = int(value)
    if low is not None and number < low:
        raise ValueError(f"{name}: must be at least {low}, got {number}.")
    if high is not None and number > high:
        raise ValueError(f"{name}: must be at most {high}, got {number}.")
    return number


def seed(name: str, value) -> int:
    """A seed in ComfyUI's range, 0 to 2**64 - 1."""
    return integer(name, value, low=0, high=SEED_MAX)


def text(name: str, value, *, limit: int, allow_empty: bool = True) -> str:
    """A string of at most ``limit`` characters (models read only so much; longer text is refused, not cut)."""
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected text, got {type(value).__name__}.")
    if not allow_empty and not value.strip():
        raise ValueError(f"{name}: is empty.")
    if len(value) > limit:
        raise ValueError(f"{name}: {len(value)} characters is more than this input can use ({limit}); shorten it.")
    return value
