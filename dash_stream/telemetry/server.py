"""The server's spans: `send` per published event, `process` per fan-out batch, sampled `deliver`.

- `send <topic>` (PRODUCER): one per event, a child of the event's own `traceparent` or else the
  transport's (the HTTP request's header, the WebSocket handshake's). Its context is what the
  event stores, so every consumer, on every node, from live or from history, continues it.
- `process <topic>` (CONSUMER; `process` when the batch spans topics): one per bus batch a node
  hands to its subscriptions, linked to every sampled event's context (at most `max_links`). When
  all of them belong to one trace the span is also a child in that trace; otherwise it starts
  its own, as the messaging conventions say for batches.
- `deliver <topic>` (PRODUCER, a child of `process`): the hand-over to one subscription, for a
  `deliver_ratio` share of them, and always when the records include a high or critical event;
  at most `max_deliver_spans` per batch, so that one batch to thousands of subscriptions stays
  cheap. The other subscriptions get the hub's untraced hand-over, with no per-subscription cost.

Batches whose events carry no sampled context cost one pass over the batch and no span.
Tracing never breaks delivery: a failure inside the span bookkeeping is logged and delivery
goes on untraced.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TraceState,
    set_span_in_context,
)
from opentelemetry.util.types import AttributeValue

from dash_stream.bus.base import Incoming, Published, Record
from dash_stream.events import EventIn
from dash_stream.telemetry import names as n
from dash_stream.telemetry.hooks import HandOverAll
from dash_stream.telemetry.w3c import format_traceparent, parse_traceparent

if TYPE_CHECKING:
    from dash_stream.server.hub import Subscription

log = logging.getLogger("dash_stream.telemetry")

_URGENT: Final = frozenset({"high", "critical"})
_SAMPLED_FLAG_DIGITS: Final = frozenset("13579bdf")  # the flags' low hex digit with bit 0 set
_EMPTY: Final = Context()


def span_context(traceparent: str | None, tracestate: str | None = None) -> SpanContext | None:
    """The remote span context a stored `traceparent` names, or None when it is absent or invalid."""
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return None
    state = TraceState.from_header([tracestate]) if tracestate else None
    return SpanContext(
        parsed.trace_id,
        parsed.span_id,
        is_remote=True,
        trace_flags=TraceFlags(parsed.flags),
        trace_state=state,
    )


def parent_context(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """An OpenTelemetry context whose current span is the remote one `traceparent` names."""
    sc = span_context(traceparent, tracestate)
    return None if sc is None else set_span_in_context(NonRecordingSpan(sc))


def traceparent_of(span: Span) -> tuple[str | None, str | None]:
    """A span's own context as (`traceparent`, `tracestate`); (None, None) when it has none."""
    sc = span.get_span_context()
    if not sc.is_valid:
        return None, None
    return format_traceparent(sc.trace_id, sc.span_id, sc.trace_flags), sc.trace_state.to_header() or None


def _fail(span: Span, error: BaseException) -> None:
    code = getattr(error, "code", None)
    span.set_attribute(
        n.ERROR_TYPE, str(getattr(code, "value", code)) if code is not None else type(error).__name__
    )
    span.set_status(Status(StatusCode.ERROR, str(error)[:200]))


class SendSpansImpl:
    """The send spans of one publish request (see `dash_stream.telemetry.hooks.SendSpans`)."""

    __slots__ = ("_spans", "_tracer", "_transport", "_transport_parsed", "_transport_state", "_transport_tp")

    def __init__(self, tracer: Tracer, traceparent: str | None, tracestate: str | None) -> None:
        self._tracer = tracer
        self._transport_tp = traceparent
        self._transport_state = tracestate
        self._transport: Context | None = None
        self._transport_parsed = False
        self._spans: list[Span] = []

    def _parent(self, ev: EventIn) -> Context:
        if ev.traceparent is not None:
            own = parent_context(ev.traceparent, ev.tracestate)
            if own is not None:
                return own
        if not self._transport_parsed:
            self._transport_parsed = True
            self._transport = parent_context(self._transport_tp, self._transport_state)
        return self._transport if self._transport is not None else _EMPTY

    def start(
        self, event: EventIn, attributes: Mapping[str, AttributeValue] | None = None
    ) -> tuple[str | None, str | None]:
        """Start `event`'s send span (plus extra `attributes`); the context to store in the event."""
        try:
            attrs: dict[str, AttributeValue] = {
                **(attributes or {}),
                n.MESSAGING_SYSTEM: n.SYSTEM,
                n.DESTINATION: event.topic,
                n.OPERATION_TYPE: n.SEND,
                n.OPERATION_NAME: n.SEND,
                n.EVENT_TYPE: event.type,
                n.PRIORITY: event.priority,
            }
            if event.id is not None:
                attrs[n.MESSAGE_ID] = event.id
            if event.source is not None:
                attrs[n.EVENT_SOURCE] = event.source
            span = self._tracer.start_span(
                f"{n.SEND} {event.topic}",
                context=self._parent(event),
                kind=SpanKind.PRODUCER,
                attributes=attrs,
            )
        except Exception as e:  # never let tracing refuse a publish
            log.warning("send span failed to start: %s", e)
            return self._passthrough(event)
        self._spans.append(span)
        traceparent, tracestate = traceparent_of(span)
        return (traceparent, tracestate) if traceparent is not None else self._passthrough(event)

    def _passthrough(self, ev: EventIn) -> tuple[str | None, str | None]:
        if ev.traceparent is not None:
            return ev.traceparent, ev.tracestate
        return self._transport_tp, self._transport_state

    def failed(self, error: BaseException) -> None:
        """End every span with the error."""
        spans, self._spans = self._spans, []
        for span in spans:
            try:
                _fail(span, error)
                span.end()
            except Exception as e:
                log.warning("send span failed to end: %s", e)

    def published(self, items: Sequence[Incoming], results: Sequence[Published], transport: str) -> None:
        """End every span with the event's id and offset, and whether it was a dedup repeat."""
        spans, self._spans = self._spans, []
        for span, item, result in zip(spans, items, results, strict=False):
            try:
                if span.is_recording():
                    span.set_attributes(
                        {n.MESSAGE_ID: item.event.id, n.OFFSET: result.offset, n.TRANSPORT: transport}
                    )
                    if result.duplicate:
                        span.set_attribute(n.DUPLICATE, True)
                span.end()
            except Exception as e:
                log.warning("send span failed to end: %s", e)


class PublishSpans:
    """Starts the send spans of publish requests."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def sends(self, traceparent: str | None, tracestate: str | None) -> SendSpansImpl:
        """Send spans for one request whose transport context is `traceparent`/`tracestate`."""
        return SendSpansImpl(self._tracer, traceparent, tracestate)


class FanOutSpans:
    """The `process` and `deliver` spans of the hub's fan-out (see the module docstring)."""

    def __init__(
        self, tracer: Tracer, *, deliver_ratio: float, max_links: int, max_deliver_spans: int = 64
    ) -> None:
        self._tracer = tracer
        self.deliver_ratio = deliver_ratio
        self.max_links = max_links
        self.max_deliver_spans = max_deliver_spans
        self._random = random.Random()

    def fan_out(
        self, batch: list[Record], touched: dict[Subscription, list[Record]], hand_over_all: HandOverAll
    ) -> int:
        """Hand every touched subscription its records inside the batch's `process` span; the
        sampled ones one by one inside `deliver` spans (taken out of `touched`), the rest in one go."""
        try:
            span = self._process_span(batch)
        except Exception as e:
            log.warning("process span failed to start: %s", e)
            span = None
        if span is None:
            return hand_over_all(touched)
        ctx = set_span_in_context(span)
        token = otel_context.attach(ctx)  # log lines written while delivering carry the trace
        delivered = 0
        try:
            try:
                picked = self._pick(batch, touched)
            except Exception as e:
                log.warning("deliver sampling failed: %s", e)
                picked = []
            for sub in picked:
                delivered += self._deliver(ctx, sub, touched.pop(sub), hand_over_all)
            if picked:
                span.set_attribute(n.DELIVER_SPANS, len(picked))
            delivered += hand_over_all(touched)
        finally:
            otel_context.detach(token)
            span.end()
        return delivered

    def _pick(self, batch: list[Record], touched: dict[Subscription, list[Record]]) -> list[Subscription]:
        """The live subscriptions that get a `deliver` span: each with probability `deliver_ratio`,
        every one handed a high or critical event, at most `max_deliver_spans`."""
        budget = self.max_deliver_spans
        picked: list[Subscription] = []
        if budget <= 0:
            return picked
        if any(rec.event.priority in _URGENT for rec in batch):
            gap = self._gap()
            for sub, records in touched.items():
                if (gap == 0 or any(r.event.priority in _URGENT for r in records)) and sub.buffer is None:
                    picked.append(sub)
                    if len(picked) >= budget:
                        break
                gap = self._gap() if gap == 0 else gap - 1
            return picked
        n_subs = len(touched)
        i = self._gap()
        if i >= n_subs:
            return picked
        subs = list(touched)
        while i < n_subs and len(picked) < budget:
            if subs[i].buffer is None:
                picked.append(subs[i])
            i += 1 + self._gap()
        return picked

    def _gap(self) -> int:
        """How many subscriptions to pass over before the next sampled one: geometric, so that each
        is sampled with probability `deliver_ratio` without a random draw per subscription."""
        ratio = self.deliver_ratio
        if ratio >= 1.0:
            return 0
        if ratio <= 0.0:
            return 1 << 62
        return int(math.log(1.0 - self._random.random()) / math.log(1.0 - ratio))

    def _process_span(self, batch: list[Record]) -> Span | None:
        links: list[Link] = []
        first: SpanContext | None = None
        first_trace = ""
        one_trace = True
        dropped = 0
        max_links = self.max_links
        for rec in batch:
            tp = rec.event.traceparent
            if tp is None or len(tp) < 55 or tp[54] not in _SAMPLED_FLAG_DIGITS:
                continue
            if len(links) >= max_links:  # past the cap: compare trace ids as text, parse nothing
                dropped += 1
                one_trace = one_trace and tp[3:35] == first_trace
                continue
            sc = span_context(tp)
            if sc is None:
                continue
            if first is None:
                first, first_trace = sc, tp[3:35]
            elif one_trace and tp[3:35] != first_trace:
                one_trace = False
            links.append(Link(sc))
        if first is None:
            return None
        attributes: dict[str, AttributeValue] = {
            n.MESSAGING_SYSTEM: n.SYSTEM,
            n.OPERATION_TYPE: n.PROCESS,
            n.OPERATION_NAME: n.PROCESS,
        }
        topic = _one_topic(batch)
        if topic is not None:
            attributes[n.DESTINATION] = topic
        if len(batch) == 1:
            attributes[n.MESSAGE_ID] = batch[0].event.id
        else:
            attributes[n.BATCH_COUNT] = len(batch)
        if dropped:
            attributes[n.LINKS_DROPPED] = dropped
        parent = set_span_in_context(NonRecordingSpan(first)) if one_trace else _EMPTY
        name = f"{n.PROCESS} {topic}" if topic is not None else n.PROCESS
        return self._tracer.start_span(
            name, context=parent, kind=SpanKind.CONSUMER, links=links, attributes=attributes
        )

    def _deliver(
        self, ctx: Context, sub: Subscription, records: list[Record], hand_over_all: HandOverAll
    ) -> int:
        try:
            topic = _one_topic(records)
            attributes: dict[str, AttributeValue] = {
                n.MESSAGING_SYSTEM: n.SYSTEM,
                n.OPERATION_TYPE: n.SEND,
                n.SUBSCRIPTION: sub.sub_id,
            }
            session = getattr(sub.owner, "session", None)
            if isinstance(session, str):
                attributes[n.CLIENT_ID] = session
            if topic is not None:
                attributes[n.DESTINATION] = topic
            if len(records) == 1:
                attributes[n.MESSAGE_ID] = records[0].event.id
            else:
                attributes[n.BATCH_COUNT] = len(records)
            name = f"{n.DELIVER} {topic}" if topic is not None else n.DELIVER
            span = self._tracer.start_span(name, context=ctx, kind=SpanKind.PRODUCER, attributes=attributes)
        except Exception as e:
            log.warning("deliver span failed to start: %s", e)
            return hand_over_all({sub: records})
        try:
            delivered = hand_over_all({sub: records})
            if getattr(sub.owner, "closed", False):
                span.set_attribute(n.SUBSCRIBER_CLOSED, True)  # e.g. closed as a slow consumer
            return delivered
        except BaseException as e:
            _fail(span, e)
            raise
        finally:
            span.end()


def _one_topic(records: Sequence[Record]) -> str | None:
    first = records[0].event.topic if records else None
    for rec in records:
        if rec.event.topic != first:
            return None
    return first
