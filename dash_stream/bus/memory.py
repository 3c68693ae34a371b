"""MemoryBus: the embedded default, one append-only ring in process memory.

One partition, a global sequence (positions start at 1), retention by count and by age, dedup by
(source, id) within a window, and an epoch that is new at every process start so that cursors
from before a restart are recognised as `epoch_changed` rather than silently misread.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence

from dash_stream.bus.base import Incoming, Lagged, Page, Published, Record
from dash_stream.bus.cursor import BadCursor, Cursor
from dash_stream.events import with_offset
from dash_stream.filters import ALL_TOPICS, TopicSet

PARTITION = 0
_SCAN_LIMIT = 20_000  # events examined per read() call; a page may end early with more=True
_LIVE_BATCH = 2_000  # records per live batch


def new_epoch() -> str:
    """A short random lowercase epoch id."""
    return secrets.token_hex(5)


class MemoryBus:
    """An in-process event log; see the module docstring."""

    def __init__(
        self,
        *,
        max_events: int = 100_000,
        max_age_s: float = 24 * 3600.0,
        dedup_window_s: float = 600.0,
        dedup_max_keys: int = 200_000,
        epoch: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._epoch = epoch or new_epoch()
        self._max_events = max_events
        self._max_age_s = max_age_s
        self._dedup_window_s = dedup_window_s
        self._dedup_max_keys = dedup_max_keys
        self._clock = clock
        self._ring: deque[Record] = deque()
        self._next = 1  # position of the next appended event
        self._dedup: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._changed = asyncio.Event()
        self._closed = False

    # ------------------------------------------------------------ positions

    @property
    def _first(self) -> int:
        """Position of the oldest retained event (== _next when empty)."""
        return self._ring[0].position if self._ring else self._next

    def _cursor(self, position: int) -> Cursor:
        return Cursor(self._epoch, {PARTITION: position})

    def offset_of(self, position: int) -> str:
        """The cursor string of one position."""
        return f"{self._epoch}.{PARTITION}-{position}"

    # ------------------------------------------------------------ Bus

    async def publish(self, events: Sequence[Incoming]) -> list[Published]:
        """Append events; repeats of a (source, id) seen within the dedup window are not appended."""
        if self._closed:
            from dash_stream.protocol.errors import Unavailable

            raise Unavailable("bus is closed")
        now = self._clock()
        out: list[Published] = []
        for item in events:
            ev = item.event
            key = (ev.source, ev.id)
            if item.dedup:
                seen = self._dedup.get(key)
                if seen is not None and seen[1] > now:
                    out.append(Published(seen[0], duplicate=True))
                    continue
            position = self._next
            self._next += 1
            offset = self.offset_of(position)
            self._ring.append(Record(ev, PARTITION, position, offset, with_offset(item.encoded, offset), now))
            if item.dedup:
                self._remember(key, offset, now)
            out.append(Published(offset))
        self._trim(now)
        self._changed.set()
        self._changed = asyncio.Event()
        return out

    def _remember(self, key: tuple[str, str], offset: str, now: float) -> None:
        self._dedup[key] = (offset, now + self._dedup_window_s)
        self._dedup.move_to_end(key)
        while len(self._dedup) > self._dedup_max_keys:
            self._dedup.popitem(last=False)
        # expire from the old end while entries are stale (amortised O(1))
        while self._dedup:
            _, (_, expiry) = next(iter(self._dedup.items()))
            if expiry > now:
                break
            self._dedup.popitem(last=False)

    def _trim(self, now: float) -> None:
        ring = self._ring
        while len(ring) > self._max_events:
            ring.popleft()
        oldest_allowed = now - self._max_age_s
        while ring and ring[0].published_at < oldest_allowed:
            ring.popleft()

    async def read(self, topics: TopicSet, after: Cursor | None, limit: int) -> Page:
        """Matching history after `after`; trimmed or epoch_changed when it cannot be honoured."""
        self._trim(self._clock())
        first, last = self._first, self._next - 1
        if after is None:
            start = first
        else:
            if after.epoch != self._epoch:
                return Page([], self._cursor(last), epoch_changed=True)
            pos = after.positions.get(PARTITION, 0)
            if pos > last:
                raise BadCursor("cursor: position is beyond the end of the log")
            if pos + 1 < first:
                return Page([], self._cursor(last), trimmed=True)
            start = pos + 1
        records: list[Record] = []
        ring = self._ring
        index = start - first
        end = min(len(ring), index + _SCAN_LIMIT)
        matches = None if topics is ALL_TOPICS else topics.matches
        examined = start - 1
        while index < end and len(records) < limit:
            rec = ring[index]
            if matches is None or matches(rec.event.topic):
                records.append(rec)
            examined = rec.position
            index += 1
        return Page(records, self._cursor(examined), more=index < len(ring))

    async def head(self, topics: TopicSet) -> Cursor:
        """The cursor of the newest event."""
        return self._cursor(self._next - 1)

    async def live(self, topics: TopicSet) -> AsyncIterator[list[Record]]:
        """Follow the log from now on, in batches; raises Lagged if retention overtook the reader."""
        pos = self._next - 1
        matches = None if topics is ALL_TOPICS else topics.matches
        while not self._closed:
            if self._next - 1 <= pos:
                await self._changed.wait()
                continue
            first = self._first
            if pos + 1 < first:
                raise Lagged(f"live reader at {pos} fell behind retention (oldest {first})")
            ring = self._ring
            index = pos + 1 - first
            end = min(len(ring), index + _LIVE_BATCH)
            batch = [ring[i] for i in range(index, end)]
            pos = batch[-1].position
            if matches is not None:
                batch = [r for r in batch if matches(r.event.topic)]
            if batch:
                yield batch

    async def epoch(self) -> str:
        """This process's epoch."""
        return self._epoch

    async def ready(self) -> bool:
        """Always ready until closed."""
        return not self._closed

    async def close(self) -> None:
        """End every live iterator."""
        self._closed = True
        self._changed.set()
