"""The bridge's spans on a real tracer (the API and its no-op twin are in `bridge_api`).

- `forward <topic>` (CONSUMER): one per event the bridge forwards, a child of the event's stored
  context (the server's `send` span), so the publisher's trace continues into OpenClaw.
- `digest <route>` (CONSUMER): one per digest message, linked to every source event; a child in
  their trace when they all share one, else the root of its own (messaging batch conventions).
- `<METHOD>` (CLIENT): one per HTTP attempt to OpenClaw (HTTP client conventions); its context is
  written into the request's `traceparent`/`tracestate` headers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, MutableMapping
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    set_span_in_context,
)
from opentelemetry.util.types import AttributeValue

from dash_stream.telemetry import names as n
from dash_stream.telemetry.bridge_api import BridgeSpan, ClientSpan
from dash_stream.telemetry.server import span_context, traceparent_of

_DIGEST_LINKS = 1024


class _Span:
    """A recorded span behind the bridge API."""

    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    @property
    def traceparent(self) -> str | None:
        """This span's context as a `traceparent`."""
        return traceparent_of(self._span)[0]

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        """Record one attribute."""
        self._span.set_attribute(key, value)

    def record_error(self, error: BaseException | str) -> None:
        """Mark the span failed."""
        kind = error if isinstance(error, str) else type(error).__name__
        self._span.set_attribute(n.ERROR_TYPE, kind)
        self._span.set_status(Status(StatusCode.ERROR, str(error)[:200]))

    def response(self, status: int) -> None:
        """Record the HTTP status; 4xx and 5xx fail a CLIENT span (HTTP conventions)."""
        self._span.set_attribute("http.response.status_code", status)
        if status >= 400:
            self._span.set_attribute(n.ERROR_TYPE, str(status))
            self._span.set_status(Status(StatusCode.ERROR))


def _safe_url(url: str) -> tuple[str, str | None, int | None]:
    """The URL without credentials, query or fragment (which may carry tokens); host and port."""
    parts = urlsplit(url)
    host = parts.hostname
    netloc = host or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")), host, port


class OtelBridgeTracing:
    """`BridgeTracing` on an OpenTelemetry tracer."""

    def __init__(self, tracer: Tracer, *, max_links: int = _DIGEST_LINKS) -> None:
        self._tracer = tracer
        self._max_links = max_links

    @property
    def enabled(self) -> bool:
        """Always True."""
        return True

    @contextlib.contextmanager
    def forward(
        self,
        traceparent: str | None,
        tracestate: str | None = None,
        *,
        topic: str,
        event_id: str,
        route: str,
        receiver: str | None = None,
    ) -> Iterator[BridgeSpan]:
        """A CONSUMER span `forward <topic>`, current for the block (so `client` spans nest in it)."""
        sc = span_context(traceparent, tracestate)
        attributes: dict[str, AttributeValue] = {
            n.MESSAGING_SYSTEM: n.SYSTEM,
            n.DESTINATION: topic,
            n.MESSAGE_ID: event_id,
            n.OPERATION_TYPE: n.PROCESS,
            n.OPERATION_NAME: n.FORWARD,
            n.CONSUMER_GROUP: "bridge",
            n.ROUTE: route,
        }
        if receiver is not None:
            attributes[n.RECEIVER] = receiver
        parent = set_span_in_context(NonRecordingSpan(sc)) if sc is not None else Context()
        with self._tracer.start_as_current_span(
            f"{n.FORWARD} {topic}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=[Link(sc)] if sc is not None else None,
            attributes=attributes,
        ) as span:
            yield _Span(span)

    @contextlib.contextmanager
    def digest(
        self,
        sources: Iterable[str | None],
        *,
        route: str,
        group: str,
        message_id: str,
        receiver: str | None = None,
    ) -> Iterator[BridgeSpan]:
        """A CONSUMER span `digest <route>` linked to every source event's context."""
        links: list[Link] = []
        first: SpanContext | None = None
        one_trace = True
        count = dropped = 0
        for traceparent in sources:
            count += 1
            sc = span_context(traceparent)
            if sc is None:
                continue
            if first is None:
                first = sc
            elif sc.trace_id != first.trace_id:
                one_trace = False
            if len(links) < self._max_links:
                links.append(Link(sc))
            else:
                dropped += 1
        attributes: dict[str, AttributeValue] = {
            n.MESSAGING_SYSTEM: n.SYSTEM,
            n.OPERATION_TYPE: n.PROCESS,
            n.OPERATION_NAME: n.DIGEST,
            n.CONSUMER_GROUP: "bridge",
            n.BATCH_COUNT: count,
            n.ROUTE: route,
            n.GROUP: group,
            n.BRIDGE_MESSAGE_ID: message_id,
        }
        if receiver is not None:
            attributes[n.RECEIVER] = receiver
        if dropped:
            attributes[n.LINKS_DROPPED] = dropped
        parent = (
            set_span_in_context(NonRecordingSpan(first)) if first is not None and one_trace else Context()
        )
        with self._tracer.start_as_current_span(
            f"{n.DIGEST} {route}", context=parent, kind=SpanKind.CONSUMER, links=links, attributes=attributes
        ) as span:
            yield _Span(span)

    @contextlib.contextmanager
    def client(
        self, method: str, url: str, headers: MutableMapping[str, str], *, attempt: int = 1
    ) -> Iterator[ClientSpan]:
        """A CLIENT span for one HTTP attempt, child of the current span; injects its context."""
        full, host, port = _safe_url(url)
        verb = method.upper()
        attributes: dict[str, AttributeValue] = {"http.request.method": verb, "url.full": full}
        if host is not None:
            attributes["server.address"] = host
        if port is not None:
            attributes["server.port"] = port
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        with self._tracer.start_as_current_span(verb, kind=SpanKind.CLIENT, attributes=attributes) as span:
            traceparent, tracestate = traceparent_of(span)
            if traceparent is not None:
                headers["traceparent"] = traceparent
                if tracestate:
                    headers["tracestate"] = tracestate
            yield _Span(span)
