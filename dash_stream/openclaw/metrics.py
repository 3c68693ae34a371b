"""Prometheus metrics of the watcher, in the registry it is given (the server's when embedded)."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ORIGIN_OUTCOMES: Final = ("bridge", "other", "inherited", "unresolved")
TRANSLATION_ERRORS: Final = ("frame", "invalid_event", "topic_fallback")


class WatchMetrics:
    """`dash_openclaw_*`: runs seen, events published, reconnects, translation errors, and friends."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.frames = Counter("dash_openclaw_frames", "Gateway event frames received", ["event"], registry=r)
        self.runs_seen = Counter("dash_openclaw_runs_seen", "Distinct agent runs seen", registry=r)
        self.runs_origin = Counter(
            "dash_openclaw_runs_origin", "Runs by how their origin was decided", ["outcome"], registry=r
        )
        for outcome in ORIGIN_OUTCOMES:
            self.runs_origin.labels(outcome)
        self.published = Counter(
            "dash_openclaw_events_published",
            "Events the server or bus accepted (dedup repeats excluded where the sink can tell)",
            ["type"],
            registry=r,
        )
        self.duplicates = Counter(
            "dash_openclaw_events_duplicate", "Events the bus already had (same source and id)", registry=r
        )
        self.skipped = Counter(
            "dash_openclaw_events_skipped",
            "Events this watcher had already sent (not sent again)",
            registry=r,
        )
        self.rejected = Counter(
            "dash_openclaw_events_rejected", "Events refused for good by the server", ["reason"], registry=r
        )
        self.publish_retries = Counter(
            "dash_openclaw_publish_retries", "Publish attempts repeated after a transient failure", registry=r
        )
        self.reconnects = Counter(
            "dash_openclaw_reconnects", "Gateway connections opened again after one was lost", registry=r
        )
        self.connect_failures = Counter(
            "dash_openclaw_connect_failures",
            "Failed attempts to connect to the gateway",
            ["reason"],
            registry=r,
        )
        self.translation_errors = Counter(
            "dash_openclaw_translation_errors",
            "Frames that could not be translated, or events that failed validation",
            ["reason"],
            registry=r,
        )
        for reason in TRANSLATION_ERRORS:
            self.translation_errors.labels(reason)
        self.connected = Gauge("dash_openclaw_connected", "1 while connected to the gateway", registry=r)
        self.queued = Gauge("dash_openclaw_queue_events", "Events waiting to be published", registry=r)
        self.held_runs = Gauge(
            "dash_openclaw_held_runs", "Runs whose events wait for their origin", registry=r
        )
        self.latency = Histogram(
            "dash_openclaw_latency_seconds",
            "From the gateway's event time to the publish being acknowledged",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
