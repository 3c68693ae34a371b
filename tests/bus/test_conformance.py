"""The Bus conformance suite (DESIGN.md "The bus"): the same tests run against every Bus.

Every test takes the `make_bus` factory (or the default `bus`), which is parametrized over
`BUS_KINDS`. Each kind `k` has a fixture `k_bus_maker`: an async callable taking the options below
and returning a fresh, empty bus. To run the suite against another bus, add its kind to `BUS_KINDS`
and define its `<kind>_bus_maker` fixture; the tests stay unchanged.

Options every maker accepts: `retention_events` (events kept), `retention_age_s` (seconds kept),
`dedup_window_s` (seconds a (source, id) is remembered) and `clock` (a `() -> float` of wall-clock
seconds used for retention by age and the dedup window).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from helpers import scaled

from dash_stream.bus.base import Bus, Incoming, Published, Record
from dash_stream.bus.cursor import BadCursor, Cursor, decode_cursor
from dash_stream.bus.memory import MemoryBus
from dash_stream.events import EventIn, complete
from dash_stream.filters import ALL_TOPICS, TopicSet

BUS_KINDS = ["memory", "redis", "redis_sentinel", "redis_cluster"]

BusMaker = Callable[..., Awaitable[Bus]]


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def memory_bus_maker() -> BusMaker:
    """Makes MemoryBus instances."""

    async def make(
        *,
        retention_events: int = 100_000,
        retention_age_s: float = 24 * 3600.0,
        dedup_window_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> Bus:
        return MemoryBus(
            max_events=retention_events, max_age_s=retention_age_s, dedup_window_s=dedup_window_s, clock=clock
        )

    return make


@pytest.fixture(params=BUS_KINDS)
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[BusMaker]:
    """A factory of fresh buses of one kind; every bus it made is closed at teardown."""
    maker: BusMaker = request.getfixturevalue(f"{request.param}_bus_maker")
    made: list[Bus] = []

    async def make(**options: Any) -> Bus:
        bus = await maker(**options)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.close()


@pytest.fixture
async def bus(make_bus: BusMaker) -> Bus:
    """A fresh bus with default options."""
    return await make_bus()


# ---------------------------------------------------------------- helpers


def incoming(
    topic: str, n: int, *, id: str | None = None, source: str | None = None, dedup: bool | None = None
) -> Incoming:
    """An event on `topic` whose `data.n` is `n`; dedup defaults to "the publisher chose the id"."""
    ev, encoded = complete(EventIn(topic=topic, type="test.seq", id=id, source=source, data={"n": n}))
    return Incoming(ev, encoded, dedup=(id is not None) if dedup is None else dedup)


async def publish_range(bus: Bus, topic: str, start: int, stop: int) -> list[str]:
    """Publish events n = start..stop-1 on `topic` one batch at a time; their offsets."""
    published = await bus.publish([incoming(topic, n) for n in range(start, stop)])
    return [p.offset for p in published]


def numbers(records: list[Record]) -> list[int]:
    """The `data.n` of records."""
    return [int(r.event.data["n"]) for r in records]


def by_topic(records: list[Record]) -> dict[str, list[int]]:
    """The `data.n` of records per topic: the order a bus guarantees (none across partitions)."""
    out: dict[str, list[int]] = {}
    for r in records:
        out.setdefault(r.event.topic, []).append(int(r.event.data["n"]))
    return out


async def read_all(bus: Bus, topics: TopicSet, after: Cursor | None, limit: int = 1000) -> list[Record]:
    """Every record after `after`, following the pages."""
    out: list[Record] = []
    for _ in range(10_000):
        page = await bus.read(topics, after, limit)
        assert not page.trimmed and not page.epoch_changed
        out.extend(page.records)
        after = page.cursor
        if not page.more:
            return out
    raise AssertionError("read never reached the end")


def dominates(later: Cursor, earlier: Cursor) -> bool:
    """`later` is at or past `earlier` in every partition and past it in at least one."""
    parts = set(later.positions) | set(earlier.positions)
    ge = all(later.positions.get(p, -1) >= earlier.positions.get(p, -1) for p in parts)
    return ge and any(later.positions.get(p, -1) > earlier.positions.get(p, -1) for p in parts)


class LiveReader:
    """Consumes `bus.live(topics)` in a task, keeping every record it yields."""

    def __init__(self, bus: Bus, topics: TopicSet) -> None:
        self.records: list[Record] = []
        self.batches = 0
        self._arrived = asyncio.Event()
        self.task = asyncio.create_task(self._run(bus, topics))

    async def _run(self, bus: Bus, topics: TopicSet) -> None:
        async for batch in bus.live(topics):
            assert batch, "live() yielded an empty batch"
            self.records.extend(batch)
            self.batches += 1
            self._arrived.set()

    async def started(self, bus: Bus, probe_topic: str) -> None:
        """Publish probe events until the reader sees one: from then on it sees every publish."""
        deadline = time.monotonic() + scaled(10)
        n = -1
        while not self.records:
            assert time.monotonic() < deadline, "live() never yielded the probe events"
            assert not self.task.done(), self.task
            await bus.publish([incoming(probe_topic, n)])
            n -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), 0.02)

    async def wait_for(self, predicate: Callable[[list[Record]], bool]) -> None:
        """Wait until `predicate(records)` holds (scaled timeout)."""
        deadline = time.monotonic() + scaled(10)
        while not predicate(self.records):
            assert time.monotonic() < deadline, f"live() gave {numbers(self.records)}"
            assert not self.task.done(), self.task
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), 0.1)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


# ---------------------------------------------------------------- publish and read


async def test_publish_returns_offsets_in_publish_order(bus: Bus) -> None:
    first = await bus.publish([incoming("a.b", n) for n in range(5)])
    second = await bus.publish([incoming("a.b", n) for n in range(5, 8)])
    published = first + second
    assert all(isinstance(p, Published) and not p.duplicate for p in published)
    epoch = await bus.epoch()
    cursors = [decode_cursor(p.offset) for p in published]
    assert all(c.epoch == epoch for c in cursors)
    assert len({p.offset for p in published}) == 8
    for earlier, later in itertools.pairwise(cursors):
        assert dominates(later, earlier), (earlier, later)


async def test_read_after_a_cursor_returns_exactly_the_later_events_in_order(bus: Bus) -> None:
    offsets = await publish_range(bus, "a.b", 0, 10)
    page = await bus.read(ALL_TOPICS, decode_cursor(offsets[3]), 100)
    assert not page.trimmed and not page.epoch_changed and not page.more
    assert numbers(page.records) == list(range(4, 10))
    assert [r.offset for r in page.records] == offsets[4:]
    for rec in page.records:
        doc = msgspec.json.decode(rec.encoded)
        assert doc["offset"] == rec.offset and doc["data"] == {"n": rec.event.data["n"]}
    assert (await bus.read(ALL_TOPICS, decode_cursor(offsets[-1]), 100)).records == []


async def test_read_without_a_cursor_starts_at_the_earliest_event(bus: Bus) -> None:
    await publish_range(bus, "a.b", 0, 7)
    page = await bus.read(ALL_TOPICS, None, 100)
    assert numbers(page.records) == list(range(7))
    assert not page.more


async def test_read_returns_only_matching_topics(bus: Bus) -> None:
    topics = ["a.x", "b.y", "a.z", "a.x.deep", "b.y", "a.x"]
    await bus.publish([incoming(t, n) for n, t in enumerate(topics)])
    records = await read_all(bus, TopicSet(["a.*"]), None)
    assert by_topic(records) == {"a.x": [0, 5], "a.z": [2]}
    deep = await read_all(bus, TopicSet(["a.>", "b.y"]), None)
    assert by_topic(deep) == {"a.x": [0, 5], "b.y": [1, 4], "a.z": [2], "a.x.deep": [3]}


async def test_read_pages_with_the_page_cursor_until_more_is_false(bus: Bus) -> None:
    await publish_range(bus, "a.b", 0, 25)
    after: Cursor | None = None
    pages: list[list[int]] = []
    while True:
        page = await bus.read(ALL_TOPICS, after, 10)
        assert len(page.records) <= 10
        pages.append(numbers(page.records))
        after = page.cursor
        if not page.more:
            break
        assert len(pages) < 100
    assert [n for p in pages for n in p] == list(range(25))
    assert len(pages) >= 3


async def test_filtered_pages_skip_nothing_and_repeat_nothing(bus: Bus) -> None:
    await bus.publish([incoming("a.x" if n % 3 == 0 else "b.y", n) for n in range(60)])
    records = await read_all(bus, TopicSet(["a.x"]), None, limit=4)
    assert numbers(records) == list(range(0, 60, 3))


async def test_head_is_a_cursor_that_replays_nothing(bus: Bus) -> None:
    empty_head = await bus.head(ALL_TOPICS)
    page = await bus.read(ALL_TOPICS, empty_head, 100)
    assert page.records == [] and not page.trimmed and not page.epoch_changed
    await publish_range(bus, "a.b", 0, 3)
    assert numbers((await bus.read(ALL_TOPICS, empty_head, 100)).records) == [0, 1, 2]
    head = await bus.head(ALL_TOPICS)
    assert (await bus.read(ALL_TOPICS, head, 100)).records == []
    await publish_range(bus, "a.b", 3, 5)
    assert numbers((await bus.read(ALL_TOPICS, head, 100)).records) == [3, 4]


# ---------------------------------------------------------------- live


async def test_live_yields_new_batches_in_order_and_nothing_published_before(bus: Bus) -> None:
    await publish_range(bus, "a.b", 1000, 1005)  # before live() started: never yielded
    reader = LiveReader(bus, ALL_TOPICS)
    try:
        await reader.started(bus, "a.b")
        await bus.publish([incoming("a.b", n) for n in range(0, 10)])
        await bus.publish([incoming("a.b", n) for n in range(10, 15)])
        for n in range(15, 20):
            await bus.publish([incoming("a.b", n)])
        await reader.wait_for(lambda recs: 19 in numbers(recs))
        got = numbers(reader.records)
        assert not any(n >= 1000 for n in got), got
        probes = [n for n in got if n < 0]
        assert got == probes + list(range(20))
        assert probes == sorted(probes, reverse=True)  # the probes, in publish order too
    finally:
        await reader.stop()


async def test_live_yields_only_matching_topics(bus: Bus) -> None:
    reader = LiveReader(bus, TopicSet(["a.>"]))
    try:
        await reader.started(bus, "a.probe")
        await bus.publish([incoming("b.x" if n % 2 else "a.x", n) for n in range(10)])
        await bus.publish([incoming("a.y.z", 10)])
        await reader.wait_for(lambda recs: {8, 10} <= set(numbers(recs)))
        got = by_topic(reader.records)
        assert got.pop("a.probe")
        assert got == {"a.x": [0, 2, 4, 6, 8], "a.y.z": [10]}
    finally:
        await reader.stop()


async def test_close_ends_live_iterators(bus: Bus) -> None:
    reader = LiveReader(bus, ALL_TOPICS)
    await reader.started(bus, "a.b")
    await bus.close()
    done, _ = await asyncio.wait([reader.task], timeout=scaled(10))
    assert reader.task in done, "live() did not end after close()"
    assert reader.task.exception() is None


# ---------------------------------------------------------------- dedup


async def test_a_repeated_source_and_id_is_not_appended_again(bus: Bus) -> None:
    [first] = await bus.publish([incoming("a.b", 1, id="evt-1", source="agent/a7")])
    [again] = await bus.publish([incoming("a.b", 2, id="evt-1", source="agent/a7")])
    assert not first.duplicate
    assert again.duplicate and again.offset == first.offset
    [other_source] = await bus.publish([incoming("a.b", 3, id="evt-1", source="agent/a8")])
    assert not other_source.duplicate and other_source.offset != first.offset
    assert numbers(await read_all(bus, ALL_TOPICS, None)) == [1, 3]


async def test_a_repeat_within_one_batch_is_a_duplicate(bus: Bus) -> None:
    published = await bus.publish(
        [incoming("a.b", 1, id="x", source="s"), incoming("a.b", 2, id="x", source="s")]
    )
    assert [p.duplicate for p in published] == [False, True]
    assert published[1].offset == published[0].offset
    assert numbers(await read_all(bus, ALL_TOPICS, None)) == [1]


async def test_events_without_dedup_are_never_deduplicated(bus: Bus) -> None:
    published = await bus.publish([incoming("a.b", n, id="same", source="s", dedup=False) for n in range(3)])
    assert not any(p.duplicate for p in published)
    assert len({p.offset for p in published}) == 3
    assert numbers(await read_all(bus, ALL_TOPICS, None)) == [0, 1, 2]


async def test_dedup_forgets_a_key_after_the_window(make_bus: BusMaker) -> None:
    clock = FakeClock()
    bus = await make_bus(dedup_window_s=60.0, clock=clock)
    [first] = await bus.publish([incoming("a.b", 1, id="k", source="s")])
    clock.advance(30)
    [inside] = await bus.publish([incoming("a.b", 2, id="k", source="s")])
    assert inside.duplicate and inside.offset == first.offset
    clock.advance(31)
    [after] = await bus.publish([incoming("a.b", 3, id="k", source="s")])
    assert not after.duplicate and after.offset != first.offset
    assert numbers(await read_all(bus, ALL_TOPICS, None)) == [1, 3]


# ---------------------------------------------------------------- retention and cursors


async def test_retention_by_count_reports_trimmed_for_an_old_cursor(make_bus: BusMaker) -> None:
    bus = await make_bus(retention_events=10)
    [old] = await publish_range(bus, "a.b", 0, 1)
    offsets = await publish_range(bus, "a.b", 1, 51)
    page = await bus.read(ALL_TOPICS, decode_cursor(old), 100)
    assert page.trimmed and page.records == []
    kept = numbers(await read_all(bus, ALL_TOPICS, None))
    assert 1 <= len(kept) <= 50 and kept == list(range(51 - len(kept), 51))
    recent = await bus.read(ALL_TOPICS, decode_cursor(offsets[-3]), 100)
    assert not recent.trimmed and numbers(recent.records) == [49, 50]


async def test_retention_by_age_drops_old_events(make_bus: BusMaker) -> None:
    clock = FakeClock()
    bus = await make_bus(retention_age_s=60.0, clock=clock)
    old = await publish_range(bus, "a.b", 0, 3)
    clock.advance(30)
    await publish_range(bus, "a.b", 3, 5)
    clock.advance(40)  # events 0..2 are now 70 s old, 3..4 are 40 s old
    assert numbers(await read_all(bus, ALL_TOPICS, None)) == [3, 4]
    trimmed = await bus.read(ALL_TOPICS, decode_cursor(old[0]), 100)
    assert trimmed.trimmed and trimmed.records == []
    # nothing after the last expired event is lost, so its cursor is still honoured
    edge = await bus.read(ALL_TOPICS, decode_cursor(old[2]), 100)
    assert not edge.trimmed and numbers(edge.records) == [3, 4]


async def test_a_cursor_of_another_epoch_reports_epoch_changed(bus: Bus) -> None:
    await publish_range(bus, "a.b", 0, 3)
    head = await bus.head(ALL_TOPICS)
    epoch = await bus.epoch()
    other = "otherepoch0" if epoch != "otherepoch0" else "otherepoch1"
    page = await bus.read(ALL_TOPICS, Cursor(other, dict(head.positions)), 100)
    assert page.epoch_changed and page.records == []


async def test_a_cursor_beyond_the_end_is_a_bad_cursor(bus: Bus) -> None:
    await publish_range(bus, "a.b", 0, 3)
    head = await bus.head(ALL_TOPICS)
    assert head.positions
    beyond = Cursor(head.epoch, {p: pos + 1000 for p, pos in head.positions.items()})
    with pytest.raises(BadCursor):
        await bus.read(ALL_TOPICS, beyond, 100)
