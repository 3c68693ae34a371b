"""Prometheus metrics of one server, in a registry of its own (no global state)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dash_stream.events import PRIORITY_RANK, WELL_KNOWN, Event
from dash_stream.telemetry.counters import SpanCounters

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Tally(Collector):
    """Counters bumped once per frame per subscriber: plain ints (no lock, no label lookup),
    exported as `dash_frames_out_total` and `dash_bytes_out_total` by transport."""

    def __init__(self) -> None:
        self.ws_frames = 0
        self.ws_bytes = 0
        self.sse_frames = 0
        self.sse_bytes = 0

    def collect(self) -> Iterator[Metric]:
        """The counters as Prometheus metric families."""
        frames = CounterMetricFamily("dash_frames_out", "Events frames written", labels=["transport"])
        frames.add_metric(["ws"], self.ws_frames)
        frames.add_metric(["sse"], self.sse_frames)
        yield frames
        sent = CounterMetricFamily("dash_bytes_out", "Bytes of events frames written", labels=["transport"])
        sent.add_metric(["ws"], self.ws_bytes)
        sent.add_metric(["sse"], self.sse_bytes)
        yield sent


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
        # frames and bytes out are counted in plain ints on the hot path and read at scrape time
        self.tally = Tally()
        r.register(self.tally)
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
        self.auth_failures = Counter(
            "dash_auth_failures", "Presented credentials that did not verify", ["transport"], registry=r
        )
        self.http_refused = Counter(
            "dash_http_refused",
            "HTTP connections refused before the app saw a request (slow or oversized headers)",
            ["reason"],
            registry=r,
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
        self.events_by_type = Counter(
            "dash_events_by_type",
            "Events accepted by publish, by well-known type ('other' for the rest) and priority",
            ["type", "priority"],
            registry=r,
        )
        self._by_type = {
            (t, p): self.events_by_type.labels(t, p) for t in (*WELL_KNOWN, "other") for p in PRIORITY_RANK
        }
        self.bus_unavailable = Counter(
            "dash_bus_unavailable",
            "Bus operations that failed: the bus was unreachable (publish and readyz 503s, live reads)",
            ["op"],
            registry=r,
        )
        for op in ("publish", "ready", "live"):
            self.bus_unavailable.labels(op)
        self.connections_limit = Gauge(
            "dash_connections_limit", "The most WebSocket connections this server accepts", registry=r
        )
        self.otel = SpanCounters(r)
        ProcessCollector(registry=r)  # process_open_fds, process_max_fds, memory, CPU

    def count_types(self, events: Iterable[Event]) -> None:
        """Count accepted events by type (bounded: well-known types, else 'other') and priority."""
        children = self._by_type
        for ev in events:
            child = children.get((ev.type, ev.priority))
            if child is None:
                child = children[("other", ev.priority)]
            child.inc()


_ROUTES: Final = frozenset(
    {"/v1/events", "/v1/sse", "/healthz", "/readyz", "/metrics", "/openapi.json", "/asyncapi.json"}
)


class HttpMetricsMiddleware:
    """Counts HTTP responses in `dash_http_requests_total{route,status}`; WebSockets pass straight through."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.counter = metrics.http_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in _ROUTES else "other"
        started = False

        async def counting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.counter.labels(route, str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if not started:  # the outermost error middleware answers 500
                self.counter.labels(route, "500").inc()
            raise
