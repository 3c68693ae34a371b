"""The built-in dashboard: `GET /` (the page) and `GET /web/{name}` (its ES modules and styles).

Assets are package data of `dash_stream.web`, read once and served from memory with an ETag. Only
the files listed in `ASSETS` are served. The page carries a strict Content-Security-Policy: scripts
and styles only from this origin (no inline code), connections only back to this origin (the
WebSocket and the HTTP API), no framing, and no referrer (a `?token=` must not leak).
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from dash_stream.server.errors import error_response

ASSETS: Final[dict[str, str]] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "dash-client.js": "text/javascript; charset=utf-8",
    "dash-client.d.ts": "text/plain; charset=utf-8",
    "swarm-state.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@cache
def _load(name: str) -> tuple[bytes, str]:
    body = resources.files("dash_stream.web").joinpath(name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def _serve(request: Request, name: str) -> Response:
    body, etag = _load(name)
    headers = {**_SECURITY_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=ASSETS[name], headers=headers)


async def index(request: Request) -> Response:
    """`GET /`: the dashboard page."""
    return _serve(request, "index.html")


async def asset(request: Request) -> Response:
    """`GET /web/{name}`: one of the page's assets."""
    name = str(request.path_params["name"])
    if name not in ASSETS or name == "index.html":
        return error_response(404, "not_found", f"no asset {name[:64]!r}")
    return _serve(request, name)
