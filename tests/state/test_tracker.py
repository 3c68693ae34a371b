"""`SwarmTracker`: the node's fold kept at the end of the log, with a real MemoryBus and Hub."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import eventually

from dash_stream.bus.base import Incoming, Record
from dash_stream.bus.memory import MemoryBus
from dash_stream.events import EventIn, complete
from dash_stream.filters import TopicSet
from dash_stream.server.hub import Hub, Subscription
from dash_stream.server.metrics import Metrics
from dash_stream.server.swarms import SwarmTracker, patterns_reach_swarm


def incoming(topic: str, type_: str, data: Any = None) -> Incoming:
    event, encoded = complete(EventIn(topic=topic, type=type_, data=data))
    return Incoming(event, encoded, dedup=False)


async def publish(bus: MemoryBus, n: int, swarm: str = "s1", start: int = 0) -> None:
    await bus.publish(
        [
            incoming(
                f"swarm.{swarm}.agent.a{i % 5}", "agent.started" if i % 2 else "agent.spawned", {"seq": i}
            )
            for i in range(start, start + n)
        ]
    )


def events_of(tracker: SwarmTracker, swarm: str = "s1") -> int:
    view = tracker.state.swarm(swarm, 0.0)
    return 0 if view is None else view.events


@contextlib.asynccontextmanager
async def running(bus: MemoryBus, **kwargs: Any) -> AsyncIterator[tuple[Hub, SwarmTracker]]:
    hub = Hub(bus, Metrics())
    tracker = SwarmTracker(bus, **kwargs)
    hub.add_observer(tracker)
    await hub.start()
    tracker.start()
    try:
        yield hub, tracker
    finally:
        await tracker.stop()
        await hub.stop()
        await bus.close()


async def test_the_tracker_folds_the_retained_history_at_start_then_the_live_batches() -> None:
    bus = MemoryBus()
    await publish(bus, 50)
    async with running(bus) as (_, tracker):
        await tracker.wait_ready()
        assert events_of(tracker) == 50
        await publish(bus, 10, start=50)
        await eventually(lambda: events_of(tracker) == 60, what="60 events folded")
        await eventually(lambda: tracker.syncs >= 2, what="the re-read after the first live batch")
        assert tracker.state.position == await bus.head(TopicSet([">"]))


class Collector:
    """A hub Subscriber that keeps what it is given."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def deliver(self, sub: Subscription, records: list[Record]) -> None:
        sub.advance_through(records)
        self.records.extend(records)

    def advance(self, sub: Subscription) -> None:
        pass

    def lost(self, reason: str) -> None:
        raise AssertionError(f"lost: {reason}")


async def test_a_snapshot_then_a_subscription_from_its_cursor_counts_every_event_exactly_once() -> None:
    bus = MemoryBus()
    await publish(bus, 100)
    async with running(bus) as (hub, tracker):
        await tracker.wait_ready()
        stop = asyncio.Event()

        async def keep_publishing() -> int:
            sent = 100
            while not stop.is_set():
                await publish(bus, 7, start=sent)
                sent += 7
                await asyncio.sleep(0)
            return sent

        task = asyncio.create_task(keep_publishing())
        await asyncio.sleep(0.05)
        cursor, views = tracker.snapshot(lambda s: True)
        owner = Collector()
        sub = Subscription(owner, "s", TopicSet(["swarm.s1.>"]), None, 100_000)
        recovery = await hub.attach(sub, cursor=cursor.encode(), earliest=False)
        assert recovery.recovered
        owner.records[:0] = recovery.replay + recovery.pending
        await asyncio.sleep(0.05)
        stop.set()
        total = await task
        await eventually(lambda: events_of(tracker) == total, what="the fold to reach the end")
        await eventually(
            lambda: views[0].events + len(owner.records) == total, what="all events after the cursor"
        )
        positions = [r.position for r in owner.records]
        assert positions == sorted(set(positions)), "no duplicates, in order"
        assert positions[0] == cursor.positions[0] + 1, "the first event after the snapshot's cursor"


async def test_a_restart_of_the_live_reader_is_caught_up_from_the_log() -> None:
    bus = MemoryBus()
    tracker = SwarmTracker(bus)  # no hub: nothing is observed unless the tracker reads it
    tracker.start()
    try:
        await tracker.wait_ready()
        await publish(bus, 20)
        assert events_of(tracker) == 0
        tracker.live_restarted()
        await eventually(lambda: events_of(tracker) == 20, what="the catch-up read")
    finally:
        await tracker.stop()


async def test_a_buffer_overflow_while_reading_is_recovered_by_reading_again() -> None:
    bus = MemoryBus()
    tracker = SwarmTracker(bus, max_buffer=5)
    await publish(bus, 30)
    page = await bus.read(TopicSet([">"]), None, 100)
    tracker.live_restarted()  # buffering until the read
    tracker.observe(page.records[:4])
    tracker.observe(page.records[4:12])  # over the bound: dropped, to be read again
    await tracker.sync()
    assert events_of(tracker) == 30


async def test_a_position_trimmed_away_rebuilds_from_the_retained_history() -> None:
    bus = MemoryBus(max_events=10)
    tracker = SwarmTracker(bus)
    await publish(bus, 5)
    await tracker.sync()
    assert events_of(tracker) == 5
    await publish(bus, 30, start=5)  # never observed, and the ring keeps only 10
    await tracker.sync()
    assert events_of(tracker) == 10
    assert tracker.state.position == await bus.head(TopicSet([">"]))


async def test_snapshot_before_the_first_catch_up_is_unavailable() -> None:
    from dash_stream.protocol.errors import Unavailable

    tracker = SwarmTracker(MemoryBus())
    with pytest.raises(Unavailable):
        tracker.snapshot(lambda s: True)


@pytest.mark.parametrize(
    ("patterns", "reached"),
    [
        ([">"], True),
        (["swarm.>"], True),
        (["swarm.s1.>"], True),
        (["swarm.*.agent.*"], True),
        (["*.s1.x"], True),
        (["swarm.s1"], False),
        (["swarm.*"], False),
        (["swarm.s2.>"], False),
        (["metrics.>", "swarm.s1.agent.a1"], True),
    ],
)
def test_which_subscriptions_reach_a_swarm(patterns: list[str], reached: bool) -> None:
    assert patterns_reach_swarm(patterns, "s1") is reached
