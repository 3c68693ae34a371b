"""Where the watcher's events go, and the bounded outbox that feeds them there.

- `ServerSink`: a dash-stream server over the WebSocket protocol with the SDK (`Client`): every
  event is acknowledged, publishes cut off by a reconnect are sent again under the same id.
- `BusSink`: a bus in this process (embedded in `serve`) or reached directly (`--bus redis://…`).
- `StdoutSink`: JSON lines on stdout (`--dry-run`).

`Outbox` owns the queue between the gateway reader and the sink: at most `max_events` events;
when it is full the reader waits (and the gateway buffers, then drops the connection, which the
watcher reopens). It publishes in batches in arrival order, retries transient failures with
backoff (ids are deterministic, so a retry is never a duplicate), drops events the server refuses
for good (counted), and starts one PRODUCER span `send <topic>` per event, with the gateway, run and
session as attributes (no-op when tracing is off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import msgspec

from dash_stream.bus.base import Bus, Incoming, Published
from dash_stream.client import Client, ClientError, PublishError
from dash_stream.client.policy import Backoff
from dash_stream.events import DEFAULT_LIMITS, EventIn, Limits, complete
from dash_stream.openclaw.metrics import WatchMetrics
from dash_stream.protocol.errors import DashError
from dash_stream.telemetry import PublishTracing, SendSpans

log = logging.getLogger("dash_stream.openclaw")

Attributes = dict[str, str | int | float | bool]


class Rejected(NamedTuple):
    """The sink refused an event for good (`bad_request`, `forbidden`, `too_large`)."""

    code: str
    message: str


Outcome = Published | Rejected | None  # None: a transient failure, try again later


class Sink(Protocol):
    """Publishes events; one outcome per event, in order."""

    transport: str

    async def start(self) -> None:
        """Connect (may raise: the caller decides whether that is fatal)."""
        ...

    async def publish(self, events: Sequence[EventIn]) -> list[Outcome]:
        """Publish `events`; never raises for a transient failure (those events get None)."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


class ServerSink:
    """A dash-stream server through the SDK; `start()` raises ClientError when it cannot connect."""

    transport = "ws"

    def __init__(self, url: str, token: str | None = None, *, request_timeout: float = 10.0) -> None:
        self.url = url
        self._token = token
        self._timeout = request_timeout
        self._client: Client | None = None

    async def start(self) -> None:
        """Open the first connection (fails fast); the SDK reconnects by itself afterwards."""
        client = Client(self.url, token=self._token, request_timeout=self._timeout, max_backoff_s=5.0)
        await client.connect()
        self._client = client

    async def publish(self, events: Sequence[EventIn]) -> list[Outcome]:
        """Send every event at once (in order on the one connection) and collect the acks."""
        client = self._client
        if client is None:
            try:
                await self.start()
            except ClientError as e:
                log.warning("cannot reach the dash-stream server: %s", e)
                return [None] * len(events)
            client = self._client
            assert client is not None
        outcomes = await asyncio.gather(*(self._one(client, ev) for ev in events))
        return list(outcomes)

    async def _one(self, client: Client, event: EventIn) -> Outcome:
        try:
            return Published(await client.publish(event))
        except PublishError as e:
            return None if e.retryable else Rejected(e.code, e.message)
        except ClientError as e:  # the client ended (e.g. credentials refused): make a new one
            if self._client is client:
                log.warning("dash-stream connection ended: %s; reconnecting", e)
                self._client = None
                await client.close()
            return None

    async def close(self) -> None:
        """Close the SDK client."""
        if self._client is not None:
            await self._client.close()
            self._client = None


class BusSink:
    """Appends straight to a bus (deduplicated by source and id, like any publisher-chosen id)."""

    transport = "bus"

    def __init__(self, bus: Bus, *, limits: Limits = DEFAULT_LIMITS, owned: bool = False) -> None:
        """`owned`: close the bus on `close()` (standalone `--bus`), not when it is the server's."""
        self.bus = bus
        self.limits = limits
        self.owned = owned

    async def start(self) -> None:
        """Nothing to open."""

    async def publish(self, events: Sequence[EventIn]) -> list[Outcome]:
        """Validate and append; events that fail validation are rejected, a bus failure retried."""
        outcomes: list[Outcome] = [None] * len(events)
        items: list[tuple[int, Incoming]] = []
        for i, ev in enumerate(events):
            try:
                event, encoded = complete(ev, limits=self.limits)
            except DashError as e:
                outcomes[i] = Rejected(str(e.code), e.message)
                continue
            items.append((i, Incoming(event, encoded, dedup=True)))
        if not items:
            return outcomes
        try:
            results = await self.bus.publish([item for _, item in items])
        except Exception as e:
            log.warning("bus publish failed: %s: %s", type(e).__name__, e)
            return outcomes
        for (i, _), result in zip(items, results, strict=True):
            outcomes[i] = result
        return outcomes

    async def close(self) -> None:
        """Close the bus if this sink opened it."""
        if self.owned:
            await self.bus.close()


class StdoutSink:
    """Prints events as JSON lines (a dry run: nothing is published)."""

    transport = "stdout"

    async def start(self) -> None:
        """Nothing to open."""

    async def publish(self, events: Sequence[EventIn]) -> list[Outcome]:
        """Write one line per event."""
        for ev in events:
            sys.stdout.write(msgspec.json.encode(ev).decode() + "\n")
        sys.stdout.flush()
        return [Published("-") for _ in events]

    async def close(self) -> None:
        """Nothing to close."""


class _Item:
    __slots__ = ("attributes", "event", "sends", "ts_ms")

    def __init__(self, event: EventIn, attributes: Attributes, ts_ms: int | None) -> None:
        self.event = event
        self.attributes = attributes
        self.ts_ms = ts_ms
        self.sends: SendSpans | None = None


class Outbox:
    """The bounded queue between the gateway reader and the sink; see the module docstring."""

    def __init__(
        self,
        sink: Sink,
        metrics: WatchMetrics,
        *,
        tracing: PublishTracing | None = None,
        max_events: int = 10_000,
        batch_max: int = 500,
    ) -> None:
        self.sink = sink
        self.metrics = metrics
        self.tracing = tracing
        self.batch_max = batch_max
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max_events)
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(0.2, 5.0)
        self.published = 0

    @property
    def depth(self) -> int:
        """Events waiting (not counting a batch being sent)."""
        return self._queue.qsize()

    async def put(self, event: EventIn, attributes: Attributes, ts_ms: int | None) -> None:
        """Queue one event; waits while the outbox is full (backpressure onto the gateway reader)."""
        await self._queue.put(_Item(event, attributes, ts_ms))
        self.metrics.queued.set(self._queue.qsize())

    def start(self) -> None:
        """Start publishing (the caller owns the outbox and must `stop()` it)."""
        self._task = asyncio.create_task(self._run(), name="openclaw-outbox")

    async def drain(self, within: float) -> bool:
        """Wait until every queued event was published (or dropped); False after `within` seconds."""
        try:
            async with asyncio.timeout(within):
                await self._queue.join()
        except TimeoutError:
            return False
        return True

    async def stop(self, grace_s: float = 5.0) -> None:
        """Give queued events `grace_s` to go out, then stop (unsent events end their spans failed)."""
        if self._task is None:
            return
        if not await self.drain(grace_s):
            log.warning("stopping with %d events not published", self._queue.qsize())
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item.sends is not None:
                item.sends.failed(asyncio.CancelledError("watcher stopped"))
            self._queue.task_done()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._send(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
                self.metrics.queued.set(self._queue.qsize())

    async def _send(self, batch: list[_Item]) -> None:
        if self.tracing is not None:
            for item in batch:
                self._start_span(item)
        while batch:
            try:
                outcomes = await self.sink.publish([item.event for item in batch])
            except Exception:  # a sink bug must not end publishing: log it, try again later
                log.exception("publishing %d events failed", len(batch))
                outcomes = [None] * len(batch)
            retry: list[_Item] = []
            now = time.time()
            for item, outcome in zip(batch, outcomes, strict=True):
                if outcome is None:
                    retry.append(item)
                elif isinstance(outcome, Rejected):
                    self.metrics.rejected.labels(outcome.code).inc()
                    log.error("event %s (%s) refused: %s", item.event.id, item.event.type, outcome.message)
                    if item.sends is not None:
                        item.sends.failed(DashError(outcome.message))
                else:
                    self._done(item, outcome, now)
            if not retry:
                self._backoff.reset()
                return
            self.metrics.publish_retries.inc(len(retry))
            await asyncio.sleep(self._backoff.next_delay())
            batch = retry

    def _start_span(self, item: _Item) -> None:
        assert self.tracing is not None
        try:
            sends = self.tracing.sends(None, None)
            traceparent, tracestate = sends.start(item.event, item.attributes)
        except Exception as e:  # telemetry never stops publishing
            log.warning("send span failed to start: %s", e)
            return
        item.sends = sends
        item.event = msgspec.structs.replace(item.event, traceparent=traceparent, tracestate=tracestate)

    def _done(self, item: _Item, result: Published, now: float) -> None:
        self.published += 1
        if result.duplicate:
            self.metrics.duplicates.inc()
        else:
            self.metrics.published.labels(item.event.type).inc()
        if item.ts_ms is not None:
            self.metrics.latency.observe(max(0.0, now - item.ts_ms / 1000))
        if item.sends is not None:
            try:
                event, encoded = complete(item.event)
                item.sends.published([Incoming(event, encoded)], [result], f"openclaw-{self.sink.transport}")
            except Exception as e:
                log.warning("send span failed to end: %s", e)
