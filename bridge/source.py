"""Event sources: a dash-stream server over the WebSocket protocol, or a bus in this process.

Both yield `SourceBatch`es: events with their offsets, and the cursor after them (None when the
batch cannot be resumed from). Both resume from the durable cursor they are given. When the
cursor cannot be honoured (the log was reset, i.e. a new epoch, or trimmed past it) they yield a
batch with `gap` set and continue from the *earliest* retained event: everything the new log holds
is newer than what the bridge saw, and replaying it beats skipping it. A cursor that does not
parse falls back to `source.start`.

- `WsSource` uses the SDK (`dash_stream.client.Client`): reconnects with backoff and resumes from
  the last cursor by itself; credentials refused (4501/4503) end the source with a SourceError.
- `BusSource` reads `Bus.read` page by page and waits on `Bus.live` as a wake-up signal, so a batch
  never straddles a gap between history and live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Literal, NamedTuple, Protocol

import msgspec

from bridge.errors import SourceError
from dash_stream.bus.base import Bus, Lagged
from dash_stream.bus.cursor import BadCursor, Cursor, decode_cursor
from dash_stream.client import Client, ClientError, ConnectError
from dash_stream.client.policy import Backoff
from dash_stream.events import Event
from dash_stream.filters import TopicSet

log = logging.getLogger("bridge.source")

Start = Literal["latest", "earliest"]
_FATAL_CODES = frozenset({"unauthorized", "forbidden", "bad_request", "protocol_violation", "too_large"})


class SourceBatch(NamedTuple):
    """Events in log order and the cursor after them; `gap` names why events may have been missed."""

    events: Sequence[Event]
    cursor: str | None
    gap: str | None = None


class EventSource(Protocol):
    """Something that yields batches of events from a cursor on."""

    def batches(self, cursor: str | None) -> AsyncGenerator[SourceBatch, None]:
        """Batches after `cursor` (None: from the configured start), forever."""
        ...

    @property
    def connected(self) -> bool:
        """Whether events are flowing right now."""
        ...


def _gap_start(reason: str | None, start: Start) -> Start:
    return start if reason == "bad_cursor" else "earliest"


class WsSource:
    """A subscription on a dash-stream server (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        topics: Sequence[str],
        where: dict[str, Any] | None,
        start: Start = "latest",
        token: str | None = None,
        max_buffered_events: int = 10_000,
        max_backoff_s: float = 30.0,
    ) -> None:
        """Nothing connects until `batches()` is iterated."""
        self.url = url
        self.topics = list(topics)
        self.where = where
        self.start = start
        self._token = token
        self._max_buffered = max_buffered_events
        self._max_backoff = max_backoff_s
        self._connected = False

    @property
    def connected(self) -> bool:
        """Whether a subscription is live."""
        return self._connected

    def __repr__(self) -> str:
        return f"WsSource({self.url!r}, {self.topics!r})"

    async def batches(self, cursor: str | None) -> AsyncGenerator[SourceBatch, None]:
        """Subscribe (again and again, across reconnects) and yield what arrives."""
        resume, from_ = cursor, self.start
        backoff = Backoff(cap_s=self._max_backoff)
        while True:
            try:
                async with Client(
                    self.url, token=self._token, max_buffered_events=self._max_buffered
                ) as client:
                    backoff.reset()
                    while True:
                        async with client.subscribe(
                            self.topics, where=self.where, cursor=resume, from_=None if resume else from_
                        ) as stream:
                            self._connected = True
                            if not stream.recovered:
                                log.warning(
                                    "cannot resume from the saved cursor (%s): replaying from %s",
                                    stream.reason,
                                    _gap_start(stream.reason, self.start),
                                )
                                yield SourceBatch((), None, stream.reason or "unknown")
                                resume, from_ = None, _gap_start(stream.reason, self.start)
                                continue
                            async for batch in stream.batches():
                                if not stream.recovered:  # a reconnect could not resume
                                    log.warning(
                                        "lost the cursor on reconnect (%s): replaying from earliest",
                                        stream.reason,
                                    )
                                    yield SourceBatch((), None, stream.reason or "unknown")
                                    resume, from_ = None, _gap_start(stream.reason, self.start)
                                    break
                                resume = batch.cursor
                                yield SourceBatch(batch.events, batch.cursor)
                            else:
                                raise ClientError("closed", "the subscription ended")
            except ConnectError as e:
                self._connected = False
                delay = backoff.next_delay()
                log.warning("cannot reach %s (%s); retrying in %.1fs", self.url, e.reason, delay)
                await asyncio.sleep(delay)
            except ClientError as e:
                self._connected = False
                if e.code in _FATAL_CODES or (e.close_code is not None and e.close_code >= 4500):
                    raise SourceError(f"source {self.url}: {e}") from None
                delay = backoff.next_delay(e.retry_after_ms)
                log.warning("source %s failed (%s); reconnecting in %.1fs", self.url, e, delay)
                await asyncio.sleep(delay)
            finally:
                self._connected = False


class BusSource:
    """Reads a `Bus` in this process: embedded in `dash-stream serve`, or in tests."""

    def __init__(
        self,
        bus: Bus,
        *,
        topics: Sequence[str],
        start: Start = "latest",
        page_size: int = 1000,
        poll_s: float = 1.0,
    ) -> None:
        """`poll_s` bounds how long a missed wake-up could delay a batch."""
        self.bus = bus
        self.topics = TopicSet(list(topics), path="source.topics")
        self.start = start
        self.page_size = page_size
        self.poll_s = poll_s
        self._connected = False

    @property
    def connected(self) -> bool:
        """Whether the reader is running."""
        return self._connected

    async def _initial(self, cursor: str | None) -> Cursor | None:
        if cursor is not None:
            try:
                return decode_cursor(cursor)
            except BadCursor:
                log.warning("saved cursor %r does not parse: starting from %s", cursor[:60], self.start)
        return await self.bus.head(self.topics) if self.start == "latest" else None

    async def batches(self, cursor: str | None) -> AsyncGenerator[SourceBatch, None]:
        """History after the cursor page by page, then new events as they are appended."""
        after = await self._initial(cursor)
        wake = asyncio.Event()
        waker = asyncio.create_task(self._wake(wake), name="bridge-bus-waker")
        await asyncio.sleep(0)  # let the waker start following the log before the first read
        self._connected = True
        try:
            while True:
                wake.clear()
                try:
                    page = await self.bus.read(self.topics, after, self.page_size)
                except BadCursor:
                    log.warning("the bus refused the cursor: starting from %s", self.start)
                    yield SourceBatch((), None, "bad_cursor")
                    after = await self._initial(None)
                    continue
                if page.epoch_changed or page.trimmed:
                    reason = "epoch_changed" if page.epoch_changed else "trimmed"
                    log.warning("cannot resume from the cursor (%s): replaying from earliest", reason)
                    yield SourceBatch((), None, reason)
                    after = None
                    continue
                if page.records or page.cursor != after:
                    events = [msgspec.structs.replace(r.event, offset=r.offset) for r in page.records]
                    after = page.cursor
                    yield SourceBatch(events, after.encode())
                if not page.more:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_s):
                            await wake.wait()
        finally:
            self._connected = False
            waker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waker

    async def _wake(self, wake: asyncio.Event) -> None:
        """Set `wake` whenever the bus appends something (the live tail as a doorbell)."""
        while True:
            try:
                async for _ in self.bus.live(self.topics):
                    wake.set()
                return  # the bus closed
            except Lagged:
                wake.set()
