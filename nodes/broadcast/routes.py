"""HTTP routes on ComfyUI's server: channel status as JSON, and the preview player and HLS files.

``GET /webtv/channels``                          every channel's status, by name
``GET /webtv/channels/{name}/status``            one channel's status
``GET /webtv/channels/{name}/preview/``          the player page (also its ``status`` and ``hls/*``)
``POST /webtv/channels/{name}/clips``            append uploaded mp4 clips (multipart, field ``clip``) to
                                                 a running channel; needs ``Authorization: Bearer`` with
                                                 the server's ``WEBTV_WORKER_TOKEN`` (refused when unset)

Received clips are saved under the output folder as ``WebTV/received/<channel>/<id>-NNN.mp4`` (names
chosen here, never the sender's), at most ``WEBTV_UPLOAD_MAX_MB`` (default 1024) per request; a request
that fails leaves no file behind.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import uuid

from .. import host
from ...cli.queue import TOKEN_ENV
from ..common.files import atomic_path
from . import channel as channels
from .preview import hls_file, player_page

UPLOAD_LIMIT_ENV = "WEBTV_UPLOAD_MAX_MB"
UPLOAD_LIMIT_MB = 1024
CHUNK = 1 << 16


def upload_limit() -> int:
    """Bytes one clip upload may carry (``WEBTV_UPLOAD_MAX_MB``, default 1024)."""
    text = os.environ.get(UPLOAD_LIMIT_ENV, "").strip()
    try:
        mb = float(text) if text else UPLOAD_LIMIT_MB
    except ValueError:
        mb = UPLOAD_LIMIT_MB
    return int(mb * (1 << 20)) if mb > 0 else int(UPLOAD_LIMIT_MB * (1 << 20))


def register(routes) -> None:
    """Add the routes to ComfyUI's ``PromptServer.instance.routes``."""
    from aiohttp import web

    def find(request):
        try:
            return channels.get(request.match_info["name"])
        except ValueError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None

    @routes.get("/webtv/channels")
    async def all_channels(request):
        return web.json_response(channels.statuses())

    @routes.get("/webtv/channels/{name}/status")
    @routes.get("/webtv/channels/{name}/preview/status")
    async def status(request):
        return web.json_response(find(request).status())

    @routes.get("/webtv/channels/{name}/preview")
    async def preview_redirect(request):
        raise web.HTTPFound(f"/webtv/channels/{request.match_info['name']}/preview/")

    @routes.get("/webtv/channels/{name}/preview/")
    async def page(request):
        find(request)
        return web.Response(body=player_page(), content_type="text/html", charset="utf-8")

    @routes.get("/webtv/channels/{name}/preview/hls/{file}")
    async def hls(request):
        found = hls_file(find(request).hls_dir, request.match_info["file"])
        if found is None:
            raise web.HTTPNotFound()
        return web.Response(body=found[0], headers={"Content-Type": found[1], "Cache-Control": "no-cache"})

    def refuse(error, text: str):
        raise error(text=text)

    def authorize(request) -> None:
        token = os.environ.get(TOKEN_ENV, "")
        if not token:
            refuse(web.HTTPForbidden, f"this server takes no clips: start ComfyUI with {TOKEN_ENV} set to a secret, "
                                      f"and send it as 'Authorization: Bearer <token>'.")
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise web.HTTPUnauthorized(text=f"missing or wrong bearer token (the server's {TOKEN_ENV}).",
                                       headers={"WWW-Authenticate": "Bearer"})

    def too_large(size: int, limit: int):
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size, text=(
            f"the upload is over {limit} bytes, the most this server takes ({UPLOAD_LIMIT_ENV}); send fewer clips at a time."))

    async def save_parts(request, name: str) -> list[str]:
        """Stream every ``clip`` part into the output folder; on any error remove what was written."""
        limit, total, saved = upload_limit(), 0, []
        batch = uuid.uuid4().hex[:12]
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.name != "clip":
                    refuse(web.HTTPBadRequest, f"unexpected form field {part.name!r}: send each clip as a 'clip' file field.")
                path = host.output_path(f"WebTV/received/{name}/{batch}-{len(saved) + 1:03}.mp4", "clip")
                with atomic_path(path) as part_path, open(part_path, "wb") as f:
                    while chunk := await part.read_chunk(CHUNK):
                        total += len(chunk)
                        if total > limit:
                            too_large(total, limit)
                        f.write(chunk)
                saved.append(path)
        except BaseException:
            for path in saved:
                os.remove(path)
            raise
        return saved

    @routes.post("/webtv/channels/{name}/clips")
    async def receive_clips(request):
        authorize(request)
        live = find(request)
        name = live.settings.name
        if not live.running or live.settings.mode != "clips":
            refuse(web.HTTPConflict, f"channel {name!r} is stopped or in playlist mode; it takes clips only while it runs in clips mode.")
        if not request.content_type.startswith("multipart/"):
            refuse(web.HTTPUnsupportedMediaType, "send the clips as multipart/form-data, each in a 'clip' file field.")
        if request.content_length is not None and request.content_length > upload_limit():
            too_large(request.content_length, upload_limit())
        try:
            saved = await save_parts(request, name)
        except ValueError as exc:  # a malformed multipart body
            raise web.HTTPBadRequest(text=f"cannot read the upload ({exc}); send multipart/form-data with 'clip' file fields.") from None
        if not saved:
            refuse(web.HTTPBadRequest, "no clip received: send each clip in a 'clip' file field.")
        try:
            status = await asyncio.to_thread(lambda: channels.append(name, saved).status())
        except ValueError as exc:
            for path in saved:
                os.remove(path)
            raise web.HTTPBadRequest(text=str(exc)) from None
        root = host.output_dir()
        return web.json_response({"channel": name, "received": [os.path.relpath(p, root) for p in saved], "status": status})
