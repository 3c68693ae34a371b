"""Prometheus metrics of the bridge, registered in a registry the caller passes in (no globals).

Embedded in `dash-stream serve`, the server's registry is passed, so the bridge's metrics appear at
the server's `/metrics`; standalone, the bridge makes its own and may serve it (`[metrics] listen`).
Label values are bounded by the config: route ids, receiver names, reasons, status classes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SINK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BridgeMetrics:
    """Every metric of one bridge."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Register the metrics in `registry` (a new private one when None)."""
        r = self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.events_in = Counter("dash_bridge_events_in", "Events read from the source", registry=r)
        self.dropped = Counter(
            "dash_bridge_events_dropped",
            "Events not routed anywhere, by reason (loop, filter, unrouted)",
            ["reason"],
            registry=r,
        )
        self.deduped = Counter(
            "dash_bridge_deduped",
            "Deliveries dropped as repeats within the dedup window",
            ["route"],
            registry=r,
        )
        self.inhibited = Counter(
            "dash_bridge_inhibited", "Deliveries muted by an inhibit rule", ["route"], registry=r
        )
        self.throttled = Counter(
            "dash_bridge_throttled", "Deliveries dropped by the route's token bucket", ["route"], registry=r
        )
        self.digested = Counter(
            "dash_bridge_digested",
            "Events folded into digest messages of two or more events",
            ["route"],
            registry=r,
        )
        self.messages = Counter(
            "dash_bridge_messages", "Messages built (one event or a digest)", ["route"], registry=r
        )
        self.forwarded = Counter(
            "dash_bridge_forwarded", "Messages the sink accepted", ["receiver"], registry=r
        )
        self.forwarded_events = Counter(
            "dash_bridge_forwarded_events",
            "Source events in messages the sink accepted",
            ["receiver"],
            registry=r,
        )
        self.retried = Counter(
            "dash_bridge_retried", "Sink attempts that were retried", ["receiver"], registry=r
        )
        self.dead_lettered = Counter(
            "dash_bridge_dead_lettered",
            "Messages stored in the dead-letter queue",
            ["receiver", "reason"],
            registry=r,
        )
        self.dlq_dropped = Counter(
            "dash_bridge_dlq_dropped", "Messages lost because the dead-letter queue was full", registry=r
        )
        self.split = Counter(
            "dash_bridge_split", "Messages split into parts to fit the body limit", ["receiver"], registry=r
        )
        self.sink_requests = Counter(
            "dash_bridge_sink_requests",
            "Sink requests by outcome (2xx, 4xx, 5xx, error)",
            ["receiver", "outcome"],
            registry=r,
        )
        self.sink_latency = Histogram(
            "dash_bridge_sink_latency_seconds",
            "Latency of one sink request",
            ["receiver"],
            buckets=SINK_BUCKETS,
            registry=r,
        )
        self.pending_events = Gauge(
            "dash_bridge_pending_events", "Events waiting in digest groups", registry=r
        )
        self.groups = Gauge("dash_bridge_groups", "Open digest groups", registry=r)
        self.in_flight = Gauge("dash_bridge_in_flight_messages", "Messages not yet settled", registry=r)
        self.source_connected = Gauge("dash_bridge_source_up", "1 while the source is delivering", registry=r)
        self.source_gaps = Counter(
            "dash_bridge_source_gaps",
            "Times the source could not resume from the cursor",
            ["reason"],
            registry=r,
        )
        self.checkpoints = Counter("dash_bridge_checkpoints", "State file writes", registry=r)
        self.checkpoint_errors = Counter(
            "dash_bridge_checkpoint_errors", "Failed state file writes", registry=r
        )
        self.lag = Gauge(
            "dash_bridge_watermark_lag_events",
            "Deliveries held between the watermark and the source",
            registry=r,
        )
