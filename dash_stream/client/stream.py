"""`Stream`: one subscription's events as an async iterator, with the cursor to resume from.

The client's reader pushes frames into the stream's buffer; the application pulls them out. Two
cursors are kept apart on purpose: `received` (after the last frame buffered, where a reconnect
resumes, so buffered events are neither lost nor fetched twice) and `cursor` (after the last event
the application was handed, what it should persist).

The buffer is bounded by `max_buffered_events`. When a frame would overflow it, the stream does
what the server does to a slow client, without closing anything: it drops the frame, pauses (the
client unsubscribes it on the server) and, once the application has drained half the buffer,
subscribes again from `received`, so nothing is lost and the reader never waits on a slow consumer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, NoReturn

import msgspec

from dash_stream.client import cursors
from dash_stream.client.errors import ClientError
from dash_stream.client.wire import Events, Subscribe, Subscribed
from dash_stream.events import Event


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """The events of one frame and the cursor after them; no events means the cursor moved on."""

    events: tuple[Event, ...]
    cursor: str


class _Recovery(msgspec.Struct, frozen=True, kw_only=True):
    cursor: str
    recovered: bool
    reason: str | None
    replayed: int


class _End(msgspec.Struct, frozen=True):
    error: ClientError | None


_Item = Batch | _Recovery | _End


class Stream:
    """The events of one subscription: `async for event in stream`, or `stream.batches()`.

    Attributes: `sub` (the subscription id), `cursor` (after the last event handed out, including
    cursor advances of filtered subscriptions), `recovered` and `reason` (how the latest
    (re)subscription resumed: `reason` is "trimmed", "epoch_changed" or "bad_cursor" when events may
    have been missed), `replayed` (events the server replayed on that subscription).
    """

    def __init__(
        self,
        *,
        sub: str,
        topics: list[str],
        where: dict[str, Any] | None,
        cursor: str | None,
        from_: Literal["latest", "earliest"] | None,
        max_buffered_events: int,
        on_drained: Callable[[Stream], Awaitable[None]],
    ) -> None:
        """Created by `Client.subscribe`; applications do not build streams themselves."""
        self.sub = sub
        self.topics = list(topics)
        self.where = where
        self.cursor: str | None = cursor
        self.recovered = True
        self.reason: str | None = None
        self.replayed = 0
        self.received: str | None = cursor
        self.paused = False
        # After a pause, frames of the old server-side subscription may still be in flight: none is
        # taken until the new `subscribed` arrives, or one could land past a dropped frame (a gap).
        self.awaiting_subscribed = True
        self.subscribed_on: object | None = None  # the connection the server-side subscription lives on
        self._from = from_
        self._max = max(1, max_buffered_events)
        self._on_drained = on_drained
        self._buffer: deque[_Item] = deque()
        self._buffered_events = 0
        self._wakeup = asyncio.Event()
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._current: Batch | None = None
        self._index = 0
        self._end: _End | None = None

    # ------------------------------------------------------------ the client's side

    def subscribe_frame(self, request_id: str) -> Subscribe:
        """The subscribe op that (re)starts this subscription where the buffer ends."""
        if self.received is not None:
            return Subscribe(
                id=request_id, sub=self.sub, topics=self.topics, where=self.where, cursor=self.received
            )
        return Subscribe(id=request_id, sub=self.sub, topics=self.topics, where=self.where, from_=self._from)

    def on_subscribed(self, frame: Subscribed) -> None:
        """The server (re)started the subscription at `frame.cursor`."""
        self.received = frame.cursor
        self.awaiting_subscribed = False
        if not self._ready.done():
            self.cursor = frame.cursor
            self._set_recovery(frame.recovered, frame.reason, frame.replayed)
            self._ready.set_result(None)
            return
        self._push(
            _Recovery(
                cursor=frame.cursor, recovered=frame.recovered, reason=frame.reason, replayed=frame.replayed
            )
        )

    def on_events(self, frame: Events) -> bool:
        """Buffer a frame, dropping events already buffered; True when the stream just paused."""
        if self.paused or self.awaiting_subscribed or self._end is not None:
            return False
        fresh: list[Event] = []
        received = self.received
        for event in frame.events:
            if cursors.covers(received, event.offset):
                continue  # a replay of what this stream already delivered
            fresh.append(event)
            received = cursors.advance(received, event.offset)
        if self._buffered_events and self._buffered_events + len(fresh) > self._max:
            self.paused = self.awaiting_subscribed = True
            return True
        self.received = cursors.later(received, frame.cursor)
        assert self.received is not None
        last = self._buffer[-1] if self._buffer else None
        if not fresh and isinstance(last, Batch) and not last.events:
            self._buffer[-1] = Batch(events=(), cursor=self.received)  # advances coalesce: O(1) memory
            return False
        self._buffered_events += len(fresh)
        self._push(Batch(events=tuple(fresh), cursor=self.received))
        return False

    def fail(self, error: ClientError | None) -> None:
        """End the stream: iteration raises `error`, or simply stops when it is None."""
        if not self._ready.done():
            if error is None:
                error = ClientError("closed", f"subscription {self.sub!r} ended before it started")
            self._ready.set_exception(error)
            return
        if self._end is None:
            self._end = _End(error)
            self._push(self._end)

    async def ready(self) -> None:
        """Wait for the server's first `subscribed` answer (raises the subscribe's error)."""
        await self._ready

    def _push(self, item: _Item) -> None:
        self._buffer.append(item)
        self._wakeup.set()

    # ------------------------------------------------------------ the application's side

    def __aiter__(self) -> AsyncIterator[Event]:
        """Iterate over events; raises ClientError when the subscription fails for good."""
        return self

    async def __anext__(self) -> Event:
        """The next event; the cursor moves past it before it is returned."""
        while True:
            current = self._current
            if current is not None and self._index < len(current.events):
                event = current.events[self._index]
                self._index += 1
                if self._index == len(current.events):
                    self.cursor = current.cursor
                    self._current = None
                else:
                    self.cursor = cursors.advance(self.cursor, event.offset)
                return event
            item = await self._take()
            if isinstance(item, Batch):
                if item.events:
                    self._current, self._index = item, 0
                else:
                    self.cursor = item.cursor

    async def batches(self) -> AsyncIterator[Batch]:
        """Frames as they arrive, including empty ones (cursor advances and resubscriptions).

        Use this to persist `batch.cursor` after every frame; do not mix it with plain iteration
        of the same stream in two tasks.
        """
        current = self._current
        if current is not None and self._index < len(current.events):
            rest = current.events[self._index :]
            self._current = None
            self.cursor = current.cursor
            yield Batch(events=rest, cursor=current.cursor)
        while True:
            try:
                item = await self._take()
            except StopAsyncIteration:
                return
            if isinstance(item, Batch):
                self.cursor = item.cursor
                yield item
            else:
                assert self.cursor is not None
                yield Batch(events=(), cursor=self.cursor)

    async def _take(self) -> Batch | _Recovery:
        """The next buffered item, applying recoveries and ends on the way."""
        while not self._buffer:
            self._wakeup.clear()
            await self._wakeup.wait()
        item = self._buffer.popleft()
        if isinstance(item, _End):
            self._buffer.appendleft(item)  # stays the last word for every later call
            self._raise_end(item)
        if isinstance(item, Batch):
            self._buffered_events -= len(item.events)
            if self.paused and self._buffered_events <= self._max // 2:
                self.paused = False
                await self._on_drained(self)
        else:
            self.cursor = item.cursor
            self._set_recovery(item.recovered, item.reason, item.replayed)
        return item

    def _raise_end(self, end: _End) -> NoReturn:
        if end.error is not None:
            raise end.error
        raise StopAsyncIteration

    def _set_recovery(self, recovered: bool, reason: str | None, replayed: int) -> None:
        self.recovered = recovered
        self.reason = reason
        self.replayed = replayed

    def __repr__(self) -> str:
        return f"<Stream {self.sub} {self.topics} cursor={self.cursor!r}>"
