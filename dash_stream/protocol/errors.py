"""One exception root, the error codes of PROTOCOL.md section 5, and the close codes of section 3."""

from __future__ import annotations

import enum
import random
from typing import ClassVar

import orjson


class ErrorCode(enum.StrEnum):
    """Error codes shared by WebSocket `error` frames and HTTP error bodies."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class CloseCode(enum.IntEnum):
    """WebSocket close codes: 4000-4499 mean reconnect, 4500-4999 mean do not."""

    NORMAL = 1000
    GOING_AWAY = 1001
    INVALID_DATA = 1007
    TOO_BIG = 1009
    RESTART = 4000
    HEARTBEAT_TIMEOUT = 4002
    SLOW_CONSUMER = 4008
    RATE_LIMITED = 4029
    UNAUTHORIZED = 4501
    FORBIDDEN = 4503
    PROTOCOL_VIOLATION = 4504

    @property
    def reconnect(self) -> bool:
        """True when a client should reconnect with its cursor."""
        return 4000 <= self.value < 4500 or self == CloseCode.GOING_AWAY


_CLOSE_NAMES = {
    CloseCode.GOING_AWAY: "going_away",
    CloseCode.RESTART: "restart",
    CloseCode.HEARTBEAT_TIMEOUT: "heartbeat_timeout",
    CloseCode.SLOW_CONSUMER: "slow_consumer",
    CloseCode.RATE_LIMITED: "rate_limited",
    CloseCode.UNAUTHORIZED: "unauthorized",
    CloseCode.FORBIDDEN: "forbidden",
    CloseCode.PROTOCOL_VIOLATION: "protocol_violation",
}


def jittered_ms(low_ms: int = 500, high_ms: int = 5000) -> int:
    """A reconnect delay spread uniformly so that reconnect storms spread out."""
    return random.randint(low_ms, high_ms)


def close_reason(code: CloseCode, retry_after_ms: int | None = None, message: str | None = None) -> str:
    """The short JSON close reason; every reconnect code carries a jittered `retry_after_ms`."""
    body: dict[str, object] = {"code": _CLOSE_NAMES.get(code, code.name.lower())}
    if code.reconnect:
        body["retry_after_ms"] = retry_after_ms if retry_after_ms is not None else jittered_ms()
    if message:
        body["message"] = message[:60]
    text = orjson.dumps(body).decode()
    if len(text.encode()) > 123:  # a close reason must fit in a control frame: drop the message only
        body.pop("message", None)
        text = orjson.dumps(body).decode()
    return text


class DashError(Exception):
    """The root of every error dash-stream raises on purpose; `code` picks the wire error."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    status: ClassVar[int] = 500

    def __init__(self, message: str, *, retry_after_ms: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_ms = retry_after_ms
        self.http_status = status if status is not None else self.status

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later unchanged."""
        return self.code in (ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL)


class BadRequest(DashError):
    """Malformed or invalid input (HTTP 400 for a malformed body, 422 for a failed validation)."""

    code = ErrorCode.BAD_REQUEST
    status = 400


class Unauthorized(DashError):
    """No credentials, or credentials that do not verify."""

    code = ErrorCode.UNAUTHORIZED
    status = 401


class Forbidden(DashError):
    """Valid credentials that do not allow this topic or action."""

    code = ErrorCode.FORBIDDEN
    status = 403


class NotFound(DashError):
    """No such route or resource."""

    code = ErrorCode.NOT_FOUND
    status = 404


class Conflict(DashError):
    """The request conflicts with the current state (e.g. a subscription id already in use)."""

    code = ErrorCode.CONFLICT
    status = 409


class TooLarge(DashError):
    """An event, batch or body over its configured limit."""

    code = ErrorCode.TOO_LARGE
    status = 413


class RateLimited(DashError):
    """A token bucket is empty; `retry_after_ms` says when to try again."""

    code = ErrorCode.RATE_LIMITED
    status = 429


class Unavailable(DashError):
    """The bus is unreachable or the server is draining."""

    code = ErrorCode.UNAVAILABLE
    status = 503
