"""The one publish path shared by WebSocket, HTTP and the CLI: validate, authorize, append."""

from __future__ import annotations

import time
from collections.abc import Sequence

from dash_stream.bus.base import Bus, Incoming, Published
from dash_stream.events import EventIn, Limits, complete, validate_typed_data
from dash_stream.protocol.errors import BadRequest, DashError, Forbidden, TooLarge, Unavailable
from dash_stream.server.auth import Principal
from dash_stream.server.metrics import Metrics


class Publisher:
    """Turns publisher input into bus appends; every check happens before anything is appended."""

    def __init__(self, bus: Bus, metrics: Metrics, limits: Limits, *, strict_types: bool = False) -> None:
        self.bus = bus
        self.metrics = metrics
        self.limits = limits
        self.strict_types = strict_types

    def prepare(
        self,
        principal: Principal,
        events: Sequence[EventIn],
        *,
        path: str = "events",
        single: bool = False,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> list[Incoming]:
        """Validate and authorize every event (all-or-nothing); the error names the event's index."""
        if len(events) > self.limits.max_batch:
            raise TooLarge(f"{path}: {len(events)} events exceed the batch limit of {self.limits.max_batch}")
        if not events:
            raise BadRequest(f"{path}: no events")
        out: list[Incoming] = []
        for i, ev in enumerate(events):
            where = path if single else f"{path}[{i}]"
            if not principal.can_publish(ev.topic):
                raise Forbidden(f"{where}.topic: publish to {ev.topic} not allowed")
            event, encoded = complete(
                ev, limits=self.limits, where=where, traceparent=traceparent, tracestate=tracestate
            )
            if self.strict_types:
                try:
                    validate_typed_data(event)
                except DashError as e:
                    raise BadRequest(f"{where}.{e.message}") from None
            out.append(Incoming(event, encoded, dedup=ev.id is not None))
        return out

    async def append(self, items: list[Incoming], transport: str) -> list[Published]:
        """Append prepared events to the bus; Unavailable when the bus cannot take them."""
        started = time.perf_counter()
        try:
            published = await self.bus.publish(items)
        except DashError:
            raise
        except Exception as e:
            raise Unavailable(f"event bus unavailable: {type(e).__name__}") from e
        self.metrics.bus_publish.observe(time.perf_counter() - started)
        dups = sum(1 for p in published if p.duplicate)
        self.metrics.events_in.labels(transport).inc(len(published) - dups)
        if dups:
            self.metrics.duplicates.inc(dups)
        return published
