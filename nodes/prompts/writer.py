"""From a theme to shot prompts: ask a model, repair or retry bad replies, fall back to the template."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from . import instructions
from .backends import BackendError, ChatBackend
from .parse import ShotFormatError, ShotPlan, compose, parse_reply
from .template import template_plan

log = logging.getLogger(__name__)

MAX_ECHO = 4000  # characters of a bad reply quoted back to the model


@dataclass
class ShotList:
    """The written shots and how they were obtained."""

    prompts: list[str]
    plan: ShotPlan
    source: str  # the backend's name, or "template"
    attempts: int = 0  # model replies read
    problems: list[str] = field(default_factory=list)

    @property
    def fell_back(self) -> bool:
        """True when a model was tried but the template wrote the shots."""
        return self.source == "template" and bool(self.problems)

    def report(self) -> dict:
        """A JSON-friendly summary of how the shot list was made."""
        return {
            "source": self.source,
            "attempts": self.attempts,
            "fell_back_to_template": self.fell_back,
            "problems": self.problems,
            "subject": self.plan.subject,
            "camera": self.plan.camera,
            "lighting": self.plan.lighting,
        }


def ask(backend: ChatBackend, theme: str, shots: int, style: str, seed: int, retries: int) -> tuple[ShotPlan | None, int, list[str]]:
    """Ask ``backend`` up to ``1 + retries`` times; returns (plan or None, replies read, problems)."""
    messages = instructions.messages(theme, shots, style)
    problems = []
    for attempt in range(1, retries + 2):
        reply = backend.complete(messages, seed)
        try:
            return parse_reply(reply, shots), attempt, problems
        except ShotFormatError as e:
            problems.append(f"{backend.name} reply {attempt}: {e}")
            log.warning("shot writer: %s reply %d unusable: %s", backend.name, attempt, e)
            messages = messages + instructions.correction(reply[:MAX_ECHO], str(e), shots)
    return None, retries + 1, problems


def write_shots(
    theme: str,
    shots: int,
    style: str,
    seed: int,
    backends: list[ChatBackend] = (),
    retries: int = 2,
    strict: bool = False,
) -> ShotList:
    """``shots`` prompts about ``theme`` from the first backend that gives a valid reply.

    A backend that cannot be reached is skipped unless ``strict`` (then its error is raised). When
    no backend gives a usable reply, or none is given, the deterministic template writes the shots.
    """
    if not theme or not theme.strip():
        raise ValueError("theme: is empty; describe the sequence (who or what, where, what happens).")
    if shots < 1:
        raise ValueError(f"shots: must be at least 1, got {shots}.")
    attempts, problems = 0, []
    for backend in backends:
        try:
            plan, used, found = ask(backend, theme, shots, style, seed, retries)
        except BackendError as e:
            if strict:
                raise
            problems.append(f"backend {backend.name}: {e}")
            log.warning("shot writer: %s unavailable, trying the next way: %s", backend.name, e)
            continue
        attempts += used
        problems += found
        if plan is not None:
            return ShotList(compose(plan, style), plan, backend.name, attempts, problems)
    plan = template_plan(theme, shots, seed)
    return ShotList(compose(plan, style), plan, "template", attempts, problems)
