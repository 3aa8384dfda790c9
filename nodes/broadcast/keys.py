"""Stream keys: taken from the environment or a file, never from a widget value.

ComfyUI stores widget values in the workflow JSON and in every output's metadata, so an output URL
names its key as a placeholder, ``rtmp://live.twitch.tv/app/${TWITCH_STREAM_KEY}``. ``${NAME}`` is
replaced by the environment variable ``NAME``, or by the contents of the file that ``NAME_FILE`` names
(the Docker/Kubernetes secrets convention). Keys are masked in everything the channel reports.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SCHEMES = ("rtmp", "rtmps")
# Literal keys as Twitch (live_...) and YouTube (xxxx-xxxx-xxxx-xxxx[-xxxx]) hand them out.
_LITERAL_KEY = re.compile(r"(^live_[0-9]+_[A-Za-z0-9]+$)|(^[a-z0-9]{4}(-[a-z0-9]{4}){3,4}$)")


def secret(name: str, input_name: str = "outputs") -> str:
    """The value of secret ``name``: ``$NAME``, else the file named by ``$NAME_FILE``."""
    value = os.environ.get(name)
    if value:
        return value.strip()
    file = os.environ.get(f"{name}_FILE")
    if file:
        try:
            with open(file, encoding="utf-8") as f:
                value = f.read().strip()
        except OSError as exc:
            raise ValueError(f"{input_name}: cannot read the stream key file {file} named by ${name}_FILE ({exc.strerror}).") from None
        if value:
            return value
        raise ValueError(f"{input_name}: the stream key file {file} named by ${name}_FILE is empty.")
    raise ValueError(
        f"{input_name}: the stream key ${{{name}}} is not set; export {name}=<key> (or {name}_FILE=<path to a file "
        "holding the key>) in the environment that starts ComfyUI."
    )


def check_output_url(template: str, input_name: str = "outputs") -> None:
    """Refuse anything but rtmp(s)://host/app/stream, and literal stream keys."""
    parts = urlsplit(template)
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"{input_name}: {template!r} is not an RTMP address; use rtmp://host[:port]/app/stream or rtmps://... "
            f"(got scheme {parts.scheme or 'none'!r})."
        )
    if not parts.hostname:
        raise ValueError(f"{input_name}: {template!r} has no server name; use rtmp://host[:port]/app/stream.")
    if parts.username or parts.password:
        raise ValueError(f"{input_name}: {template!r} holds credentials; put them in a ${{VARIABLE}} placeholder instead.")
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise ValueError(f"{input_name}: {template!r} has no application path; use rtmp://host[:port]/app/stream.")
    if any(_LITERAL_KEY.match(s) for s in segments) or any(_LITERAL_KEY.match(kv.split("=")[-1]) for kv in parts.query.split("&") if kv):
        raise ValueError(
            f"{input_name}: {template!r} seems to contain a stream key; widget values are saved in workflows and "
            "media metadata, so write ${STREAM_KEY} there and set the key in the environment."
        )


def resolve(template: str, input_name: str = "outputs") -> tuple[str, list[str]]:
    """``(url, secrets)``: the URL with every placeholder filled, and the secret values to mask."""
    values: list[str] = []

    def fill(match: re.Match) -> str:
        value = secret(match.group(1), input_name)
        values.append(value)
        return value

    return PLACEHOLDER.sub(fill, template), values


def mask(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for value in secrets:
        if value:
            text = text.replace(value, "***")
    return text


def server_address(url: str) -> tuple[str, int]:
    """(host, port) an RTMP URL connects to."""
    parts = urlsplit(url)
    return parts.hostname, parts.port or (443 if parts.scheme == "rtmps" else 1935)
