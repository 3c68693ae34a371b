"""The one JSON error shape of every HTTP route, and the request id every response carries."""

from __future__ import annotations

import contextvars
import re
import uuid
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dash_stream.protocol.errors import DashError, ErrorCode
from dash_stream.telemetry.logcontext import caller_traceparent

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")

_STATUS_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.BAD_REQUEST,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.TOO_LARGE,
    422: ErrorCode.BAD_REQUEST,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.UNAVAILABLE,
}


def error_response(status: int, code: str, message: str, *, retry_after_ms: int | None = None) -> Response:
    """`{"error":{"code","message","request_id"}}` with the status, X-Request-ID and Retry-After."""
    rid = request_id_var.get()
    body: dict[str, Any] = {"code": code, "message": message, "request_id": rid}
    headers = {"X-Request-ID": rid}
    if retry_after_ms is not None:
        body["retry_after_ms"] = retry_after_ms
        headers["Retry-After"] = str(max(1, -(-retry_after_ms // 1000)))
    elif status == 503:
        headers["Retry-After"] = "1"
    return Response(orjson.dumps({"error": body}), status, headers=headers, media_type="application/json")


def from_dash_error(error: DashError) -> Response:
    """The error response of a DashError."""
    return error_response(
        error.http_status, error.code.value, error.message, retry_after_ms=error.retry_after_ms
    )


def from_status(status: int, message: str) -> Response:
    """The error response for a bare HTTP status (router 404/405 and the like)."""
    code = _STATUS_CODES.get(status, ErrorCode.INTERNAL if status >= 500 else ErrorCode.BAD_REQUEST)
    return error_response(status, code.value, message)


class RequestIdMiddleware:
    """Takes X-Request-ID from the request (or makes one), exposes it to logs, and sets it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = ""
        traceparent: str | None = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                rid = rid or value.decode("latin-1")
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")
        if not _VALID_ID.match(rid):
            rid = uuid.uuid4().hex
        token = request_id_var.set(rid)
        trace_token = caller_traceparent.set(traceparent)  # log lines carry the caller's trace ids
        raw = rid.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", raw))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
            caller_traceparent.reset(trace_token)
