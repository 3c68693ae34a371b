"""Cursors (PROTOCOL.md section 2): the opaque string round-trips, malformed strings are refused,
and `advanced` / `merged` only ever move a cursor forward."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dash_stream.bus.cursor import MAX_PARTITIONS, BadCursor, Cursor, decode_cursor
from dash_stream.protocol.errors import BadRequest, ErrorCode

epochs = st.from_regex(r"[a-z0-9]{1,32}", fullmatch=True)
partitions = st.integers(min_value=0, max_value=999_999)
positions = st.integers(min_value=0, max_value=10**20 - 1)
position_maps = st.dictionaries(partitions, positions, max_size=20)
# every cursor the server hands out names at least one position
cursors = st.builds(Cursor, epochs, st.dictionaries(partitions, positions, min_size=1, max_size=20))


@given(cursors)
def test_encode_then_decode_gives_the_same_cursor(cursor: Cursor) -> None:
    text = cursor.encode()
    assert decode_cursor(text) == cursor
    assert decode_cursor(text).encode() == text


@given(epochs, position_maps)
def test_the_encoding_does_not_depend_on_partition_order(epoch: str, pos: dict[int, int]) -> None:
    reordered = dict(reversed(list(pos.items())))
    assert Cursor(epoch, pos).encode() == Cursor(epoch, reordered).encode()


def test_the_documented_example_decodes() -> None:
    assert decode_cursor("k3v9q2ab.0-1841") == Cursor("k3v9q2ab", {0: 1841})
    assert decode_cursor("k3v9q2ab.0-5.3-7") == Cursor("k3v9q2ab", {0: 5, 3: 7})


MALFORMED = [
    "",
    "k3v9q2ab",  # an epoch without a position
    ".0-1",
    "UPPER.0-1",
    "ab_c.0-1",
    "e" * 33 + ".0-1",
    "abc.0",
    "abc.0-",
    "abc.-1",
    "abc.x-1",
    "abc.0-x",
    "abc.0-1-2",
    "abc.0--1",
    "abc.0-1..1-2",
    "abc.0-1.",
    "abc..0-1",
    "abc.1234567-1",
    "abc.0-" + "1" * 21,
    "abc.0-1 ",
    "abc.0-1\n",
    "abc\n.0-1",
    "abc\n",
    " abc.0-1",
    "abc.0-\u0661",  # ARABIC-INDIC DIGIT ONE: \d must not match non-ASCII digits
    "abc." + ".".join(f"{p}-1" for p in range(MAX_PARTITIONS + 1)),
    "a" * (64 * 1024 + 1),
]


@pytest.mark.parametrize("text", MALFORMED, ids=lambda t: repr(t[:24]))
def test_malformed_strings_raise_bad_cursor(text: str) -> None:
    with pytest.raises(BadCursor) as info:
        decode_cursor(text)
    assert isinstance(info.value, BadRequest)
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert info.value.message.startswith("cursor:")


@pytest.mark.parametrize("value", [None, 5, b"abc.0-1", ["abc.0-1"]])
def test_non_strings_raise_bad_cursor(value: Any) -> None:
    with pytest.raises(BadCursor):
        decode_cursor(value)


@given(st.text(max_size=80))
def test_decode_raises_only_bad_cursor(text: str) -> None:
    try:
        cursor = decode_cursor(text)
    except BadCursor:
        return
    assert decode_cursor(cursor.encode()) == cursor


# ---------------------------------------------------------------- advanced / merged


def test_advanced_moves_forward_and_adds_partitions() -> None:
    c = Cursor("e1", {0: 5})
    assert c.advanced(0, 9) == Cursor("e1", {0: 9})
    assert c.advanced(3, 2) == Cursor("e1", {0: 5, 3: 2})
    assert c.positions == {0: 5}  # frozen: the original is unchanged


def test_advanced_never_moves_backwards() -> None:
    c = Cursor("e1", {0: 5, 1: 7})
    assert c.advanced(0, 5) is c
    assert c.advanced(0, 2) is c
    assert c.advanced(1, 0) is c


@given(cursors, partitions, positions)
def test_advanced_is_the_maximum_in_its_partition(cursor: Cursor, partition: int, position: int) -> None:
    moved = cursor.advanced(partition, position)
    assert moved.epoch == cursor.epoch
    assert moved.positions[partition] == max(position, cursor.positions.get(partition, -1))
    for p, pos in cursor.positions.items():
        if p != partition:
            assert moved.positions[p] == pos


def test_merged_takes_the_maximum_per_partition() -> None:
    a = Cursor("e1", {0: 5, 1: 9})
    b = Cursor("e1", {0: 7, 2: 1})
    assert a.merged(b) == Cursor("e1", {0: 7, 1: 9, 2: 1})


@given(epochs, position_maps, position_maps, position_maps)
def test_merged_is_commutative_associative_and_idempotent(
    epoch: str, x: dict[int, int], y: dict[int, int], z: dict[int, int]
) -> None:
    a, b, c = Cursor(epoch, x), Cursor(epoch, y), Cursor(epoch, z)
    assert a.merged(b) == b.merged(a)
    assert a.merged(b).merged(c) == a.merged(b.merged(c))
    assert a.merged(a) == a
    merged = a.merged(b)
    for cursor in (a, b):
        assert all(merged.positions[p] >= pos for p, pos in cursor.positions.items())
    assert set(merged.positions) == set(x) | set(y)
