"""The telemetry package in-process: configuration, W3C parsing, the failsafe exporter pipeline,
the bridge API on a real SDK tracer (in-memory exporter), log correlation, and the server without
OpenTelemetry installed."""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from dash_stream.bus.base import Record
from dash_stream.bus.cursor import Cursor
from dash_stream.bus.memory import MemoryBus
from dash_stream.events import EventIn, complete
from dash_stream.filters import TopicSet
from dash_stream.logs import JsonFormatter, QuietTelemetryFilter, RedactFilter
from dash_stream.server.hub import Hub, Subscription
from dash_stream.server.metrics import Metrics
from dash_stream.telemetry import (
    NOOP_BRIDGE_TRACING,
    SpanCounters,
    bridge_tracing,
    caller_traceparent,
    parse_traceparent,
    tracing_config,
)
from dash_stream.telemetry.bridge import OtelBridgeTracing
from dash_stream.telemetry.provider import FailsafeSpanProcessor
from dash_stream.telemetry.server import FanOutSpans

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TP = f"00-{TRACE}-00f067aa0ba902b7-01"


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("env", "flag", "enabled"),
    [
        ({}, None, False),
        ({}, True, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, None, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, None, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, None, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True, False),
        ({"OTEL_SDK_DISABLED": "TRUE"}, True, False),
        ({"OTEL_SDK_DISABLED": "false"}, True, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False, False),
    ],
)
def test_tracing_is_on_when_asked_for_and_off_when_disabled(
    env: dict[str, str], flag: bool | None, enabled: bool
) -> None:
    assert tracing_config(env, flag=flag).enabled is enabled


def test_the_protocol_comes_from_the_otlp_variables() -> None:
    assert tracing_config({}, flag=True).protocol == "http/protobuf"
    assert tracing_config({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, flag=True).protocol == "grpc"
    signal = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}
    assert tracing_config(signal, flag=True).protocol == "http/protobuf"


@pytest.mark.parametrize(
    ("env", "ratio", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, 0.01, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, 0.01, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({}, 1.5, "otel_deliver_ratio"),
    ],
)
def test_settings_the_server_cannot_honour_are_refused_by_name(
    env: dict[str, str], ratio: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        tracing_config(env, flag=True, deliver_ratio=ratio)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ],
)
def test_invalid_traceparents_are_rejected(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_a_valid_traceparent_parses_into_ids_and_flags() -> None:
    parsed = parse_traceparent(TP)
    assert parsed is not None
    assert (f"{parsed.trace_id:032x}", f"{parsed.span_id:016x}", parsed.sampled) == (
        TRACE,
        "00f067aa0ba902b7",
        True,
    )
    future = parse_traceparent(f"01-{TRACE}-00f067aa0ba902b7-00-more")
    assert future is not None and not future.sampled


# ---------------------------------------------------------------- the failsafe export pipeline


class _HangingExporter(SpanExporter):
    """An exporter stuck on a collector that never answers, until released or shut down."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.released.wait(30)
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.released.set()


def _sample(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("dash_otel_spans_dropped_total", {"reason": reason}) or 0.0


def test_a_full_queue_and_a_failed_export_are_counted_as_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "2")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    registry = CollectorRegistry()
    exporter = _HangingExporter()
    processor = FailsafeSpanProcessor(exporter, SpanCounters(registry), shutdown_timeout_s=5)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    tracer.start_span("first").end()
    tracer.start_span("second").end()  # a full batch: the worker takes both and hangs exporting them
    assert exporter.entered.wait(10)
    for i in range(5):  # two fit in the queue, three push older ones out
        tracer.start_span(f"s{i}").end()
    assert _sample(registry, "queue_full") == 3
    exporter.released.set()
    assert processor.force_flush()
    assert _sample(registry, "export_failed") == 4  # both exports failed
    provider.shutdown()


def test_shutdown_gives_up_on_a_collector_that_never_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    exporter = _HangingExporter()
    processor = FailsafeSpanProcessor(exporter, SpanCounters(CollectorRegistry()), shutdown_timeout_s=0.2)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    provider.get_tracer("test").start_span("stuck").end()
    started = time.monotonic()
    provider.shutdown()
    assert exporter.released.is_set()  # the stuck export was aborted, not waited for
    assert time.monotonic() - started < 25


# ---------------------------------------------------------------- the bridge API


@pytest.fixture
def memory() -> tuple[OtelBridgeTracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return OtelBridgeTracing(provider.get_tracer("test")), exporter


def _by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def test_forward_continues_the_events_trace_into_the_openclaw_request(
    memory: tuple[OtelBridgeTracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory
    headers: dict[str, str] = {}
    with tracing.forward(TP, "k=v", topic="swarm.s1", event_id="e1", route="oncall") as fwd:
        with tracing.client("post", "https://user:pw@gw.example:8443/hooks/agent?token=x", headers) as call:
            call.response(202)
        assert fwd.traceparent is not None and fwd.traceparent.startswith(f"00-{TRACE}-")
    spans = _by_name(exporter)
    forward, client = spans["forward swarm.s1"], spans["POST"]
    assert forward.kind is SpanKind.CONSUMER and client.kind is SpanKind.CLIENT
    assert forward.parent is not None and f"{forward.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert [f"{lk.context.span_id:016x}" for lk in forward.links] == ["00f067aa0ba902b7"]
    assert forward.attributes is not None and forward.attributes["dash.bridge.route"] == "oncall"
    assert forward.attributes["messaging.system"] == "dash-stream"
    assert client.parent is not None and client.parent.span_id == forward.context.span_id
    assert headers["traceparent"] == f"00-{TRACE}-{client.context.span_id:016x}-01"
    assert headers["tracestate"] == "k=v"
    assert client.attributes is not None
    assert client.attributes["url.full"] == "https://gw.example:8443/hooks/agent"  # no credentials, no token
    assert client.attributes["http.response.status_code"] == 202


def test_a_failed_attempt_marks_the_client_span(
    memory: tuple[OtelBridgeTracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory
    with tracing.forward(TP, topic="t", event_id="e", route="r"):
        with tracing.client("POST", "http://gw/hooks/wake", {}, attempt=2) as call:
            call.response(503)
        with pytest.raises(ConnectionError), tracing.client("POST", "http://gw/hooks/wake", {}, attempt=3):
            raise ConnectionError("refused")
    first, second = [s for s in exporter.get_finished_spans() if s.name == "POST"]
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes is not None and first.attributes["http.request.resend_count"] == 1
    assert second.status.status_code is StatusCode.ERROR


def test_a_digest_links_every_source_event(memory: tuple[OtelBridgeTracing, InMemorySpanExporter]) -> None:
    tracing, exporter = memory
    sources = [f"00-{i:032x}-{i:016x}-01" for i in range(1, 6)] + [None, "garbage"]
    with tracing.digest(sources, route="oncall", group="swarm=s1", message_id="dbm-1"):
        pass
    digest = _by_name(exporter)["digest oncall"]
    assert sorted(lk.context.span_id for lk in digest.links) == [1, 2, 3, 4, 5]
    assert digest.parent is None  # sources from several traces: a trace of its own
    assert digest.attributes is not None and digest.attributes["messaging.batch.message_count"] == 7
    same_trace = [f"00-{TRACE}-{i:016x}-01" for i in range(1, 4)]
    with tracing.digest(same_trace, route="one", group="g", message_id="dbm-2"):
        pass
    one = _by_name(exporter)["digest one"]
    assert one.parent is not None and f"{one.context.trace_id:032x}" == TRACE


def test_with_tracing_off_the_bridge_still_passes_the_events_context_to_openclaw() -> None:
    tracing = bridge_tracing(None)
    assert tracing is NOOP_BRIDGE_TRACING and not tracing.enabled
    headers: dict[str, str] = {}
    with (
        tracing.forward(TP, "k=v", topic="t", event_id="e", route="r"),
        tracing.client("POST", "http://gw", headers),
    ):
        pass
    assert headers == {"traceparent": TP, "tracestate": "k=v"}
    after: dict[str, str] = {}
    with (
        tracing.digest([TP], route="r", group="g", message_id="m"),
        tracing.client("POST", "http://gw", after),
    ):
        pass
    with tracing.client("POST", "http://gw", after):
        pass
    assert after == {}


# ---------------------------------------------------------------- logs


def _record(msg: str = "hello") -> logging.LogRecord:
    return logging.LogRecord("dash_stream.test", logging.INFO, __file__, 1, msg, None, None)


def test_log_lines_carry_the_callers_trace_ids() -> None:
    record = _record()
    token = caller_traceparent.set(TP)
    try:
        RedactFilter().filter(record)
    finally:
        caller_traceparent.reset(token)
    doc = json.loads(JsonFormatter().format(record))
    assert (doc["trace_id"], doc["span_id"]) == (TRACE, "00f067aa0ba902b7")
    assert "request_id" in doc


def test_log_lines_carry_the_current_spans_ids(
    memory: tuple[OtelBridgeTracing, InMemorySpanExporter],
) -> None:
    tracing, _ = memory
    record = _record()
    with tracing.forward(TP, topic="t", event_id="e", route="r") as span:
        RedactFilter().filter(record)
    assert span.traceparent is not None
    doc = json.loads(JsonFormatter().format(record))
    assert doc["trace_id"] == TRACE and doc["span_id"] == span.traceparent[36:52]


def test_log_lines_outside_a_trace_have_no_trace_ids() -> None:
    record = _record()
    RedactFilter().filter(record)
    doc = json.loads(JsonFormatter().format(record))
    assert "trace_id" not in doc and "span_id" not in doc


def test_opentelemetrys_own_repeated_complaints_are_let_through_once_a_minute() -> None:
    quiet = QuietTelemetryFilter()
    noisy = logging.LogRecord(
        "opentelemetry.exporter.x", logging.ERROR, __file__, 1, "Failed %s", ("a",), None
    )
    assert quiet.filter(noisy)
    assert not quiet.filter(noisy)
    assert quiet.filter(_record()) and quiet.filter(_record())


# ---------------------------------------------------------------- without the otel extra

_WITHOUT_OTEL = """
import os, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"{name} is blocked: the otel extra is not installed")
        return None

sys.meta_path.insert(0, Block())
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
from starlette.testclient import TestClient
from dash_stream.server.app import create_app
from dash_stream.settings import Settings

TP = sys.argv[1]
with TestClient(create_app(Settings(dev=True))) as client:
    r = client.post("/v1/events", json={"topic": "a.b", "type": "t"}, headers={"traceparent": TP})
    assert r.status_code == 202, r.text
    event = client.get("/v1/events", params={"topics": "a.b"}).json()["events"][0]
    assert event["traceparent"] == TP, event
    assert "dash_otel_tracing_enabled 0.0" in client.get("/metrics").text
assert not [m for m in sys.modules if m.startswith("opentelemetry")]
print("served without opentelemetry")
"""


def test_the_server_runs_without_opentelemetry_installed() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OTEL, TP], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "served without opentelemetry" in done.stdout
    assert "OpenTelemetry is not installed" in done.stderr  # said once, loudly


# ---------------------------------------------------------------- the fan-out spans on a real Hub


class _Dashboard:
    """A hub subscriber that counts what it is handed."""

    def __init__(self) -> None:
        self.received = 0
        self.closed = False
        self.session = "sess"

    def deliver(self, sub: Subscription, records: list[Record]) -> None:
        sub.advance_through(records)
        self.received += len(records)

    def advance(self, sub: Subscription) -> None:
        pass

    def lost(self, reason: str) -> None:
        pass


def _fan_out(
    ratio: float, subscribers: int, priority: str, *, buffering: int = 0
) -> tuple[list[ReadableSpan], list[_Dashboard]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = FanOutSpans(provider.get_tracer("test"), deliver_ratio=ratio, max_links=128)
    hub = Hub(MemoryBus(), Metrics(), tracing=spans)
    dashboards = []
    for i in range(subscribers):
        dashboard = _Dashboard()
        sub = Subscription(dashboard, f"s{i}", TopicSet(["a.>"]), None, 1000)
        if i >= buffering:
            sub.buffer, sub.cursor = None, Cursor("e", {0: -1})
        hub.add(sub)
        dashboards.append(dashboard)
    event, encoded = complete(EventIn(topic="a.b", type="t", priority=priority), traceparent=TP)
    hub.dispatch([Record(event, 0, 0, "e.0-0", encoded, time.time())])
    return list(exporter.get_finished_spans()), dashboards


def test_every_subscription_is_served_whether_or_not_it_is_traced() -> None:
    for ratio, priority in ((0.0, "normal"), (0.3, "normal"), (1.0, "normal"), (0.0, "critical")):
        _, dashboards = _fan_out(ratio, 200, priority)
        assert [d.received for d in dashboards] == [1] * 200, (ratio, priority)


def test_a_critical_event_is_deliver_traced_up_to_the_cap() -> None:
    spans, _ = _fan_out(0.0, 200, "critical")
    delivers = [s for s in spans if s.name == "deliver a.b"]
    process = next(s for s in spans if s.name == "process a.b")
    assert len(delivers) == 64
    assert process.attributes is not None and process.attributes["dash.deliver.spans"] == 64
    assert all(d.parent is not None and d.parent.span_id == process.context.span_id for d in delivers)
    assert f"{process.context.trace_id:032x}" == TRACE  # one event: a child in its trace


def test_a_normal_event_at_ratio_zero_gets_only_a_process_span() -> None:
    spans, _ = _fan_out(0.0, 50, "normal")
    assert [s.name for s in spans] == ["process a.b"]
    assert [f"{lk.context.span_id:016x}" for lk in spans[0].links] == ["00f067aa0ba902b7"]


def test_the_deliver_ratio_samples_that_share_of_subscriptions() -> None:
    counts = [sum(s.name == "deliver a.b" for s in _fan_out(0.25, 200, "normal")[0]) for _ in range(10)]
    assert 25 <= statistics.mean(counts) <= 75  # expected 50 of 200 (capped at 64)


def test_recovering_subscriptions_are_buffered_not_traced() -> None:
    spans, dashboards = _fan_out(1.0, 10, "critical", buffering=4)
    assert sum(s.name == "deliver a.b" for s in spans) == 6
    assert [d.received for d in dashboards] == [0] * 4 + [1] * 6


def test_the_exporter_follows_the_otlp_protocol() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    from dash_stream.telemetry.provider import make_exporter

    for config, kind in (
        (tracing_config({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, flag=True), GrpcExporter),
        (tracing_config({}, flag=True), HttpExporter),
        (tracing_config({"OTEL_TRACES_EXPORTER": "console"}), ConsoleSpanExporter),
    ):
        exporter = make_exporter(config)
        try:
            assert isinstance(exporter, kind)
        finally:
            exporter.shutdown()
