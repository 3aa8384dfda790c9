"""Season fan-out on Metaflow against the sequential ``run`` command, on tiny models, in one run.

An 8-shot season is rendered by ``python -m comfyui_webtv run`` (one process, shots one after another,
torch on all cores) and by ``flows/season.py`` with 1, 2 and 4 local workers (one process per shot, each
on one torch thread). Both render the same shot with the same tiny models: the workflow's 24 frames at
8 fps, FILM to 24 fps and 3 s of music, at half its width and height and a quarter of its steps
(``SHOT``): about a minute on two cores, as a full-size shot is minutes of GPU work against the
same fixed costs per task (a process; torch, diffusers and transformers imported; the datastore; the
card). At the tests' smallest sizes a shot is two seconds of work and those fixed costs alone decide.

``task_overhead_s`` is Metaflow's time per render task: the scheduler's time for the task (from "Task
is starting" to "Task finished": process start, datastore writes and the card) less the seconds inside
the step, median over the 1-worker run's tasks. ``ceiling_2_workers`` is what two one-thread tasks side
by side would reach with no Metaflow cost at all: twice the run command's seconds per shot over a task's
seconds in its step. It is below 2 because the run command already gets most of the second core.

    python benchmarks/season.py [--shots 8] [--workers 1,2,4]

Last line: {"speedup_2_workers": ..., "speedup_4_workers": ..., "task_overhead_s": ..., "ceiling_2_workers": ..., ...}
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEASON = os.path.join(ROOT, "flows", "season.py")
THEME = "a lighthouse keeper's day on a stormy northern island"
SHOT = {"ZeroscopeTextToVideo.width": 288, "ZeroscopeTextToVideo.height": 160, "ZeroscopeTextToVideo.frames": 24,
        "ZeroscopeTextToVideo.steps": 10, "ZeroscopeXLUpscale.width": 512, "ZeroscopeXLUpscale.height": 288,
        "ZeroscopeXLUpscale.steps": 10}
LOG_LINE = re.compile(r"^(\S+ \S+) \[(\d+)/render/(\d+) \(pid \d+\)\] Task (is starting|finished successfully)")


def timed(cmd: list[str], env: dict, cwd: str) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall, proc.stdout + proc.stderr


def task_seconds(log: str, run_id: str, env: dict) -> tuple[list[float], list[float]]:
    """Per render task: its seconds in the step (from the client API), and the scheduler's seconds less those."""
    starts, ends = {}, {}
    for line in log.splitlines():
        m = LOG_LINE.match(line)
        if m and m.group(2) == run_id:
            stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            (starts if m.group(4) == "is starting" else ends)[m.group(3)] = stamp
    code = ("import json, metaflow; metaflow.namespace(None); "
            f"print(json.dumps({{t.id: t.data.info['task_seconds'] for t in metaflow.Run('SeasonFlow/{run_id}')['render']}}))")
    inside = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    return list(inside.values()), [ends[t] - starts[t] - seconds for t, seconds in inside.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="webtv-bench-season-") as tmp:
        tiny = os.path.join(tmp, "tiny-models")
        subprocess.run([sys.executable, "-m", "comfyui_webtv", "make-tiny-models", tiny], check=True, capture_output=True)
        env = {**os.environ, "METAFLOW_HOME": os.path.join(tmp, "mf-home"), "METAFLOW_DATASTORE_SYSROOT_LOCAL": tmp,
               "METAFLOW_DEFAULT_DATASTORE": "local", "METAFLOW_DEFAULT_METADATA": "local", "USERNAME": "bench"}
        missing = os.path.join(tmp, "models")  # both fall back to the tiny models when ./models lacks one
        with open(os.path.join(ROOT, "flows", "season.json"), encoding="utf-8") as f:
            settings = {**json.load(f), "tiny_sets": SHOT}
        settings_file = os.path.join(tmp, "season.json")
        with open(settings_file, "w", encoding="utf-8") as f:
            json.dump(settings, f)
        sets = [a for k, v in SHOT.items() for a in ("--set", f"{k}={v}")]
        base, _ = timed([sys.executable, "-m", "comfyui_webtv", "run", "--theme", THEME, "--shots", str(args.shots), *sets,
                         "--tiny-dir", tiny, "--output", os.path.join(tmp, "station"), "--on-air", "0.1"], env, tmp)
        print(f"sequential run command: {base:.1f} s for {args.shots} shots", flush=True)
        walls, overheads, in_step = {}, [], []
        for n in counts:
            id_file = os.path.join(tmp, f"run_id_{n}")
            walls[n], log = timed([sys.executable, SEASON, "--config", "settings", settings_file, "run",
                                   "--theme", THEME, "--shots", str(args.shots),
                                   "--max-workers", str(n), "--models", missing, "--tiny-dir", tiny,
                                   "--output", os.path.join(tmp, f"season_{n}"), "--run-id-file", id_file], env, tmp)
            with open(id_file) as f:
                run_id = f.read().strip()
            inside, per_task = task_seconds(log, run_id, env)
            if n == counts[0]:
                in_step, overheads = inside, per_task
            print(f"season flow, {n} worker(s): {walls[n]:.1f} s (x{base / walls[n]:.2f}); "
                  f"task overhead median {statistics.median(per_task):.2f} s", flush=True)
    result = {f"speedup_{n}_workers": round(base / walls[n], 3) for n in counts if n > 1}
    result["task_overhead_s"] = round(statistics.median(overheads), 3)
    result["task_in_step_s"] = round(statistics.median(in_step), 3)
    # Two one-thread tasks with no overhead at all, against the run command's seconds per shot on two threads.
    result["ceiling_2_workers"] = round(2 * (base / args.shots) / statistics.median(in_step), 3)
    result.update({"sequential_s": round(base, 2), **{f"flow_{n}_workers_s": round(walls[n], 2) for n in counts}})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
