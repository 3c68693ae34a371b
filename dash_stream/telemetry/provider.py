"""The tracer provider: resource, sampler and OTLP exporter from `OTEL_*`, behind a failsafe processor.

Failsafe (STYLE.md rule 9): spans wait in the SDK's bounded BatchSpanProcessor queue
(`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048) and are exported by its worker thread, so a collector
that is slow or down never blocks serving; the newest spans push the oldest out of a full queue.
Spans lost that way, or in an export that failed, are counted in `dash_otel_spans_dropped_total`.
Shutdown waits at most `shutdown_timeout_s`, then aborts the exporter's retries.

This module imports OpenTelemetry: only `dash_stream.telemetry.start_tracing` imports it, and
only when tracing is on.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

from dash_stream import __version__
from dash_stream.telemetry.bridge import OtelBridgeTracing
from dash_stream.telemetry.bridge_api import BridgeTracing
from dash_stream.telemetry.config import TracingConfig
from dash_stream.telemetry.counters import SpanCounters
from dash_stream.telemetry.hooks import FanOutTracing, PublishTracing
from dash_stream.telemetry.server import FanOutSpans, PublishSpans

log = logging.getLogger("dash_stream.telemetry")

DEFAULT_SERVICE_NAME = "dash-stream"
_DEFAULT_QUEUE = 2048
_DEFAULT_BATCH = 512
_DIGEST_LINKS = 1024  # a digest links every source event; the SDK's default keeps 128


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


class CountingExporter(SpanExporter):
    """Wraps the real exporter: counts exported and failed spans; never raises into the worker."""

    def __init__(self, inner: SpanExporter, counters: SpanCounters, on_export: Callable[[int], None]) -> None:
        self._inner = inner
        self._failed = counters.dropped.labels("export_failed")
        self._exported = counters.exported
        self._on_export = on_export
        self._shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export one batch; a failure is counted, not raised."""
        self._on_export(len(spans))
        try:
            result = self._inner.export(spans)
        except Exception as e:  # an exporter bug must not kill the worker thread
            log.warning("span export raised %s: %s", type(e).__name__, e)
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self._exported.inc(len(spans))
        else:
            self._failed.inc(len(spans))
        return result

    def shutdown(self) -> None:
        """Shut the exporter down once (this aborts its pending retries)."""
        if not self._shut:
            self._shut = True
            self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here."""
        return self._inner.force_flush(timeout_millis)


class FailsafeSpanProcessor(SpanProcessor):
    """The SDK's BatchSpanProcessor, plus a count of spans a full queue drops and a bounded shutdown."""

    def __init__(self, exporter: SpanExporter, counters: SpanCounters, *, shutdown_timeout_s: float) -> None:
        self._max_queue = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", _DEFAULT_QUEUE)
        self._queue_full = counters.dropped.labels("queue_full")
        self._lock = threading.Lock()
        self._queued = 0
        self._shutdown_timeout_s = shutdown_timeout_s
        self._exporter = CountingExporter(exporter, counters, self.exported)
        # a batch never exceeds the queue (the SDK refuses that); schedule delay and export timeout:
        # the SDK reads OTEL_BSP_SCHEDULE_DELAY / OTEL_BSP_EXPORT_TIMEOUT itself
        batch_size = min(_env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _DEFAULT_BATCH), self._max_queue)
        self._batch = BatchSpanProcessor(
            self._exporter, max_queue_size=self._max_queue, max_export_batch_size=batch_size
        )

    def exported(self, n: int) -> None:
        """The worker took `n` spans off the queue."""
        with self._lock:
            self._queued = max(0, self._queued - n)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a sampled span; count it as dropped when the queue is full (the SDK drops the oldest)."""
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        with self._lock:
            full = self._queued >= self._max_queue
            if not full:
                self._queued += 1
        if full:
            self._queue_full.inc()
        self._batch.on_end(span)

    def shutdown(self) -> None:
        """Export what is queued, waiting at most `shutdown_timeout_s`; then give up on the rest."""
        done = threading.Event()

        def run() -> None:
            try:
                self._batch.shutdown()  # type: ignore[no-untyped-call]
            except Exception as e:
                log.warning("span processor shutdown failed: %s", e)
            finally:
                done.set()

        threading.Thread(target=run, name="otel-shutdown", daemon=True).start()
        if not done.wait(self._shutdown_timeout_s):
            log.warning(
                "span export did not finish within %.1fs at shutdown; the rest is dropped",
                self._shutdown_timeout_s,
            )
            self._exporter.shutdown()  # aborts the exporter's retry sleeps; the worker then ends

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export what is queued now (blocks the caller: tests and shutdown only)."""
        return self._batch.force_flush(timeout_millis)


def make_exporter(config: TracingConfig) -> SpanExporter:
    """The exporter `config` names; the OTLP exporters read endpoint, headers, timeout from `OTEL_*`."""
    if config.exporter == "console":
        return ConsoleSpanExporter()
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def endpoint_of(config: TracingConfig) -> str:
    """Where spans go, as the exporter will resolve it (for the start-up log)."""
    if config.exporter == "console":
        return "stdout"
    env = os.environ
    if config.protocol == "grpc":
        return (
            env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or "http://localhost:4317"
        )
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
    return f"{base.removesuffix('/')}/v1/traces"


def make_resource(default_service_name: str = DEFAULT_SERVICE_NAME) -> Resource:
    """`OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`, defaulting service.name and service.version."""
    detected = Resource.create()
    extra: dict[str, str] = {}
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        extra[SERVICE_NAME] = default_service_name
    if SERVICE_VERSION not in detected.attributes:
        extra[SERVICE_VERSION] = __version__
    return detected.merge(Resource(extra)) if extra else detected


class OtelTracing:
    """A tracer provider with the failsafe export pipeline, and the server's span hooks on it."""

    def __init__(
        self, config: TracingConfig, counters: SpanCounters, *, service_name: str = DEFAULT_SERVICE_NAME
    ) -> None:
        self.config = config
        limits = SpanLimits(max_links=None if os.environ.get("OTEL_SPAN_LINK_COUNT_LIMIT") else _DIGEST_LINKS)
        # the sampler comes from OTEL_TRACES_SAMPLER(_ARG); default parentbased_always_on
        self.provider = TracerProvider(
            resource=make_resource(service_name), span_limits=limits, shutdown_on_exit=False
        )
        self.processor = FailsafeSpanProcessor(
            make_exporter(config), counters, shutdown_timeout_s=config.shutdown_timeout_s
        )
        self.provider.add_span_processor(self.processor)
        tracer = self.provider.get_tracer("dash_stream", __version__)
        self.publish: PublishTracing = PublishSpans(tracer)
        self.fan_out: FanOutTracing = FanOutSpans(
            tracer,
            deliver_ratio=config.deliver_ratio,
            max_links=config.max_links,
            max_deliver_spans=config.max_deliver_spans,
        )
        self._counters = counters
        counters.enabled.set(1)

    def bridge(self) -> BridgeTracing:
        """The bridge-facing API on this provider."""
        return OtelBridgeTracing(self.provider.get_tracer("dash_stream.bridge", __version__))

    def describe(self) -> str:
        """Exporter, endpoint, service name and sampler, for the start-up log."""
        service = self.provider.resource.attributes.get(SERVICE_NAME)
        sampler = self.provider.sampler.get_description()
        return (
            f"{self.config.exporter} {self.config.protocol} -> {endpoint_of(self.config)}, "
            f"service.name={service}, sampler={sampler}, deliver ratio={self.config.deliver_ratio:g} "
            f"({self.config.reason})"
        )

    def shutdown(self) -> None:
        """Flush within the timeout and stop; safe to call twice."""
        self._counters.enabled.set(0)
        self.provider.shutdown()
