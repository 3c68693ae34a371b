"""Tracing (OpenTelemetry, the `otel` extra) for the server and the bridge, failsafe and optional.

Nothing imported here needs OpenTelemetry: `start_tracing` imports it only when tracing is on,
so `dash_stream` runs without the extra. The pieces:

- `tracing_config(env, flag=..., deliver_ratio=...)`: on or off, and how to export, from `OTEL_*`.
- `start_tracing(config, counters)`: the running `Tracing` (provider, exporter, span hooks), or
  None when tracing is off or the extra is missing (logged once, serving goes on).
- `SpanCounters(registry)`: `dash_otel_spans_dropped_total` and friends.
- `bridge_tracing(tracing)`: the bridge-facing API (`forward`, `digest`, `client`), a no-op twin
  when `tracing` is None. See docs/operations.md, "Tracing API for the bridge".
"""

from __future__ import annotations

import logging

from dash_stream.telemetry.bridge_api import (
    NOOP_BRIDGE_TRACING,
    BridgeSpan,
    BridgeTracing,
    ClientSpan,
    NoopBridgeTracing,
)
from dash_stream.telemetry.config import TracingConfig, tracing_config
from dash_stream.telemetry.counters import SpanCounters
from dash_stream.telemetry.hooks import FanOutTracing, PublishTracing, SendSpans, Tracing
from dash_stream.telemetry.logcontext import caller_traceparent, current_trace_ids
from dash_stream.telemetry.w3c import TraceParent, format_traceparent, parse_traceparent, trace_id_hex

log = logging.getLogger("dash_stream.telemetry")

__all__ = [
    "NOOP_BRIDGE_TRACING",
    "BridgeSpan",
    "BridgeTracing",
    "ClientSpan",
    "FanOutTracing",
    "NoopBridgeTracing",
    "PublishTracing",
    "SendSpans",
    "SpanCounters",
    "TraceParent",
    "Tracing",
    "TracingConfig",
    "bridge_tracing",
    "caller_traceparent",
    "current_trace_ids",
    "format_traceparent",
    "parse_traceparent",
    "start_tracing",
    "trace_id_hex",
    "tracing_config",
]


def start_tracing(
    config: TracingConfig, counters: SpanCounters, *, service_name: str = "dash-stream"
) -> Tracing | None:
    """Start exporting spans as `config` says; None when tracing is off or cannot start.

    A missing `otel` extra or an exporter that cannot be built is logged and leaves the process
    serving without tracing (telemetry never stops serving). The caller owns the result and must
    call its `shutdown()` on the way out.
    """
    counters.enabled.set(0)
    if not config.enabled:
        return None
    try:
        from dash_stream.telemetry.provider import OtelTracing
    except ImportError as e:
        log.warning(
            "tracing requested (%s) but OpenTelemetry is not installed (pip install 'dash-stream[otel]'): "
            "%s; serving without tracing",
            config.reason,
            e,
        )
        return None
    try:
        return OtelTracing(config, counters, service_name=service_name)
    except Exception as e:
        log.error("tracing could not start (%s: %s); serving without tracing", type(e).__name__, e)
        return None


def bridge_tracing(tracing: Tracing | None) -> BridgeTracing:
    """The bridge-facing tracing API on `tracing`, or the no-op one (context pass-through only)."""
    return tracing.bridge() if tracing is not None else NOOP_BRIDGE_TRACING
