"""The subscription's cached cursor text always equals the cursor's own encoding."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dash_stream.bus.base import Record
from dash_stream.bus.cursor import Cursor, decode_cursor
from dash_stream.events import EventIn, complete
from dash_stream.filters import TopicSet
from dash_stream.server.hub import Subscription

EVENT, ENCODED = complete(EventIn(topic="a.b", type="t"))


def record(partition: int, position: int) -> Record:
    offset = f"ep.{partition}-{position}"
    return Record(EVENT, partition, position, offset, ENCODED, 0.0)


frames = st.lists(
    st.lists(st.tuples(st.integers(0, 5), st.integers(1, 10_000)), min_size=1, max_size=4), max_size=30
)


@settings(max_examples=200, deadline=None)
@given(
    start=st.dictionaries(st.integers(0, 5), st.integers(0, 5_000), min_size=1),
    frames=frames,
    reset_at=st.integers(0, 30),
)
def test_cached_cursor_text_matches_the_encoding(start, frames, reset_at):
    sub = Subscription(None, "s", TopicSet(["a.>"]), None, 10)  # type: ignore[arg-type]
    sub.cursor = Cursor("ep", dict(start))
    expected = dict(start)
    for i, frame in enumerate(frames):
        if i == reset_at:  # the cursor replaced from outside (a tick advance, a replay)
            sub.cursor = Cursor("ep", dict(expected))
        records = [record(p, pos) for p, pos in frame]
        text = sub.advance_through(records)
        for p, pos in frame:
            if len(frame) == 1 or all(q == frame[-1][0] for q, _ in frame):
                continue
            expected[p] = max(expected.get(p, -1), pos)
        if len(frame) == 1 or all(q == frame[-1][0] for q, _ in frame):
            p, pos = frame[-1]
            expected[p] = max(expected.get(p, -1), pos)
        assert sub.cursor is not None
        assert sub.cursor.positions == expected
        assert text == sub.cursor.encode() == sub.cursor_text
        assert decode_cursor(text) == sub.cursor
