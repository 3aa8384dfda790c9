"""Language models that write the shots: an OpenAI-compatible chat endpoint, or a local causal LM.

The endpoint's API key is read from the environment (``WEBTV_LLM_API_KEY``) or from the file named
by ``WEBTV_LLM_API_KEY_FILE``; it is never a node input, never logged and never part of an error.
It is bound to the endpoint configured next to it (``WEBTV_LLM_BASE_URL``): a workflow naming any
other URL gets no key. Plain http is allowed only on loopback, redirects are never followed, and a
reply has a total deadline and a size cap.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Protocol

import torch

from .. import host
from ..common.models import cached, on_device, path_stamp, sequence_memory

log = logging.getLogger(__name__)

KEY_ENV = "WEBTV_LLM_API_KEY"
KEY_FILE_ENV = "WEBTV_LLM_API_KEY_FILE"
BASE_URL_ENV = "WEBTV_LLM_BASE_URL"
REPLY_MAX_BYTES = 8 * 2**20  # a chat reply is a few KiB; anything this large is not one
THEME_MAX_TOKENS = 1024  # text given to the local model is cut to this many tokens
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
# Reply length budget of the local model: the JSON shell plus about 90 words per shot.
TOKENS_BASE, TOKENS_PER_SHOT, TOKENS_MAX = 200, 120, 4096
OPENING_TOKENS = 128  # a reply with no JSON started by then is given up


class BackendError(RuntimeError):
    """The model could not be reached or refused the request."""


class ChatBackend(Protocol):
    name: str

    def complete(self, messages: list[dict[str, str]], seed: int) -> str:
        """The model's reply to ``messages``."""


def api_key() -> str | None:
    """The endpoint's API key from ``WEBTV_LLM_API_KEY`` or the file in ``WEBTV_LLM_API_KEY_FILE``."""
    key = os.environ.get(KEY_ENV, "").strip()
    if key:
        return key
    path = os.environ.get(KEY_FILE_ENV, "").strip()
    if not path:
        return None
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError as e:
        raise BackendError(f"{KEY_FILE_ENV}: cannot read the key file {path} ({e.strerror}).") from None


def chat_url(endpoint_url: str) -> str:
    """The chat-completions URL for a base URL (``.../v1``) or a full one (``.../chat/completions``).

    Plain http is refused unless the host is loopback (the request and any key would travel in clear).
    """
    url = endpoint_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise BackendError(f"endpoint_url: {endpoint_url!r} is not an http(s) URL; use for example http://127.0.0.1:8080/v1.")
    try:
        parts = urllib.parse.urlsplit(url)
        hostname, _ = parts.hostname, parts.port
    except ValueError as e:
        raise BackendError(f"endpoint_url: {endpoint_url!r} is not a valid URL ({e}).") from None
    if not hostname:
        raise BackendError(f"endpoint_url: {endpoint_url!r} has no host; use for example http://127.0.0.1:8080/v1.")
    if parts.scheme == "http" and not _loopback(hostname):
        raise BackendError(
            f"endpoint_url: plain http is only allowed on this machine (127.0.0.1, ::1, localhost); use https:// for {hostname}."
        )
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


def _loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def key_for(url: str) -> str | None:
    """The API key when ``url`` is the endpoint configured in ``WEBTV_LLM_BASE_URL``, else None.

    Without ``WEBTV_LLM_BASE_URL`` the key goes only to loopback endpoints (a local server the user runs).
    """
    key = api_key()
    if not key:
        return None
    base = os.environ.get(BASE_URL_ENV, "").strip()
    if base:
        try:
            return key if chat_url(base) == url else None
        except BackendError:
            return None
    return key if _loopback(urllib.parse.urlsplit(url).hostname or "") else None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # the 3xx reaches the caller as an HTTPError; credentials never follow it


_OPENER = urllib.request.build_opener(_NoRedirect)


def read_reply(response, url: str, deadline: float, limit: int | None = None) -> bytes:
    """The body of ``response``, read in small pieces with the total ``deadline``, ``limit`` and interrupts checked."""
    limit = REPLY_MAX_BYTES if limit is None else limit
    chunks, size = [], 0
    while True:
        host.check_interrupt()
        if time.monotonic() > deadline:
            raise BackendError(f"{url} did not finish its reply in time; is the server overloaded?")
        chunk = response.read1(65536) if hasattr(response, "read1") else response.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise BackendError(f"{url} sent a reply over {limit // 2**20} MiB; that is not a chat completion.")
        chunks.append(chunk)


class OpenAIChat:
    """Any server speaking OpenAI's chat-completions protocol (OpenAI, vLLM, llama.cpp, Ollama, ...)."""

    name = "openai_compatible"

    def __init__(self, endpoint_url: str, model: str, temperature: float = 0.7, timeout: float = 120.0, attempts: int = 3):
        self.url = chat_url(endpoint_url)
        self.model = model.strip()
        self.temperature = temperature
        self.timeout = timeout
        self.attempts = attempts
        self._key = key_for(self.url)

    def __repr__(self) -> str:
        return f"OpenAIChat(url={self.url!r}, model={self.model!r})"

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def complete(self, messages: list[dict[str, str]], seed: int) -> str:
        body = {"model": self.model, "messages": messages, "temperature": self.temperature, "seed": seed}
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        deadline = time.monotonic() + self.timeout
        for attempt in range(1, self.attempts + 1):
            host.check_interrupt()
            try:
                remaining = max(0.1, deadline - time.monotonic())
                with _OPENER.open(request, timeout=min(remaining, 30.0)) as response:
                    raw = read_reply(response, self.url, deadline)
                data = json.loads(raw.decode("utf-8"))
                break
            except urllib.error.HTTPError as e:
                detail = self._redact(e.read(2000).decode("utf-8", "replace")[:300])
                problem = f"{self.url} answered HTTP {e.code}: {detail}"
                if 300 <= e.code < 400:
                    raise BackendError(f"endpoint_url: {self.url} redirects (HTTP {e.code}); give the final URL.") from None
                if e.code not in TRANSIENT_STATUS:
                    raise BackendError(problem) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                problem = f"cannot reach {self.url} ({reason})"
            except (ValueError, RecursionError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
                raise BackendError(f"{self.url} did not answer with usable JSON; is it a chat-completions endpoint?") from None
            if attempt == self.attempts or time.monotonic() > deadline:
                raise BackendError(problem)
            log.warning("shot writer: %s; retrying (%d/%d)", problem, attempt, self.attempts - 1)
            time.sleep(min(0.5 * 2 ** (attempt - 1), max(0.0, deadline - time.monotonic())))
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{self.url} answered without choices[0].message.content.") from None
        if not isinstance(content, str):
            raise BackendError(f"{self.url} answered with a non-text message content.")
        return content


class LoadedLM:
    """A causal LM and its tokenizer, cached as one object that unpacks as ``model, tokenizer``. Not a tuple:
    the cache can hold it weakly once ComfyUI offloads it, so "Unload models" frees it afterwards too."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def modules(self) -> list:
        return [self.model]

    def __iter__(self):
        return iter((self.model, self.tokenizer))


def load_local(path: str) -> LoadedLM:
    """The transformers causal LM in folder ``path``, cached across runs."""

    def load():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        return LoadedLM(AutoModelForCausalLM.from_pretrained(path).eval(), tokenizer)

    return cached(("llm", path), load, path_stamp(path))


def _chat_text(tokenizer, messages: list[dict[str, str]]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"


def _clip_tokens(tokenizer, text: str, limit: int = THEME_MAX_TOKENS) -> str:
    """``text`` cut to ``limit`` tokens (a 100k-character theme would otherwise run for minutes)."""
    text = text[: limit * 16]  # no token is longer than this; bounds the tokenizer's own work
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= limit else tokenizer.decode(ids[:limit], skip_special_tokens=True)


class ReplyWatch:
    """A StoppingCriteria-shaped callable for one sequence: one progress step (and interrupt point)
    per token, and a stop as soon as the reply's first JSON object is closed, or when no JSON has
    started after ``opening_tokens`` tokens (the reply is unusable however long it grows)."""

    def __init__(self, tokenizer, total: int, opening_tokens: int = OPENING_TOKENS):
        self.tokenizer = tokenizer
        self.bar = host.ProgressBar(total)
        self.opening_tokens = opening_tokens
        self.tokens = 0
        self.depth = 0
        self.in_string = self.escaped = self.opened = False

    def feed(self, text: str) -> bool:
        """Scan ``text``; True once the first top-level object or array has been closed."""
        for c in text:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif c == "\\":
                    self.escaped = True
                elif c == '"':
                    self.in_string = False
            elif c == '"' and self.opened:
                self.in_string = True
            elif c in "{[":
                self.depth += 1
                self.opened = True
            elif c in "}]" and self.opened:
                self.depth -= 1
                if self.depth <= 0:
                    return True
        return False

    def __call__(self, input_ids, scores, **kwargs):
        self.bar.update(1)
        self.tokens += 1
        closed = self.feed(self.tokenizer.decode(input_ids[0, -1:], skip_special_tokens=True))
        stop = closed or (not self.opened and self.tokens >= self.opening_tokens)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class LocalLM:
    """A transformers causal LM from a folder under models/llm, sampled with the node's seed."""

    name = "local"

    def __init__(self, model_name: str, max_new_tokens: int = 1024, temperature: float = 0.7):
        path = host.find_model("llm", model_name.strip(), allow_absolute=False) if model_name.strip() else None
        if path is None:
            found = ", ".join(host.list_models("llm")) or "none"
            raise BackendError(
                f"model: no language model folder {model_name!r} in {', '.join(host.model_dirs('llm'))} "
                f"(found: {found}); download one, e.g. Qwen/Qwen2.5-0.5B-Instruct into models/llm/Qwen2.5-0.5B-Instruct."
            )
        self.model_name = model_name
        self.path = path
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def __repr__(self) -> str:
        return f"LocalLM({self.path!r})"

    def complete(self, messages: list[dict[str, str]], seed: int) -> str:
        from transformers import StoppingCriteriaList

        model, tokenizer = load_local(self.path)
        messages = [{**m, "content": _clip_tokens(tokenizer, m["content"])} for m in messages]
        inputs = tokenizer(_chat_text(tokenizer, messages), return_tensors="pt")
        prompt_length = inputs["input_ids"].shape[1]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        memory = sequence_memory(model, prompt_length + self.max_new_tokens)
        with on_device(model, memory_required=memory) as device, torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            with torch.inference_mode():
                output = model.generate(
                    **{k: v.to(device) for k, v in inputs.items()},
                    do_sample=True,
                    temperature=self.temperature,
                    top_p=0.95,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=pad,
                    stopping_criteria=StoppingCriteriaList([ReplyWatch(tokenizer, self.max_new_tokens)]),
                )
        return tokenizer.decode(output[0, prompt_length:].cpu(), skip_special_tokens=True)


def select(choice: str, endpoint_url: str, model: str, shots: int) -> list[ChatBackend]:
    """The backends to try, in order, for a node's ``backend`` choice; empty means the template."""
    max_new_tokens = min(TOKENS_MAX, TOKENS_BASE + TOKENS_PER_SHOT * shots)
    if choice == "template":
        return []
    if choice == "openai_compatible":
        if not endpoint_url.strip():
            raise BackendError("endpoint_url: required for the openai_compatible backend, e.g. http://127.0.0.1:8080/v1.")
        return [OpenAIChat(endpoint_url, model)]
    if choice == "local":
        return [LocalLM(model, max_new_tokens)]
    if choice != "auto":
        raise BackendError(f"backend: unknown choice {choice!r}; use auto, openai_compatible, local or template.")
    found: list[ChatBackend] = []
    if endpoint_url.strip():
        found.append(OpenAIChat(endpoint_url, model))
    local = model.strip() if model.strip() in host.list_models("llm") else next(iter(host.list_models("llm")), "")
    if local:
        found.append(LocalLM(local, max_new_tokens))
    return found
