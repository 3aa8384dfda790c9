"""Test helpers for the broadcast tests: Debian's nginx with the RTMP module on 127.0.0.1, clip
generation, and analysis with PyAV of what the server received.

nginx runs unprivileged-style with its own prefix and config (no system service is touched). When
nginx or its RTMP module is missing the tests fail with the install command instead of skipping.

nginx records every publishing session to its own FLV file, from the session's first packet to its
last: what a test analyses is exactly what reached the server, whatever the machine's load (a player
that connects on its own clock can join late on a slow machine and miss the start).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
INSTALL = "apt-get install -y nginx libnginx-mod-rtmp ffmpeg (scripts/setup does this)"

CONFIG = """\
load_module {module};
daemon off;
master_process off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 64; }}
rtmp {{
    access_log {root}/rtmp_access.log;
    server {{
        listen 127.0.0.1:{port};
        application live {{
            live on;
            record all;
            record_path {root}/recordings;
            record_unique on;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if not path:
        pytest.fail(f"{binary} is not installed: {INSTALL}", pytrace=False)
    return path


class Nginx:
    """An nginx-rtmp server on 127.0.0.1:port with its own prefix; kill() simulates a crash."""

    def __init__(self, root: str):
        if not os.path.exists(RTMP_MODULE):
            pytest.fail(f"the nginx RTMP module is not installed ({RTMP_MODULE}): {INSTALL}", pytrace=False)
        self.binary = need("nginx")
        self.root = root
        self.port = free_port()
        os.makedirs(os.path.join(root, "recordings"), exist_ok=True)
        self.conf = os.path.join(root, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(CONFIG.format(module=RTMP_MODULE, root=root, port=self.port))
        self.proc: subprocess.Popen | None = None

    def url(self, name: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{name}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-p", self.root, "-c", self.conf, "-e", os.path.join(self.root, "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"nginx did not start: {self.proc.stderr.read().decode()}", pytrace=False)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail("nginx did not listen within 5 s", pytrace=False)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def publishes(self) -> list[str]:
        """One access-log line per finished publishing connection."""
        path = os.path.join(self.root, "rtmp_access.log")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [line for line in f if " PUBLISH " in line]

    def recording(self, name: str, sessions: int, timeout: float = 30.0) -> str:
        """The file of the last publishing session of stream ``name``, once ``sessions`` sessions have ended.

        nginx names each session's file ``name-<unix time>.flv`` (sessions of one name are seconds apart in
        these tests) and closes it when the publisher disconnects, which the access log then shows.
        """
        deadline = time.monotonic() + timeout
        while len(self.publishes()) < sessions:
            if time.monotonic() > deadline:
                pytest.fail(f"nginx logged {len(self.publishes())} of {sessions} publishing sessions in {timeout} s", pytrace=False)
            time.sleep(0.1)
        folder = os.path.join(self.root, "recordings")
        files = sorted((f for f in os.listdir(folder) if f.rpartition("-")[0] == name), key=lambda f: int(f[len(name) + 1 : -4]))
        assert files, f"nginx recorded nothing for {name!r}: {os.listdir(folder)}"
        return os.path.join(folder, files[-1])


class TlsProxy:
    """rtmps:// in front of an nginx-rtmp: terminates TLS on 127.0.0.1 and forwards plain RTMP.

    Its self-signed certificate (``cert``) names 127.0.0.1, so a client that trusts it verifies the
    connection fully (the channel's ffmpeg verifies certificates).
    """

    def __init__(self, root: str, target_port: int):
        self.cert, key = os.path.join(root, "cert.pem"), os.path.join(root, "key.pem")
        cert = self.cert
        made = subprocess.run(
            [need("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
             "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True,
        )
        assert made.returncode == 0, made.stderr.decode()
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._target = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.handshakes = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            tls = self._context.wrap_socket(client, server_side=True)
            self.handshakes += 1
            upstream = socket.create_connection(("127.0.0.1", self._target), timeout=2)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=_pipe, args=(upstream, tls), daemon=True).start()
        _pipe(tls, upstream)

    def close(self) -> None:
        self._server.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.close()
            except OSError:
                pass


COLOURS = {"red": (255, 0, 0), "lime": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0), "black": (0, 0, 0)}


def make_clip(path: str, colour: str, seconds: float, size=(320, 180), fps: int = 24, tone: float | None = 440) -> str:
    """A solid-colour H.264 clip with a sine tone (or no audio track)."""
    from comfyui_webtv.nodes.common.ffmpeg import run_ffmpeg

    args = ["-y", "-f", "lavfi", "-i", f"color=c={colour}:s={size[0]}x{size[1]}:r={fps}:d={seconds}"]
    if tone:
        args += ["-f", "lavfi", "-i", f"sine=f={tone}:d={seconds}:sample_rate=44100", "-c:a", "aac", "-shortest"]
    run_ffmpeg(args + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", path])
    return path


@dataclass
class Stream:
    """What came back from the server: per-frame times, keyframes, sizes, colours, and the sound."""

    width: int
    height: int
    video_times: np.ndarray
    keyframes: np.ndarray
    sizes: np.ndarray
    colours: list[str]
    audio_rate: int
    audio_channels: int
    audio_times: np.ndarray
    audio: np.ndarray  # mono float samples from the first audio packet on

    def runs(self) -> list[tuple[str, int]]:
        out: list[list] = []
        for colour in self.colours:
            if out and out[-1][0] == colour:
                out[-1][1] += 1
            else:
                out.append([colour, 1])
        return [(c, n) for c, n in out]

    def tone(self, start: float, end: float) -> tuple[float, float]:
        """(dominant frequency, rms) of the sound between two stream times."""
        a = int((start - self.audio_times[0]) * self.audio_rate)
        b = int((end - self.audio_times[0]) * self.audio_rate)
        chunk = self.audio[max(a, 0) : b]
        rms = float(np.sqrt(np.mean(chunk**2))) if len(chunk) else 0.0
        spectrum = np.abs(np.fft.rfft(chunk * np.hanning(len(chunk))))
        return float(np.fft.rfftfreq(len(chunk), 1 / self.audio_rate)[int(np.argmax(spectrum))]), rms


def nearest_colour(rgb: np.ndarray) -> str:
    return min(COLOURS, key=lambda name: float(np.sum((np.array(COLOURS[name]) - rgb) ** 2)))


def analyse(path: str) -> Stream:
    """Demux and decode a recorded stream with PyAV (one pass)."""
    import av

    vt, keys, sizes, at, colours, samples, broken = [], [], [], [], [], [], []
    with av.open(path) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        for packet in container.demux():
            if packet.pts is not None and packet.size:
                t = float(packet.pts * packet.time_base)
                if packet.stream.type == "video":
                    vt.append(t)
                    keys.append(packet.is_keyframe)
                    sizes.append(packet.size)
                else:
                    at.append(t)
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                broken.append(float(packet.pts * packet.time_base) if packet.pts is not None else float("inf"))
                continue
            for frame in frames:
                if packet.stream.type == "video":
                    img = frame.to_ndarray(format="rgb24")
                    h, w = img.shape[:2]
                    colours.append(nearest_colour(img[h // 2 - 8 : h // 2 + 8, w // 2 - 8 : w // 2 + 8].reshape(-1, 3).mean(0)))
                else:
                    data = frame.to_ndarray().astype(np.float32)
                    samples.append(data.mean(0) if frame.format.is_planar else data.reshape(-1, audio.codec_context.channels).mean(1))
        width, height = video.codec_context.width, video.codec_context.height
        rate = audio.codec_context.sample_rate if audio else 0
        channels = audio.codec_context.channels if audio else 0
    assert not broken, f"undecodable packets in the recorded stream at {broken[:5]} s"
    order = np.argsort(vt)
    return Stream(
        width, height, np.array(vt)[order], np.array(keys)[order], np.array(sizes)[order], colours, rate, channels,
        np.sort(np.array(at)), np.concatenate(samples) if samples else np.zeros(0, np.float32),
    )


def cmdline(pid: int) -> list[str]:
    """A child's command line, or [] once it has ended (a zombie not yet reaped, or gone)."""
    import psutil

    try:
        return psutil.Process(pid).cmdline()
    except psutil.NoSuchProcess:  # ZombieProcess included
        return []


def channel_ffmpegs() -> list[int]:
    """The channel's children under this test process: ffmpeg processes (the pack's ffmpeg binary) and RTMP publishers."""
    import psutil

    from comfyui_webtv.nodes.broadcast.outputs import PUBLISHER
    from comfyui_webtv.nodes.common.ffmpeg import ffmpeg_exe

    exe = os.path.realpath(ffmpeg_exe())
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and (os.path.realpath(proc.exe()) == exe or PUBLISHER in proc.cmdline()):
                found.append(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return found
