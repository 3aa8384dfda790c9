"""Where the channel's one encode goes: RTMP(S) servers and the local HLS preview.

Each output is a small stream-copy ffmpeg fed the encoder's MPEG-TS through a bounded queue by
its own thread, so a slow or dead destination never holds up the encoder or the other outputs. An
output that fails restarts by itself with backoff and joins at the next keyframe (ffmpeg drops
packets before the first keyframe when copying); the channel restarts the whole chain only when
every output has failed.
"""

from __future__ import annotations

import glob
import os
import queue
import socket
import subprocess
import threading
from dataclasses import dataclass, field

from ..common.ffmpeg import ffmpeg_exe
from .encoder import FfmpegLog
from .keys import mask, resolve, server_address

HLS_PLAYLIST = "live.m3u8"
HLS_MASTER = "master.m3u8"
QUEUE_CHUNKS = 256  # ~10 s of a 3 Mbps stream in 64 KiB reads; more means the output is stuck


class Backoff:
    """Retry delays 0.5, 1, 2, 4 ... seconds, capped at ``limit``."""

    def __init__(self, limit: float):
        self.limit = max(0.5, limit)
        self.attempt = 0

    def next(self) -> float:
        """The next reconnect delay in seconds (doubling up to ``limit``)."""
        delay = min(self.limit, 0.5 * 2**self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from the shortest delay."""
        self.attempt = 0


@dataclass
class OutputSpec:
    """One destination: an RTMP URL template (keys as ``${VAR}``) or an HLS folder."""

    kind: str  # "rtmp" or "hls"
    target: str  # URL template, or the HLS folder
    url: str = field(default="", repr=False)  # resolved URL (holds the key)
    secrets: list[str] = field(default_factory=list, repr=False)
    @classmethod
    def rtmp(cls, template: str) -> "OutputSpec":
        """An RTMP output; ``${VAR}`` placeholders are filled from environment variables or files and masked in labels."""
        url, secrets = resolve(template)
        return cls("rtmp", template, url, secrets)

    @classmethod
    def hls(cls, folder: str) -> "OutputSpec":
        """An HLS output written into ``folder``."""
        return cls("hls", folder)

    def reachable(self, timeout: float = 2.0) -> str | None:
        """None when the server accepts TCP connections, else why not (HLS is always reachable)."""
        if self.kind != "rtmp":
            return None
        host, port = server_address(self.url)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return None
        except OSError as exc:
            return f"cannot reach {host}:{port} ({exc.strerror or exc})"

    def command(self, launch: int) -> list[str]:
        """The stream-copy ffmpeg for this output; ``launch`` numbers HLS segments uniquely across restarts."""
        args = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats",
            "-progress", "pipe:2", "-stats_period", "0.5",
            "-f", "mpegts", "-probesize", "500000", "-analyzeduration", "500000", "-i", "pipe:0",
            "-map", "0", "-c", "copy",
        ]
        if self.kind == "rtmp":
            tls = ["-ca_file", ca] if self.url.startswith("rtmps:") and (ca := ca_file()) else []
            return args + ["-f", "flv", "-flvflags", "no_duration_filesize", "-rw_timeout", "15000000", *tls, self.url]
        return args + [
            "-bsf:a", "aac_adtstoasc", "-f", "hls", "-hls_time", "2", "-hls_list_size", "8",
            "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", f"init_{launch}.mp4",
            "-hls_segment_filename", os.path.join(self.target, "seg_%d.m4s"),
            "-start_number", str(launch * 1_000_000),
            "-hls_flags", "delete_segments+independent_segments+temp_file+omit_endlist",
            "-master_pl_name", HLS_MASTER,
            os.path.join(self.target, HLS_PLAYLIST),
        ]

    @property
    def label(self) -> str:
        """The target with every secret masked (safe to log and show)."""
        return mask(self.target, self.secrets)


TS_PACKET = 188
PAT_PID, PMT_PID, VIDEO_PID = 0x0000, 0x1000, 0x0100  # fixed by encode_args()


def ts_pid(packet: bytes | memoryview, at: int = 0) -> int:
    """The PID of the 188-byte TS packet starting at ``at``."""
    return ((packet[at + 1] & 0x1F) << 8) | packet[at + 2]


def keyframe_at(chunk: bytes) -> int | None:
    """Offset of the first TS packet that starts a video keyframe (random access indicator), or None."""
    for i in range(0, len(chunk) - 5, TS_PACKET):
        flags = chunk[i + 1]
        if (
            chunk[i] == 0x47 and flags & 0x40 and ts_pid(chunk, i) == VIDEO_PID
            and chunk[i + 3] & 0x20 and chunk[i + 4] and chunk[i + 5] & 0x40
        ):
            return i
    return None


def ca_file() -> str | None:
    """CA bundle that rtmps:// certificates are verified against.

    ``$WEBTV_CA_FILE`` when set; else the system store that ffmpeg's OpenSSL reads (/etc/ssl) where there
    is one; else certifi's bundle when installed (Windows, some containers). None: OpenSSL's defaults.
    """
    if os.environ.get("WEBTV_CA_FILE"):
        return os.environ["WEBTV_CA_FILE"]
    if os.path.isdir("/etc/ssl/certs"):
        return None
    try:
        import certifi
    except ImportError:
        return None
    return certifi.where()


def clear_hls(folder: str) -> None:
    """Remove the preview files a previous run left (only the channel's own file names)."""
    for pattern in ("seg_*.m4s", "init_*.mp4", "*.m3u8", "*.tmp"):
        for path in glob.glob(os.path.join(folder, pattern)):
            os.remove(path)


class Output:
    """One destination fed from a queue by its own thread; restarts its ffmpeg with backoff."""

    def __init__(self, spec: OutputSpec, retry_max_seconds: float, launches, ts_header):
        self.spec = spec
        self.state = "connecting"
        self.failures = 0
        self.failed_since_live = False
        self.reconnects = 0
        self.error = ""
        self.dropped_chunks = 0
        self._bytes_before = 0
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._closing = threading.Event()
        self._backoff = Backoff(retry_max_seconds)
        self._launches = launches
        self._ts_header = ts_header  # () -> the stream's PAT + PMT packets, for rejoins
        self._await_keyframe = False
        self._kill_reason = ""
        self._proc: subprocess.Popen | None = None
        self._log: FfmpegLog | None = None
        self._thread = threading.Thread(target=self._run, name=f"webtv-output-{spec.kind}", daemon=True)
        self._thread.start()

    # ---- fed by the encoder pump
    def push(self, chunk: bytes) -> None:
        """Queue whole TS packets; after a restart, start at the next keyframe behind the PAT and PMT."""
        if self.state == "down":
            return  # rejoins at the live edge once back
        if self._await_keyframe:
            start = keyframe_at(chunk)
            if start is None:
                return
            chunk = self._ts_header() + chunk[start:]
            self._await_keyframe = False
        try:
            self._queue.put_nowait(chunk)
        except queue.Full:
            self.dropped_chunks += 1
            self._kill("output too slow: its queue overflowed")

    def finish(self) -> None:
        """End of stream: let the ffmpeg flush and exit."""
        try:
            self._queue.put(None, timeout=5)
        except queue.Full:
            self._kill("output too slow at the end of the stream")

    def close(self, graceful: bool, timeout: float = 10.0) -> None:
        """Stop the output; ``graceful`` lets its ffmpeg flush what the encoder wrote first."""
        if graceful:
            self.finish()
            self._thread.join(timeout)
        self._closing.set()
        self._kill("")
        self._thread.join(timeout)

    # ---- status
    @property
    def bytes_sent(self) -> int:
        """Bytes written to the destination over every ffmpeg this output has run."""
        current = int(self._log.number("total_size") or 0) if self._log else 0
        return self._bytes_before + max(current, 0)

    def refresh(self) -> None:
        """Mark the output live once its ffmpeg has written stream data to the destination."""
        if self.state == "connecting" and self._log and (self._log.number("out_time_us") or 0) > 0:
            self.state = "live"
            self.failed_since_live = False
            self._backoff.reset()

    def status(self) -> dict:
        """The output's state, masked target and counters, for the channel status."""
        self.refresh()
        return {
            "kind": self.spec.kind, "target": self.spec.label, "state": self.state,
            "reconnects": self.reconnects, "failures": self.failures, "bytes_sent": self.bytes_sent,
            "dropped_chunks": self.dropped_chunks, "last_error": self.error,
        }

    # ---- the thread
    def _kill(self, reason: str) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._kill_reason = reason
            proc.kill()

    def _run(self) -> None:
        first = True
        while not self._closing.is_set():
            why = self.spec.reachable()
            if why is None:
                if not first:
                    self.reconnects += 1
                if self._serve() or self._closing.is_set():
                    return
            else:
                self.error = why
            first = False
            self.failures += 1
            self.failed_since_live = True
            self.state = "down"
            if self._closing.wait(self._backoff.next()):
                return
            self._drain()
            self._await_keyframe = True  # a clean start for the new ffmpeg: PAT, PMT, then a keyframe
            self.state = "connecting"

    def _drain(self) -> None:
        """Drop data queued while the output was down (it rejoins at the live edge)."""
        while True:
            try:
                if self._queue.get_nowait() is None:
                    self._queue.put_nowait(None)
                    return
            except queue.Empty:
                return

    def _serve(self) -> bool:
        """Run one ffmpeg until the stream ends (True) or it fails (False)."""
        command = self.spec.command(next(self._launches))
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        log = FfmpegLog(proc.stderr, self.spec.secrets)
        self._kill_reason = ""
        self._proc, self._log = proc, log
        ended = False
        try:
            while not self._closing.is_set():
                try:
                    chunk = self._queue.get(timeout=0.5)
                except queue.Empty:
                    if proc.poll() is not None:
                        break
                    self.refresh()
                    continue
                if chunk is None:
                    proc.stdin.close()
                    proc.wait(timeout=10)
                    ended = True
                    break
                proc.stdin.write(chunk)
                self.refresh()
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass  # the ffmpeg died (its log says why) or would not finish
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.join()
        try:
            proc.stdin.close()
        except OSError:
            pass
        self._bytes_before += max(int(log.number("total_size") or 0), 0)
        self._proc = self._log = None
        if not ended:
            self.error = self._kill_reason or log.tail() or f"ffmpeg exited with code {proc.returncode}"
        return ended
