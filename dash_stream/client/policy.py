"""When and how soon to reconnect (PROTOCOL.md section 3, close codes), as small pure functions."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Final

# Codes after which the same request cannot succeed until someone fixes something.
_FATAL_STANDARD: Final = frozenset({1002, 1003, 1007, 1008, 1009, 1010})

_FATAL_HINTS: Final[dict[int, str]] = {
    1009: "a frame was larger than the server accepts",
    4501: "the server refused the credentials (no, bad or expired token)",
    4503: "the token does not allow this",
    4504: "the server closed the connection after repeated malformed frames",
}


def should_reconnect(code: int) -> bool:
    """True for 1001, 1006 and 4000-4499; False for 4500-4999 and for standard codes that mean
    "fix the client" (1002, 1003, 1007-1010). Other standard codes (1000, 1011-1014) are transient:
    a streaming server has no reason to end a session for good with them.
    """
    if 4000 <= code < 4500:
        return True
    if code >= 4500:
        return False
    return code not in _FATAL_STANDARD


def parse_close_reason(reason: str) -> tuple[str | None, int | None, str | None]:
    """(`code`, `retry_after_ms`, `message`) from a JSON close reason; Nones where absent or unreadable."""
    try:
        doc = json.loads(reason) if reason else None
    except ValueError:
        return None, None, reason or None
    if not isinstance(doc, dict):
        return None, None, reason or None
    code = doc.get("code")
    retry = doc.get("retry_after_ms")
    message = doc.get("message")
    return (
        code if isinstance(code, str) else None,
        int(retry) if isinstance(retry, int | float) and not isinstance(retry, bool) and retry >= 0 else None,
        message if isinstance(message, str) else None,
    )


def error_code(code: int, reason: str) -> str:
    """The `ClientError.code` for a close that stops the client: the server's name, else a generic one."""
    name = parse_close_reason(reason)[0]
    if name:
        return name
    return {1009: "too_large", 4501: "unauthorized", 4503: "forbidden", 4504: "protocol_violation"}.get(
        code, "closed"
    )


def describe_close(code: int, reason: str) -> str:
    """A sentence about a close that stops the client, e.g. for `ClientError.message`."""
    name, _, message = parse_close_reason(reason)
    detail = message or name or reason or "no reason given"
    hint = _FATAL_HINTS.get(code)
    return f"server closed the connection with {code} ({detail})" + (f": {hint}" if hint else "")


class Backoff:
    """Exponential backoff with full jitter, capped; `reset()` after a connection succeeds."""

    def __init__(
        self,
        initial_s: float = 0.25,
        cap_s: float = 30.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        """Delays grow from `initial_s` by doubling up to `cap_s`; each is drawn in [d/2, d]."""
        if initial_s <= 0 or cap_s < initial_s:
            raise ValueError("backoff needs 0 < initial_s <= cap_s")
        self.initial_s = initial_s
        self.cap_s = cap_s
        self._rng = rng
        self.attempt = 0

    def next_delay(self, suggested_ms: int | None = None) -> float:
        """Seconds to wait before the next attempt; the server's suggestion wins when it gave one."""
        self.attempt += 1
        if suggested_ms is not None:
            # honoured as given (the server already jittered it), within reason
            return min(suggested_ms / 1000.0, self.cap_s * 4)
        ceiling = min(self.cap_s, self.initial_s * 2.0 ** min(self.attempt - 1, 30))
        # "equal jitter": never shorter than half the ceiling, so a storm still backs off
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        """Start again from the initial delay."""
        self.attempt = 0
