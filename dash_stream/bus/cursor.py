"""Cursors: an epoch plus one position per partition, as one opaque string (PROTOCOL.md section 2).

Format: ``<epoch>.<partition>-<position>[.<partition>-<position>...]``, e.g. ``k3v9q2ab.0-1841``.
Positions are non-negative integers that grow within a partition; the memory bus has one
partition, the Redis bus one per stream. Clients must treat the string as opaque.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from dash_stream.protocol.errors import BadRequest

# \Z, not $ (which also matches before a trailing newline); [0-9], not \d (which matches any Unicode digit)
_EPOCH: Final = re.compile(r"^[a-z0-9]{1,32}\Z")
_PART: Final = re.compile(r"^([0-9]{1,6})-([0-9]{1,20})\Z")
MAX_PARTITIONS: Final = 4096


class BadCursor(BadRequest):
    """A cursor string that does not parse."""


class Cursor(msgspec.Struct, frozen=True, gc=False):  # a dict of ints cannot form a cycle
    """A position in the log: the log's epoch and the last seen position per partition."""

    epoch: str
    positions: dict[int, int]

    def encode(self) -> str:
        """The opaque string form handed to clients."""
        parts = ".".join(f"{p}-{pos}" for p, pos in sorted(self.positions.items()))
        return f"{self.epoch}.{parts}" if parts else self.epoch

    def advanced(self, partition: int, position: int) -> Cursor:
        """This cursor moved forward to `position` in `partition` (never backwards)."""
        if self.positions.get(partition, -1) >= position:
            return self
        return Cursor(self.epoch, {**self.positions, partition: position})

    def merged(self, other: Cursor) -> Cursor:
        """The per-partition maximum of two cursors of the same epoch."""
        out = dict(self.positions)
        for p, pos in other.positions.items():
            if out.get(p, -1) < pos:
                out[p] = pos
        return Cursor(self.epoch, out)


def decode_cursor(text: str) -> Cursor:
    """Parse a cursor string; raise BadCursor (a bad_request) naming what is wrong."""
    if not isinstance(text, str) or not text or len(text) > 64 * 1024:
        raise BadCursor("cursor: not a cursor string")
    epoch, _, rest = text.partition(".")
    if not _EPOCH.match(epoch):
        raise BadCursor("cursor: malformed epoch")
    positions: dict[int, int] = {}
    if not rest:
        raise BadCursor("cursor: no position")
    if rest:
        items = rest.split(".")
        if len(items) > MAX_PARTITIONS:
            raise BadCursor("cursor: too many partitions")
        for item in items:
            m = _PART.match(item)
            if m is None:
                raise BadCursor(f"cursor: malformed position {item[:30]!r}")
            positions[int(m.group(1))] = int(m.group(2))
    return Cursor(epoch, positions)
