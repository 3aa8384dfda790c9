"""Any ComfyUI workflow over a grid of input values on Metaflow: one task per combination.

    python flows/grid.py run --workflow workflows/zeroscope_t2v_xl_api.json \\
        --set 'Zeroscope Text to Video.seed=1,2,3; Zeroscope Text to Video.prompt=["a red fox, snow", "a grey owl"]'

``--set`` lists axes ``NODE.INPUT=v1,v2,...`` separated by ``;`` (NODE: an id, a title or a class type
used once; a JSON list keeps commas inside values; a one-value axis just sets the input). Every
combination runs in its own task, through the pack's graph runner or on one of the ComfyUI
``--workers`` (token from ``WEBTV_WORKER_TOKEN``), so a workflow of ComfyUI core's nodes (SDXL, Stable
Video Diffusion) runs on workers. Each task keeps its combination and the bytes of every file the
workflow saved as artifacts; the end card shows a grid of thumbnails.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile

from metaflow import Config, FlowSpec, Parameter, card, current, resources, retry, step, timeout

import rendering

HERE = os.path.dirname(os.path.abspath(__file__))


class GridFlow(FlowSpec):
    settings = Config("settings", default=os.path.join(HERE, "grid.json"), help="JSON: task resources, retries, worker timeout.")
    workflow = Parameter("workflow", required=True, help="Workflow file, API or UI format (or a name in the pack's workflows/).")
    grid = Parameter("set", required=True, help="Axes NODE.INPUT=v1,v2,... separated by ';' (a JSON list keeps commas in values).")
    workers = Parameter("workers", default="", help="ComfyUI worker URLs, comma-separated (token from WEBTV_WORKER_TOKEN). "
                        "Empty: each task runs the workflow with the pack's graph runner.")
    models = Parameter("models", default="models", help="ComfyUI-style models folder for the embedded runner.")

    @step
    def start(self):
        """Read the workflow, expand the grid, check every combination applies before fanning out."""
        from comfyui_webtv.workflow import format as wf

        with open(rendering.workflow_path(self.workflow), encoding="utf-8") as f:
            self.workflow_json = f.read()
        self.axes = rendering.parse_grid(self.grid)
        self.worker_urls = rendering.worker_urls(self.workers)
        targets = [target for target, _ in self.axes]
        self.combinations = [dict(zip(targets, values)) for values in itertools.product(*(v for _, v in self.axes))]
        kind, api = wf.load_workflow(self.workflow_json)
        if kind == "api" and not self.worker_urls:
            from comfyui_webtv.workflow.runner import object_info

            info = object_info()
            for combination in self.combinations:
                for assignment in rendering.assignments(combination):
                    wf.set_input(json.loads(json.dumps(api)), assignment, info)
        self.jobs = [{"index": i, "combination": c, "worker": rendering.worker_for(i, self.worker_urls)}
                     for i, c in enumerate(self.combinations)]
        self.next(self.render, foreach="jobs")

    @card(type="webtv", id="combination")
    @resources(gpu=settings.task.gpus, memory=settings.task.memory_mb)
    @retry(times=settings.task.retries, minutes_between_retries=settings.task.minutes_between_retries)
    @timeout(minutes=settings.task.timeout_minutes)
    @step
    def render(self):
        """Run the workflow with one combination; keep every saved file with it."""
        from metaflow.cards import Image, Markdown

        job = self.input
        self.position, self.combination = job["index"], job["combination"]
        where = job["worker"] or "the embedded runner"
        with tempfile.TemporaryDirectory(prefix="webtv-grid-") as tmp:
            try:
                workflow = rendering.workflow_file(self.workflow_json, tmp)
                sets = rendering.assignments(self.combination)
                if job["worker"]:
                    done = rendering.run_on_worker(workflow, sets, job["worker"], os.path.join(tmp, "output"), self.settings.worker_timeout_s)
                else:
                    rendering.one_thread()
                    done = rendering.run_here(workflow, sets, os.path.abspath(self.models), os.path.join(tmp, "output"))
            except Exception as e:  # noqa: BLE001 - re-raised with the combination named; Metaflow retries it
                raise rendering.TaskFailed(f"combination {json.dumps(self.combination)} failed on {where}: {e}") from e
            self.outputs, self.thumbnails = {}, {}
            for path in done.files:
                name = os.path.relpath(path, tmp)
                with open(path, "rb") as f:
                    self.outputs[name] = f.read()
                thumb = rendering.thumbnail(path)
                if thumb is not None:
                    self.thumbnails[name] = rendering.png(thumb)  # PNG bytes: the cards need not decode the output again
        self.where, self.seconds = done.where, done.seconds
        current.card["combination"].append(Markdown("\n".join(f"- **{k}** = {v}" for k, v in self.combination.items())))
        for name in self.outputs:
            thumb = self.thumbnails.get(name)
            current.card["combination"].append(Image(thumb, label=name) if thumb else Markdown(f"`{name}`"))
        self.next(self.join)

    @step
    def join(self, inputs):
        """Every combination's outputs, in grid order."""
        ordered = sorted(inputs, key=lambda task: task.position)
        self.merge_artifacts(inputs, include=["axes", "workflow_json", "worker_urls"])
        self.results = [{"combination": task.combination, "outputs": task.outputs, "where": task.where} for task in ordered]
        self.thumbnails = [next(iter(task.thumbnails.values()), None) for task in ordered]
        self.next(self.end)

    @card(type="webtv", id="grid")
    @step
    def end(self):
        """A grid of thumbnails: the first axis down, the other combinations across."""
        from metaflow.cards import Image, Markdown, Table

        first, rest = self.axes[0], self.axes[1:]
        columns = [dict(zip([t for t, _ in rest], values)) for values in itertools.product(*(v for _, v in rest))]
        cells = {json.dumps(result["combination"], sort_keys=True): Image(thumb) if thumb else Markdown("-")
                 for result, thumb in zip(self.results, self.thumbnails)}
        rows = []
        for value in first[1]:
            key = lambda column: json.dumps({first[0]: value, **column}, sort_keys=True)  # noqa: E731
            rows.append([f"{first[0]} = {value}"] + [cells[key(column)] for column in columns])
        headers = [""] + ([", ".join(f"{k} = {v}" for k, v in c.items()) for c in columns] if rest else ["output"])
        current.card["grid"].append(Markdown(f"# {len(self.results)} combinations of {os.path.basename(self.workflow)}"))
        current.card["grid"].append(Table(rows, headers=headers))


if __name__ == "__main__":
    GridFlow()
