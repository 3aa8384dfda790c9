"""``run``: the AI WebTV station, headless: the ``workflows/ai_webtv_api.json`` graph, run as ComfyUI runs it.

The Shot Writer turns a theme into shot prompts; per shot, Zeroscope writes a clip, the XL pass
upscales it, FILM brings it to the channel's frame rate, MusicGen scores it, and the mp4 joins this
run's playlist; then the channel goes on air (a local preview page, and the RTMP servers given) and
stays on air until Ctrl-C (or for --on-air seconds). The options below are --set assignments onto
that graph, so changing the workflow changes the station; any other input is one --set away.

Each run gets its own folder, output/WebTV/station/<run id>/, with its clips and its playlist: what is
on air is this run's programme (--resume RUN_ID adds to an earlier run's programme instead).

The graph runs shot by shot: each shot goes from Zeroscope to Save Video, the playlist and the channel
before the next one starts, so a clip is on air (at the next clip boundary) while the next is rendered.

--forever keeps the station going: episode after episode, each a run of the same graph with its clips
in its own folder (<run id>/ep0001/, ...), the Shot Writer told what the channel has already shown
(and given the theme of the hour with --schedule). The channel starts first and airs a slate until
the first clip is ready; each clip joins the rotation at the next clip boundary while it keeps
playing (the channel node finds the channel running, as when ComfyUI queues the graph again).
--retention-hours/--retention-mb delete clips that have aired, oldest first.

Models come from --models (ComfyUI's layout: zeroscope/, film/, musicgen/). With the default folder
and models missing, the station runs on tiny random models (noise, at small sizes) and says so;
--download fetches the real ones first.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOW = os.path.join(ROOT, "workflows", "ai_webtv_api.json")
STATION_FOLDER = "WebTV/station"
LLM_BACKENDS = ("auto", "openai_compatible", "local", "template")

# Where each model the graph loads comes from: loader class -> model kind (ComfyUI models sub-folder).
MODEL_LOADERS = {"ZeroscopeLoader": "zeroscope", "WebTVFilmInterpolate": "film", "WebTVMusicGenLoader": "musicgen"}

# Tiny random models give noise at any size: the graph's sizes are capped so a run takes seconds.
TINY_CAPS = {
    "ZeroscopeTextToVideo.width": 64, "ZeroscopeTextToVideo.height": 64, "ZeroscopeTextToVideo.frames": 8,
    "ZeroscopeTextToVideo.steps": 3, "ZeroscopeXLUpscale.width": 128, "ZeroscopeXLUpscale.height": 96,
    "ZeroscopeXLUpscale.steps": 3, "WebTVRTMPChannel.width": 320, "WebTVRTMPChannel.height": 180,
}


def _whole(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small; give {minimum} or more")
        return value
    parse.__name__ = "whole number"
    return parse


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{value:g} must be a positive number")
    return value


def _even_size(text: str) -> int:
    value = _whole(16)(text)
    if value % 2:
        raise argparse.ArgumentTypeError(f"{value} is odd; video sizes must be even (try {value + 1})")
    return value


def _non_negative(what: str, zero: str):
    """An argparse type: a finite number of ``what``, 0 or more (0 means ``zero``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {what}") from None
        if not 0 <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"{value:g} must be 0 ({zero}) or more")
        return value
    return parse


_seconds = _non_negative("number of seconds", "until Ctrl-C")
_limit = _non_negative("number", "no limit")


def _run_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a run id (a folder name under output/{STATION_FOLDER})")
    return text


# The station's options: each sets inputs of the workflow graph ("ClassType.input"; the class is used once).
# option -> (graph inputs, argparse keywords)
GRAPH_OPTIONS = {
    "--theme": (("WebTVShotWriter.theme",), {"help": "what the episode is about"}),
    "--shots": (("WebTVShotWriter.shots",), {"type": _whole(1), "help": "number of shots (a clip of 2-3 s each)"}),
    "--style": (("WebTVShotWriter.style",), {"help": "style keywords added to every shot"}),
    "--seed": (("WebTVShotWriter.seed", "ZeroscopeTextToVideo.seed", "ZeroscopeXLUpscale.seed", "WebTVMusicGen.seed"),
               {"type": _whole(0), "help": "one seed for every stage (the workflow's own seeds otherwise)"}),
    "--llm": (("WebTVShotWriter.backend",), {"choices": LLM_BACKENDS, "help": "who writes the shots: auto picks the "
              "endpoint if --llm-url is set, else a local model in models/llm, else the template (always the "
              "template on tiny models); the API key comes from WEBTV_LLM_API_KEY or WEBTV_LLM_API_KEY_FILE"}),
    "--llm-url": (("WebTVShotWriter.endpoint_url",), {"help": "an OpenAI-compatible chat endpoint, e.g. http://127.0.0.1:8080/v1"}),
    "--llm-model": (("WebTVShotWriter.model",), {"help": "model name at the endpoint, or a folder under models/llm"}),
    "--negative-prompt": (("ZeroscopeTextToVideo.negative_prompt", "ZeroscopeXLUpscale.negative_prompt"),
                          {"help": "what the video should not show"}),
    "--music": (("WebTVMusicGen.prompt",), {"help": "the music's description for MusicGen"}),
    "--frames": (("ZeroscopeTextToVideo.frames",), {"type": _whole(1), "help": "frames per generated clip"}),
    "--steps": (("ZeroscopeTextToVideo.steps", "ZeroscopeXLUpscale.steps"), {"type": _whole(1), "help": "denoising steps of both passes"}),
    "--width": (("ZeroscopeTextToVideo.width",), {"type": _even_size, "help": "width of the first pass"}),
    "--height": (("ZeroscopeTextToVideo.height",), {"type": _even_size, "help": "height of the first pass"}),
    "--xl-width": (("ZeroscopeXLUpscale.width",), {"type": _even_size, "help": "width after the XL pass"}),
    "--xl-height": (("ZeroscopeXLUpscale.height",), {"type": _even_size, "help": "height after the XL pass"}),
    "--fps": (("WebTVFilmInterpolate.source_fps",), {"type": _positive, "help": "frame rate of the generated clips"}),
    "--target-fps": (("WebTVFilmInterpolate.target_fps", "WebTVRTMPChannel.fps"), {"type": _positive, "help": "frame rate after FILM, and the channel's"}),
    "--channel": (("WebTVRTMPChannel.channel",), {"help": "channel name"}),
    "--channel-width": (("WebTVRTMPChannel.width",), {"type": _even_size, "help": "channel width (clips are scaled and padded to it)"}),
    "--channel-height": (("WebTVRTMPChannel.height",), {"type": _even_size, "help": "channel height"}),
    "--session-hours": (("WebTVRTMPChannel.session_hours",), {"type": _positive, "help": "reconnect the RTMP outputs on "
                        "purpose at a clip boundary after this many hours (at most 48: Twitch ends a broadcast then)"}),
    "--retention-hours": (("WebTVRTMPChannel.retention_hours",), {"type": _limit, "metavar": "H", "help": "delete clips "
                          "that have aired once older than H hours, oldest first (never the clip on air or the next one); 0: keep"}),
    "--retention-mb": (("WebTVRTMPChannel.retention_mb",), {"type": _limit, "metavar": "MB", "help": "delete the oldest "
                       "clips that have aired while the programme's clips take more than MB megabytes; 0: no quota"}),
    "--rtmp": (("WebTVRTMPChannel.outputs",), {"action": "append", "metavar": "URL", "help": "an rtmp:// or rtmps:// "
               "server, the stream key as a placeholder set in the environment: rtmp://live.twitch.tv/app/${WEBTV_KEY_TWITCH} "
               "(repeatable; none: the local preview only)"}),
}


class UsageError(ValueError):
    """A bad argument, found before anything loads; printed as one line, exit code 2."""


SCHEDULE_LINE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)\s+(\S.*)$")
TOLD_SHOTS = 12  # the most recent prompts the Shot Writer is told about


def read_schedule(path: str) -> list[tuple[int, str]]:
    """A schedule file: ``HH:MM theme`` lines (local time; ``#`` comments), as (minute of the day, theme), sorted."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--schedule {path}: cannot be read ({e.__class__.__name__})") from None
    slots = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = SCHEDULE_LINE.match(line.strip())
        if not match:
            raise UsageError(f"--schedule {path}: line {number} is not 'HH:MM theme' (e.g. '06:00 sunrise over the harbour')")
        slots[int(match[1]) * 60 + int(match[2])] = match[3].strip()
    if not slots:
        raise UsageError(f"--schedule {path}: lists no theme; write lines such as '06:00 sunrise over the harbour'")
    return sorted(slots.items())


def scheduled_theme(schedule: list[tuple[int, str]], now: float | None = None) -> str:
    """The theme whose slot began last before ``now`` (the last one of the day before the first slot)."""
    local = time.localtime(now)
    minute = local.tm_hour * 60 + local.tm_min
    return next((theme for start, theme in reversed(schedule) if start <= minute), schedule[-1][1])


def told_theme(theme: str, shown: list[str]) -> str:
    """The theme, and what the channel has already shown (the template reads only the first sentence)."""
    if not shown:
        return theme
    recent = shown[-TOLD_SHOTS:]
    return (f"{theme.rstrip()}\n\nAlready on air (write new shots, do not repeat these):\n"
            + "\n".join(f"- {p}" for p in recent))


# ---------------------------------------------------------------- the graph


def workflow_value(api: dict, target: str):
    """The graph's value for ``ClassType.input``."""
    from ..workflow.format import find_node

    class_type, _, name = target.rpartition(".")
    return api[find_node(api, class_type)]["inputs"].get(name)


def station_graph(args, tiny: bool, run_dir: str) -> dict:
    """The workflow with the options, the run folder, the tiny caps and then ``--set`` applied."""
    from ..workflow import format as wf
    from ..workflow import runner

    info = runner.object_info()
    api = runner.load(args.workflow)

    def apply(assignment: str, source: str) -> None:
        try:
            wf.set_input(api, assignment, info)
        except wf.WorkflowError as e:
            raise UsageError(str(e) if str(e).startswith(source) else f"{source}: {e}") from None

    for option, (targets, _) in GRAPH_OPTIONS.items():
        value = getattr(args, option[2:].replace("-", "_"))
        if value is not None:
            value = "\n".join(value) if isinstance(value, list) else value
            for target in targets:
                apply(f"{target}={value}", option)
    apply(f"WebTVSaveVideo.filename_prefix={run_dir}/shot", "the run folder")
    apply(f"WebTVFFConcatPlaylist.filename={run_dir}/channel.ffconcat", "the run folder")
    if args.remember:
        apply("WebTVRTMPChannel.resume=true", "--remember")
    if tiny:
        for target, cap in TINY_CAPS.items():
            apply(f"{target}={min(workflow_value(api, target), cap)}", "tiny models")
        if workflow_value(api, "WebTVShotWriter.backend") == "auto" and not workflow_value(api, "WebTVShotWriter.endpoint_url"):
            apply("WebTVShotWriter.backend=template", "tiny models")  # a tiny random LM writes no usable JSON
    for assignment in args.set:
        apply(assignment, "--set")
    try:
        runner.validate(api)
    except runner.ValidationError as e:
        raise UsageError(f"{e} (set it with an option or --set NODE.INPUT=VALUE)") from None
    return api


def check_outputs(api: dict) -> None:
    """Every RTMP address well formed and its ``${WEBTV_KEY_...}`` set, before anything loads (the broadcast's own rules)."""
    from ..nodes.broadcast import keys

    for url in filter(None, (line.strip() for line in workflow_value(api, "WebTVRTMPChannel.outputs").splitlines())):
        try:
            keys.resolve(url, "--rtmp")
        except ValueError as e:
            raise UsageError(str(e)) from None


def needed_models(api: dict) -> list[tuple[str, str]]:
    """(kind, name) of every model the graph loads."""
    needs = []
    for node in api.values():
        kind = MODEL_LOADERS.get(node["class_type"])
        if kind and (kind, node["inputs"]["model_name"]) not in needs:
            needs.append((kind, node["inputs"]["model_name"]))
    return needs


# ---------------------------------------------------------------- models


def choose_models(args, needs: list[tuple[str, str]]) -> bool:
    """Point the engines at the models; True when they are the tiny random ones (default folder only)."""
    from ..nodes import host
    from . import download

    explicit = args.models is not None
    folder = os.path.abspath(args.models or "models")
    host.configure(models_dir=folder)
    missing = [(kind, name) for kind, name in needs if not download.complete(kind, name)]
    if missing and args.download:
        download.fetch(missing, folder)
        missing = [(kind, name) for kind, name in needs if not download.complete(kind, name)]
    if not missing:
        return False
    names = ", ".join(name for _, name in missing)
    if explicit:
        raise UsageError(f"--models {args.models}: {names} missing; add --download to fetch them "
                         f"(or: python -m comfyui_webtv download-models --models {args.models})")
    from .tiny import make_tiny_models

    tiny_dir = os.path.abspath(args.tiny_dir)
    host.configure(models_dir=tiny_dir)
    if not all(download.complete(kind, name) for kind, name in needs):
        make_tiny_models(tiny_dir)
    banner(f"TINY RANDOM MODELS: {names} not in {folder}.",
           f"The clips are noise at small sizes; they show the chain works. Real models: add --download (about {download.size_text(missing)}).")
    return True


def banner(*lines: str) -> None:
    """A message the user must not miss, framed."""
    rule = "=" * min(100, max(len(line) for line in lines))
    print(rule, *lines, rule, sep="\n", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the run


class _LibraryNotices(logging.Filter):
    """transformers' notices about MusicGen's own design: nothing a user can act on."""

    NOTICES = (
        "past_key_values",  # transformers renamed its cache argument; MusicGen's generation loop still uses the old name
        "must be `None` or an integer within the vocabulary",  # MusicGen's special token 2048 lies past its 2048 codes
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(notice in record.getMessage() for notice in self.NOTICES)


def quiet_libraries() -> None:
    """No weight-loading bars and no notices about transformers' MusicGen internals (download bars stay)."""
    import warnings

    warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    for handler in logging.getLogger("transformers").handlers:
        handler.addFilter(_LibraryNotices())


class Terminal:
    """The running node on one line of stderr, its progress redrawn in place; log lines never glued to it."""

    def __init__(self):
        from ..nodes import host

        self.stage, self.open = "", False
        self._unlisten = host.add_progress_listener(self.show)
        self._handler = logging.StreamHandler(sys.stderr)
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._handler.filter = self._end_line_first
        self._logger = logging.getLogger(__name__.split(".")[0])
        self._logger.addHandler(self._handler)
        self._logger.propagate = False

    def _end_line_first(self, record) -> bool:
        self.end_line()
        return True

    def close(self) -> None:
        """Stop listening to progress and logs."""
        self._unlisten()
        self._logger.removeHandler(self._handler)
        self._logger.propagate = True

    def end_line(self) -> None:
        if self.open:
            print(file=sys.stderr, flush=True)
            self.open = False

    def show(self, value: int, total: int) -> None:
        tty = sys.stderr.isatty()
        if not tty and value < total:
            return  # a log file gets the finished count only
        print(f"{chr(13) if tty else ''}    {self.stage}: {value}/{total}", end="", file=sys.stderr, flush=True)
        self.open = value < total
        if not self.open:
            print(file=sys.stderr, flush=True)

    def say(self, text: str) -> None:
        self.end_line()
        print(text, file=sys.stderr, flush=True)


def prepare(args) -> tuple[dict, bool, str]:
    """Everything checked, nothing loaded: (graph, tiny models, run folder relative to the output folder).

    The checks that need no import come first, so most mistakes are answered at once."""
    output = os.path.abspath(args.output)
    if os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"--output {args.output}: is a file; give a folder (it is created when missing)")
    if os.path.exists(args.tiny_dir) and not os.path.isdir(args.tiny_dir):
        raise UsageError(f"--tiny-dir {args.tiny_dir}: is a file; give a folder")
    if not os.path.isfile(args.workflow):
        raise UsageError(f"--workflow {args.workflow}: no such file")
    if args.episodes and not args.forever:
        raise UsageError("--episodes: counts the episodes of --forever; add --forever (or use --shots for one episode)")
    if args.schedule and not args.forever:
        raise UsageError("--schedule: picks each episode's theme; add --forever")
    args.schedule_slots = read_schedule(args.schedule) if args.schedule else []
    if args.models is not None and not os.path.isdir(args.models) and not args.download:
        raise UsageError(f"--models {args.models}: no such folder; give the folder holding zeroscope/, film/ and musicgen/, "
                         "add --download to fetch the models into it, or leave --models out to try the station on tiny random models")
    stations = os.path.join(output, *STATION_FOLDER.split("/"))
    if args.resume:
        if not os.path.isfile(os.path.join(stations, args.resume, "channel.ffconcat")):
            known = sorted(os.listdir(stations)) if os.path.isdir(stations) else []
            raise UsageError(f"--resume {args.resume}: no programme at {os.path.join(stations, args.resume)}; "
                             f"runs there: {', '.join(known[-5:]) or 'none'}")
        run_id = args.resume
    else:
        run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        n = 1
        while os.path.exists(os.path.join(stations, run_id + (f"-{n}" if n > 1 else ""))):
            n += 1
        run_id += f"-{n}" if n > 1 else ""
    run_dir = f"{STATION_FOLDER}/{run_id}"
    from ..nodes import host
    from ..nodes.common.hub import offline

    if args.download and offline():
        raise UsageError("--download: HF_HUB_OFFLINE is set, so nothing can be downloaded; unset it or leave --download out")
    quiet_libraries()
    host.configure(output_dir=output)
    graph = station_graph(args, tiny=False, run_dir=run_dir)  # every value checked before a model is looked for
    check_outputs(graph)
    tiny = choose_models(args, needed_models(graph))
    if tiny:
        graph = station_graph(args, tiny=True, run_dir=run_dir)
    os.makedirs(os.path.join(stations, run_id), exist_ok=True)
    return graph, tiny, run_dir


def start_channel(api: dict):
    """Put the channel on air before anything renders, on the run's playlist (a slate while it is empty).

    The graph's own channel node runs, alone, on the playlist file its playlist node writes: when the
    episode's graph reaches the channel node, the settings match and the channel takes the new clips
    without a reconnect. The playlist mode (ffmpeg loops the file) needs clips first, so it waits."""
    from ..nodes.broadcast import channel as channels
    from ..nodes.broadcast.playlist import inside_output, write_ffconcat
    from ..workflow import runner
    from ..workflow.format import find_node

    if workflow_value(api, "WebTVRTMPChannel.mode") != "clips":
        return None
    playlist = inside_output(workflow_value(api, "WebTVFFConcatPlaylist.filename"), "playlist")
    if not os.path.exists(playlist):
        write_ffconcat(playlist, [])
    nid = find_node(api, "WebTVRTMPChannel")
    runner.run({nid: {**api[nid], "inputs": {**api[nid]["inputs"], "playlist": playlist}}})
    return channels.get(workflow_value(api, "WebTVRTMPChannel.channel"))


def episode_graph(api: dict, args, run_dir: str, number: int, shown: list[str]) -> tuple[dict, str]:
    """Episode ``number`` of a --forever run: its own clip folder, the theme of the hour, told what aired."""
    from ..workflow.format import find_node

    graph = json.loads(json.dumps(api))
    writer = graph[find_node(graph, "WebTVShotWriter")]["inputs"]
    theme = scheduled_theme(args.schedule_slots) if args.schedule_slots else writer["theme"]
    writer["theme"] = told_theme(theme, shown)
    if isinstance(writer["seed"], int):
        writer["seed"] = (writer["seed"] + number - 1) % 2**64  # the template varies its camera moves too
    graph[find_node(graph, "WebTVSaveVideo")]["inputs"]["filename_prefix"] = f"{run_dir}/ep{number:04d}/shot"
    return graph, theme


def run_episode(graph: dict, term: "Terminal") -> dict:
    """Run one episode's graph, shot by shot: each shot's clip joins the playlist and the channel as soon as it is saved."""
    from ..workflow import runner
    from ..workflow.format import find_node

    def on_node(nid: str, class_type: str, index: int, count: int) -> None:
        term.stage = graph[nid].get("_meta", {}).get("title") or class_type
        term.say(f"[{index + 1}/{count}] {term.stage}")

    results = runner.run(graph, on_node=on_node, item_by_item=True)
    shots, _, report = results[find_node(graph, "WebTVShotWriter")]["outputs"]
    clips = results.get(find_node(graph, "WebTVSaveVideo"), {}).get("outputs", [[]])[0]
    playlist = results.get(find_node(graph, "WebTVFFConcatPlaylist"), {}).get("outputs", [[None]])[0][-1:]
    return {"shots": shots, "writer": json.loads(report[0]).get("source"), "clips": clips,
            "playlist": playlist[0] if playlist else None}


def run(args) -> int:
    try:
        api, tiny, run_dir = prepare(args)
    except UsageError as e:
        print(f"run: error: {e}", file=sys.stderr)
        return 2
    except (ConnectionError, FileNotFoundError) as e:  # a download that failed
        print(f"run: error: {e}".replace("\n", " "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    from ..nodes.broadcast import channel as channels
    from ..nodes.broadcast import retention, state
    from ..workflow import runner

    term = Terminal()
    channel = workflow_value(api, "WebTVRTMPChannel.channel")
    run_id = run_dir.rsplit("/", 1)[-1]
    term.say(f"run {run_id}: {os.path.join(os.path.abspath(args.output), *run_dir.split('/'))}")
    retains = any(workflow_value(api, f"WebTVRTMPChannel.{name}") for name in ("retention_hours", "retention_mb"))
    episodes, final, code, error, keeper = [], None, 0, None, None
    try:
        live = start_channel(api)
        keeper = state.attached(channel) if live is not None and args.remember else None
        if keeper is not None and args.resume:
            term.say(f"resuming at {keeper.resumed_at or 'the start (no saved clip in the playlist)'}")
        if live is not None:
            status = live.status()
            term.say(f"on air: {status.get('preview_url') or ', '.join(o['target'] for o in status['outputs'])} "
                     f"({status['clips']} clip(s) of run {run_id}; the slate until there are clips)")
        shown: list[str] = []
        limit = (args.episodes or float("inf")) if args.forever else 1
        for number in itertools.count(1):
            if number > limit:
                break
            graph, theme = episode_graph(api, args, run_dir, number, shown) if args.forever else (api, None)
            if args.forever:
                term.say(f"episode {number}: {theme}")
            episode = run_episode(graph, term)
            episodes.append({"episode": number, "theme": theme, **episode})
            shown += episode["shots"]
            term.say(f"shots (written by {episode['writer']}):\n" + "\n".join(f"  {i + 1}. {p}" for i, p in enumerate(episode["shots"])))
            status = channels.get(channel).status()
            term.say(f"on air: {status.get('preview_url') or ', '.join(o['target'] for o in status['outputs'])} "
                     f"({status['clips']} clip(s) of run {run_id})")
        wait_on_air(args.on_air, term)
    except KeyboardInterrupt:
        term.say("interrupted")
        code = 130
    except runner.NodeError as e:
        error, code = str(e), 1
        term.say(f"run: error: {e}")
    finally:
        retainer = retention.attached(channel)
        if retainer is not None:
            retainer.stop()
        state.detach(channel)  # its last position saved (--remember)
        if channel in channels.statuses():
            final = channels.stop(channel)
        term.close()
    if tiny:
        term.say("this run used TINY RANDOM MODELS (noise); add --download for the real ones")
    last = episodes[-1] if episodes else {}
    summary = {"run": run_id, "shots": [s for e in episodes for s in e["shots"]], "writer": last.get("writer"),
               "clips": [c for e in episodes for c in e["clips"]], "playlist": last.get("playlist"), "tiny_models": tiny,
               "channel": final, "error": error}
    if args.forever:
        summary["episodes"] = episodes
    if retains:
        summary["deleted"] = list(retainer.deleted) if retainer else []  # the most recent (retention.DELETED_KEPT)
        summary["deleted_count"] = retainer.deleted_count if retainer else 0
    if args.remember:
        summary["resumed_at"] = keeper.resumed_at if keeper else None
    print(json.dumps(summary, default=str), flush=True)
    return code


def wait_on_air(seconds: float, term: Terminal) -> None:
    """Keep the channel on air for ``seconds`` (0: until Ctrl-C, which ends the run normally)."""
    term.say("on air until Ctrl-C" if seconds == 0 else f"on air for {seconds:g} s")
    end = time.monotonic() + seconds if seconds > 0 else float("inf")
    try:
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
    except KeyboardInterrupt:
        term.say("stopping the channel")


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("run", help="the AI WebTV station", description=__doc__)
    with open(WORKFLOW) as f:
        api = json.load(f)  # the defaults shown are the workflow's (cheap: no node is imported for --help)
    for option, (targets, kwargs) in GRAPH_OPTIONS.items():
        class_type, _, name = targets[0].rpartition(".")
        default = next(n["inputs"].get(name, "the node's default") for n in api.values() if n["class_type"] == class_type)
        shown = str(default).replace("%", "%%") if default != "" else "none"
        p.add_argument(option, **{**kwargs, "help": f"{kwargs['help']} (workflow: {shown})"})
    p.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="set any input of the workflow: NODE is a node id, title or class type "
                   "(e.g. --set \"MusicGen (match the clip).guidance=4\"); applied after the options (repeatable)")
    p.add_argument("--on-air", type=_seconds, default=0.0, help="seconds to stay on air after the last clip; 0: until Ctrl-C")
    p.add_argument("--forever", action="store_true", help="keep writing and airing new episodes (each in its own "
                   "folder, the Shot Writer told what already aired) until Ctrl-C")
    p.add_argument("--episodes", type=_whole(1), metavar="N", help="with --forever: stop writing after N episodes (then --on-air applies)")
    p.add_argument("--schedule", metavar="FILE", help="with --forever: themes by time of day, lines of 'HH:MM theme' "
                   "(local time); each episode takes the theme of its hour")
    p.add_argument("--remember", action="store_true", help="save the channel's rotation and position in the run folder "
                   "(channel.state.json, replaced atomically every few seconds: the channel node's resume input); "
                   "with --resume, go on from the clip that was on air")
    p.add_argument("--resume", type=_run_id, metavar="RUN_ID", help="add this run's shots to an earlier run's programme "
                   f"(a folder under output/{STATION_FOLDER}) instead of starting a new one")
    p.add_argument("--models", help="ComfyUI-style models folder (default: ./models; when models are missing there, "
                   "tiny random ones are used and a banner says so; a folder named here must hold them)")
    p.add_argument("--download", action="store_true", help="first fetch the missing models from the Hugging Face Hub "
                   "into the models folder (resumable; sizes in the README)")
    p.add_argument("--output", default="output", help="where the run folders (clips, playlist) and the live preview go")
    p.add_argument("--tiny-dir", default=".tiny-models", help="where tiny random models are written when real ones are missing")
    p.add_argument("--workflow", default=WORKFLOW, help="the station's workflow (API format)")
    p.set_defaults(handler=run)
