"""W3C trace-context strings (`traceparent`), parsed and formatted without OpenTelemetry.

`traceparent` = `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`; an all-zero id is invalid.
These helpers let the server pass a caller's context through when tracing is off, and let the
fan-out read the contexts stored in events cheaply when it is on.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

_TRACEPARENT: Final = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16


class TraceParent(NamedTuple):
    """The parts of a valid `traceparent`."""

    trace_id: int
    span_id: int
    flags: int

    @property
    def sampled(self) -> bool:
        """Whether the caller recorded this trace (flag bit 0)."""
        return bool(self.flags & 1)


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The parts of `value`, or None when it is absent or not a valid traceparent.

    Version `ff` is invalid; a future version may carry more fields after the flags (W3C rules).
    """
    if not value or len(value) < 55:
        return None
    m = _TRACEPARENT.match(value)
    if m is None or value.startswith("ff") or (value.startswith("00") and m.group(4) is not None):
        return None
    trace_hex, span_hex, flags_hex = m.group(1), m.group(2), m.group(3)
    if trace_hex == _ZERO_TRACE or span_hex == _ZERO_SPAN:
        return None
    return TraceParent(int(trace_hex, 16), int(span_hex, 16), int(flags_hex, 16))


def valid_traceparent(value: str | None) -> bool:
    """Whether `value` is a traceparent a consumer can continue."""
    return parse_traceparent(value) is not None


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    """The version-00 `traceparent` of a span context."""
    return f"00-{trace_id:032x}-{span_id:016x}-{flags & 0xFF:02x}"


def trace_id_hex(value: str | None) -> str | None:
    """The trace id of a traceparent as 32 hex digits (what Jaeger's search box takes), or None."""
    parsed = parse_traceparent(value)
    return None if parsed is None else f"{parsed.trace_id:032x}"
