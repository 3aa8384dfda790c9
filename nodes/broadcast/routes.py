"""HTTP routes on ComfyUI's server: channel status as JSON, and the preview player and HLS files.

``GET /webtv/channels``                          every channel's status, by name
``GET /webtv/channels/{name}/status``            one channel's status
``GET /webtv/channels/{name}/preview/``          the player page (also its ``status`` and ``hls/*``)
"""

from __future__ import annotations

from . import channel as channels
from .preview import hls_file, player_page


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
