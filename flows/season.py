"""A season of shots on Metaflow: written from a theme, each shot rendered in its own task, joined in order.

    python flows/season.py run --theme "a lighthouse keeper's day" --shots 8 --max-workers 4
    python flows/season.py --config settings my_settings.json run ...          # another Config file
    python flows/season.py run --workers http://gpu1:8188,http://gpu2:8188     # on ComfyUI workers
    python flows/season.py run --with kubernetes                               # one GPU pod per shot

``start`` writes the shots with the Shot Writer (endpoint, local model or template, as the node does).
``render`` is a foreach over the shots: each task runs the per-shot workflow (``render_shot_api.json``:
text-to-video, XL, FILM, MusicGen, mp4) through the pack's graph runner, or on one of the ComfyUI
workers (tasks spread over them; the bearer token comes from ``WEBTV_WORKER_TOKEN``, never a
parameter, since parameters are stored). The mp4 and its generation info are artifacts of the task.
``join`` puts the clips in shot order with an ffconcat playlist; ``end`` can put the episode on a local
channel, or append it to a channel on air on a ComfyUI server running the pack (``--channel NAME
--channel-server URL``, through the pack's ``POST /webtv/channels/NAME/clips``), and draws the season's
card. Everything a workflow needs is in the ``settings`` Config.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from metaflow import Config, FlowSpec, Parameter, card, current, resources, retry, step, timeout

import rendering

HERE = os.path.dirname(os.path.abspath(__file__))


class SeasonFlow(FlowSpec):
    settings = Config("settings", default=os.path.join(HERE, "season.json"),
                      help="JSON: the per-shot workflow, the inputs set per shot and for all, required models, task resources.")
    theme = Parameter("theme", default="a lighthouse keeper's day on a stormy northern island, from dawn to night",
                      help="What the season is about.")
    shots = Parameter("shots", type=int, default=8, help="Number of shots.")
    style = Parameter("style", default="cinematic, photorealistic, 35mm film", help="Style keywords in every shot.")
    seed = Parameter("seed", type=int, default=0, help="Shot writer seed; shot i renders with seed + i.")
    llm = Parameter("llm", default="auto", help="Shot writer backend: auto, openai_compatible, local or template "
                    "(the endpoint's key comes from WEBTV_LLM_API_KEY).")
    llm_url = Parameter("llm-url", default="", help="An OpenAI-compatible chat endpoint for the shot writer.")
    llm_model = Parameter("llm-model", default="", help="The endpoint's model, or a folder under models/llm.")
    workers = Parameter("workers", default="", help="ComfyUI worker URLs, comma-separated; tasks are spread over them "
                        "(token from WEBTV_WORKER_TOKEN). Empty: each task renders with the pack's graph runner.")
    models = Parameter("models", default="models", help="ComfyUI-style models folder for the embedded runner.")
    tiny_dir = Parameter("tiny-dir", default=".tiny-models",
                         help="Where tiny random models are made (once) when the models folder lacks one the workflow needs.")
    output = Parameter("output", default="output", help="Output folder; the episode goes to WebTV/season/<run id> in it.")
    channel = Parameter("channel", default="", help="Put the episode on this channel: a local one (HLS preview; RTMP "
                        "outputs from the settings), or one running on --channel-server. Empty: no channel.")
    channel_server = Parameter("channel-server", default="", help="A ComfyUI server running the pack where --channel is on "
                               "air: the episode's clips are appended to it (token from WEBTV_WORKER_TOKEN).")
    on_air = Parameter("on-air", type=float, default=30.0, help="Seconds the channel stays on air before the run ends.")

    @step
    def start(self):
        """Write the shots and give each its seed and worker."""
        from comfyui_webtv.nodes import host
        from comfyui_webtv.nodes.prompts.nodes import ShotWriter

        rendering.one_thread()
        self.worker_urls = rendering.worker_urls(self.workers)
        self.workflow = rendering.workflow_path(self.settings.workflow)
        with open(self.workflow, encoding="utf-8") as f:
            self.workflow_json = f.read()  # the exact graph every shot ran, versioned with the run
        backend = self.llm
        if not self.worker_urls:
            self.models_dir, self.tiny = rendering.ensure_models(self.models, list(self.settings.models), self.tiny_dir)
            host.configure(models_dir=self.models_dir)
            if self.tiny and backend == "auto" and not self.llm_url:
                backend = "template"  # a tiny random language model writes no usable JSON
        prompts, _, report = ShotWriter().write(
            theme=self.theme, shots=self.shots, style=self.style, seed=self.seed,
            backend=backend, endpoint_url=self.llm_url, model=self.llm_model)
        self.writer_report = json.loads(report)
        urls = self.worker_urls
        self.shot_list = [
            {"shot": i + 1, "prompt": p, "seed": self.seed + i, "worker": rendering.worker_for(i, urls)}
            for i, p in enumerate(prompts)
        ]
        self.next(self.render, foreach="shot_list")

    @card(type="webtv", id="shot")
    @resources(gpu=settings.task.gpus, memory=settings.task.memory_mb)
    @retry(times=settings.task.retries, minutes_between_retries=settings.task.minutes_between_retries)
    @timeout(minutes=settings.task.timeout_minutes)
    @step
    def render(self):
        """Render one shot: the per-shot workflow, here or on this shot's worker."""
        shot = self.input
        started = time.monotonic()
        sets = dict(self.settings.sets)
        per_shot = {"prompt": shot["prompt"], "seed": shot["seed"], "filename_prefix": f"WebTV/season/shot_{shot['shot']:03}"}
        for key, targets in self.settings.shot_inputs.items():
            sets.update({target: per_shot[key] for target in targets})
        where = shot["worker"] or "the embedded runner"
        try:
            with tempfile.TemporaryDirectory(prefix="webtv-shot-") as tmp:
                workflow = rendering.workflow_file(self.workflow_json, tmp)
                if shot["worker"]:
                    done = rendering.run_on_worker(workflow, rendering.assignments(sets), shot["worker"], tmp,
                                                   self.settings.worker_timeout_s)
                else:
                    rendering.one_thread()
                    models_dir, tiny = rendering.ensure_models(self.models, list(self.settings.models), self.tiny_dir)
                    if tiny:
                        sets.update(self.settings.tiny_sets)
                    done = rendering.run_here(workflow, rendering.assignments(sets), models_dir, os.path.join(tmp, "output"))
                clip = next((f for f in done.files if f.endswith(".mp4")), None)
                if clip is None:
                    raise rendering.TaskFailed(f"the workflow saved no mp4 (outputs: {done.files})")
                with open(clip, "rb") as f:
                    self.clip = f.read()
                info = rendering.describe(clip)
                self.contact_sheet = rendering.png(rendering.contact_sheet(clip))
        except Exception as e:  # noqa: BLE001 - re-raised with the shot named; Metaflow retries it
            raise rendering.TaskFailed(f"shot {shot['shot']} of {len(self.shot_list)} ({shot['prompt'][:80]!r}) failed on {where}: {e}") from e
        self.generation_info = info.pop("generation_info")
        self.info = {**shot, **info, "where": done.where, "node_seconds": done.seconds,
                     "task_seconds": round(time.monotonic() - started, 3), "attempt": current.retry_count}
        self._shot_card()
        self.next(self.join)

    def _shot_card(self) -> None:
        from metaflow.cards import Image, Markdown, Table

        info = self.info
        current.card["shot"].append(Markdown(f"# Shot {info['shot']}\n\n**Prompt:** {info['prompt']}\n\n"
                                             f"Rendered on {info['where']} (attempt {info['attempt'] + 1}), seed {info['seed']}."))
        current.card["shot"].append(Image(self.contact_sheet, label="contact sheet"))
        current.card["shot"].append(Markdown(
            f"{info['width']}x{info['height']}, {info['frames']} frames at {info['fps']:g} fps = {info['video_seconds']:g} s of video; "
            f"audio: {info['audio_seconds'] if info['audio_seconds'] is not None else 'none'} s"))
        rows = [[name, f"{s:.2f}"] for name, s in info["node_seconds"].items()] + [["whole task", f"{info['task_seconds']:.2f}"]]
        current.card["shot"].append(Table(rows, headers=["stage", "seconds"]))

    @step
    def join(self, inputs):
        """The clips in shot order, written with an ffconcat playlist made by the pack's playlist node."""
        from comfyui_webtv.nodes import host
        from comfyui_webtv.nodes.common.files import atomic_path
        from comfyui_webtv.workflow import runner

        ordered = sorted(inputs, key=lambda task: task.info["shot"])
        self.merge_artifacts(inputs, include=["worker_urls", "workflow", "workflow_json", "writer_report"])
        self.clips = [task.clip for task in ordered]
        self.shots_info = [task.info for task in ordered]
        self.generation_infos = [task.generation_info for task in ordered]
        self.contact_sheets = [task.contact_sheet for task in ordered]
        host.configure(output_dir=self.output)
        folder = f"WebTV/season/{current.run_id}"
        os.makedirs(host.output_path(folder), exist_ok=True)
        names = [f"{folder}/shot_{info['shot']:03}.mp4" for info in self.shots_info]
        for name, data in zip(names, self.clips):
            with atomic_path(host.output_path(name)) as tmp, open(tmp, "wb") as f:
                f.write(data)
        playlist = runner.run({"1": {"class_type": "WebTVFFConcatPlaylist", "_meta": {"title": "Episode playlist"}, "inputs": {
            "clips": "\n".join(names), "filename": f"{folder}/episode.ffconcat", "mode": "replace", "paths": "relative"}}})
        self.playlist_path = playlist["1"]["outputs"][0][0]
        with open(self.playlist_path, encoding="utf-8") as f:
            self.playlist = f.read()
        self.clip_paths = [host.output_path(n) for n in names]
        self.next(self.end)

    @card(type="webtv", id="season")
    @step
    def end(self):
        """Optionally put the episode on a channel, here or on a server; the season's card."""
        if self.channel and self.channel_server:
            from comfyui_webtv.cli.queue import ComfyClient

            pushed = ComfyClient(self.channel_server, timeout=self.settings.worker_timeout_s).push_clips(self.channel, self.clips)
            print(f"appended {len(pushed['received'])} clips to {self.channel!r} on {self.channel_server}")
            self.channel_status = pushed["status"]
        elif self.channel:
            self.channel_status = self._on_air()
        self._season_card()

    def _on_air(self) -> dict:
        from comfyui_webtv.nodes import host
        from comfyui_webtv.workflow import runner

        host.configure(output_dir=self.output)
        ch = self.settings.channel
        api = {"1": {"class_type": "WebTVRTMPChannel", "inputs": {
            "playlist": self.playlist_path, "channel": self.channel, "outputs": ch.outputs, "local_preview": True,
            "mode": "clips", "width": ch.width, "height": ch.height, "fps": ch.fps, "video_kbps": 3000,
            "audio_kbps": 128, "sample_rate": "48000", "keyframe_seconds": 2.0, "preset": "veryfast"}}}
        status = json.loads(runner.run(api)["1"]["outputs"][0][0])
        print(f"on air: {status.get('preview_url')} for {self.on_air:g} s")
        try:
            time.sleep(self.on_air)
        finally:
            stop = {"1": {"class_type": "WebTVChannelStop", "inputs": {"channel": self.channel}}}
            status = json.loads(runner.run(stop)["1"]["outputs"][0][0])
        return status

    def _season_card(self) -> None:
        from metaflow.cards import Image, Markdown, Table

        season = current.card["season"]
        total = sum(i["video_seconds"] for i in self.shots_info)
        season.append(Markdown(f"# {self.theme}\n\n{len(self.clips)} shots, {total:.1f} s, run {current.run_id}; "
                               f"shots written by {self.writer_report.get('source', '?')}.\n\nPlaylist: `{self.playlist_path}`"))
        rows = [[info["shot"], info["prompt"], Image(sheet), f"{info['video_seconds']:g}",
                 f"{info['audio_seconds']:g}" if info["audio_seconds"] is not None else "-", info["where"], f"{info['task_seconds']:.1f}"]
                for info, sheet in zip(self.shots_info, self.contact_sheets)]
        season.append(Table(rows, headers=["shot", "prompt", "frames", "video s", "audio s", "rendered on", "task s"]))
        season.append(Markdown("```\n" + self.playlist + "\n```"))


if __name__ == "__main__":
    SeasonFlow()
