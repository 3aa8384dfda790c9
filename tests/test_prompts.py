"""Shot writing: template (exact), reply parsing and repair, an OpenAI-compatible endpoint on
127.0.0.1 (request checks, retries, no key leaks), the tiny local LM, and the node in a graph."""

from __future__ import annotations

import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from comfyui_webtv.nodes.prompts import backends, instructions, parse, template, tiny
from comfyui_webtv.nodes.prompts.nodes import ShotWriter
from comfyui_webtv.nodes.prompts.writer import write_shots

THEME = "A red fox hunts mice in deep snow. At dusk it curls up under a pine."
KEY = "sk-test-4f1c9a7e5d2b8c3a"

GOOD = {
    "subject": "a red fox with a thick winter coat",
    "camera": "telephoto lens, 35mm film",
    "lighting": "blue winter dusk",
    "shots": [
        {"prompt": "wildlife documentary, a red fox with a thick winter coat leaps into the snow, telephoto lens, 35mm film, blue winter dusk", "motion": "the fox jumps forward, camera pans right"},
        {"prompt": "a red fox with a thick winter coat walks away between pines", "motion": "walks away from the camera"},
    ],
}


# ---------------------------------------------------------------- template

def test_template_is_exact():
    plan = template.template_plan(THEME, 3, seed=7)
    assert plan.subject == "a red fox hunts mice in deep snow"
    assert parse.compose(plan, "cinematic, photorealistic, cinematic") == [
        "establishing wide shot of a red fox hunts mice in deep snow, crane shot rising upward, "
        "cinematic 35mm film, steady camera, soft natural light, photorealistic",
        "medium shot of a red fox hunts mice in deep snow, camera dollies in toward the subject, "
        "cinematic 35mm film, steady camera, soft natural light, photorealistic",
        "close-up of a red fox hunts mice in deep snow, slow tilt up, "
        "cinematic 35mm film, steady camera, soft natural light, photorealistic",
    ]
    # another seed reorders the camera moves only; shot sizes cycle after six shots
    other = parse.compose(template.template_plan(THEME, 7, seed=8), "")
    assert [p.split(",")[1].strip() for p in other[:2]] != ["crane shot rising upward", "camera dollies in toward the subject"]
    assert other[6].startswith("establishing wide shot of a red fox")
    assert all(p.endswith("cinematic 35mm film, steady camera, soft natural light") for p in other)


def test_template_needs_a_theme():
    with pytest.raises(ValueError, match="theme"):
        write_shots("  \n ", 2, "", 0)


# ---------------------------------------------------------------- parsing and repair

@pytest.mark.parametrize(
    "reply",
    [
        json.dumps(GOOD),
        "Sure! Here are your shots:\n```json\n" + json.dumps(GOOD, indent=2) + "\n```\nEnjoy.",
        json.dumps(GOOD).replace("}]", "},]").replace('"lighting"', '"extra": None, "lighting"'),
        json.dumps(GOOD)[:-30],  # cut off inside the last motion
        json.dumps(GOOD).replace('"subject": "', "\"subject\": \u201c").replace('coat", "camera"', "coat\u201d, \"camera\"", 1),
    ],
    ids=["plain", "fenced-with-prose", "trailing-comma-python-none", "truncated", "smart-quotes"],
)
def test_repairable_replies_parse(reply):
    plan = parse.parse_reply(reply, 2)
    assert plan.subject == "a red fox with a thick winter coat"
    assert len(plan.shots) == 2
    assert plan.shots[0][0].startswith("wildlife documentary, a red fox")


@pytest.mark.parametrize(
    "reply, problem",
    [
        ("I cannot help with that.", "no JSON object"),
        ('{"subject": "x", "camera": "y"}', "'lighting'"),
        (json.dumps({**GOOD, "shots": GOOD["shots"][:1]}), "2 shots were asked for, the reply has 1"),
        (json.dumps({**GOOD, "shots": [GOOD["shots"][0], {"prompt": "a fox sleeps", "motion": "breathing"}]}), "shot 2 does not name the direction"),
        ('{"subject": "x"]', "unmatched"),
    ],
)
def test_unusable_replies_say_why(reply, problem):
    with pytest.raises(parse.ShotFormatError, match=problem):
        parse.parse_reply(reply, 2)


def test_compose_repeats_shared_keywords_and_motion():
    prompts = parse.compose(parse.validate(GOOD, 2), "cinematic, telephoto lens")
    assert prompts[0] == (
        "wildlife documentary, a red fox with a thick winter coat leaps into the snow, telephoto lens, 35mm film, "
        "blue winter dusk, the fox jumps forward, camera pans right, cinematic"
    )
    assert prompts[1] == (
        "a red fox with a thick winter coat walks away between pines, walks away from the camera, "
        "telephoto lens, 35mm film, blue winter dusk, cinematic"
    )
    for p in prompts:
        for kw in ("a red fox with a thick winter coat", "telephoto lens, 35mm film", "blue winter dusk"):
            assert kw in p


def test_instructions_ask_for_consistency_motion_and_json():
    msgs = instructions.messages(THEME, 4, "cinematic")
    text = " ".join(m["content"] for m in msgs)
    for phrase in ("same subject, camera and lighting keywords", "name its direction", "exactly 4 shots", "JSON", THEME):
        assert phrase in text


# ---------------------------------------------------------------- an OpenAI-compatible endpoint

class ChatServer:
    """A chat-completions server on 127.0.0.1 that records requests and plays canned replies."""

    def __init__(self, replies):
        self.replies = list(replies)  # each: str content, or (status, body)
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                reply = outer.replies.pop(0) if outer.replies else "no more replies"
                if isinstance(reply, tuple):
                    status, payload = reply
                else:
                    status = 200
                    payload = json.dumps({
                        "id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                    })
                data = payload.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv(backends.KEY_ENV, KEY)
    monkeypatch.delenv(backends.KEY_FILE_ENV, raising=False)


def _no_key(*texts):
    for text in texts:
        assert KEY not in text


def test_endpoint_request_and_reply(key_env, caplog):
    caplog.set_level(logging.DEBUG)
    with ChatServer([json.dumps(GOOD)]) as server:
        prompts, combined, report = ShotWriter().write(THEME, 2, "cinematic", 5, "openai_compatible", server.url, "gpt-test")
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    assert req["body"]["model"] == "gpt-test"
    assert req["body"]["seed"] == 5
    assert [m["role"] for m in req["body"]["messages"]] == ["system", "user"]
    assert req["body"]["messages"][0]["content"] == instructions.SYSTEM
    assert req["body"]["messages"][1]["content"] == instructions.user_message(THEME, 2, "cinematic")
    assert prompts == parse.compose(parse.validate(GOOD, 2), "cinematic")
    assert combined == "\n".join(prompts)
    info = json.loads(report)
    assert info["source"] == "openai_compatible" and info["attempts"] == 1 and not info["fell_back_to_template"]
    _no_key(json.dumps(req["body"]), report, combined, caplog.text, repr(backends.OpenAIChat(server.url, "m")))


def test_malformed_reply_is_retried_with_the_problem(key_env):
    bad = "Here you go: {\"subject\": \"a fox\", \"shots\": []"  # cut off and missing keys
    with ServerRun([bad, json.dumps(GOOD)]) as (server, result):
        pass
    assert result.source == "openai_compatible" and result.attempts == 2
    second = server.requests[1]["body"]["messages"]
    assert second[:2] == server.requests[0]["body"]["messages"]
    assert second[2] == {"role": "assistant", "content": bad}
    assert second[3]["role"] == "user" and "'camera', 'lighting' must be non-empty strings" in second[3]["content"]
    assert result.problems == ["openai_compatible reply 1: the keys 'camera', 'lighting' must be non-empty strings."]


class ServerRun:
    """Run write_shots (2 shots, auto) against a ChatServer playing ``replies``."""

    def __init__(self, replies, strict=False):
        self.server = ChatServer(replies)
        self.strict = strict

    def __enter__(self):
        self.server.__enter__()
        result = write_shots(THEME, 2, "cinematic", 3, [backends.OpenAIChat(self.server.url, "m")], strict=self.strict)
        return self.server, result

    def __exit__(self, *exc):
        self.server.__exit__(*exc)


def test_always_malformed_falls_back_to_template(key_env):
    with ServerRun(["not json at all"] * 3) as (server, result):
        pass
    assert len(server.requests) == 3
    assert result.source == "template" and result.fell_back and result.attempts == 3
    assert result.prompts == parse.compose(template.template_plan(THEME, 2, 3), "cinematic")


def test_transient_errors_are_retried(key_env, monkeypatch):
    monkeypatch.setattr(backends.time, "sleep", lambda s: None)
    with ServerRun([(503, '{"error": "busy"}'), json.dumps(GOOD)]) as (server, result):
        pass
    assert len(server.requests) == 2 and result.source == "openai_compatible" and result.attempts == 1


def test_refused_key_strict_and_auto(key_env, caplog):
    caplog.set_level(logging.DEBUG)
    echo = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}"}})
    with ChatServer([(401, echo)]) as server:
        with pytest.raises(backends.BackendError, match="HTTP 401") as err:
            ShotWriter().write(THEME, 2, "", 0, "openai_compatible", server.url, "m")
    assert len(server.requests) == 1  # 401 is not retried
    _no_key(str(err.value), caplog.text)
    assert "***" in str(err.value)
    with ChatServer([(401, echo)]) as server:
        prompts, _, report = ShotWriter().write(THEME, 2, "", 0, "auto", server.url, "m")
    info = json.loads(report)
    assert info["source"] == "template" and info["fell_back_to_template"]
    assert prompts == parse.compose(template.template_plan(THEME, 2, 0), "")
    _no_key(report, caplog.text)


def test_key_from_file(tmp_path, monkeypatch):
    monkeypatch.delenv(backends.KEY_ENV, raising=False)
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv(backends.KEY_FILE_ENV, str(key_file))
    with ChatServer([json.dumps(GOOD)]) as server:
        write_shots(THEME, 2, "", 0, [backends.OpenAIChat(server.url, "m")])
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    monkeypatch.delenv(backends.KEY_FILE_ENV)
    with ChatServer([json.dumps(GOOD)]) as server:  # no key: no header (local servers need none)
        write_shots(THEME, 2, "", 0, [backends.OpenAIChat(server.url + "/chat/completions", "m")])
    assert "Authorization" not in server.requests[0]["headers"]
    assert server.requests[0]["path"] == "/v1/chat/completions"


def test_unreachable_endpoint(monkeypatch, output_dir):
    monkeypatch.setattr(backends.time, "sleep", lambda s: None)
    server = ChatServer([])
    url = server.url
    server.httpd.server_close()  # nothing listens there now
    with pytest.raises(backends.BackendError, match="cannot reach"):
        ShotWriter().write(THEME, 1, "", 0, "openai_compatible", url, "m")
    prompts, _, report = ShotWriter().write(THEME, 1, "", 0, "auto", url, "m")
    assert json.loads(report)["fell_back_to_template"]
    assert prompts == parse.compose(template.template_plan(THEME, 1, 0), "")


def test_bad_choices_name_the_input(output_dir):
    with pytest.raises(backends.BackendError, match="endpoint_url: required"):
        ShotWriter().write(THEME, 1, "", 0, "openai_compatible", "", "m")
    with pytest.raises(backends.BackendError, match="endpoint_url: 'ftp://x' is not an http"):
        ShotWriter().write(THEME, 1, "", 0, "openai_compatible", "ftp://x", "m")
    with pytest.raises(backends.BackendError, match="model: no language model folder 'nope'"):
        ShotWriter().write(THEME, 1, "", 0, "local", "", "nope")


# ---------------------------------------------------------------- the tiny local LM

def test_tiny_local_lm_falls_back_deterministically(tiny_env):
    assert os.path.isfile(os.path.join(tiny_env["models"], "llm", tiny.NAME, "tokenizer.json"))
    prompts, combined, report = ShotWriter().write(THEME, 1, "cinematic", 11, "local", "", tiny.NAME)
    info = json.loads(report)
    # random weights write random bytes: every reply is unusable, so it is asked 3 times, then the template writes
    assert info["source"] == "template" and info["attempts"] == 3 and info["fell_back_to_template"]
    assert [p.split(":")[0] for p in info["problems"]] == ["local reply 1", "local reply 2", "local reply 3"]
    assert prompts == parse.compose(template.template_plan(THEME, 1, 11), "cinematic")
    # auto picks the local model when no endpoint is set
    (chosen,) = backends.select("auto", "", "", 1)
    assert isinstance(chosen, backends.LocalLM) and chosen.model_name == tiny.NAME


def test_reply_watch_stops_when_the_json_closes_or_never_starts(tiny_env):
    import torch

    _, tokenizer = backends.load_local(os.path.join(tiny_env["models"], "llm", tiny.NAME))
    reply = 'Sure!\n```json\n{"subject": "a } in text", "shots": [{"prompt": "x \\" {"}]}\n``` and more chatter'
    ids = tokenizer(reply)["input_ids"]
    watch = backends.ReplyWatch(tokenizer, len(ids))
    stops = [bool(watch(torch.tensor([ids[: i + 1]]), None)[0]) for i in range(len(ids))]
    first = stops.index(True)
    assert tokenizer.decode(ids[: first + 1]).endswith("]}") and not any(stops[:first])
    chatter = tokenizer("no json here, only words " * 20)["input_ids"]
    watch = backends.ReplyWatch(tokenizer, len(chatter), opening_tokens=30)
    assert [bool(watch(torch.tensor([chatter[: i + 1]]), None)[0]) for i in range(31)] == [False] * 29 + [True] * 2


def test_tiny_local_lm_reply_is_seeded(tiny_env):
    lm = backends.LocalLM(tiny.NAME, max_new_tokens=24)
    msgs = instructions.messages(THEME, 1, "")
    first = lm.complete(msgs, 1)
    assert first and first == lm.complete(msgs, 1)
    assert first != lm.complete(msgs, 3)


# ---------------------------------------------------------------- the node

def test_node_definition():
    spec = ShotWriter.INPUT_TYPES()["required"]
    assert list(spec) == ["theme", "shots", "style", "seed", "backend", "endpoint_url", "model"]
    assert all(opts.get("tooltip") for _, opts in spec.values())
    assert spec["seed"][1]["control_after_generate"] and spec["theme"][1]["multiline"]
    assert ShotWriter.OUTPUT_IS_LIST == (True, False, False)
    assert "key" not in " ".join(spec)


def test_prompt_list_drives_text_to_video_once_per_shot(tiny_env):
    from comfyui_webtv.workflow.runner import run as execute

    api = {
        "1": {"class_type": "WebTVShotWriter", "inputs": {"theme": THEME, "shots": 2, "style": "", "seed": 0, "backend": "template", "endpoint_url": "", "model": ""}},
        "2": {"class_type": "ZeroscopeLoader", "inputs": {"model_name": "zeroscope_v2_576w", "dtype": "auto", "download_if_missing": False}},
        "3": {"class_type": "ZeroscopeTextToVideo", "inputs": {"model": ["2", 0], "prompt": ["1", 0], "negative_prompt": "", "seed": 1, "frames": 2, "steps": 1, "guidance": 1.0, "width": 64, "height": 64}},
        "4": {"class_type": "WebTVSaveVideo", "inputs": {"images": ["3", 0], "fps": 8.0, "filename_prefix": "shots/clip", "crf": 30}},
    }
    results = execute(api)
    assert results["3"]["outputs"][1] == parse.compose(template.template_plan(THEME, 2, 0), "")
    assert len(results["4"]["ui"]) == 2
    assert sorted(os.listdir(os.path.join(tiny_env["output"], "shots"))) == ["clip_00001_.mp4", "clip_00002_.mp4"]
