"""The fan-out hub: one live reader of the bus per node, subscriptions, and recovery.

The hub reads the bus once and routes each batch to the matching subscriptions. It never awaits
a subscriber: it hands each subscription its slice of the batch through `Subscriber.deliver`,
which writes or queues without blocking (and closes a slow consumer itself).

Recovery is buffer-then-merge: a new subscription is registered *buffering* before history is
read, so nothing published meanwhile is missed; history is read page by page, then buffered
records already covered by the replay are dropped (`merge_after`), then the subscription goes live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Protocol

import msgspec

from dash_stream.bus.base import Bus, Lagged, Record, is_outage
from dash_stream.bus.cursor import BadCursor, Cursor, decode_cursor
from dash_stream.filters import ALL_TOPICS, Predicate, TopicSet
from dash_stream.server.metrics import Metrics
from dash_stream.telemetry.hooks import FanOutTracing

log = logging.getLogger("dash_stream.hub")

_ROUTE_CACHE_MAX = 50_000
_READ_PAGE = 1000


class Subscriber(Protocol):
    """A connection as the hub sees it (WebSocket or SSE)."""

    def deliver(self, sub: Subscription, records: list[Record]) -> None:
        """Send records of one subscription now or queue them; never block."""
        ...

    def advance(self, sub: Subscription) -> None:
        """Send the subscription's advanced cursor with no events."""
        ...

    def lost(self, reason: str) -> None:
        """The hub lost events for this subscriber: close it so the client resumes from its cursor."""
        ...


class BatchObserver(Protocol):
    """Something that sees every live batch before it is routed (the swarm state fold)."""

    def observe(self, batch: list[Record]) -> None:
        """Take one live batch; never block, never raise."""
        ...

    def live_restarted(self) -> None:
        """The live reader (re)starts: records may have been missed since the last batch."""
        ...


class Subscription:
    """One subscription of one connection."""

    __slots__ = (
        "_cursor",
        "_cursor_text",
        "_segments",
        "buffer",
        "frame_prefix",
        "last_sent",
        "max_buffer",
        "overflowed",
        "owner",
        "skipped",
        "sub_id",
        "topics",
        "where",
    )

    def __init__(
        self, owner: Subscriber, sub_id: str, topics: TopicSet, where: Predicate | None, max_buffer: int
    ) -> None:
        self.owner = owner
        self.sub_id = sub_id
        self.topics = topics
        self.where = where
        self._cursor: Cursor | None = None
        self._cursor_text: str | None = None
        # a multi-partition cursor's text as one segment per partition, so that advancing one
        # partition re-joins strings instead of re-encoding the whole cursor (Redis: 16 partitions)
        self._segments: tuple[list[str], dict[int, int]] | None = None
        self.frame_prefix: bytes | None = None  # the owner's cached start of this sub's events frames
        self.buffer: list[Record] | None = []  # None once live
        self.max_buffer = max_buffer
        self.overflowed = False
        self.skipped: Record | None = None  # newest record the filter skipped since the last frame
        self.last_sent = time.monotonic()

    @property
    def cursor(self) -> Cursor | None:
        """Where the subscription is: past every record delivered (or skipped and advanced)."""
        return self._cursor

    @cursor.setter
    def cursor(self, value: Cursor | None) -> None:
        self._cursor = value
        self._cursor_text = None
        self._segments = None

    @property
    def cursor_text(self) -> str:
        """The cursor's string form, encoded once per change."""
        text = self._cursor_text
        if text is None:
            assert self._cursor is not None
            text = self._cursor_text = self._cursor.encode()
        return text

    def advance_to(self, rec: Record) -> None:
        """Move the cursor past `rec`."""
        assert self.cursor is not None
        self.cursor = self.cursor.advanced(rec.partition, rec.position)

    def advance_through(self, records: list[Record]) -> str:
        """Move the cursor past every record of a frame; the new cursor's string form."""
        cursor = self._cursor
        assert cursor is not None
        last = records[-1]
        positions = cursor.positions
        one_partition = len(records) == 1 or all(r.partition == last.partition for r in records)
        if one_partition and len(positions) == 1 and last.partition in positions:
            # one partition (the memory bus, or topics on one Redis stream): the last record's own
            # offset is exactly the new cursor, no encoding needed
            if last.position > positions[last.partition]:
                self._cursor = Cursor(cursor.epoch, {last.partition: last.position})
                self._cursor_text = last.offset
            return self.cursor_text
        if one_partition:
            p = last.partition
            if last.position <= positions.get(p, -1):
                return self.cursor_text
            segments = self._segments
            if segments is None or p not in segments[1]:
                self.cursor = cursor.advanced(p, last.position)
                text = self.cursor_text
                parts = text.split(".")
                self._segments = (
                    parts[1:],
                    {int(seg.split("-", 1)[0]): i for i, seg in enumerate(parts[1:])},
                )
                return text
            moved = dict(positions)
            moved[p] = last.position
            self._cursor = Cursor(cursor.epoch, moved)
            texts, index = segments
            texts[index[p]] = f"{p}-{last.position}"
            text = self._cursor_text = f"{cursor.epoch}.{'.'.join(texts)}"
            return text
        self.cursor = advance_through(cursor, records)
        return self.cursor_text


class Recovery(msgspec.Struct, frozen=True):
    """The outcome of attaching a subscription: what to announce and what to send before live.

    `cursor` is the point the subscription starts from (announced in `subscribed`); `end` is past
    everything replayed; `pending` are the records that arrived while replaying, not in `replay`.
    """

    cursor: Cursor
    end: Cursor
    recovered: bool
    reason: str | None
    replay: list[Record]
    pending: list[Record] = []


def advance_through(cursor: Cursor, records: Iterable[Record]) -> Cursor:
    """`cursor` moved past every record (per partition maximum)."""
    top: dict[int, int] = {}
    for rec in records:
        if top.get(rec.partition, -1) < rec.position:
            top[rec.partition] = rec.position
    return cursor.merged(Cursor(cursor.epoch, top)) if top else cursor


def merge_after(end: Cursor, buffered: Iterable[Record]) -> list[Record]:
    """Buffered records not already covered by `end` (the replay's end), in order, no duplicates."""
    out: list[Record] = []
    seen = dict(end.positions)
    for rec in buffered:
        if rec.position > seen.get(rec.partition, -1):
            out.append(rec)
            seen[rec.partition] = rec.position
    return out


def past_cursor(cursor: Cursor | None, records: list[Record]) -> list[Record]:
    """The records after `cursor`. The live reader may lag the bus, so a subscription that has just
    replayed history up to the bus's end can be handed records its replay already sent."""
    if cursor is None:
        return records
    positions = cursor.positions
    if len(records) == 1:
        rec = records[0]
        return records if rec.position > positions.get(rec.partition, -1) else []
    if all(r.position > positions.get(r.partition, -1) for r in records):
        return records
    return [r for r in records if r.position > positions.get(r.partition, -1)]


class Hub:
    """Routes bus batches to subscriptions; see the module docstring."""

    def __init__(
        self,
        bus: Bus,
        metrics: Metrics,
        *,
        max_replay: int = 100_000,
        max_buffer: int = 100_000,
        tracing: FanOutTracing | None = None,
    ) -> None:
        self.bus = bus
        self.metrics = metrics
        self.tracing = tracing  # None when tracing is off: the fan-out then pays one check per batch
        self.max_replay = max_replay
        self.max_buffer = max_buffer
        self._subs: set[Subscription] = set()
        self._routes: dict[str, tuple[Subscription, ...]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._observers: list[BatchObserver] = []
        self.running = False

    def add_observer(self, observer: BatchObserver) -> None:
        """Show `observer` every live batch (before routing) and every restart of the live reader."""
        self._observers.append(observer)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the live reader and the cursor-advance ticker."""
        self.running = True
        self._tasks = [
            asyncio.create_task(self._run(), name="hub-live"),
            asyncio.create_task(self._tick(), name="hub-advance"),
        ]

    async def stop(self) -> None:
        """Cancel and await the hub's tasks."""
        self.running = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    # ------------------------------------------------------------ subscriptions

    def add(self, sub: Subscription) -> None:
        """Register a subscription (buffering until `attach` finishes)."""
        self._subs.add(sub)
        self._routes.clear()
        self.metrics.subscriptions.inc()

    def remove(self, sub: Subscription) -> None:
        """Forget a subscription; idempotent."""
        if sub in self._subs:
            self._subs.discard(sub)
            self._routes.clear()
            self.metrics.subscriptions.dec()

    @property
    def subscription_count(self) -> int:
        """How many subscriptions are registered."""
        return len(self._subs)

    async def attach(self, sub: Subscription, *, cursor: str | None, earliest: bool) -> Recovery:
        """Register `sub`, replay history after `cursor` (or from the earliest event), go live.

        The caller must send the subscribed frame, `replay` and `pending` before it awaits again:
        the subscription is live when this returns.
        """
        self.add(sub)
        try:
            recovery = await self._recover(sub, cursor, earliest)
        except BaseException:
            self.remove(sub)
            raise
        if sub.overflowed:
            self.remove(sub)
            raise OverflowError("too many events arrived while replaying history")
        assert sub.buffer is not None
        pending = merge_after(recovery.end, sub.buffer)
        sub.buffer = None
        sub.cursor = advance_through(recovery.end, pending)
        outcome = (
            "live" if cursor is None and not earliest else ("ok" if recovery.recovered else recovery.reason)
        )
        self.metrics.recoveries.labels(outcome or "unknown").inc()
        self.metrics.replayed.inc(len(recovery.replay))
        return msgspec.structs.replace(recovery, pending=pending)

    async def _recover(self, sub: Subscription, cursor: str | None, earliest: bool) -> Recovery:
        if cursor is None and not earliest:
            return await self._from_now(sub, None)
        after: Cursor | None = None
        if cursor is not None:
            try:
                after = decode_cursor(cursor)
            except BadCursor:
                return await self._from_now(sub, "bad_cursor")
        announced = after
        replay: list[Record] = []
        where = sub.where
        while True:
            try:
                page = await self.bus.read(sub.topics, after, _READ_PAGE)
            except BadCursor:
                return await self._from_now(sub, "bad_cursor")
            if page.epoch_changed:
                return await self._from_now(sub, "epoch_changed")
            if page.trimmed:
                return await self._from_now(sub, "trimmed")
            if announced is None:  # from earliest: just before the first retained event
                first: dict[int, int] = {}
                for rec in page.records:
                    first.setdefault(rec.partition, rec.position - 1)
                announced = Cursor(page.cursor.epoch, {**page.cursor.positions, **first})
            replay.extend(r for r in page.records if where is None or where(r.event))
            after = page.cursor
            if len(replay) > self.max_replay:
                return await self._from_now(sub, "trimmed")
            if not page.more:
                break
        return Recovery(cursor=announced, end=after, recovered=True, reason=None, replay=replay)

    async def _from_now(self, sub: Subscription, reason: str | None) -> Recovery:
        head = await self.bus.head(sub.topics)
        return Recovery(cursor=head, end=head, recovered=reason is None, reason=reason, replay=[])

    # ------------------------------------------------------------ fan-out

    async def _run(self) -> None:
        backoff = 0.05
        while self.running:
            for observer in self._observers:
                observer.live_restarted()
            try:
                async for batch in self.bus.live(ALL_TOPICS):
                    self.dispatch(batch)
                    backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Lagged as e:
                self.metrics.lagged.inc()
                log.warning("hub lagged behind retention: %s; closing subscribers so they resume", e)
                for owner in {s.owner for s in self._subs}:
                    owner.lost("lagged")
            except Exception as e:
                self.metrics.bus_unavailable.labels("live").inc()
                if is_outage(e):
                    log.warning(
                        "live reader: bus unavailable (%s); closing subscribers so they resume, "
                        "retrying in %.2fs",
                        type(e).__name__,
                        backoff,
                    )
                else:
                    log.exception(
                        "live reader failed; closing subscribers so they resume, retrying in %.2fs", backoff
                    )
                # the restarted reader starts from now: whatever came in between would be missed
                for owner in {s.owner for s in self._subs}:
                    with contextlib.suppress(Exception):
                        owner.lost("bus_error")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            else:
                if self.running:
                    await asyncio.sleep(backoff)

    def _route(self, topic: str) -> tuple[Subscription, ...]:
        subs = tuple(s for s in self._subs if s.topics.matches(topic))
        if len(self._routes) >= _ROUTE_CACHE_MAX:
            self._routes.clear()
        self._routes[topic] = subs
        return subs

    def dispatch(self, batch: list[Record]) -> None:
        """Route one batch: each subscription gets its matching records in one `deliver` call."""
        for observer in self._observers:
            try:
                observer.observe(batch)
            except Exception:  # the fold must never stop the fan-out
                log.exception("batch observer failed")
        touched: dict[Subscription, list[Record]] = {}
        routes = self._routes
        for rec in batch:
            subs = routes.get(rec.event.topic)
            if subs is None:
                subs = self._route(rec.event.topic)
            for s in subs:
                where = s.where
                if where is not None and not where(rec.event):
                    s.skipped = rec
                    continue
                lst = touched.get(s)
                if lst is None:
                    touched[s] = [rec]
                else:
                    lst.append(rec)
        self.metrics.events_out.inc(len(batch))
        if not touched:
            return
        if self.tracing is None:
            delivered = self.hand_over_all(touched)
        else:
            delivered = self.tracing.fan_out(batch, touched, self.hand_over_all)
        self.metrics.deliveries.inc(delivered)
        self.metrics.publish_to_deliver.observe(max(0.0, time.time() - batch[0].published_at))

    def hand_over_all(self, touched: dict[Subscription, list[Record]]) -> int:
        """Buffer (while recovering) or deliver each subscription's records; how many were delivered."""
        delivered = 0
        for s, recs in touched.items():
            buffer = s.buffer
            if buffer is not None:
                if len(buffer) + len(recs) > s.max_buffer:
                    s.overflowed = True
                else:
                    buffer.extend(recs)
                continue
            recs = past_cursor(s.cursor, recs)
            if not recs:
                continue
            try:
                s.owner.deliver(s, recs)
            except Exception:  # one broken connection must not stop the fan-out to all the others
                log.exception("delivery failed; closing the subscriber so that it resumes from its cursor")
                with contextlib.suppress(Exception):
                    s.owner.lost("delivery failed")
                continue
            delivered += len(recs)
        return delivered

    async def _tick(self) -> None:
        """Send advanced cursors to filtered subscriptions at most once a second (PROTOCOL section 2)."""
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for s in list(self._subs):
                rec = s.skipped
                if rec is None or s.buffer is not None or s.cursor is None or now - s.last_sent < 1.0:
                    continue
                s.skipped = None
                before = s.cursor
                s.advance_to(rec)
                if s.cursor is not before:
                    s.last_sent = now
                    s.owner.advance(s)
