"""Live channel benchmark: encoder speed and push-to-first-frame delay.

1. Encoder speed, as a multiple of real time, at 576 x 320 and 1024 x 576 (24 fps): the channel's own
   chain (per-clip decoder with the normalising filters -> Python feeder -> CBR/2 s-GOP x264 + AAC
   encoder) run unpaced on a clip with motion and film grain. Baseline, measured in the same run on the
   same clip: the AI WebTV's encode (libx264 veryfast zerolatency, CRF, AAC 44.1 kHz, FLV).
2. First-frame delay: from starting a channel to the first frame pulled back from a local nginx-rtmp
   (Debian nginx + libnginx-mod-rtmp on 127.0.0.1), median of three starts.

Last line: {"realtime_factor_576x320": ..., "realtime_factor_1024x576": ..., "first_frame_delay_s": ...}
"""

from __future__ import annotations

import json
import os
import queue
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction

from comfyui_webtv.nodes import host
from comfyui_webtv.nodes.broadcast import channel as channels
from comfyui_webtv.nodes.broadcast.encoder import Encoding, encode_args, raw_input_args
from comfyui_webtv.nodes.broadcast.normalize import ChannelFormat, ClipDecoder, probe
from comfyui_webtv.nodes.common.ffmpeg import ffmpeg_exe, run_ffmpeg

SECONDS = 8
RUNS = 3
RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"


def make_clip(folder: str, width: int, height: int) -> str:
    path = os.path.join(folder, f"clip_{width}x{height}.mp4")
    run_ffmpeg([
        "-y", "-f", "lavfi", "-i", f"testsrc2=s={width}x{height}:r=24:d={SECONDS},noise=alls=6:allf=t",
        "-f", "lavfi", "-i", f"sine=f=440:d={SECONDS}", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "16",
        "-c:a", "aac", "-shortest", path,
    ])
    return path


def channel_speed(path: str, fmt: ChannelFormat) -> float:
    """Seconds of channel output encoded per wall-clock second, feeding as fast as the encoder takes it."""
    audio_r, audio_w = os.pipe()
    inputs, per_output = raw_input_args(fmt, audio_r)
    args = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error"] + inputs + per_output + encode_args(fmt, Encoding())
    began = time.perf_counter()
    encoder = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(audio_r,))
    os.close(audio_r)
    sound: queue.Queue = queue.Queue()  # as in the channel, sound goes through a queue and its own thread

    def write_sound() -> None:
        while (chunk := sound.get()) is not None:
            os.write(audio_w, chunk)
        os.close(audio_w)

    writer = threading.Thread(target=write_sound)
    writer.start()
    decoder = ClipDecoder(probe(path), fmt)
    frames = 0
    while (video := decoder.read_frame()) is not None:
        sound.put(decoder.read_audio(fmt.samples_before(frames + 1) - fmt.samples_before(frames)))
        encoder.stdin.write(video)
        frames += 1
    decoder.close()
    sound.put(None)
    encoder.stdin.close()
    writer.join()
    encoder.wait()
    return frames / float(fmt.fps) / (time.perf_counter() - began)


def webtv_speed(path: str) -> float:
    """The AI WebTV's encode of the same clip, unpaced."""
    began = time.perf_counter()
    run_ffmpeg(["-i", path, "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-c:a", "aac",
                "-ar", "44100", "-f", "flv", "-y", os.devnull])
    return SECONDS / (time.perf_counter() - began)


def start_nginx(root: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w") as f:
        f.write(
            f"load_module {RTMP_MODULE};\ndaemon off;\nmaster_process off;\npid {root}/nginx.pid;\n"
            f"error_log {root}/error.log warn;\nevents {{ worker_connections 64; }}\n"
            f"rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} }} }}\n"
        )
    proc = subprocess.Popen(["nginx", "-p", root, "-c", conf, "-e", os.path.join(root, "error.log")])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nginx did not start")


def first_frame_delay(clip: str, port: int, run: int) -> float:
    """Seconds from starting a channel to the first video frame a player receives from nginx."""
    url = f"rtmp://127.0.0.1:{port}/live/bench{run}"
    player = subprocess.Popen(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-probesize", "32768", "-analyzeduration", "200000",
         "-i", url, "-map", "0:v", "-c", "copy", "-f", "framecrc", "pipe:1"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # the player is waiting on nginx before the channel starts
    settings = channels.ChannelSettings(name=f"bench{run}", outputs=(url,), preview=False, fmt=ChannelFormat(576, 320))
    began = time.perf_counter()
    channels.start(settings, [clip])
    try:
        while select.select([player.stdout], [], [], 30)[0]:
            line = player.stdout.readline()
            if not line:
                break
            if not line.startswith(b"#"):
                return time.perf_counter() - began
        raise RuntimeError("the player received no frame within 30 s")
    finally:
        channels.stop(settings.name)
        player.kill()
        player.wait()


def main() -> None:
    if not os.path.exists(RTMP_MODULE):
        sys.exit("nginx with the RTMP module is needed: apt-get install -y nginx libnginx-mod-rtmp")
    with tempfile.TemporaryDirectory() as scratch:
        host.configure(output_dir=os.path.join(scratch, "output"))
        result = {}
        for width, height in ((576, 320), (1024, 576)):
            clip = make_clip(host.output_dir(), width, height)
            fmt = ChannelFormat(width, height, Fraction(24))
            ours = statistics.median(channel_speed(clip, fmt) for _ in range(RUNS))
            base = statistics.median(webtv_speed(clip) for _ in range(RUNS))
            print(f"{width}x{height}: channel chain {ours:.2f}x real time, WebTV encode {base:.2f}x (ratio {ours / base:.2f})", flush=True)
            result[f"realtime_factor_{width}x{height}"] = round(ours, 2)
        nginx, port = start_nginx(scratch)
        try:
            clip = os.path.join(host.output_dir(), "clip_576x320.mp4")
            delays = [first_frame_delay(clip, port, run) for run in range(RUNS)]
        finally:
            nginx.kill()
            nginx.wait()
        print("first-frame delays: " + ", ".join(f"{d:.2f} s" for d in delays), flush=True)
        result["first_frame_delay_s"] = round(statistics.median(delays), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
