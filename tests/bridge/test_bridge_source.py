"""Sources: a real `dash-stream serve` over the WebSocket protocol, and a MemoryBus in-process.
A cursor that cannot be honoured yields a gap and replays from the earliest retained event."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from bridge_support import publish, scaled

from bridge.source import BusSource, SourceBatch, WsSource
from dash_stream.bus.memory import MemoryBus


async def take(source: Any, cursor: str | None, events: int) -> list[SourceBatch]:
    """Batches until `events` events arrived (gaps included)."""
    out: list[SourceBatch] = []
    async with asyncio.timeout(scaled(20)):
        gen = source.batches(cursor)
        try:
            async for batch in gen:
                out.append(batch)
                if sum(len(b.events) for b in out) >= events:
                    break
        finally:
            await gen.aclose()
    return out


async def http_publish(base_url: str, n: int, swarm: str = "s1") -> list[str]:
    events = [
        {"topic": f"swarm.{swarm}.agent.a{i}", "type": "agent.failed", "priority": "high"} for i in range(n)
    ]
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(f"{base_url}/v1/events", json={"events": events})
    assert response.status_code == 202, response.text
    offsets: list[str] = response.json()["offsets"]
    return offsets


async def test_ws_source_reads_resumes_and_replays_after_an_unknown_epoch(server: Any) -> None:
    srv = server("--dev")
    offsets = await http_publish(srv.base_url, 3)
    source = WsSource(srv.ws_url, topics=["swarm.>"], where=None, start="earliest")

    batches = await take(source, None, 3)
    assert [e.offset for b in batches for e in b.events] == offsets
    cursor = batches[-1].cursor
    more = await http_publish(srv.base_url, 2)
    resumed = await take(source, cursor, 2)
    assert [e.offset for b in resumed for e in b.events] == more  # nothing again, nothing missed

    other_epoch = "zzzzzzzz00.0-2"  # well-formed, from a log that no longer exists
    replayed = await take(source, other_epoch, 5)
    assert replayed[0].gap == "epoch_changed" and replayed[0].cursor is None
    assert [e.offset for b in replayed for e in b.events] == offsets + more


async def test_ws_source_sends_the_filter_to_the_server(server: Any) -> None:
    srv = server("--dev")
    source = WsSource(
        srv.ws_url, topics=["swarm.>"], where={"not": {"labels.origin": "dash-bridge"}}, start="earliest"
    )
    async with httpx.AsyncClient(trust_env=False) as client:
        await client.post(
            f"{srv.base_url}/v1/events",
            json={
                "events": [
                    {"topic": "swarm.s1.a", "type": "x", "labels": {"origin": "dash-bridge"}},
                    {"topic": "swarm.s1.a", "type": "y"},
                ]
            },
        )
    batches = await take(source, None, 1)
    assert [e.type for b in batches for e in b.events] == ["y"]


async def test_bus_source_pages_history_then_follows_live() -> None:
    bus = MemoryBus()
    first = await publish(bus, 5)
    source = BusSource(bus, topics=["swarm.>"], start="earliest", page_size=2)
    gen = source.batches(None)
    got: list[str] = []
    async with asyncio.timeout(scaled(10)):
        while len(got) < 5:
            got += [e.offset or "" for e in (await anext(gen)).events]
        later = await publish(bus, 2)
        while len(got) < 7:
            got += [e.offset or "" for e in (await anext(gen)).events]
    await gen.aclose()
    assert got == first + later


async def test_bus_source_starts_at_latest_and_replays_a_new_epoch_from_earliest() -> None:
    bus = MemoryBus()
    await publish(bus, 3)
    source = BusSource(bus, topics=["swarm.>"], start="latest")
    gen = source.batches(None)
    async with asyncio.timeout(scaled(10)):
        first = asyncio.ensure_future(anext(gen))
        await asyncio.sleep(0.05)
        assert not first.done()  # the three old events are not read
        [new] = await publish(bus, 1)
        batch = await first
    await gen.aclose()
    assert [e.offset for e in batch.events] == [new]

    restarted = MemoryBus()  # a server restart: a new epoch
    again = await publish(restarted, 2)
    batches = await take(BusSource(restarted, topics=["swarm.>"]), batch.cursor, 2)
    assert batches[0].gap == "epoch_changed"
    assert [e.offset for b in batches for e in b.events] == again
