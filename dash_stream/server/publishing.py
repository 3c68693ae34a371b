"""The one publish path shared by WebSocket, HTTP and the CLI: validate, authorize, append."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence

from dash_stream.bus.base import Bus, Incoming, Published
from dash_stream.events import EventIn, Limits, complete, validate_typed_data
from dash_stream.protocol.errors import BadRequest, DashError, Forbidden, TooLarge, Unavailable
from dash_stream.server.auth import Principal
from dash_stream.server.metrics import Metrics
from dash_stream.telemetry import PublishTracing, SendSpans
from dash_stream.telemetry.w3c import valid_traceparent


class Prepared(list[Incoming]):
    """The events of one publish, ready to append; with tracing on, their open `send` spans."""

    def __init__(self, items: Iterable[Incoming] = (), sends: SendSpans | None = None) -> None:
        super().__init__(items)
        self.sends = sends


class Publisher:
    """Turns publisher input into bus appends; every check happens before anything is appended."""

    def __init__(
        self,
        bus: Bus,
        metrics: Metrics,
        limits: Limits,
        *,
        strict_types: bool = False,
        timeout_s: float | None = None,
        tracing: PublishTracing | None = None,
    ) -> None:
        self.bus = bus
        self.metrics = metrics
        self.limits = limits
        self.strict_types = strict_types
        self.timeout_s = timeout_s  # a bus that does not answer (a partition) must not hold publishers
        self.tracing = tracing

    def prepare(
        self,
        principal: Principal,
        events: Sequence[EventIn],
        *,
        path: str = "events",
        single: bool = False,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> Prepared:
        """Validate and authorize every event (all-or-nothing); the error names the event's index.

        `traceparent`/`tracestate` are the transport's trace context (the HTTP request's headers,
        the WebSocket handshake's); an event's own `traceparent` takes precedence over them. With
        tracing on, each event gets a `send` span, a child of that context, and stores the span's
        context; with tracing off the event stores the caller's context unchanged.
        """
        if len(events) > self.limits.max_batch:
            raise TooLarge(f"{path}: {len(events)} events exceed the batch limit of {self.limits.max_batch}")
        if not events:
            raise BadRequest(f"{path}: no events")
        if traceparent is not None and not valid_traceparent(traceparent):
            traceparent = tracestate = None
        sends = self.tracing.sends(traceparent, tracestate) if self.tracing is not None else None
        out = Prepared(sends=sends)
        try:
            for i, ev in enumerate(events):
                where = path if single else f"{path}[{i}]"
                if not principal.can_publish(ev.topic):
                    raise Forbidden(f"{where}.topic: publish to {ev.topic} not allowed")
                if sends is not None:
                    tp, ts = sends.start(ev)
                elif ev.traceparent is not None:
                    tp, ts = ev.traceparent, ev.tracestate
                else:
                    tp, ts = traceparent, tracestate
                event, encoded = complete(ev, limits=self.limits, where=where, traceparent=tp, tracestate=ts)
                if self.strict_types:
                    try:
                        validate_typed_data(event)
                    except DashError as e:
                        raise BadRequest(f"{where}.{e.message}") from None
                out.append(Incoming(event, encoded, dedup=ev.id is not None))
        except BaseException as e:
            if sends is not None:
                sends.failed(e)
            raise
        return out

    def abandon(self, items: list[Incoming], error: BaseException) -> None:
        """Prepared events that will not be appended (e.g. rate limited): end their spans failed."""
        if isinstance(items, Prepared) and items.sends is not None:
            items.sends.failed(error)
            items.sends = None

    async def append(self, items: list[Incoming], transport: str) -> list[Published]:
        """Append prepared events to the bus; Unavailable when the bus cannot take them."""
        sends = items.sends if isinstance(items, Prepared) else None
        started = time.perf_counter()
        try:
            try:
                async with asyncio.timeout(self.timeout_s):
                    published = await self.bus.publish(items)
            except TimeoutError:
                raise Unavailable(
                    f"event bus did not answer within {self.timeout_s:g} s; retry with the same event ids "
                    "(an append that went through after all is deduplicated)",
                    retry_after_ms=1000,
                ) from None
        except DashError as e:
            if isinstance(e, Unavailable):
                self.metrics.bus_unavailable.labels("publish").inc()
            if sends is not None:
                sends.failed(e)
            raise
        except Exception as e:
            self.metrics.bus_unavailable.labels("publish").inc()
            if sends is not None:
                sends.failed(e)
            raise Unavailable(f"event bus unavailable: {type(e).__name__}") from e
        except BaseException as e:  # cancelled: end the spans, then let it go on
            if sends is not None:
                sends.failed(e)
            raise
        self.metrics.bus_publish.observe(time.perf_counter() - started)
        dups = sum(1 for p in published if p.duplicate)
        self.metrics.events_in.labels(transport).inc(len(published) - dups)
        if dups:
            self.metrics.duplicates.inc(dups)
            self.metrics.count_types(
                item.event for item, p in zip(items, published, strict=False) if not p.duplicate
            )
        else:
            self.metrics.count_types(item.event for item in items)
        if sends is not None:
            sends.published(items, published, transport)
        return published
