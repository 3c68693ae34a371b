"""The bridge-facing tracing API, and the no-op implementation used when tracing is off.

The bridge (a consumer of the bus that forwards events to OpenClaw) calls exactly this:

    tracing = telemetry.bridge_tracing(tracer_or_none)
    with tracing.forward(ev.traceparent, ev.tracestate, topic=ev.topic, event_id=ev.id, route=r):
        with tracing.client("POST", url, headers, attempt=n) as call:   # injects traceparent
            resp = await http.post(url, headers=headers, content=body)
            call.response(resp.status_code)
    with tracing.digest([s.traceparent for s in msg.sources], route=r, group=g, message_id=msg.id):
        ...

With tracing off, `forward` still hands the event's own `traceparent`/`tracestate` to the
`client` calls inside it, so OpenClaw receives the publisher's context either way.
See docs/operations.md, "Tracing API for the bridge".
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import AbstractContextManager
from typing import Protocol

from dash_stream.telemetry.w3c import valid_traceparent

AttributeValue = str | int | float | bool

# the forwarded event's context, for `client` calls inside `forward` when tracing is off
_passthrough: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar(
    "dash_bridge_passthrough", default=None
)


class BridgeSpan(Protocol):
    """A span the bridge opened (or a stand-in when tracing is off)."""

    @property
    def traceparent(self) -> str | None:
        """This span's context as a `traceparent` (None when tracing is off and there is none)."""
        ...

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Record one attribute (e.g. `dash.bridge.message.id`)."""
        ...

    def record_error(self, error: BaseException | str) -> None:
        """Mark the span failed (an exception leaving the `with` block does this by itself)."""
        ...


class ClientSpan(BridgeSpan, Protocol):
    """The CLIENT span of one HTTP request to OpenClaw."""

    def response(self, status: int) -> None:
        """Record the response status; 4xx/5xx mark the span failed."""
        ...


class BridgeTracing(Protocol):
    """Spans for the bridge: per forwarded event, per digest, per outgoing HTTP request."""

    @property
    def enabled(self) -> bool:
        """Whether spans are recorded and exported."""
        ...

    def forward(
        self,
        traceparent: str | None,
        tracestate: str | None = None,
        *,
        topic: str,
        event_id: str,
        route: str,
        receiver: str | None = None,
    ) -> AbstractContextManager[BridgeSpan]:
        """A CONSUMER span `forward <topic>`, child of (and linked to) the event's context."""
        ...

    def digest(
        self,
        sources: Iterable[str | None],
        *,
        route: str,
        group: str,
        message_id: str,
        receiver: str | None = None,
    ) -> AbstractContextManager[BridgeSpan]:
        """A CONSUMER span `digest <route>` linking every source event's `traceparent`."""
        ...

    def client(
        self, method: str, url: str, headers: MutableMapping[str, str], *, attempt: int = 1
    ) -> AbstractContextManager[ClientSpan]:
        """A CLIENT span `<METHOD>` for one HTTP attempt; writes `traceparent` (and `tracestate`)
        into `headers` before the request is sent."""
        ...


class _NoSpan:
    """What the no-op tracing yields: remembers nothing, costs nothing."""

    __slots__ = ("_traceparent",)

    def __init__(self, traceparent: str | None = None) -> None:
        self._traceparent = traceparent

    @property
    def traceparent(self) -> str | None:
        return self._traceparent

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        pass

    def record_error(self, error: BaseException | str) -> None:
        pass

    def response(self, status: int) -> None:
        pass


class NoopBridgeTracing:
    """Tracing off: no spans, but the forwarded event's context still reaches OpenClaw's headers."""

    @property
    def enabled(self) -> bool:
        """Always False."""
        return False

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
        """Pass the event's context to the `client` calls inside the block."""
        if not valid_traceparent(traceparent):
            yield _NoSpan()
            return
        assert traceparent is not None
        token = _passthrough.set((traceparent, tracestate))
        try:
            yield _NoSpan(traceparent)
        finally:
            _passthrough.reset(token)

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
        """Nothing to pass on: a digest has many parents."""
        token = _passthrough.set(None)
        try:
            yield _NoSpan()
        finally:
            _passthrough.reset(token)

    @contextlib.contextmanager
    def client(
        self, method: str, url: str, headers: MutableMapping[str, str], *, attempt: int = 1
    ) -> Iterator[ClientSpan]:
        """Write the forwarded event's `traceparent` into `headers`, if there is one."""
        current = _passthrough.get()
        if current is not None:
            headers["traceparent"] = current[0]
            if current[1]:
                headers["tracestate"] = current[1]
        yield _NoSpan(current[0] if current is not None else None)


NOOP_BRIDGE_TRACING = NoopBridgeTracing()
