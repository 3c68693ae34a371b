"""The trace ids a log line carries: the current span's, else the caller's `traceparent`.

`caller_traceparent` is set per request by the server's request-id middleware from the request's
(or the WebSocket handshake's) `traceparent` header, so log lines correlate with the caller's
trace even when this server does not trace.
"""

from __future__ import annotations

import contextvars
import sys

from dash_stream.telemetry.w3c import parse_traceparent

caller_traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dash_caller_traceparent", default=None
)


def current_trace_ids() -> tuple[str, str] | None:
    """(`trace_id`, `span_id`) in hex for the log line being written, or None outside any trace.

    OpenTelemetry is consulted only when something already imported it (tracing is on).
    """
    trace_api = sys.modules.get("opentelemetry.trace")
    if trace_api is not None:
        sc = trace_api.get_current_span().get_span_context()
        if sc.is_valid:
            return f"{sc.trace_id:032x}", f"{sc.span_id:016x}"
    parsed = parse_traceparent(caller_traceparent.get())
    if parsed is None:
        return None
    return f"{parsed.trace_id:032x}", f"{parsed.span_id:016x}"
