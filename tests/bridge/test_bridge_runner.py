"""The whole bridge in-process: a real MemoryBus source, the memory sink, a manual clock, and the
real state file. Restarts resume from the durable cursor: nothing lost, nothing sent twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bridge_support import config, publish, until

from bridge.clock import ManualClock
from bridge.dlq import JsonlDeadLetterQueue
from bridge.model import Message
from bridge.runner import Bridge
from bridge.sinks import MemorySink, SendResult
from bridge.state import FileStateStore
from dash_stream.bus.memory import MemoryBus


def doc(tmp_path: Path, **route: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "receiver": "mem",
        "group_by": ["labels.swarm"],
        "group_wait": "2s",
        "group_interval": "10s",
    }
    r.update(route)
    return {
        "source": {"topics": ["swarm.>"], "start": "earliest"},
        "receivers": [{"name": "mem", "kind": "memory", "max_attempts": 3, "backoff_initial": "1s"}],
        "routes": [r],
        "state": {"path": str(tmp_path / "state.json"), "checkpoint_interval": "1s"},
        "dlq": {"path": str(tmp_path / "dlq.jsonl")},
    }


def make(tmp_path: Path, bus: MemoryBus, clock: ManualClock, sink: MemorySink, **route: Any) -> Bridge:
    cfg = config(doc(tmp_path, **route))
    return Bridge(
        cfg,
        bus=bus,
        sinks={"mem": sink},
        store=FileStateStore(cfg.state_path),
        dlq=JsonlDeadLetterQueue(cfg.dlq_path),
        clock=clock,
    )


def pending(bridge: Bridge) -> int:
    assert bridge.pipeline is not None
    return bridge.pipeline.digester.pending_events


def offsets(messages: Any) -> list[str]:
    return [s.offset for m in messages for s in m.sources]


async def test_a_burst_becomes_one_digest_after_group_wait(tmp_path: Path) -> None:
    bus, clock, sink = MemoryBus(), ManualClock(), MemorySink("mem")
    async with make(tmp_path, bus, clock, sink) as bridge:
        published = await publish(bus, 12, labels={"swarm": "s1"})
        await until(lambda: pending(bridge) == 12, what="12 pending events")
        assert not sink.messages
        clock.advance(2)
        await until(lambda: len(sink.messages) == 1, what="one digest")
        await until(lambda: bridge.idle)
    [msg] = sink.messages
    assert msg.count == 12 and offsets([msg]) == published
    state = FileStateStore(tmp_path / "state.json").load()
    assert state is not None and state.cursor == published[-1] and state.inflight == []


async def test_low_priority_is_not_forwarded_and_critical_bypasses_the_wait(tmp_path: Path) -> None:
    bus, clock, sink = MemoryBus(), ManualClock(), MemorySink("mem")
    async with make(tmp_path, bus, clock, sink, where={"priority": {"gte": "high"}}) as bridge:
        await publish(bus, 3, priority="low", labels={"swarm": "s1"})
        [crit] = await publish(bus, 1, priority="critical", labels={"swarm": "s1"})
        await until(lambda: len(sink.messages) == 1, what="the critical message, without advancing the clock")
        assert bridge.pipeline is not None
        await until(lambda: bridge.pipeline is not None and bridge.pipeline.tracker.watermark == crit)
    assert offsets(sink.messages) == [crit]


async def test_a_restart_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    """Group s1 waits while a critical s2 event is delivered; then the bridge dies (the state file
    is what the last journal/checkpoint wrote). The next run sends s1 once and s2 never again."""
    bus, clock = MemoryBus(), ManualClock()
    first_sink = MemorySink("mem")
    bridge = make(tmp_path, bus, clock, first_sink)
    await bridge.start()
    s1 = await publish(bus, 3, labels={"swarm": "s1"})
    await until(lambda: pending(bridge) == 3)
    s2 = await publish(bus, 1, priority="critical", topic="swarm.s2.agent.a1", labels={"swarm": "s2"})
    await until(lambda: len(first_sink.messages) == 1)
    await until(lambda: not bridge.dispatcher or not bridge.dispatcher.inflight)
    clock.advance(1)  # a periodic checkpoint records the settled s2 delivery in the ledger
    state_path = tmp_path / "state.json"

    def settled_in_ledger() -> bool:
        state = FileStateStore(state_path).load()
        return state is not None and not state.inflight and ("routes[0]", s2[0]) in state.ledger

    await until(settled_in_ledger, what="the s2 delivery in the saved ledger")
    wal_path = tmp_path / "state.json.wal"
    crash_state, crash_wal = state_path.read_bytes(), wal_path.read_bytes() if wal_path.exists() else b""
    await bridge.stop()
    state_path.write_bytes(crash_state)  # as if killed: no final checkpoint
    wal_path.write_bytes(crash_wal)

    second_sink = MemorySink("mem")
    clock2 = ManualClock(start=clock.now)
    async with make(tmp_path, bus, clock2, second_sink) as again:
        await until(lambda: pending(again) == 3, what="s1 re-read")
        await until(lambda: again.metrics.events_in._value.get() == 4, what="s2 re-read too")
        clock2.advance(2)
        await until(lambda: len(second_sink.messages) == 1)
        await until(lambda: again.idle)
    assert offsets(first_sink.messages) == s2
    assert offsets(second_sink.messages) == s1


async def test_a_message_in_flight_at_a_crash_is_re_sent_identically(tmp_path: Path) -> None:
    bus, clock = MemoryBus(), ManualClock()

    class Hanging(MemorySink):
        async def send(self, message: Message) -> SendResult:
            self.attempts.append(message)
            await asyncio.Event().wait()  # the gateway took it, the answer never came
            raise AssertionError("unreachable")

    hanging = Hanging("mem")
    bridge = make(tmp_path, bus, clock, hanging, group_by=["..."])
    await bridge.start()
    published = await publish(bus, 2, labels={"swarm": "s1"})
    await until(lambda: len(hanging.attempts) == 1)  # one target: the second waits for the first
    await bridge.stop(grace_s=0)

    sink = MemorySink("mem")
    async with make(tmp_path, bus, clock, sink, group_by=["..."]) as again:
        await until(lambda: len(sink.messages) == 2)
        await until(lambda: again.idle)
        await asyncio.sleep(0.05)  # room for a wrong extra message to show up
    assert len(sink.messages) == 2
    assert sink.messages[0] == hanging.attempts[0]  # same id, same text: the gateway replays, not reruns
    assert sorted(offsets(sink.messages)) == sorted(published)


async def test_retries_then_dead_letter_and_the_cursor_still_moves(tmp_path: Path) -> None:
    bus, clock, sink = MemoryBus(), ManualClock(auto_advance=True), MemorySink("mem")
    sink.fail_next([SendResult(ok=False, status=503, retryable=True)] * 3)
    async with make(tmp_path, bus, clock, sink, group_by=["..."]) as bridge:
        [offset] = await publish(bus, 1, labels={"swarm": "s1"})
        await until(
            lambda: (
                bridge.idle and bridge.pipeline is not None and bridge.pipeline.tracker.watermark == offset
            )
        )
    assert len(sink.attempts) == 3 and not sink.messages
    [entry] = JsonlDeadLetterQueue(tmp_path / "dlq.jsonl").entries()
    assert entry.reason == "retries_exhausted" and entry.status == 503 and entry.attempts == 3
    assert offsets([entry.message]) == [offset]


async def test_a_401_is_not_retried(tmp_path: Path) -> None:
    bus, clock, sink = MemoryBus(), ManualClock(auto_advance=True), MemorySink("mem")
    sink.fail_next([SendResult(ok=False, status=401, detail="Unauthorized")])
    async with make(tmp_path, bus, clock, sink, group_by=["..."]) as bridge:
        await publish(bus, 1, labels={"swarm": "s1"})
        await until(lambda: bridge.idle and len(sink.attempts) == 1)
    assert bridge.metrics.retried.labels("mem")._value.get() == 0
    [entry] = JsonlDeadLetterQueue(tmp_path / "dlq.jsonl").entries()
    assert entry.reason == "http_401" and entry.attempts == 1
