"""Where the channel's encodes go: RTMP(S), SRT and WHIP servers and the local HLS preview.

Each output line may choose its codec (``?codec=hevc``; the channel's codec otherwise); the encoder
makes each distinct encode (:class:`.encoder.Profile`) once, on its own pipe, and a :class:`Fanout`
hands it to every output that wants it. Each output is a small stream-copy child fed through a
bounded queue by its own thread, so a slow or dead destination never holds up the encoder or the
other outputs: an ffmpeg writing the HLS preview or sending SRT, and for RTMP and WHIP the pack's
publisher (:mod:`.publish`, PyAV in its own process), which gets the address on its stdin, and for
WHIP an ffmpeg whose signalling goes through a relay holding the bearer token (:mod:`.whip`), so no
stream key is ever on a command line. An output that fails restarts by itself with
backoff and joins at the next keyframe; the channel restarts the whole chain only when every output
has failed. An output is ``live`` only while its destination advances: the publisher's stream time for
RTMP, ffmpeg's for SRT and WHIP, new segments in the playlist for HLS.
"""

from __future__ import annotations

import glob
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from ..common.ffmpeg import ffmpeg_exe, popen
from .encoder import CODECS, FfmpegLog, Profile
from .keys import check_output_url, mask, output_kind, resolve_options, server_address, split_options
from .whip import WhipRelay

HLS_PLAYLIST = "live.m3u8"
HLS_MASTER = "master.m3u8"
QUEUE_CHUNKS = 256  # ~10 s of a 3 Mbps stream in 64 KiB reads; more means the output is stuck
STALE_SECONDS = 6.0  # an output whose destination has not advanced this long is not live (HLS segments are 2 s)
KILL_STALE_SECONDS = 20.0  # ... and this long: its child is restarted
LOW_DISK_BYTES = 1 << 20  # less free space than this in the HLS folder is reported as a full disk
PUBLISHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "publish.py")


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


# The codecs each kind of output carries, and why not the others.
CARRIES = {"rtmp": CODECS, "hls": CODECS, "srt": ["h264", "hevc"], "whip": ["h264"]}
WHY_NOT = {
    "srt": "SRT carries MPEG-TS, and the MPEG-TS demuxer of the FFmpeg builds here (9.x bundled, 8.x in PyAV) cannot read AV1 back",
    "whip": "FFmpeg's WHIP muxer sends H.264 with Opus sound only",
}


def check_output(line: str, default_codec: str = "h264", input_name: str = "outputs") -> str:
    """Check an output line without reading any key: its address (:func:`.keys.check_output_url`) and its
    codec, which must be one the protocol carries. Returns the codec."""
    check_output_url(line, input_name)
    address, options = split_options(line, input_name)
    codec = options.get("codec", default_codec).lower()
    kind = output_kind(address)
    if codec not in CODECS:
        shown = codec if re.fullmatch(r"[a-z0-9]{1,10}", codec) else "(not shown)"
        raise ValueError(f"{input_name}: codec={shown} is not one of {CODECS}; write e.g. ?codec=hevc at the end of the address.")
    if codec not in CARRIES[kind]:
        raise ValueError(f"{input_name}: {kind.upper()} outputs cannot send {codec}: {WHY_NOT[kind]}; use codec={' or '.join(CARRIES[kind])} for it.")
    return codec


@dataclass
class OutputSpec:
    """One destination: an RTMP or WHIP URL template (keys as ``${VAR}``), an SRT URL or an HLS folder, and its encode."""

    kind: str  # "rtmp", "srt", "whip" or "hls"
    target: str  # the output line as written (keys as placeholders), or the HLS folder
    profile: Profile = field(default_factory=Profile)
    url: str = field(default="", repr=False)  # resolved URL (holds the key), the pack's options taken out
    secrets: list[str] = field(default_factory=list, repr=False)
    token: str = field(default="", repr=False)  # WHIP's bearer token

    @classmethod
    def parse(cls, line: str, default_codec: str = "h264", input_name: str = "outputs") -> "OutputSpec":
        """An output from its line; ``${VAR}`` placeholders are filled from environment variables or files and masked in labels."""
        codec = check_output(line, default_codec, input_name)
        url, options, secrets = resolve_options(line, input_name)
        kind = output_kind(url)
        return cls(kind, line, Profile(codec, webrtc=kind == "whip"), url, secrets, options.get("bearer", ""))

    @classmethod
    def hls(cls, folder: str, codec: str = "h264") -> "OutputSpec":
        """An HLS output written into ``folder``."""
        return cls("hls", folder, Profile(codec))

    def reachable(self, timeout: float = 2.0) -> str | None:
        """None when the server accepts TCP connections, else why not (HLS and SRT, over UDP, always are)."""
        if self.kind not in ("rtmp", "whip"):
            return None
        host, port = server_address(self.url)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return None
        except OSError as exc:
            return f"cannot reach {host}:{port} ({exc.strerror or exc})"

    def command(self, launch: int, relay: str = "") -> list[str]:
        """The stream-copy child for this output; ``launch`` numbers HLS segments uniquely across restarts.

        RTMP: the publisher, whose command line holds no address (it reads it from :meth:`header`).
        SRT: ffmpeg (PyAV's FFmpeg has no SRT), copying the MPEG-TS stream as it is.
        WHIP: ffmpeg sending to ``relay``, the address of its :class:`.whip.WhipRelay`.
        """
        if self.kind == "rtmp":
            return [sys.executable, "-u", PUBLISHER]
        args = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats",
            "-progress", "pipe:2", "-stats_period", "0.5",
            "-f", self.profile.container, "-probesize", "500000", "-analyzeduration", "500000", "-i", "pipe:0",
            "-map", "0", "-c", "copy",
        ]
        if self.kind == "srt":  # the address holds no key (keys.check_output_url)
            return args + ["-f", "mpegts", self.url]
        if self.kind == "whip":  # the relay's address holds no key; a loaded machine may take seconds for DTLS
            return args + ["-f", "whip", "-handshake_timeout", "30000", relay]
        return args + [
            "-bsf:a", "aac_adtstoasc", "-f", "hls", "-hls_time", "2", "-hls_list_size", "8",
            "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", f"init_{launch}.mp4",
            "-hls_segment_filename", os.path.join(self.target, "seg_%d.m4s"),
            "-start_number", str(launch * 1_000_000),
            "-hls_flags", "delete_segments+independent_segments+temp_file+omit_endlist",
            "-master_pl_name", HLS_MASTER,
            os.path.join(self.target, HLS_PLAYLIST),
        ]

    def header(self) -> bytes:
        """What the child reads on stdin before the stream: the publisher's address line (HLS, SRT, WHIP: nothing)."""
        if self.kind != "rtmp":
            return b""
        return json.dumps({"url": self.url, "ca_file": ca_file(), "input": self.profile.container}).encode() + b"\n"

    def environment(self) -> dict[str, str]:
        """The child's environment: ComfyUI's, less every variable that holds one of this output's keys."""
        return {k: v for k, v in os.environ.items() if not any(s and s in v for s in self.secrets)}

    @property
    def label(self) -> str:
        """The target with every secret masked (safe to log and show)."""
        return mask(self.target, self.secrets)


TS_PACKET = 188
PAT_PID, PMT_PID, VIDEO_PID = 0x0000, 0x1000, 0x0100  # fixed by encode_args()
FLV_HEAD = 13  # "FLV", version, flags, header size, then PreviousTagSize0
FLV_TAG = 11  # type, data size (3 bytes), timestamp (3 + 1), stream id (3); the data and its 4-byte size follow


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


def flv_tag_kind(tag: bytes | memoryview) -> str:
    """``config`` (script data, a sequence header), ``key`` (a video keyframe) or ``frame`` for one whole FLV tag.

    Video: legacy (codec id 7, AVC packet type 0 = sequence header) or Enhanced RTMP (bit 7 set, packet
    type in the low bits: 0 = sequence start, 1 and 3 = coded frames); frame type 1 is a keyframe. Sound:
    AAC packet type 0 is the sequence header, Enhanced (format 9) packet type 0 too.
    """
    kind, data = tag[0] & 0x1F, tag[FLV_TAG:]
    if kind == 18 or len(data) < 2:
        return "config"
    if kind == 9:
        if data[0] & 0x80:
            packet, frame = data[0] & 0x0F, (data[0] >> 4) & 0x07
            coded = packet in (1, 3)
        else:
            packet, frame = data[1], data[0] >> 4
            coded = packet == 1
        if not coded:
            return "config" if packet == 0 else "frame"
        return "key" if frame == 1 else "frame"
    if kind == 8 and ((data[0] >> 4 == 10 and data[1] == 0) or (data[0] >> 4 == 9 and data[0] & 0x0F == 0)):
        return "config"
    return "frame"


def flv_tags(data: bytes | memoryview, at: int = 0):
    """``(start, end)`` of each whole tag in ``data`` from offset ``at`` (a partial last tag is left out)."""
    while len(data) - at >= FLV_TAG:
        end = at + FLV_TAG + int.from_bytes(data[at + 1 : at + 4], "big") + 4
        if end > len(data):
            return
        yield at, end
        at = end


def flv_keyframe_at(chunk: bytes) -> int | None:
    """Offset of the first tag in ``chunk`` (whole tags, after the file header if it starts with it) that holds a video keyframe."""
    for start, end in flv_tags(chunk, FLV_HEAD if chunk[:3] == b"FLV" else 0):
        if chunk[start] & 0x1F == 9 and flv_tag_kind(chunk[start:end]) == "key":
            return start
    return None


class Fanout:
    """One encode's stream, read from its pipe by a thread and handed to its outputs in whole units (188-byte
    TS packets, or FLV tags), keeping the header an output that rejoins starts with: the PAT and PMT, or the
    FLV file header, script data and sequence headers."""

    def __init__(self, profile: Profile):
        self.profile = profile
        self.outputs: list["Output"] = []
        self._psi: dict[int, bytes] = {}  # the first PAT and PMT packets
        self._flv: dict[int, bytes] = {}  # 0: file header, 1: script data, 2/3: video/sound sequence header
        self._thread: threading.Thread | None = None

    def start(self, fd: int) -> None:
        """Read the encode from ``fd`` until the encoder closes it."""
        self._thread = threading.Thread(target=self._pump, args=(fd,), name=f"webtv-pump-{self.profile.label}", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the end of the stream."""
        if self._thread is not None:
            self._thread.join(timeout)

    def header(self) -> bytes:
        """What a rejoining output's child reads first."""
        if self.profile.container == "flv":
            return b"".join(self._flv[k] for k in sorted(self._flv))
        return self._psi.get(PAT_PID, b"") + self._psi.get(PMT_PID, b"")

    def keyframe_at(self, chunk: bytes) -> int | None:
        """Offset of the first unit in ``chunk`` that starts a video keyframe, or None."""
        return flv_keyframe_at(chunk) if self.profile.container == "flv" else keyframe_at(chunk)

    def _whole(self, data: bytes) -> int:
        """How many bytes at the start of ``data`` are whole units; notes the header parts among them."""
        if self.profile.container != "flv":
            cut = len(data) - len(data) % TS_PACKET
            if len(self._psi) < 2:
                for i in range(0, cut, TS_PACKET):
                    if ts_pid(data, i) in (PAT_PID, PMT_PID):
                        self._psi.setdefault(ts_pid(data, i), data[i : i + TS_PACKET])
            return cut
        at = 0
        if 0 not in self._flv:
            if len(data) < FLV_HEAD:
                return 0
            self._flv[0], at = data[:FLV_HEAD], FLV_HEAD
        for start, end in flv_tags(data, at):
            at = end
            if flv_tag_kind(data[start:end]) == "config":
                slot = {18: 1, 9: 2, 8: 3}.get(data[start] & 0x1F)
                if slot:
                    self._flv[slot] = data[start:end]
        return at

    def _pump(self, fd: int) -> None:
        rest = b""
        while data := os.read(fd, 65536):
            data = rest + data
            cut = self._whole(data)
            chunk, rest = data[:cut], data[cut:]
            if chunk:
                for output in self.outputs:
                    output.push(chunk)


def ca_file() -> str | None:
    """CA bundle that rtmps:// certificates are verified against.

    ``$WEBTV_CA_FILE`` when set; else the system store (/etc/ssl) where there is one; else certifi's bundle
    when installed (Windows, some containers). None: Python's ``ssl`` defaults.
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


def clear_hls(folder: str, keep_launch: int | None = None) -> None:
    """Remove preview files earlier runs or launches left (only the channel's own names; links themselves, not their targets).

    ``keep_launch``: the launch now starting, whose files stay (segment numbers start at launch * 1e6).
    """
    for pattern in ("seg_*.m4s", "init_*.mp4", "*.m3u8", "*.tmp"):
        for path in glob.glob(os.path.join(folder, pattern)):
            name = os.path.basename(path)
            number = re.match(r"^(?:seg|init)_(\d+)", name)
            if keep_launch is not None:
                if not number:
                    continue  # the playlists are rewritten by the new launch
                launch = int(number.group(1)) // 1_000_000 if name.startswith("seg_") else int(number.group(1))
                if launch == keep_launch:
                    continue
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


def hls_progress(folder: str) -> tuple[str, list[str]]:
    """``(last segment, segments)`` listed in the folder's live playlist (empty when it is missing or empty)."""
    try:
        with open(os.path.join(folder, HLS_PLAYLIST), encoding="utf-8", errors="replace") as f:
            names = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return "", []
    return (names[-1] if names else ""), names


def free_bytes(folder: str) -> int | None:
    """Free bytes on the file system holding ``folder`` (None where it cannot be asked)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


class Output:
    """One destination fed from a queue by its own thread; restarts its child with backoff.

    States: ``connecting`` (child started, nothing at the destination yet), ``live`` (the destination
    advanced within STALE_SECONDS), ``stalled`` (it has not since: a full disk, a server that takes no
    data, a frozen encoder), ``down`` (the child failed; it restarts after the backoff).
    """

    def __init__(self, spec: OutputSpec, retry_max_seconds: float, launches, stream: Fanout):
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
        self._stream = stream  # the encode this output sends: its header and keyframes, for rejoins
        stream.outputs.append(self)
        self._await_keyframe = False
        self._kill_reason = ""
        self._proc: subprocess.Popen | None = None
        self._log: FfmpegLog | None = None
        self._mark: object = None  # the destination's last progress: RTMP stream time, HLS last segment
        self._advanced_at = time.monotonic()
        self._checked_at = 0.0
        self._hls_sizes: dict[str, int] = {}  # HLS files counted in bytes_sent, by name
        self._refresh_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"webtv-output-{spec.kind}", daemon=True)
        self._thread.start()

    # ---- fed by the encoder pump
    def push(self, chunk: bytes) -> None:
        """Queue whole TS packets or FLV tags; after a restart, start at the next keyframe behind the stream's header."""
        if self.state == "down":
            return  # rejoins at the live edge once back
        if self._await_keyframe:
            start = self._stream.keyframe_at(chunk)
            if start is None:
                return
            chunk = self._stream.header() + chunk[start:]
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
        """Bytes delivered over every child this output has run (HLS: the segments and init files written)."""
        if self.spec.kind == "hls":
            return sum(self._hls_sizes.values())
        current = int(self._log.number("total_size") or 0) if self._log else 0
        return self._bytes_before + max(current, 0)

    def _progress(self):
        """The destination's progress mark: the publisher's stream time, or the newest complete HLS segment."""
        if self.spec.kind != "hls":
            return (self._log.number("out_time_us") or 0) if self._log else 0
        last, names = hls_progress(self.spec.target)
        if not last:
            return None
        for name in names + glob.glob("init_*.mp4", root_dir=self.spec.target):
            if name not in self._hls_sizes:
                try:
                    st = os.lstat(os.path.join(self.spec.target, name))
                except OSError:
                    continue
                if st.st_size:
                    self._hls_sizes[name] = st.st_size
        return last if last in self._hls_sizes else None

    def _stall_reason(self, age: float) -> str:
        if self.spec.kind == "hls":
            free = free_bytes(self.spec.target)
            if free is not None and free < LOW_DISK_BYTES:
                return f"the disk holding {self.spec.target} is full ({free} bytes free); no new segment for {age:.0f} s"
            return f"no new segment for {age:.0f} s" + (f" ({tail})" if (tail := self._log.tail() if self._log else "") else "")
        return f"the server has taken no data for {age:.0f} s"

    def refresh(self) -> None:
        """Update the state from the destination's progress: live while it advances, stalled when it stops."""
        with self._refresh_lock:
            now = time.monotonic()
            if now - self._checked_at < 0.25 or self.state not in ("connecting", "live", "stalled") or self._log is None:
                return
            self._checked_at = now
            mark = self._progress()
            if mark and mark != self._mark:
                self._mark, self._advanced_at = mark, now
                if self.state != "live":
                    self.state, self.error = "live", ""
                    self.failed_since_live = False
                    self._backoff.reset()
            elif self.state != "connecting" and now - self._advanced_at > STALE_SECONDS:
                self.state, self.error = "stalled", self._stall_reason(now - self._advanced_at)

    def status(self) -> dict:
        """The output's state, masked target and counters, for the channel status."""
        self.refresh()
        return {
            "kind": self.spec.kind, "target": self.spec.label, "codec": self.spec.profile.label, "state": self.state,
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
        """Run one child until the stream ends (True) or it fails (False)."""
        launch = next(self._launches)
        if self.spec.kind == "hls":
            clear_hls(self.spec.target, keep_launch=launch)
        relay = WhipRelay(self.spec.url, self.spec.token, ca_file()) if self.spec.kind == "whip" else None
        command = self.spec.command(launch, relay.url if relay else "")
        try:
            proc = popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, env=self.spec.environment())
        except BaseException:
            if relay:
                relay.close()
            raise
        log = FfmpegLog(proc.stderr, self.spec.secrets)
        self._kill_reason = ""
        self._mark, self._advanced_at = None, time.monotonic()
        self._proc, self._log = proc, log
        ended = False
        try:
            proc.stdin.write(self.spec.header())
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
            pass  # the child died (its log says why) or would not finish
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.join()
        try:
            proc.stdin.close()
        except OSError:
            pass
        if relay:
            relay.close()
        self._bytes_before += max(int(log.number("total_size") or 0), 0)
        self._proc = self._log = None
        if not ended:
            why = self._kill_reason or (relay.error if relay else "") or log.tail()
            self.error = why or f"the {self.spec.kind} output's process exited with code {proc.returncode}"
        return ended
