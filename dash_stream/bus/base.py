"""The Bus Protocol: the one narrow seam every event store implements (DESIGN.md "The bus")."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import msgspec

from dash_stream.bus.cursor import Cursor
from dash_stream.events import Event
from dash_stream.filters import TopicSet


class Record:
    """One stored event: the event, where it sits in the log, and its encodings (made once)."""

    __slots__ = ("_msgpack", "encoded", "event", "offset", "partition", "position", "published_at")

    def __init__(
        self,
        event: Event,
        partition: int,
        position: int,
        offset: str,
        encoded: bytes,
        published_at: float,
    ) -> None:
        self.event = event  # without `offset`; `encoded` has it
        self.partition = partition
        self.position = position
        self.offset = offset
        self.encoded = encoded  # JSON, with "offset"
        self.published_at = published_at  # wall-clock seconds when the bus accepted it
        self._msgpack: bytes | None = None

    @property
    def msgpack(self) -> bytes:
        """The MessagePack encoding, made on first use and kept (once per server, not per client)."""
        if self._msgpack is None:
            self._msgpack = msgspec.msgpack.encode(msgspec.structs.replace(self.event, offset=self.offset))
        return self._msgpack

    def __repr__(self) -> str:
        return f"Record({self.event.topic!r}, {self.partition}-{self.position})"


class Incoming(msgspec.Struct, frozen=True):
    """An event on its way into the bus: complete, encoded once, and whether to dedup it.

    `dedup` is true when the publisher chose the id, so (source, id) is a meaningful key.
    """

    event: Event
    encoded: bytes
    dedup: bool = True


class Published(msgspec.Struct, frozen=True):
    """The outcome of one event of a publish: its offset and whether it was a dedup repeat."""

    offset: str
    duplicate: bool = False


class Page(msgspec.Struct, frozen=True):
    """A page of history.

    `records` are the matching events after the requested cursor, in log order per partition;
    `cursor` is where the next page starts (past every event examined, matching or not);
    `trimmed` says events after the requested cursor are gone; `more` says the page is not the end.
    """

    records: list[Record]
    cursor: Cursor
    trimmed: bool = False
    epoch_changed: bool = False
    more: bool = False


class Lagged(Exception):
    """A live reader fell behind retention: events were lost to it and consumers must resume."""


class Bus(Protocol):
    """An ordered, retained event log with a live tail."""

    async def publish(self, events: Sequence[Incoming]) -> list[Published]:
        """Append events (with their JSON encodings) atomically; dedup by (source, id)."""
        ...

    async def read(self, topics: TopicSet, after: Cursor | None, limit: int) -> Page:
        """History after `after` (from the earliest retained event when None), at most `limit`."""
        ...

    async def head(self, topics: TopicSet) -> Cursor:
        """The cursor of the newest event now: resuming from it replays nothing."""
        ...

    def live(self, topics: TopicSet) -> AsyncIterator[list[Record]]:
        """Batches of newly appended records, in order, from now on; raises Lagged on a gap."""
        ...

    async def epoch(self) -> str:
        """The log's epoch: it changes when the log is reset, invalidating older cursors."""
        ...

    async def ready(self) -> bool:
        """Whether the bus can take publishes now."""
        ...

    async def close(self) -> None:
        """Release resources and end every live iterator."""
        ...


def is_outage(error: BaseException) -> bool:
    """Whether `error` means the bus is unreachable for now (expected, logged without a traceback)
    rather than a bug: network and timeout errors, Unavailable, and the Redis client's equivalents."""
    from dash_stream.protocol.errors import Unavailable

    if isinstance(error, OSError | TimeoutError | Unavailable | ConnectionError):
        return True
    kind = type(error)
    return kind.__module__.startswith("redis") and kind.__name__ in (
        "ConnectionError",
        "TimeoutError",
        "BusyLoadingError",
        "ReadOnlyError",
        "MasterNotFoundError",
        "ClusterDownError",
        "TryAgainError",
        "SlaveNotFoundError",
    )
