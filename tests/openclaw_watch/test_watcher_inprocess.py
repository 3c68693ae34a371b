"""The watcher in this process on a MemoryBus, without a gateway: an absent gateway is retried (not
fatal) and reported once as `unreachable`; the outbox keeps publishing through a sink failure."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from helpers import scaled
from servers import free_port

from dash_stream.bus.base import Published
from dash_stream.bus.memory import MemoryBus
from dash_stream.events import EventIn
from dash_stream.filters import TopicSet
from dash_stream.openclaw.metrics import WatchMetrics
from dash_stream.openclaw.sinks import BusSink, Outbox, Outcome
from dash_stream.openclaw.watcher import Watcher

from .watch_support import config


async def test_an_absent_gateway_is_retried_and_reported_unreachable_once() -> None:
    bus = MemoryBus()
    cfg = config(gateway=f"ws://127.0.0.1:{free_port()}", down_after="300ms", backoff_max="500ms")
    watcher = Watcher(cfg, "token", BusSink(bus))
    await watcher.start()
    try:
        with pytest.raises(TimeoutError):
            await watcher.wait_connected(0.8)
        await asyncio.sleep(0.5)
        page = await bus.read(TopicSet(["openclaw.>"]), None, 100)
        assert [(r.event.type, r.event.data["status"], r.event.priority) for r in page.records] == [
            ("openclaw.gateway.status", "unreachable", "high")
        ]
        assert page.records[0].event.topic == "openclaw.gateway.gw1"
        assert watcher.failure is None  # not fatal: it keeps trying
        failures = watcher.metrics.registry.get_sample_value(
            "dash_openclaw_connect_failures_total", {"reason": "connect_failed"}
        )
        assert failures is not None and failures >= 2
    finally:
        await watcher.stop()


class FlakySink:
    """Fails (raises) on its first call, then accepts everything."""

    transport = "test"

    def __init__(self) -> None:
        self.calls = 0
        self.got: list[str] = []

    async def start(self) -> None:
        pass

    async def publish(self, events: Sequence[EventIn]) -> list[Outcome]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("boom")
        self.got.extend(e.id or "" for e in events)
        return [Published(f"o{i}") for i, _ in enumerate(events)]

    async def close(self) -> None:
        pass


async def test_the_outbox_retries_a_batch_after_a_sink_failure() -> None:
    sink = FlakySink()
    metrics = WatchMetrics()
    outbox = Outbox(sink, metrics, max_events=10, batch_max=5)
    outbox.start()
    try:
        for i in range(3):
            await outbox.put(EventIn(topic="openclaw.a.b", type="t", id=f"id{i}"), {}, None)
        assert await outbox.drain(scaled(10))
    finally:
        await outbox.stop()
    assert sink.got == ["id0", "id1", "id2"]
    assert metrics.registry.get_sample_value("dash_openclaw_publish_retries_total") == 3
