"""A channel's rotation and position on disk, so a restarted channel goes on where it was (opt-in).

:class:`Keeper` writes ``{"channel", "clips", "clip", "saved_at"}`` (the rotation, the clip on air)
every few seconds when it changed, replacing the file atomically, so a crash leaves the last whole
state. :func:`restore` brings a newly started channel back to it: the saved rotation's clips that
still exist when the channel has none, and the saved clip next on air.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from ..common.files import atomic_path
from .normalize import probe

log = logging.getLogger(__name__)
SAVE_SECONDS = 2.0


def snapshot(channel) -> dict:
    """The channel's rotation and the clip on air (the next one while the slate airs)."""
    paths, cursor = channel.rotation()
    current = (channel.status().get("current_clip") or {}).get("path")
    if current not in paths:
        current = paths[cursor % len(paths)] if paths else None
    return {"channel": channel.settings.name, "clips": paths, "clip": current}


def save(state: dict, path: str) -> None:
    with atomic_path(path) as part:
        with open(part, "w", encoding="utf-8") as f:
            json.dump({**state, "saved_at": round(time.time(), 3)}, f)


def load(path: str) -> dict | None:
    """The saved state, or None when there is none (a damaged file is reported and ignored)."""
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("channel state %s unreadable (%s); starting from the beginning", path, e)
        return None
    if not isinstance(state, dict) or not isinstance(state.get("clips"), list):
        log.warning("channel state %s has no rotation; starting from the beginning", path)
        return None
    return state


def restore(channel, state: dict) -> str | None:
    """Bring ``channel`` back to ``state``; returns the clip it goes on with (None: nothing to resume)."""
    if not channel.rotation()[0]:
        clips = [p for p in state["clips"] if isinstance(p, str) and os.path.isfile(p)]
        if clips:
            channel.set_clips([probe(p) for p in clips])
    clip = state.get("clip")
    return clip if isinstance(clip, str) and channel.seek(clip) else None


class Keeper:
    """Saves a running channel's state to ``path`` every SAVE_SECONDS while it changes."""

    def __init__(self, channel, path: str):
        self.channel, self.path = channel, path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"webtv-state-{channel.settings.name}", daemon=True)

    def start(self) -> "Keeper":
        self._thread.start()
        return self

    def _loop(self) -> None:
        last = None
        while not self._stop.wait(SAVE_SECONDS):
            last = self.save(last)

    def save(self, last: dict | None = None) -> dict:
        state = snapshot(self.channel)
        if state != last and state["clips"]:
            try:
                save(state, self.path)
            except OSError as e:  # a full disk must not stop the channel
                log.warning("channel state not saved to %s: %s", self.path, e)
                return last
        return state

    def stop(self) -> None:
        """Stop saving; the last state is written first."""
        self._stop.set()
        self._thread.join(10)
        self.save()
