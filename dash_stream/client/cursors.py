"""Cursor arithmetic the SDK needs to resume exactly: "is this offset already behind me?" and
"where am I after this event?".

Cursors are opaque to applications. The SDK ships with the server, so it may read the format of
`dash_stream.bus.cursor` (`<epoch>.<partition>-<position>...`): an event's `offset` names its own
partition, while a subscription's cursor holds a position for every partition it spans. When a
string does not parse (a server with another format), the functions answer conservatively: nothing
counts as seen, and the cursor moves only on frame boundaries.
"""

from __future__ import annotations

from dash_stream.bus.cursor import BadCursor, Cursor, decode_cursor


def _parse(text: str | None) -> Cursor | None:
    if text is None:
        return None
    try:
        return decode_cursor(text)
    except BadCursor:
        return None


def covers(cursor: str | None, offset: str | None) -> bool:
    """True when the event at `offset` lies at or before `cursor` (same epoch): already delivered."""
    here, event = _parse(cursor), _parse(offset)
    if here is None or event is None or here.epoch != event.epoch:
        return False
    return all(here.positions.get(p, -1) >= pos for p, pos in event.positions.items())


def advance(cursor: str | None, offset: str | None) -> str | None:
    """The cursor after the event at `offset`, starting from `cursor` (never moves backwards).

    Returns `cursor` unchanged when either string does not parse; an event of another epoch
    starts afresh from its own offset.
    """
    if offset is None:
        return cursor
    here, event = _parse(cursor), _parse(offset)
    if event is None:
        return cursor
    if here is None:
        return offset if cursor is None else cursor
    if here.epoch != event.epoch:
        return offset
    return here.merged(event).encode()


def later(cursor: str | None, other: str | None) -> str | None:
    """The later of two cursors of one subscription (per-partition maximum in one epoch).

    A cursor of another epoch replaces the current one: the server moved to a new log.
    """
    if other is None:
        return cursor
    here, there = _parse(cursor), _parse(other)
    if here is None or there is None or here.epoch != there.epoch:
        return other
    return here.merged(there).encode()
