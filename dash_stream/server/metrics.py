"""Prometheus metrics of one server, in a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every metric the server exports at /metrics."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge("dash_connections", "Open client connections", ["transport"], registry=r)
        self.subscriptions = Gauge("dash_subscriptions", "Active subscriptions", registry=r)
        self.events_in = Counter("dash_events_in", "Events accepted by publish", ["transport"], registry=r)
        self.duplicates = Counter("dash_events_duplicate", "Publishes dropped as dedup repeats", registry=r)
        self.events_out = Counter("dash_events_out", "Events read from the bus by the hub", registry=r)
        self.deliveries = Counter("dash_deliveries", "Events delivered to subscriptions", registry=r)
        self.frames_out = Counter("dash_frames_out", "Events frames written", ["transport"], registry=r)
        self.bytes_out = Counter("dash_bytes_out", "Bytes of frames written", ["transport"], registry=r)
        self.outbox_frames = Gauge("dash_outbox_frames", "Frames queued in connection outboxes", registry=r)
        self.slow_consumer_closes = Counter(
            "dash_slow_consumer_closes", "Connections closed because their outbox overflowed", registry=r
        )
        self.recoveries = Counter(
            "dash_recoveries", "Subscriptions with a cursor, by outcome", ["outcome"], registry=r
        )
        self.replayed = Counter("dash_replayed_events", "Events replayed from history", registry=r)
        self.errors = Counter("dash_errors", "Error replies, by code", ["code"], registry=r)
        self.closes = Counter(
            "dash_ws_closes", "WebSocket closes initiated by the server", ["code"], registry=r
        )
        self.rate_limited = Counter(
            "dash_rate_limited", "Requests refused by a rate limit", ["what"], registry=r
        )
        self.publish_to_deliver = Histogram(
            "dash_publish_to_deliver_seconds",
            "Time from bus acceptance to the frame written to the last subscriber of a batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bus_publish = Histogram(
            "dash_bus_publish_seconds", "Latency of bus publish calls", buckets=LATENCY_BUCKETS, registry=r
        )
        self.http_requests = Counter(
            "dash_http_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.lagged = Counter("dash_hub_lagged", "Times the hub fell behind retention", registry=r)
