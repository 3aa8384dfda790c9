"""rtmps:// certificates (issue 11): the publisher refuses a server whose certificate its CA bundle does not
vouch for and publishes to one it does; and why the check is Python's, before PyAV connects.

FFmpeg's TLS layer can verify on the connection itself (``tls_verify``, ``ca_file``), but PyAV opens an
output with ``avio_open`` and no options, so those never reach it (PyAV 18.1; ``av/container/output.py``
of PyAV's main branch still calls ``avio_open(&pb, name, AVIO_FLAG_WRITE)``). The last test keeps that
fact checked: when it fails, PyAV passes the options, and the publisher should verify on the one connection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from comfyui_webtv.nodes.broadcast.outputs import PUBLISHER
from comfyui_webtv.nodes.common.ffmpeg import ffmpeg_exe, popen

from .rtmp_server import Nginx, TlsProxy, need

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nginx-rtmp test server")


@pytest.fixture(scope="module")
def stream() -> bytes:
    """Two seconds of H.264 + AAC in MPEG-TS, as the channel's encoder sends its outputs."""
    return subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=s=160x96:r=10",
         "-f", "lavfi", "-i", "sine=f=440:r=44100", "-t", "2", "-c:v", "libx264", "-g", "10", "-c:a", "aac",
         "-f", "mpegts", "pipe:1"], capture_output=True, check=True, timeout=120,
    ).stdout


@pytest.fixture
def server(tmp_path):
    """nginx-rtmp behind the test's TLS proxy, whose self-signed certificate names 127.0.0.1."""
    nginx = Nginx(str(tmp_path / "nginx"))
    nginx.start()
    proxy = TlsProxy(nginx.root, nginx.port)
    try:
        yield nginx, proxy
    finally:
        proxy.close()
        nginx.kill()


@pytest.fixture
def stranger(tmp_path) -> str:
    """A CA file that does not vouch for the proxy: another self-signed certificate for the same name."""
    cert = str(tmp_path / "stranger.pem")
    made = subprocess.run(
        [need("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "stranger.key"),
         "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True,
    )
    assert made.returncode == 0, made.stderr.decode()
    return cert


def publish(url: str, ca_file: str, stream: bytes) -> tuple[int, str]:
    """Run the publisher as a channel output does: the address line on stdin, then the stream."""
    child = popen([sys.executable, "-u", PUBLISHER], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    header = json.dumps({"url": url, "ca_file": ca_file}).encode() + b"\n"
    try:
        _, err = child.communicate(header + stream, timeout=120)
    except BaseException:
        child.kill()
        child.wait()
        raise
    return child.returncode, err.decode(errors="replace")


def test_publisher_refuses_a_certificate_its_bundle_does_not_vouch_for(server, stranger, stream):
    nginx, proxy = server
    code, err = publish(f"rtmps://127.0.0.1:{proxy.port}/live/refused", stranger, stream)
    assert code == 1 and "CERTIFICATE_VERIFY_FAILED" in err, err
    assert nginx.publishes() == [] and not os.listdir(os.path.join(nginx.root, "recordings"))


def test_publisher_publishes_to_a_server_its_bundle_vouches_for(server, stream):
    nginx, proxy = server
    code, err = publish(f"rtmps://127.0.0.1:{proxy.port}/live/trusted", proxy.cert, stream)
    assert code == 0, err
    assert "progress=end" in err
    assert os.path.getsize(nginx.recording("trusted", sessions=1)) > 10_000


CANARY = """
import sys, av
out = av.open(sys.argv[1], "w", format="flv", options={"tls_verify": "1", "ca_file": sys.argv[2]})
out.add_stream("aac", rate=44100)
out.start_encoding()
out.close()
"""


def test_pyav_does_not_pass_tls_options_to_its_output(server, stranger):
    """PyAV connects through a certificate that ``tls_verify=1, ca_file=<stranger>`` would refuse: the options
    never reach FFmpeg's TLS layer, which is why the publisher verifies with Python first."""
    nginx, proxy = server
    handshakes = proxy.handshakes
    subprocess.run([sys.executable, "-c", CANARY, f"rtmps://127.0.0.1:{proxy.port}/live/canary", stranger],
                   capture_output=True, timeout=120)
    assert proxy.handshakes > handshakes
    # nginx logs the session when it ends: the RTMP handshake and publish went through the unverified TLS.
    deadline = time.monotonic() + 30
    while not any("canary" in line for line in nginx.publishes()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any("canary" in line for line in nginx.publishes()), (
        "PyAV now passes tls_verify/ca_file to its output: verify on the publishing connection and drop verify_tls")
