"""The Sink seam: where messages leave the bridge, and how an answer is judged.

A sink sends one message once and reports a `SendResult`; retries, backoff, ordering, bounds and
the DLQ live in the dispatcher, so every sink gets them alike. `measure` says how large the
message's request body is, so that the dispatcher can split messages over `max_body_bytes`.
The dispatcher runs each `send` inside `attempt_scope(n)`: a sink that traces its requests reads
the attempt number with `current_attempt()` (one CLIENT span per attempt).
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
from collections.abc import Iterator
from typing import Protocol

import msgspec

from bridge.model import Message

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

_attempt: contextvars.ContextVar[int] = contextvars.ContextVar("dash_bridge_send_attempt", default=1)


def current_attempt() -> int:
    """The number (1, 2, ...) of the delivery attempt the current `send` is (1 outside the dispatcher)."""
    return _attempt.get()


@contextlib.contextmanager
def attempt_scope(attempt: int) -> Iterator[None]:
    """Make `attempt` the current attempt number for the `send` inside the block."""
    token = _attempt.set(attempt)
    try:
        yield
    finally:
        _attempt.reset(token)


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one attempt: accepted, or why not and whether trying again may help."""

    ok: bool
    status: int | None = None
    retryable: bool = False
    retry_after: float | None = None
    detail: str = ""

    @property
    def outcome(self) -> str:
        """A low-cardinality label: 2xx, 4xx, 5xx or error."""
        return "error" if self.status is None else f"{self.status // 100}xx"


class Sink(Protocol):
    """A destination for messages."""

    name: str
    max_body_bytes: int

    def measure(self, message: Message) -> int:
        """The size in bytes of the request body this message becomes."""
        ...

    async def send(self, message: Message) -> SendResult:
        """Send once (no retries); never raises for a failed delivery."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def is_retryable(status: int) -> bool:
    """408, 425, 429 and 5xx (except 501 and 505, which will not change) are worth another try."""
    return status in RETRYABLE_STATUS or (status >= 500 and status not in (501, 505))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date), None when absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def result_for_status(status: int, retry_after: float | None, detail: str) -> SendResult:
    """Judge an HTTP status: 2xx ok; 408/429/5xx retryable; anything else final."""
    if 200 <= status < 300:
        return SendResult(ok=True, status=status)
    return SendResult(
        ok=False, status=status, retryable=is_retryable(status), retry_after=retry_after, detail=detail
    )
