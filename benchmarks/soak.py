"""Soak: a live channel for a set time while clips keep arriving and retention deletes old ones.

A channel (local preview + one RTMP output to nginx-rtmp on 127.0.0.1) starts empty (the slate airs),
a producer appends a short clip every few seconds (ffmpeg-made: a colour and a tone per clip, so the
run costs little CPU beside the channel itself) to the rotation and to an ffconcat playlist, and
retention (by age and by a disk quota) deletes clips that have aired. A puller follows the RTMP
stream the whole time and records every video frame's timestamp. Measured: clips aired and deleted,
the largest gap between consecutive frames of the pulled stream (in frame periods; the channel's
timestamps must stay continuous), late (feeder) and dropped (encoder) frames, encoder speed, RSS of
this process and of its long-lived children, the encoder and the outputs (growth per hour: a
least-squares slope after the warm-up; a clip's decoders live one clip, one to four at a sample by
chance, which would only add noise of about 10 MB/h to the slope),
open descriptors and threads at start (after the warm-up) and end; and every deletion is checked
against the rotation and the playlist at that moment (``deleted_while_queued``: a deleted clip that
had not yet aired, was still in the rotation, or still named by the playlist).

    python benchmarks/soak.py [--minutes 20]

``--station`` soaks the product instead: ``python -m comfyui_webtv run --forever`` on tiny models (a
child process; its local preview and one RTMP output to nginx), writing and rendering episode after
episode while retention bounds the disk. The same figures come from outside: the preview's /status
(clips aired), the run folder (clips made and deleted, disk use), the channel state file and the
playlist (every deletion checked against them), /proc of the run and its children (RSS, descriptors,
threads), and the same puller on the RTMP stream.

    python benchmarks/soak.py --station [--minutes 20] [--warmup 300]

Last line: {"hours", "clips_aired", "max_gap_frames", "rss_growth_mb_per_hour", "fd_growth",
"thread_growth", "deleted_while_queued", ...}; RSS growth is the least-squares slope of the samples
taken after the warm-up ("growth_fit_from_s").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction

from broadcast import RTMP_MODULE, start_nginx

from comfyui_webtv.nodes import host
from comfyui_webtv.nodes.broadcast import channel as channels
from comfyui_webtv.nodes.broadcast.normalize import ChannelFormat, probe
from comfyui_webtv.nodes.broadcast.playlist import Entry, read_ffconcat, write_ffconcat
from comfyui_webtv.nodes.broadcast.retention import Retainer, Retention
from comfyui_webtv.nodes.common.ffmpeg import ffmpeg_exe, run_ffmpeg

FPS = 24
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white")


def rss_mb(pid: int | str = "self") -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def children(pid: int) -> list[int]:
    """Every descendant process of ``pid``."""
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []  # it has just exited
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            continue
        for kid in kids:
            found += [kid, *children(kid)]
    return found


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per hour."""
    if len(samples) < 3:
        return 0.0
    ts, vs = [t for t, _ in samples], [v for _, v in samples]
    mt, mv = statistics.fmean(ts), statistics.fmean(vs)
    var = sum((t - mt) ** 2 for t in ts)
    return 3600 * sum((t - mt) * (v - mv) for t, v in samples) / var if var else 0.0


class Puller:
    """ffmpeg following the RTMP stream; every video frame's timestamp (restarted when the stream ends)."""

    def __init__(self, url: str):
        self.url, self.pts, self.restarts, self.max_arrival_gap = url, [], 0, 0.0
        self.segments: list[list[float]] = []  # frame times in seconds, one list per connection
        self._stop = threading.Event()
        self.proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.proc = subprocess.Popen(
                [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-rw_timeout", "20000000", "-i", self.url,
                 "-map", "0:v", "-c", "copy", "-f", "framecrc", "pipe:1"],
                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            tb, frames, last = 1 / 1000, [], None
            self.segments.append(frames)
            for line in self.proc.stdout:
                text = line.decode(errors="replace")
                if text.startswith("#tb 0:"):
                    num, den = text.split(":", 1)[1].strip().split("/")
                    tb = int(num) / int(den)
                elif text[:1].isdigit():
                    fields = [f.strip() for f in text.split(",")]
                    now = time.monotonic()
                    if last is not None:
                        self.max_arrival_gap = max(self.max_arrival_gap, now - last)
                    last = now
                    frames.append(int(fields[2]) * tb)
            self.proc.wait()
            if not self._stop.is_set():
                self.restarts += 1
                self._stop.wait(1.0)

    def max_gap_frames(self) -> float:
        gaps = [(b - a) * FPS for frames in self.segments for a, b in zip(frames, frames[1:])]
        return max(gaps, default=float("nan"))

    def frames(self) -> int:
        return sum(len(f) for f in self.segments)

    def stop(self) -> None:
        self._stop.set()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        self._thread.join(10)


def make_clip(folder: str, n: int, seconds: float, size: tuple[int, int]) -> str:
    path = os.path.join(folder, f"clip_{n:05d}.mp4")
    part = os.path.join(folder, f".clip_{n:05d}.part.mp4")
    run_ffmpeg(["-y", "-f", "lavfi", "-i", f"color=c={COLOURS[n % len(COLOURS)]}:s={size[0]}x{size[1]}:r={FPS}:d={seconds}",
                "-f", "lavfi", "-i", f"sine=f={220 + 20 * (n % 20)}:d={seconds}:sample_rate=48000", "-c:v", "libx264",
                "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", part], timeout=60)
    os.replace(part, path)
    return path


TRANSIENT = ("decoder", "gone", "forking")  # children that live one clip, have just ended, or are not yet ffmpeg


def proc_figures(pid: int) -> dict:
    """Descriptors and threads of a process (zeros once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
        return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": threads}
    except (OSError, StopIteration):
        return {"fds": 0, "threads": 0}


def child_kind(pid: int) -> str:
    """What a child of the station is, from its command line: the encoder, an output, a clip decoder, or
    "forking" (between fork and exec: a copy of its parent, whose shared pages its RSS counts again)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return "gone"
    if not argv[0]:
        return "gone"  # a zombie: ended, not yet waited for
    if "comfyui_webtv.nodes.broadcast.publish" in argv or any(a.endswith("publish.py") for a in argv):
        return "publisher"
    if os.path.basename(argv[0]).startswith("python"):
        return "forking"
    if "hls" in argv:
        return "hls"
    if "-progress" in argv:
        return "encoder"
    if "rawvideo" in argv or "s16le" in argv:
        return "decoder"
    return "output"


def resource_figures(start: dict, end: dict) -> dict:
    """Descriptors, threads and ffmpeg processes at the start and the end of the measured time."""
    return {
        "fds_start_end": [start["fds"], end["fds"]],
        "threads_start_end": [start["threads"], end["threads"]],
        "fd_growth": end["fds"] - start["fds"],
        "thread_growth": end["threads"] - start["threads"],
        "ffmpeg_processes_start_end": [start["ffmpeg_processes"], end["ffmpeg_processes"]],
    }


def get_json(url: str) -> dict | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return json.loads(reply.read())
    except (OSError, ValueError):
        return None


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def station(args, seconds: float) -> dict:
    """``run --forever`` on tiny models as a child process, measured from outside (see the module's docstring)."""
    import glob
    import signal

    warmup = min(args.warmup if args.warmup is not None else 300.0, seconds / 4)
    with tempfile.TemporaryDirectory() as scratch:
        tiny = args.tiny_dir or os.path.join(scratch, "tiny-models")
        if not os.path.isdir(os.path.join(tiny, "zeroscope")):
            subprocess.run([sys.executable, "-m", "comfyui_webtv", "make-tiny-models", tiny], check=True, stdout=subprocess.DEVNULL)
        nginx, port = start_nginx(scratch)
        url, preview_port = f"rtmp://127.0.0.1:{port}/live/station", free_port()
        output = os.path.join(scratch, "output")
        command = [sys.executable, "-m", "comfyui_webtv", "run", "--forever", "--shots", str(args.shots), "--remember",
                   "--tiny-dir", tiny, "--output", output, "--rtmp", url, "--channel", "station",
                   "--retention-hours", str(args.retention_hours), "--retention-mb", str(args.retention_mb),
                   "--set", f"WebTVRTMPChannel.preview_port={preview_port}", "--set", "WebTVRTMPChannel.video_kbps=600"]
        log_path = os.path.join(scratch, "station.log")
        log = open(log_path, "w")
        # SIGUSR1 makes the run write every thread's stack to its log (faulthandler), should it not stop when asked.
        # Ctrl-C is SIGINT's default action again (a shell's background job starts with it ignored).
        command[1:3] = ["-c", "import faulthandler, signal, sys; faulthandler.register(signal.SIGUSR1, all_threads=True); "
                        "signal.signal(signal.SIGINT, signal.default_int_handler); from comfyui_webtv.cli import main; sys.exit(main())"]
        run = subprocess.Popen(command, cwd=scratch, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True)
        status_url = f"http://127.0.0.1:{preview_port}/status"
        puller = None
        aired: dict[tuple[str, float], bool] = {}
        seen_aired: set[str] = set()
        known: set[str] = set()  # clip files seen on disk
        deleted: dict[str, float] = {}  # clip -> when it was first seen gone
        violations: list[str] = []
        samples = {"py": [], "ff": [], "speed": [], "disk": []}
        by_kind: dict[str, list[float]] = {}
        start_figures, status, first_clip_s, summary = None, None, None, None
        began = time.monotonic()
        try:
            while (now := time.monotonic()) - began < seconds:
                if run.poll() is not None:
                    raise RuntimeError(f"run --forever ended early (exit {run.returncode})")
                t = now - began
                status = get_json(status_url) or status
                if status and puller is None and status["state"] == "live":
                    puller = Puller(url)
                # Deletions are checked from outside: a clip file gone from the disk must have aired, and be named by
                # neither the rotation (the channel's state file, saved every 2 s) nor the playlist read afterwards.
                present = set(glob.glob(os.path.join(output, "WebTV", "station", "*", "ep*", "*.mp4")))
                gone = known - present
                known = (known - gone) | present
                for entry in (status or {}).get("history", []):
                    if entry.get("frames"):
                        seen_aired.add(entry["path"])
                        aired[(entry["path"], entry["started_at"])] = entry["completed"]
                        if first_clip_s is None:
                            first_clip_s = round(t, 1)
                for path in sorted(gone):
                    deleted[path] = time.time()  # gone by now
                    if path not in seen_aired:
                        violations.append(path)
                named = set()  # a rotation saved after a clip was seen gone must not hold it (the file lags up to 2 s)
                for path in glob.glob(os.path.join(output, "WebTV", "station", "*", "channel.state.json")):
                    saved = read_json(path) or {}
                    named |= {p for p in saved.get("clips", []) if p in deleted and saved.get("saved_at", 0) > deleted[p]}
                for path in glob.glob(os.path.join(output, "WebTV", "station", "*", "channel.ffconcat")):
                    try:  # read after the disk: the playlist is rewritten before a clip is deleted
                        named |= {e.path for e in read_ffconcat(path)}
                    except (OSError, ValueError):
                        pass  # replaced while read
                violations += [p for p in deleted if p in named and p not in violations]
                disk = sum(os.path.getsize(p) for p in present if os.path.exists(p)) / 1e6
                samples["disk"].append((t, disk))
                kids = children(run.pid)
                kinds: dict[str, float] = {}
                for pid in kids:
                    kind = child_kind(pid)
                    kinds[kind] = kinds.get(kind, 0.0) + rss_mb(pid)
                # The encoder and the outputs live as long as the channel; a clip's decoder lives one clip (one or
                # two at a time, by chance at a sample), so it is reported apart and left out of the growth.
                samples["py"].append((t, rss_mb(run.pid)))
                samples["ff"].append((t, sum(v for k, v in kinds.items() if k not in TRANSIENT)))
                for kind, value in kinds.items():
                    by_kind.setdefault(kind, []).append((t, value))
                if status and status["encoder"]["speed"]:
                    samples["speed"].append(status["encoder"]["speed"])
                if start_figures is None and t >= warmup:
                    start_figures = {**proc_figures(run.pid), "ffmpeg_processes": len(kids)}
                    print(f"start ({t:.0f} s): {start_figures}, rss {samples['py'][-1][1]:.1f} MB python, "
                          f"{samples['ff'][-1][1]:.1f} MB children {kinds}", flush=True)
                if len(samples["py"]) % 60 == 0:
                    print(f"{t / 60:5.1f} min: {len(known) + len(deleted)} clips made, {len(aired)} aired, {len(deleted)} deleted, "
                          f"{disk:.2f} MB on disk, {(status or {}).get('clips')} in rotation, state {(status or {}).get('state')}, "
                          f"rss {samples['py'][-1][1]:.1f} MB python, {samples['ff'][-1][1]:.1f} MB children", flush=True)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
            end_figures = {**proc_figures(run.pid), "ffmpeg_processes": len(children(run.pid))}
            run.send_signal(signal.SIGINT)  # Ctrl-C: the channel stops and the run prints its summary
            try:
                out, _ = run.communicate(timeout=180)
                summary = json.loads(out.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                run.send_signal(signal.SIGUSR1)
                time.sleep(2)
                print(f"run did not stop within 180 s of Ctrl-C; its stacks are in the log:\n{open(log_path).read()[-6000:]}",
                      file=sys.stderr, flush=True)
        except BaseException:
            log.close()
            with open(log_path) as f:
                print(f.read()[-4000:], file=sys.stderr)
            raise
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
            if puller is not None:
                puller.stop()
            nginx.kill()
            nginx.wait()
        log.close()
        hours = (time.monotonic() - began) / 3600
        steady = lambda series: [s for s in series if s[0] >= warmup]  # noqa: E731
        py, ff = slope_per_hour(steady(samples["py"])), slope_per_hour(steady(samples["ff"]))
        start_figures = start_figures or end_figures
        made = len(known) + len(deleted)
        result = {
            "mode": "station (run --forever, tiny models)",
            "hours": round(hours, 4),
            "episodes": len(glob.glob(os.path.join(output, "WebTV", "station", "*", "ep*"))),
            "clips_made": made,
            "clips_aired": len(aired),
            "clips_completed": sum(aired.values()),
            "first_clip_on_air_s": first_clip_s,
            "clips_deleted": len(deleted),
            "disk_mb_max": round(max((d for _, d in samples["disk"]), default=0.0), 3),
            "disk_mb_end": round(samples["disk"][-1][1], 3) if samples["disk"] else 0.0,
            "max_gap_frames": round(puller.max_gap_frames(), 3) if puller else None,
            "frames_pulled": puller.frames() if puller else 0,
            "puller_restarts": puller.restarts if puller else None,
            "late_frames": status["late_frames"],
            "dropped_frames": status["dropped_frames"],
            "reconnects": status["reconnects"],
            "encoder_speed_median": round(statistics.median(samples["speed"]), 3) if samples["speed"] else None,
            "encoder_speed_min": round(min(samples["speed"]), 3) if samples["speed"] else None,
            "growth_fit_from_s": round(warmup),
            "rss_growth_mb_per_hour": round(py + ff, 2),
            "rss_growth_python_mb_per_hour": round(py, 2),
            "rss_growth_ffmpeg_mb_per_hour": round(ff, 2),
            "rss_growth_ffmpeg_counts": "the encoder and the outputs (per-clip decoders apart, below)",
            "rss_growth_children_mb_per_hour": {k: round(slope_per_hour(steady(v)), 2) for k, v in sorted(by_kind.items())},
            "rss_mb_python_start_end": [round(v, 1) for v in (steady(samples["py"]) or samples["py"])[0][1:] + samples["py"][-1][1:]],
            "rss_mb_children_start_end": [round(v, 1) for v in (steady(samples["ff"]) or samples["ff"])[0][1:] + samples["ff"][-1][1:]],
            **resource_figures(start_figures, end_figures),
            "deleted_while_queued": len(violations),
            "run_stopped_on_ctrl_c": summary is not None and run.returncode in (0, 130),
        }
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=20.0, help="how long the channel stays on air")
    p.add_argument("--every", type=float, default=4.0, help="seconds between new clips")
    p.add_argument("--clip-seconds", type=float, default=1.5, help="length of each clip")
    p.add_argument("--retention-hours", type=float, default=60 / 3600, help="retention by age (default 60 s)")
    p.add_argument("--retention-mb", type=float, default=0.12, help="retention by disk quota in MB (clips are ~10 kB)")
    p.add_argument("--warmup", type=float, help="seconds before the start figures are taken and growth is fitted "
                   "(default 60, capped at a fifth of the run; --station: 300, capped at a quarter)")
    p.add_argument("--station", action="store_true", help="soak `run --forever` on tiny models instead of a channel fed directly")
    p.add_argument("--shots", type=int, default=2, help="--station: shots per episode")
    p.add_argument("--tiny-dir", help="--station: a folder of tiny models (make-tiny-models; made in a scratch folder otherwise)")
    args = p.parse_args(argv)
    if not os.path.exists(RTMP_MODULE):
        sys.exit("nginx with the RTMP module is needed: apt-get install -y nginx libnginx-mod-rtmp")
    seconds = args.minutes * 60
    if args.station:
        result = station(args, seconds)
        print(json.dumps(result), flush=True)
        return result
    warmup = min(60.0 if args.warmup is None else args.warmup, seconds / 5)
    with tempfile.TemporaryDirectory() as scratch:
        host.configure(output_dir=os.path.join(scratch, "output"))
        folder = os.path.join(host.output_dir(), "WebTV", "soak")
        os.makedirs(folder)
        playlist = os.path.join(folder, "channel.ffconcat")
        write_ffconcat(playlist, [])
        nginx, port = start_nginx(scratch)
        url = f"rtmp://127.0.0.1:{port}/live/soak"
        settings = channels.ChannelSettings(name="soak", outputs=(url,), preview=True, fmt=ChannelFormat(320, 180, Fraction(FPS)))
        channel = channels.start(settings, [])
        retainer = Retainer(channel, Retention(args.retention_hours, args.retention_mb), playlist, interval=2.0).start()
        puller = Puller(url)
        channel_children = lambda: [pid for pid in children(os.getpid()) if pid not in (nginx.pid, puller.proc and puller.proc.pid)]  # noqa: E731
        aired: dict[tuple[str, float], bool] = {}  # (path, started_at) -> completed
        seen_aired: set[str] = set()
        checked, violations, appended, samples = 0, [], 0, {"py": [], "ff": [], "speed": []}
        start_figures = None
        began = time.monotonic()
        next_clip = began
        try:
            while (now := time.monotonic()) - began < seconds:
                if now >= next_clip:
                    clip = make_clip(folder, appended, args.clip_seconds, (160, 90))
                    with retainer.lock:  # the playlist and the rotation change together
                        write_ffconcat(playlist, read_ffconcat(playlist) + [Entry(clip, probe(clip).duration)])
                        channels.append("soak", [clip])
                    appended += 1
                    next_clip = now + args.every
                with retainer.lock:  # each deletion checked against the history, rotation and playlist of that moment
                    status = channel.status()
                    for entry in status["history"]:
                        if entry.get("frames"):
                            seen_aired.add(entry["path"])
                            aired[(entry["path"], entry["started_at"])] = entry["completed"]
                    rotation = set(channel.rotation()[0])
                    listed = {e.path for e in read_ffconcat(playlist)}
                    for path in list(retainer.deleted)[len(retainer.deleted) - (retainer.deleted_count - checked):]:
                        if path not in seen_aired or path in rotation or path in listed or os.path.exists(path):
                            violations.append(path)
                    checked = retainer.deleted_count
                t = now - began
                ffmpegs = channel_children()
                samples["py"].append((t, rss_mb()))
                samples["ff"].append((t, sum(rss_mb(pid) for pid in ffmpegs if child_kind(pid) not in TRANSIENT)))
                if status["encoder"]["speed"]:
                    samples["speed"].append(status["encoder"]["speed"])
                if start_figures is None and t >= warmup:
                    start_figures = {"fds": len(os.listdir("/proc/self/fd")), "threads": threading.active_count(),
                                     "ffmpeg_processes": len(ffmpegs)}
                    print(f"start ({t:.0f} s): {start_figures}, rss {samples['py'][-1][1]:.1f} MB python, "
                          f"{samples['ff'][-1][1]:.1f} MB ffmpeg", flush=True)
                if len(samples["py"]) % 60 == 0:
                    print(f"{t / 60:5.1f} min: {len(aired)} clips aired, {retainer.deleted_count} deleted, "
                          f"{status['clips']} in rotation, {puller.frames()} frames pulled, state {status['state']}", flush=True)
                time.sleep(1.0)
            end_figures = {"fds": len(os.listdir("/proc/self/fd")), "threads": threading.active_count(),
                           "ffmpeg_processes": len(channel_children())}
            final = channel.status()
        finally:
            puller.stop()
            retainer.stop()
            channels.stop_all()
            nginx.kill()
            nginx.wait()
        hours = (time.monotonic() - began) / 3600
        steady = lambda key: [s for s in samples[key] if s[0] >= warmup]  # noqa: E731
        py, ff = slope_per_hour(steady("py")), slope_per_hour(steady("ff"))
        start_figures = start_figures or end_figures
        result = {
            "hours": round(hours, 4),
            "clips_aired": len(aired),
            "clips_completed": sum(aired.values()),
            "clips_appended": appended,
            "clips_deleted": retainer.deleted_count,
            "max_gap_frames": round(puller.max_gap_frames(), 3),
            "frames_pulled": puller.frames(),
            "puller_restarts": puller.restarts,
            "max_arrival_gap_s": round(puller.max_arrival_gap, 3),
            "late_frames": final["late_frames"],
            "dropped_frames": final["dropped_frames"],
            "reconnects": final["reconnects"],
            "encoder_speed_median": round(statistics.median(samples["speed"]), 3) if samples["speed"] else None,
            "encoder_speed_min": round(min(samples["speed"]), 3) if samples["speed"] else None,
            "rss_growth_mb_per_hour": round(py + ff, 2),
            "rss_growth_python_mb_per_hour": round(py, 2),
            "rss_growth_ffmpeg_mb_per_hour": round(ff, 2),
            **resource_figures(start_figures, end_figures),
            "deleted_while_queued": len(violations),
        }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
