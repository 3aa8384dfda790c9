"""What a flow task does with a workflow: run it here (the pack's graph runner) or on a ComfyUI worker
(the ``queue`` client), and read back what it made (files, a contact sheet, the audio's length, timings).

The pack is imported inside the functions: Metaflow starts a process per task and another per card,
and only the tasks that render here need torch (a task on a worker imports only the ``queue`` client).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field

TINY_SUFFIX = ".partial"


class TaskFailed(RuntimeError):
    """A task's workflow failed; the message names the task and the cause."""


@dataclass
class Rendered:
    """What one workflow run produced: files on this machine, where it ran, seconds per node."""

    files: list[str]
    where: str
    seconds: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- settings

def one_thread() -> None:
    """Each task on one torch thread: tasks share the machine's cores with each other."""
    import torch

    torch.set_num_threads(1)


def worker_urls(text: str) -> list[str]:
    """ComfyUI worker URLs from a comma- or space-separated list."""
    return [u for u in re.split(r"[,\s]+", text.strip()) if u]


def worker_for(index: int, urls: list[str]) -> str:
    """The worker of task ``index``: the URLs in turn, or "" (the embedded runner) when there are none."""
    return urls[index % len(urls)] if urls else ""


def workflow_path(name: str) -> str:
    """A workflow file: a path, else a name in the pack's ``workflows/`` folder."""
    if os.path.isfile(name):
        return os.path.abspath(name)
    import comfyui_webtv

    path = os.path.join(os.path.dirname(comfyui_webtv.__file__), "workflows", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"workflow: {name!r} is neither a file nor one of the pack's workflows ({os.path.dirname(path)}).")
    return path


def workflow_file(text: str, folder: str) -> str:
    """Write a workflow (kept as an artifact, so remote tasks need no local file) into ``folder``."""
    path = os.path.join(folder, "workflow.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def assignments(sets: dict) -> list[str]:
    """``{"NODE.INPUT": value}`` as ``--set NODE.INPUT=VALUE`` texts (typed by each node's input)."""
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sets.items()]


def parse_grid(text: str) -> list[tuple[str, list]]:
    """``NODE.INPUT=v1,v2;NODE.INPUT=[json list]`` as ``[(target, values)]``, axes in order.

    Values are split on commas; a JSON list keeps commas and semicolons inside values
    (``"3.prompt=[\\"a cat, cinematic\\", \\"a dog\\"]"``).
    """
    axes, rest, decoder = [], text.strip(), json.JSONDecoder()
    while rest:
        target, sep, rest = rest.partition("=")
        target = target.strip()
        if not sep or "." not in target.strip("."):
            raise ValueError(f"set: expected NODE.INPUT=v1,v2,... (axes separated by ';'), got {target!r}.")
        rest = rest.lstrip()
        if rest.startswith("["):
            values, end = decoder.raw_decode(rest)
            if not isinstance(values, list) or not values:
                raise ValueError(f"set {target}: a JSON list of values needs at least one value.")
            rest = rest[end:].lstrip()
            if rest and not rest.startswith(";"):
                raise ValueError(f"set {target}: expected ';' after the JSON list, got {rest[:20]!r}.")
            rest = rest[1:]
        else:
            text_values, _, rest = rest.partition(";")
            values = [v.strip() for v in text_values.split(",")]
            if not all(values):
                raise ValueError(f"set {target}: empty value in {text_values!r}.")
        if target in (t for t, _ in axes):
            raise ValueError(f"set {target}: given twice; list all its values once.")
        axes.append((target, values))
        rest = rest.strip()
    if not axes:
        raise ValueError("set: give at least one NODE.INPUT=v1,v2,... axis.")
    return axes


# ---------------------------------------------------------------- models

def ensure_models(models_dir: str, required: list, tiny_dir: str) -> tuple[str, bool]:
    """``(folder, tiny)``: ``models_dir`` when it holds every ``[kind, name]`` in ``required``, else
    ``tiny_dir`` with tiny random models (made once, atomically, so parallel tasks can share it)."""
    from comfyui_webtv.nodes import host

    def complete(folder: str) -> bool:
        host.configure(models_dir=folder)
        return all(host.find_model(kind, name) for kind, name in required)

    if complete(models_dir):
        return os.path.abspath(models_dir), False
    if not complete(tiny_dir):
        from comfyui_webtv.cli.tiny import make_tiny_models  # every stage's architecture: imported only when needed

        scratch = tempfile.mkdtemp(prefix=os.path.basename(tiny_dir) + TINY_SUFFIX, dir=os.path.dirname(os.path.abspath(tiny_dir)))
        make_tiny_models(scratch)
        try:
            os.rename(scratch, tiny_dir)
        except OSError:  # another task got there first
            shutil.rmtree(scratch, ignore_errors=True)
        if not complete(tiny_dir):
            raise FileNotFoundError(f"models: {tiny_dir} lacks models the workflow needs: {required}")
    return os.path.abspath(tiny_dir), True


# ---------------------------------------------------------------- running a workflow

def run_here(path: str, sets: list[str], models_dir: str, out_dir: str) -> Rendered:
    """Run the API workflow at ``path`` in this process with the pack's graph runner."""
    from comfyui_webtv.nodes import host
    from comfyui_webtv.workflow import format as wf, runner

    host.configure(models_dir=models_dir, output_dir=out_dir)
    with open(path, encoding="utf-8") as f:
        kind, api = wf.load_workflow(f.read())
    info = runner.object_info()
    if kind == "ui":
        api = wf.ui_to_api(api, info)
    for assignment in sets:
        wf.set_input(api, assignment, info)
    starts: list[tuple[str, float]] = []
    results = runner.run(api, on_node=lambda nid, *_: starts.append((nid, time.monotonic())))
    ends = [t for _, t in starts[1:]] + [time.monotonic()]
    seconds = {_label(api, nid): round(end - start, 3) for (nid, start), end in zip(starts, ends)}
    files = []
    for result in results.values():
        for ui in result["ui"]:
            for item in _file_items(ui or {}):
                root = host.output_dir() if item.get("type", "output") == "output" else host.temp_dir()
                files.append(os.path.join(root, item.get("subfolder") or "", item["filename"]))
    return Rendered(files, "embedded", seconds)


def run_on_worker(path: str, sets: list[str], server: str, out_dir: str, timeout: float) -> Rendered:
    """Run the workflow at ``path`` on the ComfyUI ``server`` (bearer token from ``WEBTV_WORKER_TOKEN``)."""
    from comfyui_webtv.cli.queue import queue_workflow

    started = time.monotonic()
    code, summary = queue_workflow(path, server, sets, out_dir, timeout, quiet=True)
    if code != 0:
        error = summary.get("error") or {}
        cause = error.get("exception_message") or error.get("message") or summary["status"]
        node = f" in node {error['node_id']} ({error.get('node_type')})" if error.get("node_id") else ""
        raise TaskFailed(f"{server} {summary['status']}{node}: {cause}")
    return Rendered(summary["files"], server, {"worker": round(time.monotonic() - started, 3)})


def _label(api: dict, nid: str) -> str:
    return f"{nid} {api[nid].get('_meta', {}).get('title') or api[nid]['class_type']}"


def _file_items(ui: dict) -> list[dict]:
    return [v for value in ui.values() if isinstance(value, list) for v in value if isinstance(v, dict) and v.get("filename")]


# ---------------------------------------------------------------- reading back a clip

def describe(path: str) -> dict:
    """A clip's size, frame rate, frames, video and audio seconds, and its generation info (mp4 comment)."""
    import av

    with av.open(path) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
        fps = float(video.average_rate)
        info = {"width": video.width, "height": video.height, "fps": round(fps, 3), "frames": frames,
                "video_seconds": round(frames / fps, 3), "audio_seconds": None,
                "generation_info": container.metadata.get("comment", "")}
    with av.open(path) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            info["audio_seconds"] = round(sum(f.samples for f in container.decode(stream)) / stream.rate, 3)
    return info


def contact_sheet(path: str, count: int = 8, columns: int = 4, width: int = 160):
    """``count`` frames spread over the clip, tiled ``columns`` wide, each ``width`` pixels (a PIL image)."""
    import av
    from PIL import Image

    with av.open(path) as container:
        frames = [f.to_image() for f in container.decode(container.streams.video[0])]
    if not frames:
        raise ValueError(f"{path}: no video frames")
    picks = [frames[round(i * (len(frames) - 1) / max(count - 1, 1))] for i in range(min(count, len(frames)))]
    height = max(1, round(width * picks[0].height / picks[0].width))
    rows = -(-len(picks) // columns)
    sheet = Image.new("RGB", (columns * width, rows * height))
    for i, frame in enumerate(picks):
        sheet.paste(frame.resize((width, height)), ((i % columns) * width, (i // columns) * height))
    return sheet


def png(image) -> bytes:
    """A PIL image as PNG bytes (an artifact the cards show without decoding the clip again)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def thumbnail(path: str, width: int = 96):
    """A small picture of an output file: a strip of frames for a video, the image itself, else None."""
    from PIL import Image, UnidentifiedImageError

    if path.lower().endswith((".mp4", ".webm", ".mov", ".mkv")):
        return contact_sheet(path, count=4, columns=4, width=width)
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except (UnidentifiedImageError, OSError):
        return None
    image.thumbnail((width * 2, width * 2))
    return image
