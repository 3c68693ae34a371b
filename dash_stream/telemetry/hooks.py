"""The seams between the server and its tracing: what the publish path and the fan-out call.

The server holds `None` instead of these when tracing is off, so the untraced paths pay one
`is None` check. The implementations (`dash_stream.telemetry.server`) import OpenTelemetry; this
module does not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from dash_stream.bus.base import Incoming, Published, Record
from dash_stream.events import EventIn
from dash_stream.telemetry.config import TracingConfig

if TYPE_CHECKING:
    from dash_stream.server.hub import Subscription
    from dash_stream.telemetry.bridge_api import BridgeTracing


class SendSpans(Protocol):
    """The `send` spans of one publish request: started by `Publisher.prepare`, ended by `append`."""

    def start(
        self, event: EventIn, attributes: Mapping[str, str | int | float | bool] | None = None
    ) -> tuple[str | None, str | None]:
        """Start `event`'s PRODUCER span (with extra `attributes`, e.g. a source's own ids); the
        `traceparent` and `tracestate` to store in the event."""
        ...

    def failed(self, error: BaseException) -> None:
        """End every span started so far with `error` (the request was refused or the bus failed)."""
        ...

    def published(self, items: Sequence[Incoming], results: Sequence[Published], transport: str) -> None:
        """End every span: the bus took the events (ids, offsets and dedup repeats are recorded)."""
        ...


class PublishTracing(Protocol):
    """Starts the send spans of a publish request."""

    def sends(self, traceparent: str | None, tracestate: str | None) -> SendSpans:
        """Send spans continuing the transport's context (an event's own `traceparent` wins)."""
        ...


HandOverAll = Callable[[dict["Subscription", list[Record]]], int]


class FanOutTracing(Protocol):
    """Traces the hub's hand-over of one bus batch to the local subscriptions."""

    def fan_out(
        self, batch: list[Record], touched: dict[Subscription, list[Record]], hand_over_all: HandOverAll
    ) -> int:
        """Deliver `touched` through `hand_over_all` inside a `process` span, the sampled
        subscriptions inside `deliver` spans (it may take their entries out of `touched`); the
        number of records delivered."""
        ...


class Tracing(Protocol):
    """A running tracer provider and exporter, owned by the server's (or the bridge's) lifespan."""

    config: TracingConfig
    publish: PublishTracing
    fan_out: FanOutTracing

    def bridge(self) -> BridgeTracing:
        """The bridge-facing API on this provider."""
        ...

    def describe(self) -> str:
        """One line for the start-up log: exporter, endpoint, service name, sampler."""
        ...

    def shutdown(self) -> None:
        """Flush what can be flushed within the configured timeout, then stop (never hangs)."""
        ...
