"""The RTMP publisher a channel output runs as its child: MPEG-TS (FLV for AV1) on stdin, remuxed to
FLV (Enhanced RTMP for HEVC and AV1), sent to the server.

It is its own Python process (not ffmpeg) so the server address, which holds the stream key, reaches
it through its stdin and never appears on a command line (``ps`` shows every process's arguments to
every local user). The first stdin line is a JSON object ``{"url": ..., "ca_file": ..., "input":
"mpegts" or "flv"}``; the stream follows. Timestamps start at zero, as an ffmpeg stream copy writes them. For rtmps:// the
server's certificate is verified with Python's ``ssl`` first (against ``ca_file`` or the system store),
as PyAV opens an output with no protocol options, so FFmpeg's own check on the connection (``tls_verify``,
``ca_file``) cannot be switched on (tests/test_rtmps_verify.py keeps this checked).
Progress is reported on stderr in ffmpeg's ``-progress`` form (``out_time_us``, ``total_size``,
``progress``), so the parent reads it like an ffmpeg's. It imports nothing but PyAV and the standard
library, as it runs from its file path in whatever Python runs ComfyUI.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time
from urllib.parse import urlsplit

PROBE = {"probesize": "500000", "analyzeduration": "500000"}
REPORT_SECONDS = 0.5


def report(out_us: int, size: int, state: str = "continue") -> None:
    """One progress block on stderr."""
    sys.stderr.write(f"out_time_us={out_us}\ntotal_size={size}\nprogress={state}\n")
    sys.stderr.flush()


def verify_tls(url: str, ca_file: str | None, timeout: float = 10.0) -> None:
    """Raise unless the rtmps:// server presents a certificate valid for its name."""
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout) as sock:
        with context.wrap_socket(sock, server_hostname=parts.hostname):
            pass


def publish(url: str, source, input_format: str = "mpegts") -> None:
    """Copy every packet of ``source`` (MPEG-TS or FLV) to ``url`` as FLV until the source ends."""
    import av

    with av.open(source, "r", format=input_format, options=PROBE) as inp:
        streams = [s for s in inp.streams if s.type in ("video", "audio")]
        start = inp.start_time or 0  # microseconds; subtracted so the published stream starts at zero
        offsets = {s.index: int(start * s.time_base.denominator / s.time_base.numerator / 1_000_000) for s in streams}
        out = av.open(url, "w", format="flv", container_options={"flvflags": "no_duration_filesize"})
        try:
            # opaque: the template's own codec (a decoder such as libdav1d has no encoder of its name to look up)
            mapped = {s.index: out.add_stream_from_template(s, opaque=True) for s in streams}
            size, last, reported = 0, 0, 0.0
            for packet in inp.demux(streams):
                if packet.dts is None or packet.pts is None:
                    continue  # the flush packet at the end, or a packet cut before its timestamps
                index = packet.stream.index
                packet.dts -= offsets[index]
                packet.pts -= offsets[index]
                if packet.dts < 0:
                    continue  # before the stream's start (a rejoin's first partial GOP)
                last = max(last, int(packet.dts * packet.time_base * 1_000_000))
                packet.stream = mapped[index]
                size += packet.size
                out.mux(packet)
                if time.monotonic() - reported >= REPORT_SECONDS:
                    report(last, size)
                    reported = time.monotonic()
        finally:
            out.close()
        report(last, size, "end")


def main() -> int:
    """Read the header line, publish, exit 0 at the end of the stream or 1 with the reason on stderr."""
    stdin = sys.stdin.buffer
    try:
        header = json.loads(stdin.readline())
        if header["url"].startswith("rtmps:"):
            verify_tls(header["url"], header.get("ca_file"))
        publish(header["url"], stdin, header.get("input", "mpegts"))
    except Exception as exc:  # reported to the parent, which masks the key in what it shows
        # FFmpeg's errors carry its last log lines; the reason is enough.
        reason = getattr(exc, "strerror", None) or str(exc)
        sys.stderr.write(f"{type(exc).__name__}: {' '.join(str(reason).split())}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
