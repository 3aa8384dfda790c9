"""The live channel: one long-lived encoder fed clip after clip, and the registry of channels by name.

A feeder thread decodes each clip at the channel's format (:mod:`.normalize`) and writes its frames
and PCM into the encoder's pipes at real-time pace, so the encoder sees one endless stream with
continuous timestamps: appending a clip never reconnects, new clips go on air at the next clip
boundary, and the playlist loops when nothing new is queued (a slate, :mod:`.slate`, while it is empty).
The encoder's MPEG-TS goes to every output (:mod:`.outputs`). When all outputs have failed, the
encoder is stopped, and after a backoff a new one starts with the clip that was on air, from its
first frame, so no clip is skipped. The seed-compatible ``playlist`` mode instead lets ffmpeg's concat
demuxer loop the ffconcat file, the AI WebTV's way.
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field

from .. import host
from ..common import checks
from ..common.ffmpeg import ffmpeg_exe, popen
from .encoder import Encoding, FfmpegLog, encoder_outputs, playlist_input_args, raw_input_args
from .keys import mask
from .normalize import ChannelFormat, ClipDecoder, ClipInfo, probe
from .outputs import Backoff, Fanout, Output, OutputSpec, check_output, clear_hls
from .playlist import inside_output, live_copy, read_ffconcat
from .slate import slate_frame

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MODES = ["clips", "playlist"]
STABLE_SECONDS = 30.0  # a session live this long resets the reconnect backoff
AUDIO_QUEUE_SECONDS = 10
STALL_SECONDS = 20  # an encoder whose output time stands still this long is restarted
STATUS_EVENT = "webtv.channel"  # server event carrying a channel's status to the editor (js/webtv.js)
ANNOUNCE_SECONDS = 5.0  # a running channel's status is pushed this often even when nothing changed (uptime)


@dataclass(frozen=True)
class ChannelSettings:
    """Everything that fixes a running channel; changing any of it needs a stop and a new start."""

    name: str
    outputs: tuple[str, ...] = ()
    preview: bool = True
    preview_port: int = 0
    mode: str = "clips"
    playlist: str = ""
    fmt: ChannelFormat = field(default_factory=ChannelFormat)
    encoding: Encoding = field(default_factory=Encoding)
    retry_max_seconds: float = 5.0
    session_hours: float = 47.0

    def __post_init__(self):
        if not NAME.match(self.name):
            raise ValueError(f"channel: {self.name!r} is not a valid name; use letters, digits, '-' and '_' (at most 64).")
        if self.mode not in MODES:
            raise ValueError(f"mode: {self.mode!r} is not one of {MODES}.")
        if self.mode == "playlist" and not self.playlist:
            raise ValueError("playlist: the playlist mode needs an ffconcat playlist.")
        if self.mode == "clips" and os.name != "posix":
            raise ValueError("mode: the clips mode feeds ffmpeg through an extra pipe, which needs Linux or macOS; use the playlist mode here.")
        for url in self.outputs:
            check_output(url, self.encoding.codec)
        if not self.outputs and not self.preview:
            raise ValueError("outputs: give at least one rtmp:// or rtmps:// address, or turn the local preview on.")
        checks.integer("preview_port", self.preview_port, low=0, high=65535)
        checks.finite("retry_max_seconds", self.retry_max_seconds, low=0.5, high=300)
        checks.finite("session_hours", self.session_hours, low=0.01, high=48)


class OutputsDown(Exception):
    """Every output failed, or the encoder stopped: the chain must restart."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Session:
    """One encoder run and its outputs."""

    def __init__(self, channel: "Channel"):
        self.started = time.monotonic()
        # One encode per distinct profile the outputs want, each on its own pipe (the first on stdout).
        self._streams = {spec.profile: Fanout(spec.profile) for spec in channel._specs}
        self.outputs = [
            Output(spec, channel.settings.retry_max_seconds, channel._launches, self._streams[spec.profile]) for spec in channel._specs
        ]
        pipes = [os.pipe() for _ in range(len(self._streams) - 1)]  # (read, write) for every encode after the first
        targets = list(zip(self._streams, ["pipe:1"] + [f"pipe:{w}" for _, w in pipes]))
        settings = channel.settings
        base = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostats", "-progress", "pipe:2", "-stats_period", "0.5"]
        self._audio_fd = None
        self._audio_queue: queue.Queue = queue.Queue(maxsize=AUDIO_QUEUE_SECONDS * max(1, round(float(settings.fmt.fps))))
        if settings.mode == "clips":
            audio_r, self._audio_fd = os.pipe()
            inputs, per_output = raw_input_args(settings.fmt, audio_r)
            stdin, fds = subprocess.PIPE, (audio_r,)
        else:
            first = channel._clips[0] if channel._clips else None
            playlist, safe = channel._playlist_copy
            inputs, per_output = playlist_input_args(settings.fmt, playlist, bool(first and first.has_audio), safe)
            inputs = ["-nostdin"] + inputs
            stdin, fds = subprocess.DEVNULL, ()
        args = base + inputs + encoder_outputs(settings.fmt, settings.encoding, per_output, targets)
        try:
            self.proc = popen(
                args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=fds + tuple(w for _, w in pipes),
            )
        except BaseException:
            if self._audio_fd is not None:
                os.close(self._audio_fd)
            for r, _ in pipes:
                os.close(r)
            self._close_outputs(False)
            raise
        finally:
            for fd in fds + tuple(w for _, w in pipes):
                os.close(fd)
        self.log = FfmpegLog(self.proc.stderr)
        self._pipes = [self.proc.stdout.fileno()] + [r for r, _ in pipes]
        for stream, fd in zip(self._streams.values(), self._pipes):
            stream.start(fd)
        self._closing = threading.Event()
        threading.Thread(target=self._watchdog, name="webtv-encoder-watchdog", daemon=True).start()
        self._audio_writer = None
        if self._audio_fd is not None:
            # ffmpeg opens (and probes) its inputs one after the other: while it reads the first frames
            # it reads no sound, so the sound goes through a queue and never blocks the frames.
            self._audio_writer = threading.Thread(target=self._write_audio, name="webtv-audio-writer", daemon=True)
            self._audio_writer.start()

    def _write_audio(self) -> None:
        try:
            while (chunk := self._audio_queue.get()) is not None:
                _write_all(self._audio_fd, chunk)
        except OSError:
            pass  # the encoder is gone; write() reports it
        finally:
            os.close(self._audio_fd)

    def _watchdog(self) -> None:
        """Kill an encoder whose output time stops advancing (a hang), so the chain restarts."""
        last, since = None, time.monotonic()
        while not self._closing.wait(1.0):
            now = self.log.progress.get("out_time_us")
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since > STALL_SECONDS and self.proc.poll() is None:
                self.log.note(f"the encoder made no progress for {STALL_SECONDS} s")
                self.proc.kill()

    def write(self, audio: bytes, video: bytes) -> None:
        """Feed one frame and its sound; raises OutputsDown when the encoder is gone."""
        try:
            self._audio_queue.put(audio, timeout=AUDIO_QUEUE_SECONDS)
            _write_all(self.proc.stdin.fileno(), video)
        except (OSError, queue.Full):
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            raise OutputsDown(f"the encoder stopped: {self.log.tail() or 'exit code ' + str(self.proc.returncode)}") from None

    def check(self) -> None:
        """Raise OutputsDown when the encoder exited or every output has failed since it was last live."""
        if self.proc.poll() is not None:
            self.log.join()
            raise OutputsDown(f"the encoder stopped: {self.log.tail() or 'exit code ' + str(self.proc.returncode)}")
        if all(o.failed_since_live for o in self.outputs):
            raise OutputsDown("; ".join(f"{o.spec.label}: {o.error}" for o in self.outputs))

    @property
    def live(self) -> bool:
        return any(o.status()["state"] == "live" for o in self.outputs)

    def _close_outputs(self, graceful: bool) -> None:
        for output in self.outputs:
            output.close(graceful)

    def close(self, graceful: bool) -> None:
        """Stop the encoder and outputs; ``graceful`` flushes the stream to the outputs first."""
        self._closing.set()
        if not graceful:
            self.proc.kill()
        if self._audio_writer is not None:
            try:
                self._audio_queue.put(None, timeout=2)
            except queue.Full:
                self.proc.kill()
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        elif graceful and self.proc.poll() is None:  # playlist mode never runs out of input: ask ffmpeg to finish
            self.proc.send_signal(signal.SIGINT if os.name == "posix" else signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in self._streams.values():
            stream.join(5)
        if self._audio_writer is not None:
            self._audio_writer.join(5)
        self.proc.stdout.close()
        for fd in self._pipes[1:]:
            os.close(fd)
        self.log.join()
        self._close_outputs(graceful)


class Channel:
    """A broadcast that outlives prompt runs. Create through :func:`start`."""

    def __init__(self, settings: ChannelSettings, clips: list[ClipInfo]):
        self.settings = settings
        self._specs = [OutputSpec.parse(url, settings.encoding.codec) for url in settings.outputs]  # fails now when a key is missing
        self._secrets = [value for spec in self._specs for value in spec.secrets]
        # Playlist mode: ffmpeg reads a copy written from the entries checked here, never the file itself.
        self._playlist_copy = ("", True)
        if settings.mode == "playlist":
            self._playlist_copy = live_copy(settings.playlist, read_ffconcat(settings.playlist), settings.name)
        self.hls_dir = ""
        if settings.preview:
            self.hls_dir = inside_output(os.path.join("WebTV", "live", settings.name), "channel")
            os.makedirs(self.hls_dir, exist_ok=True)
            clear_hls(self.hls_dir)
            self._specs.append(OutputSpec.hls(self.hls_dir, settings.encoding.codec))
        self._launches = itertools.count(int(time.time()) - 1_700_000_000)
        self._lock = threading.Lock()
        self._clips: list[ClipInfo] = list(clips)
        self._cursor = 0
        self._hold = False
        self._stop = threading.Event()
        self._session: _Session | None = None
        self._history: deque[dict] = deque(maxlen=50)
        self._current: dict | None = None
        self.state = "starting"
        self.error = ""
        self.started_at = time.time()
        self.stopped_at: float | None = None
        self.sessions = 0
        self.attempts = 0
        self.frames_sent = 0
        self.late_frames = 0
        self._live_since: float | None = None
        self._preview = None
        if settings.preview:
            from .preview import PreviewServer

            self._preview = PreviewServer(self.hls_dir, self.status, settings.preview_port)
        self._thread = threading.Thread(target=self._run, name=f"webtv-channel-{settings.name}", daemon=True)

    # ---------------------------------------------------------------- control
    def start(self) -> None:
        """Start the feeding thread and the one pushing the status to the editor."""
        self._thread.start()
        threading.Thread(target=self._announce, name=f"webtv-status-{self.settings.name}", daemon=True).start()

    def _announce(self) -> None:
        """Send the status as a server event when it changes, and every ANNOUNCE_SECONDS, until stopped."""
        last, sent_at = None, 0.0
        while True:
            alive = self._thread.is_alive()
            status = self.status()
            key = (status["state"], (status["current_clip"] or {}).get("path"), status["clips"],
                   status["reconnects"], status["last_error"], [o["state"] for o in status["outputs"]])
            if key != last or time.monotonic() - sent_at >= ANNOUNCE_SECONDS:
                announce(status)
                last, sent_at = key, time.monotonic()
            if not alive:
                return
            time.sleep(0.5)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop feeding, let the outputs flush, end every ffmpeg; returns when all are gone."""
        self._stop.set()
        self._thread.join(timeout)
        if self._preview:
            self._preview.close()
        if self._playlist_copy[0]:
            try:
                os.remove(self._playlist_copy[0])
            except FileNotFoundError:
                pass
        self.state = "stopped"

    @property
    def running(self) -> bool:
        """True while the feeding thread is alive."""
        return self._thread.is_alive()

    def append(self, clips: list[ClipInfo]) -> None:
        """Add clips at the end of the rotation; they play at the next clip boundaries."""
        with self._lock:
            self._clips.extend(clips)

    def rotation(self) -> tuple[list[str], int]:
        """The rotation's clip paths and the index of the clip on air (or next to air)."""
        with self._lock:
            return [c.path for c in self._clips], self._cursor

    def remove(self, paths: list[str]) -> list[str]:
        """Take clips out of the rotation, never the one on air nor the one queued after it; returns those removed."""
        with self._lock:
            count = len(self._clips)
            keep = {self._cursor % count, (self._cursor + 1) % count} if count else set()
            doomed = set(paths)
            gone = {i for i, c in enumerate(self._clips) if c.path in doomed and i not in keep}
            self._cursor -= sum(1 for i in gone if i < self._cursor)
            removed = list(dict.fromkeys(self._clips[i].path for i in sorted(gone)))
            self._clips = [c for i, c in enumerate(self._clips) if i not in gone]
            return [p for p in removed if p not in {c.path for c in self._clips}]  # a path listed twice stays while kept once

    def seek(self, path: str) -> bool:
        """Play ``path`` at the next clip boundary (at once before the first clip); False when it is not in the rotation."""
        with self._lock:
            paths = [c.path for c in self._clips]
            if path not in paths:
                return False
            self._cursor = paths.index(path)
            self._hold = bool(self._current) and not self._current.get("slate")  # the clip on air finishes first
            return True

    def set_clips(self, clips: list[ClipInfo]) -> None:
        """Replace the rotation (a playlist edited, clips removed); playback goes on after the current clip."""
        with self._lock:
            current = self._clips[self._cursor].path if self._cursor < len(self._clips) else None
            paths = [c.path for c in clips]
            self._clips = list(clips)
            if current in paths:
                self._cursor, self._hold = paths.index(current), False
            else:  # the clip on air was removed: the one now at its place plays next
                self._cursor, self._hold = min(self._cursor, len(clips)), True

    # ---------------------------------------------------------------- status
    def status(self) -> dict:
        """Health as plain JSON-able data."""
        session = self._session
        log = session.log if session else None
        with self._lock:
            clips = len(self._clips)
            remaining = [c.duration or 0.0 for c in self._clips[self._cursor + 1 :]]
        now = time.monotonic()
        number = (lambda key: log.number(key)) if log else (lambda key: None)
        outputs = [o.status() for o in session.outputs] if session else [
            {"kind": s.kind, "target": s.label, "codec": s.profile.label, "state": "down" if self.error else "connecting"} for s in self._specs
        ]
        for output in outputs:
            if output.get("last_error"):
                output["last_error"] = mask(output["last_error"], self._secrets)
        state = self.state
        if state == "live" and not any(o["state"] == "live" for o in outputs):
            state = "stalled"  # on air before, but no destination has advanced for a while
        return {
            "name": self.settings.name,
            "mode": self.settings.mode,
            "state": state,
            "uptime_s": round((self.stopped_at or time.time()) - self.started_at, 3),
            "on_air_s": round(now - self._live_since, 3) if self._live_since else 0.0,
            "frames_sent": self.frames_sent if self.settings.mode == "clips" else int(number("frame") or 0),
            "late_frames": self.late_frames,
            "dropped_frames": int(number("drop_frames") or 0),
            "encoder": {
                "fps": number("fps"), "speed": number("speed"), "frame": number("frame"),
                "bitrate_kbps": _kbps(log.progress.get("bitrate", "")) if log else None,
                "dup_frames": number("dup_frames"), "drop_frames": number("drop_frames"),
            },
            "current_clip": dict(self._current) if self._current else None,
            "clips": clips,
            "queued_s": round(sum(remaining), 3),
            "history": list(self._history)[-20:],
            "sessions": self.sessions,
            "reconnects": max(self.sessions - 1, 0),
            "failed_attempts": self.attempts,
            "last_error": mask(self.error, self._secrets),
            "outputs": outputs,
            "preview_url": self._preview.url if self._preview else None,
            "format": {"width": self.settings.fmt.width, "height": self.settings.fmt.height,
                       "fps": float(self.settings.fmt.fps), "sample_rate": self.settings.fmt.sample_rate},
            "encoding": asdict(self.settings.encoding),
        }

    # ---------------------------------------------------------------- the broadcast thread
    def _run(self) -> None:
        backoff = Backoff(self.settings.retry_max_seconds)
        try:
            while not self._stop.is_set():
                why = [s.reachable() for s in self._specs]
                if all(why):
                    self.attempts += 1
                    self.state, self.error = "waiting", "; ".join(w for w in why if w)
                    self._stop.wait(backoff.next())
                    continue
                self.state = "connecting"
                self.sessions += 1
                session = None
                failed = False
                try:
                    session = self._session = _Session(self)
                    if self.settings.mode == "clips":
                        self._feed(session)
                    else:
                        self._watch(session)
                except OutputsDown as exc:
                    self.attempts += 1
                    self.error, failed = str(exc), True
                finally:
                    if session is not None:
                        session.close(graceful=not failed)
                    lived = self._live_since is not None and time.monotonic() - self._live_since >= STABLE_SECONDS
                    self._live_since = None
                if self._stop.is_set():
                    break
                if lived:
                    backoff.reset()
                if failed:
                    self.state = "reconnecting"
                    self._stop.wait(backoff.next())
        except Exception as exc:  # keep the reason visible in the status
            self.error = f"channel stopped by an error: {exc!r}"
            raise
        finally:
            self._current = None
            self.state = "stopped"
            self.stopped_at = time.time()

    def _mark_live(self, session: _Session) -> None:
        if self._live_since is None and session.live:
            self._live_since = time.monotonic()
            self.state, self.error = "live", ""

    def _watch(self, session: _Session) -> None:
        """Playlist mode: ffmpeg paces and loops by itself; watch its health."""
        while not self._stop.wait(0.25):
            session.check()
            self._mark_live(session)

    def _next_clip(self) -> tuple[int, ClipInfo | None]:
        with self._lock:
            if not self._clips:
                return 0, None
            if self._cursor >= len(self._clips):
                self._cursor = 0
            return self._cursor, self._clips[self._cursor]

    def _advance(self) -> None:
        with self._lock:
            if not self._hold:
                self._cursor += 1
            self._hold = False
            if self._cursor >= len(self._clips):
                self._cursor = 0

    def _feed(self, session: _Session) -> None:
        """Clips mode: write frames and sound at real-time pace until stopped, rotated or the chain fails."""
        fmt = self.settings.fmt
        period = 1 / float(fmt.fps)
        limit = self.settings.session_hours * 3600 if self.settings.outputs else float("inf")
        clock = {"t0": time.monotonic(), "n": 0}

        def send(audio: bytes, video: bytes) -> None:
            n = clock["n"]
            due = clock["t0"] + n * period
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > period:
                self.late_frames += 1
                if now - due > 1.0:  # after a long stall resume real time from here, without a burst
                    clock["t0"] = now - n * period
            session.write(audio, video)
            clock["n"] = n + 1
            self.frames_sent += 1
            if clock["n"] % max(1, round(float(fmt.fps) / 4)) == 0:
                session.check()
                self._mark_live(session)

        def samples() -> int:
            n = clock["n"]
            return fmt.samples_before(n + 1) - fmt.samples_before(n)

        def slate(seconds: float) -> None:
            self._current = {"index": None, "path": None, "frame": 0, "frames": None, "slate": True}
            for _ in range(max(1, round(float(fmt.fps) * seconds))):
                send(bytes(samples() * fmt.channels * 2), slate_frame(fmt, self.settings.name))

        prefetched: ClipDecoder | None = None
        failures = 0
        try:
            while not self._stop.is_set() and time.monotonic() - session.started < limit:
                index, clip = self._next_clip()
                if clip is None:
                    slate(0.25)  # nothing to play yet: the slate (name, "starting soon") and silence until a clip arrives
                    continue
                if failures >= len(self._clips):
                    slate(1.0)  # no clip decodes: keep the connection up and try again
                    failures = 0
                if prefetched is not None and prefetched.clip.path != clip.path:
                    prefetched.close()
                    prefetched = None
                decoder, prefetched = prefetched or ClipDecoder(clip, fmt), None
                expected = round(clip.duration * float(fmt.fps)) if clip.duration else None
                self._current = {"index": index, "path": clip.path, "frame": 0, "frames": expected, "slate": False}
                entry = {"index": index, "path": clip.path, "frames": 0, "expected_frames": expected,
                         "started_at": round(time.time(), 3), "completed": False}
                self._history.append(entry)
                try:
                    while not self._stop.is_set():
                        video = decoder.read_frame()
                        if video is None:
                            # A clip cut short on air (truncated, rewritten) reports what was sent, not completion.
                            entry["completed"] = decoder.frames_read > 0 and (expected is None or decoder.frames_read >= expected - 1)
                            if not entry["completed"] and decoder.frames_read and not self._stop.is_set():
                                self.error = f"clip {clip.path} ended after {decoder.frames_read} of {expected} frames"
                            break
                        if decoder.frames_read == 1:
                            prefetched = self._prefetch(fmt)
                        send(decoder.read_audio(samples()), video)
                        self._current["frame"] = entry["frames"] = decoder.frames_read
                finally:
                    if decoder.frames_read == 0 and not self._stop.is_set():
                        self.error = f"clip {clip.path} could not be decoded: {decoder.error()}"
                    decoder.close()
                failures = 0 if decoder.frames_read else failures + 1
                if not self._stop.is_set():
                    self._advance()
        finally:
            if prefetched is not None:
                prefetched.close()

    def _prefetch(self, fmt: ChannelFormat) -> ClipDecoder | None:
        with self._lock:
            if not self._clips:
                return None
            nxt = self._clips[(self._cursor + 1) % len(self._clips)]
        try:
            return ClipDecoder(nxt, fmt)
        except OSError:
            return None


def _kbps(text: str) -> float | None:
    match = re.match(r"([\d.]+)kbits/s", text.strip())
    return float(match.group(1)) if match else None


# -------------------------------------------------------------------- registry

_channels: dict[str, Channel] = {}
_registry_lock = threading.Lock()


def start(settings: ChannelSettings, clip_paths: list[str]) -> Channel:
    """Start channel ``settings.name``, or bring a running one's rotation in line with ``clip_paths``.

    Returns at once; the broadcast runs in background threads. A running channel with other settings
    is refused (stop it first), so a re-queued workflow never silently reconnects a live broadcast.
    """
    clips = [probe(p) for p in clip_paths]
    if settings.mode == "playlist":
        entries = read_ffconcat(settings.playlist)
        if not entries:
            raise ValueError(f"playlist: {settings.playlist} lists no clip.")
        clips = [probe(e.path, "playlist") for e in entries]
    with _registry_lock:
        current = _channels.get(settings.name)
        if current is not None and current.running:
            if current.settings != settings:
                raise ValueError(
                    f"channel: {settings.name!r} is already broadcasting with other settings; stop it with "
                    "Channel Stop (or use another channel name) before changing them."
                )
            if settings.mode == "clips":
                known = {c.path: c for c in clips}
                current.set_clips([known[p] for p in clip_paths])
            return current
        channel = Channel(settings, clips)
        _channels[settings.name] = channel
        channel.start()
        return channel


def get(name: str) -> Channel:
    """The channel called ``name``; raises a clear error when there is none."""
    channel = _channels.get(name)
    if channel is None:
        known = ", ".join(sorted(_channels)) or "none"
        raise ValueError(f"channel: no channel named {name!r} has been started (known: {known}).")
    return channel


def append(name: str, clip_paths: list[str]) -> Channel:
    """Add clips to a running channel's rotation."""
    channel = get(name)
    if not channel.running:
        raise ValueError(f"channel: {name!r} is stopped; start it again with RTMP Channel.")
    if channel.settings.mode != "clips":
        raise ValueError(f"channel: {name!r} runs in playlist mode, where ffmpeg reads the playlist once; use the clips mode to append.")
    channel.append([probe(p) for p in clip_paths])
    return channel


def stop(name: str) -> dict:
    """Stop a channel (no ffmpeg left behind); returns its last status."""
    channel = get(name)
    channel.stop()
    with _registry_lock:
        if _channels.get(name) is channel:
            del _channels[name]
    return channel.status()


def stop_all() -> None:
    """Stop every channel (ComfyUI shutdown)."""
    with _registry_lock:
        channels = list(_channels.values())
        _channels.clear()
    for channel in channels:
        channel.stop()


def announce(status: dict) -> None:
    """Push a channel's status to every open editor."""
    host.send_event(STATUS_EVENT, status)


def statuses() -> dict[str, dict]:
    """Every known channel's status, by name."""
    return {name: channel.status() for name, channel in list(_channels.items())}


host.on_shutdown(stop_all)
