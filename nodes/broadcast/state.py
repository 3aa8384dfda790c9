"""A channel's rotation and position on disk, so a restarted channel goes on where it was (opt-in).

:class:`Keeper` writes ``{"channel", "clips", "clip", "saved_at"}`` (the rotation, the clip on air)
every few seconds when it changed, replacing the file atomically, so a crash leaves the last whole
state. The file sits beside the channel's playlist (:func:`state_path`). A channel started again on
that playlist (the RTMP Channel node's ``resume``, ``run --remember --resume``) takes its rotation
from the playlist and goes on from the saved clip (:func:`resume_clip`), which then airs first.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from ..common.files import atomic_path

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


def state_path(playlist: str) -> str:
    """Where the state of a channel playing ``playlist`` is kept: ``<playlist name>.state.json`` beside it."""
    return os.path.splitext(playlist)[0] + ".state.json"


def resume_clip(path: str, clips: list[str]) -> str | None:
    """The clip that was on air when the state at ``path`` was saved, if ``clips`` still hold it."""
    clip = (load(path) or {}).get("clip")
    return clip if isinstance(clip, str) and clip in clips else None


class Keeper:
    """Saves a running channel's state to ``path`` every SAVE_SECONDS while it changes, until it stops."""

    def __init__(self, channel, path: str, resumed_at: str | None = None):
        self.channel, self.path, self.resumed_at = channel, path, resumed_at
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"webtv-state-{channel.settings.name}", daemon=True)

    def start(self) -> "Keeper":
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        last = None
        while not self._stop.wait(SAVE_SECONDS):
            last = self.save(last)
            if not self.channel.running:  # stopped (Channel Stop, shutdown): its last position is saved
                return

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
        if self._thread.is_alive():
            self._thread.join(10)
        self.save()


# -------------------------------------------------------------------- one keeper per channel

_keepers: dict[str, Keeper] = {}
_registry_lock = threading.Lock()


def attach(channel, path: str, resumed_at: str | None = None) -> Keeper:
    """The keeper of ``channel`` saving to ``path``: kept when it already does, else replaced."""
    name = channel.settings.name
    with _registry_lock:
        current = _keepers.get(name)
        if current is not None:
            if current.channel is channel and current.path == path and current.running:
                return current
            current.stop()
        keeper = _keepers[name] = Keeper(channel, path, resumed_at).start()
        return keeper


def attached(name: str) -> Keeper | None:
    """The keeper saving channel ``name``'s state, if any."""
    return _keepers.get(name)


def detach(name: str) -> None:
    """Stop keeping channel ``name``'s state (its last state is written first)."""
    with _registry_lock:
        keeper = _keepers.pop(name, None)
    if keeper is not None:
        keeper.stop()
