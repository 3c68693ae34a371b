"""The Prometheus counters of the span pipeline, so a collector that is down shows on a dashboard."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

DROP_REASONS: Final = ("queue_full", "export_failed")


class SpanCounters:
    """`dash_otel_spans_dropped_total{reason}`, `dash_otel_spans_exported_total`, `dash_otel_tracing_enabled`.

    Created in the registry of the process that exports spans (the server's, or a standalone
    bridge's); every reason is created up front so rate() and alerts see a zero, not no series.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.dropped = Counter(
            "dash_otel_spans_dropped",
            "Finished spans never exported: the export queue was full, or the exporter failed",
            ["reason"],
            registry=registry,
        )
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        self.exported = Counter("dash_otel_spans_exported", "Spans the exporter accepted", registry=registry)
        self.enabled = Gauge(
            "dash_otel_tracing_enabled", "1 when this process exports traces, else 0", registry=registry
        )
