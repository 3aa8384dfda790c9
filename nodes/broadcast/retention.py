"""Retention: a long-running channel deletes its old clips by age and by a disk quota, oldest first.

Only clips that have been on air are deleted, never the one on air nor the one queued after it, and a
clip leaves the rotation and the playlist (rewritten atomically) before its file is removed, so
neither the channel nor a reader of the playlist ever meets a deleted file. Whoever else writes the
playlist or brings a channel in line with it (the playlist and channel nodes, a producer) holds its
:func:`playlist_lock` meanwhile.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

from .. import host
from ..common import checks
from .playlist import read_ffconcat, write_ffconcat

log = logging.getLogger(__name__)
DELETED_KEPT = 1000  # the most recent deleted paths remembered (a channel that runs for months deletes many)
OBSERVE_SECONDS = 0.5  # the channel's history (last 20 clips) is read this often: no aired clip is missed
_playlist_locks: dict[str, threading.RLock] = {}
_playlist_locks_lock = threading.Lock()


def playlist_lock(path: str) -> threading.RLock:
    """The lock of one playlist file, held by whoever rewrites it or brings a channel in line with it."""
    with _playlist_locks_lock:
        return _playlist_locks.setdefault(os.path.realpath(path), threading.RLock())


@dataclass(frozen=True)
class Retention:
    """When clips go: older than ``max_age_hours``, or the oldest while the rotation holds over ``max_mb`` (0: no limit)."""

    max_age_hours: float = 0.0
    max_mb: float = 0.0

    def __post_init__(self):
        checks.finite("retention_hours", self.max_age_hours, low=0)
        checks.finite("retention_mb", self.max_mb, low=0)

    @property
    def active(self) -> bool:
        return self.max_age_hours > 0 or self.max_mb > 0


def _stat(path: str) -> tuple[float, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime, st.st_size


class Retainer:
    """Applies a :class:`Retention` to one running channel (and its playlist file, if any) in a background thread."""

    def __init__(self, channel, policy: Retention, playlist: str | None = None, interval: float = 2.0):
        self.channel, self.policy, self.playlist = channel, policy, playlist
        self.interval = checks.finite("interval", interval, low=0.1)
        self.lock = playlist_lock(playlist) if playlist else threading.RLock()  # held while the programme changes
        self.aired: set[str] = set()
        self.deleted: deque[str] = deque(maxlen=DELETED_KEPT)  # the most recent, oldest first
        self.deleted_count = self.deleted_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"webtv-retention-{channel.settings.name}", daemon=True)

    def start(self) -> "Retainer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def observe(self) -> None:
        """Note the clips that have been on air (the channel's recent history)."""
        status = self.channel.status()
        self.aired.update(entry["path"] for entry in status["history"] if entry.get("frames"))

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(OBSERVE_SECONDS) and self.channel.running:
            self.observe()
            if time.monotonic() - last >= self.interval and self.lock.acquire(blocking=False):
                try:
                    self.prune()
                except Exception as exc:  # noqa: BLE001 - retention must never take the channel down; say why and retry
                    if host.is_interrupt(exc):
                        raise
                    log.exception("retention of channel %s failed", self.channel.settings.name)
                finally:
                    self.lock.release()
                last = time.monotonic()

    def choose(self, now: float | None = None) -> list[str]:
        """The clips the policy would delete now, oldest first."""
        if not self.policy.active:
            return []
        paths, cursor = self.channel.rotation()
        protected = {paths[cursor % len(paths)], paths[(cursor + 1) % len(paths)]} if paths else set()
        files = {p: s for p in dict.fromkeys(paths) if (s := _stat(p)) is not None}
        candidates = sorted((p for p in files if p in self.aired and p not in protected), key=lambda p: files[p][0])
        now = time.time() if now is None else now
        doomed = []
        if self.policy.max_age_hours > 0:
            doomed = [p for p in candidates if now - files[p][0] > self.policy.max_age_hours * 3600]
        if self.policy.max_mb > 0:
            total = sum(size for _, size in files.values()) - sum(files[p][1] for p in doomed)
            for p in candidates:
                if total <= self.policy.max_mb * 1e6:
                    break
                if p not in doomed:
                    doomed.append(p)
                    total -= files[p][1]
        return doomed

    def prune(self, now: float | None = None) -> list[str]:
        """Delete what the policy says: out of the rotation, then out of the playlist, then off the disk."""
        self.observe()
        with self.lock:
            removed = self.channel.remove(self.choose(now))
            if not removed:
                return []
            gone = set(removed)
            if self.playlist and os.path.isfile(self.playlist):
                entries = read_ffconcat(self.playlist)
                if any(e.path in gone for e in entries):
                    write_ffconcat(self.playlist, [e for e in entries if e.path not in gone], relative=True)
        for path in removed:
            size = (_stat(path) or (0, 0))[1]
            try:
                os.remove(path)
            except FileNotFoundError:
                continue
            self.deleted.append(path)
            self.deleted_count += 1
            self.deleted_bytes += size
            self.aired.discard(path)
        log.info("retention: deleted %d clip(s) of channel %s", len(removed), self.channel.settings.name)
        return removed


# -------------------------------------------------------------------- one retainer per channel

_retainers: dict[str, Retainer] = {}
_registry_lock = threading.Lock()


def attach(channel, policy: Retention, playlist: str | None = None) -> Retainer | None:
    """The retainer of ``channel`` for ``policy``: kept when nothing changed, else replaced (None: no policy)."""
    name = channel.settings.name
    with _registry_lock:
        current = _retainers.get(name)
        if current is not None:
            if current.channel is channel and current.policy == policy and current.playlist == playlist and current.running:
                return current
            current.stop()
            del _retainers[name]
        if not policy.active:
            return None
        retainer = _retainers[name] = Retainer(channel, policy, playlist).start()
        return retainer


def attached(name: str) -> Retainer | None:
    """The retainer working on channel ``name``, if any."""
    retainer = _retainers.get(name)
    return retainer if retainer is not None and retainer.running else None
