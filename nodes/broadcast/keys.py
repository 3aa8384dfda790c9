"""Stream keys: taken from the environment or a file, never from a widget value.

ComfyUI stores widget values in the workflow JSON and in every output's metadata, so an output URL
names its key as a placeholder, ``rtmp://live.twitch.tv/app/${WEBTV_KEY_TWITCH}``. Workflows are
untrusted, so a placeholder may only name a variable the user marked as a stream key: one whose name
starts with ``WEBTV_KEY_``, or one listed in ``$WEBTV_STREAM_KEYS`` (comma-separated names), and only
in the stream-name or query part, never in the scheme, server, port or application. ``${NAME}`` is
replaced by ``$NAME``, or by the contents of the file that ``$NAME_FILE`` names (the Docker/Kubernetes
secrets convention). Keys are masked in everything the channel reports.

``srt://host:port[?options]`` outputs (caller mode) are sent by an ffmpeg child, as PyAV's FFmpeg has
no SRT; ffmpeg takes its output address only on its command line, which every local user can read, so
an SRT address may hold no placeholder, passphrase or key-like ``streamid``.

``https://host/path`` is a WHIP (WebRTC) server; its bearer token is written ``bearer=${WEBTV_KEY_NAME}``
in the query and sent in the ``Authorization`` header (plain ``http://`` only to a loopback host). The
query parameters ``codec`` and ``bearer`` are the pack's own (:data:`OPTIONS`): read here, taken out of
the address, never sent to the server as a parameter.

Public API (the nodes and the CLI): :func:`check_output_url` validates an address without reading any
key; :func:`resolve_output_url` validates it and returns ``(url, masked)``.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, quote, urlsplit

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SCHEMES = ("rtmp", "rtmps", "srt", "https", "http")
OPTIONS = ("codec", "bearer")  # the pack's own query parameters (see the module docstring)
LOOPBACK = ("127.0.0.1", "::1", "localhost")
KEY_PREFIX = "WEBTV_KEY_"
KEY_LIST = "WEBTV_STREAM_KEYS"
# Literal keys as Twitch (live_...), YouTube (xxxx-xxxx-xxxx-xxxx[-xxxx]) and Facebook (FB-<id>-<n>-<token>)
# hand them out, and long mixed-case tokens like other services' keys.
_LITERAL_KEY = re.compile(
    r"^(live_[0-9]+_[A-Za-z0-9]+|[a-z0-9]{4}(-[a-z0-9]{4}){3,4}|FB-[0-9]+-[0-9]+-[A-Za-z0-9_-]+"
    r"|(?=.*[a-z])(?=.*[A-Z])(?=.*[0-9])[A-Za-z0-9_-]{20,})$"
)
# Query parameters that carry credentials whatever their value looks like.
_SECRET_PARAMS = {"key", "streamkey", "stream_key", "password", "pass", "pwd", "token", "secret", "auth", "sig", "signature", "passphrase", "bearer"}


def allowed_names() -> set[str]:
    """The variables listed in ``$WEBTV_STREAM_KEYS`` (those with the ``WEBTV_KEY_`` prefix are always allowed)."""
    return {n.strip() for n in os.environ.get(KEY_LIST, "").split(",") if n.strip()}


def is_stream_key_name(name: str) -> bool:
    """True when ``name`` is a variable the user marked as a stream key."""
    return (name.startswith(KEY_PREFIX) and len(name) > len(KEY_PREFIX)) or name in allowed_names()


def secret(name: str, input_name: str = "outputs") -> str:
    """The value of stream key ``name``: ``$NAME``, else the file named by ``$NAME_FILE``."""
    if not is_stream_key_name(name):
        raise ValueError(_not_a_key(name, input_name))
    value = os.environ.get(name)
    if not value:
        file = os.environ.get(f"{name}_FILE")
        if not file:
            raise ValueError(
                f"{input_name}: the stream key ${{{name}}} is not set; export {name}=<key> (or {name}_FILE=<path to a "
                "file holding the key>) in the environment that starts ComfyUI."
            )
        try:
            with open(file, encoding="utf-8") as f:
                value = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ValueError(f"{input_name}: cannot read the stream key file {file} named by ${name}_FILE ({why}).") from None
        if not value.strip():
            raise ValueError(f"{input_name}: the stream key file {file} named by ${name}_FILE is empty.")
    value = value.strip()
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c in "#\\" for c in value):
        raise ValueError(f"{input_name}: the stream key in ${name} contains spaces, control characters, '#' or '\\'; check its value.")
    return value


def _not_a_key(name: str, input_name: str) -> str:
    return (
        f"{input_name}: ${{{name}}} is not a stream key variable; only variables named {KEY_PREFIX}... or listed in "
        f"${KEY_LIST} (comma-separated names, set where ComfyUI starts) can be placed in an address, so a workflow "
        "cannot send other environment variables to a server."
    )


def _masked(template: str) -> str:
    """``template`` with literal key-like parts replaced by ``***`` (for messages about a refused address)."""
    parts = _split(template)
    if parts is None:
        return "<invalid address>"
    segments = parts.path.split("/")
    path = "/".join("***" if _LITERAL_KEY.match(s) and not PLACEHOLDER.search(s) else s for s in segments)
    query = "&".join(
        f"{k}=***" if (k.lower() in _SECRET_PARAMS or _LITERAL_KEY.match(v)) and not PLACEHOLDER.fullmatch(v) else f"{k}={v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{path}" + (f"?{query}" if query else "")


def _split(template: str):
    try:
        parts = urlsplit(template)
        parts.port  # noqa: B018 - raises for a port out of range or not a number
        return parts
    except ValueError:
        return None


def split_options(template: str, input_name: str = "outputs") -> tuple[str, dict[str, str]]:
    """``(address, options)``: ``template`` without the pack's own query parameters (:data:`OPTIONS`), and their values."""
    head, sep, fragment = template.partition("#")
    address, _, query = head.partition("?")
    kept, options = [], {}
    for part in query.split("&") if query else []:
        name, _, value = part.partition("=")
        if name.lower() not in OPTIONS:
            kept.append(part)
        elif name.lower() in options:
            raise ValueError(f"{input_name}: {_masked(template)!r} gives {name.lower()}= twice; give it once.")
        else:
            options[name.lower()] = value
    return address + ("?" + "&".join(kept) if kept else "") + sep + fragment, options


def output_kind(url: str) -> str:
    """``rtmp`` (rtmp://, rtmps://), ``srt`` or ``whip`` (https://, http://) for a checked address."""
    scheme = url.partition(":")[0].lower()
    return {"rtmps": "rtmp", "https": "whip", "http": "whip"}.get(scheme, scheme)


def check_output_url(template: str, input_name: str = "outputs") -> None:
    """Refuse anything but rtmp(s)://host[:port]/app/stream, srt://host:port and https://host/path (WHIP), literal
    stream keys, misplaced placeholders and misused options (``codec=`` and ``bearer=``; codec names are checked by
    :func:`.outputs.check_output`)."""
    if any(ord(c) < 32 or ord(c) == 127 or c.isspace() for c in template):
        raise ValueError(f"{input_name}: an RTMP address cannot contain spaces or control characters; write one address per line.")
    address, options = split_options(template, input_name)
    if not options.get("codec", "x").strip():
        raise ValueError(f"{input_name}: {_masked(template)!r} has an empty codec=; write codec=h264, hevc or av1, or leave it out.")
    if "bearer" in options:
        if output_kind(address) != "whip":
            raise ValueError(f"{input_name}: {_masked(template)!r} has bearer=, which only a WHIP (https://) address takes.")
        name = PLACEHOLDER.fullmatch(options["bearer"])
        if not name:
            raise ValueError(
                f"{input_name}: {_masked(template)!r} gives bearer= a literal value (shown as ***); widget values are saved "
                f"in workflows and media metadata, so write bearer=${{{KEY_PREFIX}NAME}} and set {KEY_PREFIX}NAME in the environment."
            )
        if not is_stream_key_name(name.group(1)):
            raise ValueError(_not_a_key(name.group(1), input_name))
    template = address
    try:
        parts = urlsplit(template)
        port = parts.port
    except ValueError as exc:
        raise ValueError(
            f"{input_name}: {_masked(template)!r} is not a valid address ({exc}); use rtmp://host[:port]/app/stream, "
            "with a port from 1 to 65535 and an IPv6 host in brackets ([::1])."
        ) from None
    shown = _masked(template)
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"{input_name}: {shown!r} is not an RTMP address; use rtmp://host[:port]/app/stream or rtmps://... "
            f"(or srt://host:port, or https://host/path for WHIP; got scheme {parts.scheme or 'none'!r})."
        )
    if "$" in parts.scheme or "$" in parts.netloc:
        raise ValueError(
            f"{input_name}: {shown!r} has a placeholder in the server address; a stream key goes only in the stream "
            "name or query (rtmp://host/app/${WEBTV_KEY_NAME}), so it can never be sent as a server name."
        )
    if not parts.hostname:
        raise ValueError(f"{input_name}: {shown!r} has no server name; use rtmp://host[:port]/app/stream.")
    if parts.scheme == "srt":
        _check_srt(parts, shown, input_name)
        return
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        raise ValueError(
            f"{input_name}: {shown!r} is not an RTMP address; use rtmp://host[:port]/app/stream, rtmps://..., srt://host:port "
            "or https://host/path for WHIP (plain http:// only to a WHIP server on 127.0.0.1: it would send the bearer token unencrypted)."
        )
    if port == 0:
        raise ValueError(f"{input_name}: {shown!r} has port 0; use a port from 1 to 65535 (or none for the default).")
    if parts.username or parts.password:
        raise ValueError(f"{input_name}: {shown!r} holds credentials; put the key in a ${{{KEY_PREFIX}NAME}} placeholder instead.")
    if parts.fragment:
        raise ValueError(f"{input_name}: {shown!r} has a '#' fragment, which RTMP does not use; remove it.")
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise ValueError(f"{input_name}: {shown!r} has no application path; use rtmp://host[:port]/app/stream (WHIP: https://host/path).")
    if parts.scheme in ("rtmp", "rtmps") and (PLACEHOLDER.search(segments[0]) or "$" in segments[0]):
        raise ValueError(
            f"{input_name}: {shown!r} has a placeholder in the application name; a stream key goes only in the stream "
            "name or query (rtmp://host/app/${WEBTV_KEY_NAME})."
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    literal = any(_LITERAL_KEY.match(s) for s in segments) or any(
        not PLACEHOLDER.fullmatch(v) and v and (k.lower() in _SECRET_PARAMS or _LITERAL_KEY.match(v)) for k, v in query
    )
    if literal:
        raise ValueError(
            f"{input_name}: {shown!r} seems to contain a stream key (shown as ***); widget values are saved in workflows "
            f"and media metadata, so write ${{{KEY_PREFIX}NAME}} there and set {KEY_PREFIX}NAME in the environment."
        )
    for name in PLACEHOLDER.findall(template):
        if not is_stream_key_name(name):
            raise ValueError(_not_a_key(name, input_name))


def _check_srt(parts, shown: str, input_name: str) -> None:
    """The SRT rules: srt://host:port[?options], caller mode, nothing secret (the address is on ffmpeg's command line)."""
    if not parts.port:
        raise ValueError(f"{input_name}: {shown!r} has no port; use srt://host:port (SRT has no default port).")
    if parts.username or parts.password or parts.fragment or parts.path.strip("/"):
        raise ValueError(f"{input_name}: {shown!r} is not srt://host:port[?options]; remove the path, credentials or '#' fragment.")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "mode" and v != "caller" for k, v in query):
        raise ValueError(f"{input_name}: {shown!r} asks for SRT {dict(query)['mode']!r} mode; an output calls the server (mode=caller).")
    if "$" in parts.query or any(k.lower() in _SECRET_PARAMS or _LITERAL_KEY.match(v) for k, v in query):
        raise ValueError(
            f"{input_name}: {shown!r} holds a stream key, passphrase or placeholder; SRT is sent by an ffmpeg child "
            "whose command line every local user can read, so SRT outputs cannot carry a key here (use RTMP for a keyed server)."
        )


def resolve_options(template: str, input_name: str = "outputs") -> tuple[str, dict[str, str], list[str]]:
    """``(url, options, secrets)``: the checked address without the pack's options and with every placeholder
    filled, the options (``bearer`` filled), and the secret values to mask."""
    check_output_url(template, input_name)
    address, options = split_options(template, input_name)
    values: list[str] = []

    def fill(match: re.Match) -> str:
        value = secret(match.group(1), input_name)
        values.append(value)
        return value

    options = {k: PLACEHOLDER.sub(fill, v) for k, v in options.items()}
    return PLACEHOLDER.sub(fill, address), options, values


def resolve(template: str, input_name: str = "outputs") -> tuple[str, list[str]]:
    """``(url, secrets)``: the checked URL (the pack's options taken out) with every placeholder filled, and the secret values to mask."""
    url, _, secrets = resolve_options(template, input_name)
    return url, secrets


def resolve_output_url(template: str, input_name: str = "outputs") -> tuple[str, str]:
    """``(url, masked)``: the address with its keys filled in, and the same address safe to show (placeholders kept)."""
    url, _ = resolve(template, input_name)
    return url, template


def mask(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ``***`` (also in URL-encoded and lower-case forms)."""
    for value in sorted(secrets, key=len, reverse=True):
        if value:
            for form in {value, quote(value, safe=""), value.lower()}:
                text = text.replace(form, "***")
    return text


_ADDRESS = re.compile(r"(?:rtmps?|srt)://[^\s\"'\\<>]+|https?://[^\s\"'\\<>?]+\?[^\s\"'\\<>]*bearer=[^\s\"'\\<>]*", re.IGNORECASE)


def mask_addresses(text: str) -> str:
    """``text`` (a workflow, a prompt) with literal keys in every rtmp/rtmps/srt and WHIP address replaced by ``***``.

    Placeholders stay; a key pasted into a widget never reaches metadata, logs or status.
    """
    return _ADDRESS.sub(lambda m: _masked(m.group(0)), text)


def server_address(url: str) -> tuple[str, int]:
    """(host, port) an RTMP, SRT or WHIP URL connects to."""
    parts = urlsplit(url)
    return parts.hostname, parts.port or {"rtmps": 443, "https": 443, "http": 80}.get(parts.scheme, 1935)
