"""Cursors and recovery (PROTOCOL.md section 2) against a real `dash-stream serve` process."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
from helpers import (
    JSON,
    MSGPACK,
    Frame,
    WsClient,
    WsClientFactory,
    event,
    eventually,
    scaled,
    seqs,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import ServerFactory, ServerProcess
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from dash_stream.bus.cursor import decode_cursor
from dash_stream.filters import TopicSet


async def connected(ws_client: WsClientFactory, srv: ServerProcess, **kwargs: Any) -> WsClient:
    """A client whose welcome has arrived."""
    client = await ws_client(srv.ws_url, **kwargs)
    await client.wait_for(lambda f: f.get("op") == "welcome")
    return client


def subscribed_frame(client: WsClient, sub: str) -> tuple[int, Frame]:
    """The index and the `subscribed` frame of `sub`."""
    for i, frame in enumerate(client.frames):
        if frame.get("op") == "subscribed" and frame.get("sub") == sub:
            return i, frame
    raise AssertionError(f"no subscribed frame for {sub}")


# ---------------------------------------------------------------- resume


async def test_resume_replays_the_missed_events_once_then_continues_live_without_a_gap(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    first = await connected(ws_client, shared_dev_server)
    await first.subscribe("s", [f"{topic}.>"])
    publisher = await connected(ws_client, shared_dev_server)
    await publisher.publish_many([event(f"{topic}.a", n) for n in range(10)])
    seen = await first.wait_events("s", 10)
    cursor = seen[4]["offset"]  # the client saw 0..4, then dropped
    await first.close()

    published: list[int] = []

    async def keep_publishing() -> None:
        for n in range(10, 80):
            await publisher.publish(event(f"{topic}.a", n))
            published.append(n)

    task = asyncio.create_task(keep_publishing())
    try:
        await eventually(lambda: len(published) >= 15, what="the publisher to get going")
        second = await connected(ws_client, shared_dev_server)
        reply = await second.subscribe("s", [f"{topic}.>"], cursor=cursor)
        await task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert reply["recovered"] is True and reply["replayed"] >= 20
    assert reply["cursor"] == cursor
    events = await second.wait_events("s", 75)
    await publisher.publish(event(f"{topic}.a", 80))
    events = await second.wait_events("s", 76)
    await second.ping()
    assert seqs(events) == list(range(5, 81))
    assert len({e["offset"] for e in events}) == 76


async def test_subscribed_comes_before_the_replay_and_counts_it(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    publisher = await connected(ws_client, shared_dev_server)
    offsets = await publisher.publish_many([event(f"{topic}.a", n) for n in range(7)])
    client = await connected(ws_client, shared_dev_server)
    reply = await client.subscribe("s", [f"{topic}.a"], cursor=offsets[1])
    assert reply["recovered"] is True and reply["replayed"] == 5
    events = await client.wait_events("s", 5)
    index, _ = subscribed_frame(client, "s")
    first_events = next(i for i, f in enumerate(client.frames) if f.get("op") == "events")
    assert index < first_events
    assert seqs(events) == [2, 3, 4, 5, 6]
    assert client.cursors["s"] == offsets[-1]


async def test_from_earliest_replays_all_retained_history_of_the_topics(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    publisher = await connected(ws_client, shared_dev_server)
    topics = ["a", "b", "a", "a.deep", "b", "a"]
    await publisher.publish_many([event(f"{topic}.{t}", n) for n, t in enumerate(topics)])
    client = await connected(ws_client, shared_dev_server, subprotocols=[MSGPACK])
    reply = await client.subscribe("s", [f"{topic}.a"], **{"from": "earliest"})
    assert reply["recovered"] is True and reply["replayed"] == 3
    assert seqs(await client.wait_events("s", 3)) == [0, 2, 5]
    # `subscribed.cursor` is where the subscription started: resuming from it replays the same
    again = await connected(ws_client, shared_dev_server)
    same = await again.subscribe("s", [f"{topic}.a"], cursor=reply["cursor"])
    assert same["replayed"] == 3
    assert seqs(await again.wait_events("s", 3)) == [0, 2, 5]
    await publisher.publish(event(f"{topic}.a", 6))
    assert seqs(await client.wait_events("s", 4)) == [0, 2, 5, 6]
    await client.ping()
    assert len(client.events["s"]) == 4


async def test_a_long_replay_comes_in_bounded_frames_each_with_its_cursor(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    publisher = await connected(ws_client, shared_dev_server)
    for start in range(0, 1200, 400):
        await publisher.publish_many([event(f"{topic}.a", n) for n in range(start, start + 400)])
    client = await connected(ws_client, shared_dev_server, subprotocols=[MSGPACK])
    reply = await client.subscribe("s", [f"{topic}.>"], **{"from": "earliest"})
    assert reply["replayed"] == 1200
    assert seqs(await client.wait_events("s", 1200)) == list(range(1200))
    frames = [f for f in client.frames if f.get("op") == "events"]
    assert len(frames) >= 3
    for frame in frames:
        assert 1 <= len(frame["events"]) <= 500
        assert frame["cursor"] == frame["events"][-1]["offset"]


async def test_a_trimmed_cursor_reports_trimmed_and_goes_live(
    server: ServerFactory, ws_client: WsClientFactory
) -> None:
    srv = server("--dev", "--retention-events", "16")
    publisher = await connected(ws_client, srv)
    old = (await publisher.publish(event("trim.a", 0)))["offset"]
    await publisher.publish_many([event("trim.a", n) for n in range(1, 51)])
    client = await connected(ws_client, srv)
    reply = await client.subscribe("s", ["trim.>"], cursor=old)
    assert reply["recovered"] is False and reply["reason"] == "trimmed" and reply["replayed"] == 0
    await publisher.publish(event("trim.a", 51))
    assert seqs(await client.wait_events("s", 1)) == [51]
    await client.ping()
    assert seqs(client.events["s"]) == [51], "nothing of the partial history was replayed"
    # the announced cursor is "now": resuming from it replays nothing from before
    again = await connected(ws_client, srv)
    fresh = await again.subscribe("s", ["trim.>"], cursor=reply["cursor"])
    assert fresh["recovered"] is True and fresh["replayed"] == 1
    assert seqs(await again.wait_events("s", 1)) == [51]


async def test_a_cursor_from_another_server_process_reports_epoch_changed(
    shared_dev_server: ServerProcess, server: ServerFactory, ws_client: WsClientFactory, topic: str
) -> None:
    old_server = await connected(ws_client, shared_dev_server)
    cursor = (await old_server.publish(event(f"{topic}.a", 0)))["offset"]
    restarted = server("--dev")
    publisher = await connected(ws_client, restarted)
    await publisher.publish_many([event(f"{topic}.a", n) for n in range(1, 4)])
    client = await connected(ws_client, restarted)
    reply = await client.subscribe("s", [f"{topic}.>"], cursor=cursor)
    assert reply["recovered"] is False and reply["reason"] == "epoch_changed" and reply["replayed"] == 0
    assert decode_cursor(reply["cursor"]).epoch != decode_cursor(cursor).epoch
    await publisher.publish(event(f"{topic}.a", 4))
    assert seqs(await client.wait_events("s", 1)) == [4]


async def test_a_garbage_cursor_reports_bad_cursor_and_goes_live(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    client = await connected(ws_client, shared_dev_server)
    ack = await client.publish(event(f"{topic}.a", 0))
    beyond = decode_cursor(ack["offset"])
    beyond_text = f"{beyond.epoch}." + ".".join(f"{p}-{pos + 10**9}" for p, pos in beyond.positions.items())
    for n, garbage in enumerate(["not a cursor!", "", "UPPER.0-1", "abc.0-x", beyond_text]):
        reply = await client.subscribe(f"s{n}", [f"{topic}.>"], cursor=garbage)
        assert reply["recovered"] is False and reply["reason"] == "bad_cursor" and reply["replayed"] == 0
    await client.publish(event(f"{topic}.a", 1))
    for n in range(5):
        assert seqs(await client.wait_events(f"s{n}", 1)) == [1]


# ---------------------------------------------------------------- filtered subscriptions


async def test_a_filtered_subscription_gets_its_cursor_advanced_past_skipped_events(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    where = {"priority": {"in": ["high", "critical"]}}
    client = await connected(ws_client, shared_dev_server)
    await client.subscribe("s", [f"{topic}.>"], where=where)
    publisher = await connected(ws_client, shared_dev_server)
    offsets = await publisher.publish_many([event(f"{topic}.a", n) for n in range(3)])  # all skipped
    skipped_at = time.monotonic()
    advance = await client.wait_for(lambda f: f.get("op") == "events" and f["sub"] == "s", within=5)
    assert time.monotonic() - skipped_at <= scaled(2.0), "the advance must arrive within 2 s"
    assert advance["events"] == []
    assert advance["cursor"] == offsets[-1]
    # resuming from the advanced cursor replays none of the skipped events, filtered or not
    for where_again in (where, None):
        resumed = await connected(ws_client, shared_dev_server)
        extra = {"where": where_again} if where_again else {}
        reply = await resumed.subscribe("s", [f"{topic}.>"], cursor=advance["cursor"], **extra)
        assert reply["recovered"] is True and reply["replayed"] == 0


async def test_an_event_skipped_after_a_delivered_one_still_advances_the_cursor(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, http: httpx.AsyncClient, topic: str
) -> None:
    client = await connected(ws_client, shared_dev_server)
    await client.subscribe("s", [f"{topic}.>"], where={"priority": "high"})
    batch = {"events": [event(f"{topic}.a", 0, priority="high"), event(f"{topic}.a", 1)]}
    response = await http.post(f"{shared_dev_server.base_url}/v1/events", json=batch)
    assert response.status_code == 202, response.text
    high, normal = response.json()["offsets"]
    assert seqs(await client.wait_events("s", 1)) == [0]
    assert client.cursors["s"] == high
    frame = await client.wait_for(lambda f: f.get("op") == "events" and f["events"] == [], within=5)
    assert frame["cursor"] == normal


# ---------------------------------------------------------------- property: drop and resume anywhere

SUFFIXES = ["a.x", "a.y", "b.x", "b.y.z"]
PATTERNS = ["a.*", "*.x", "b.>", "a.x", ">"]


@dataclass(frozen=True)
class ClientPlan:
    patterns: tuple[str, ...]
    drop_after: tuple[int, ...]  # received-event counts at which the client drops its connection
    msgpack: bool
    abrupt: bool
    high_only: bool  # a `where` filter: only priority high


@dataclass(frozen=True)
class Scenario:
    topics: tuple[str, ...]  # topic suffix of each published event, in publish order
    high: tuple[bool, ...]  # whether each event has priority high (else normal)
    bursts: tuple[int, ...]  # the publisher pipelines this many events at a time, cyclically
    clients: tuple[ClientPlan, ...]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(min_value=15, max_value=150))
    topics = tuple(draw(st.lists(st.sampled_from(SUFFIXES), min_size=n, max_size=n)))
    high = tuple(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    bursts = tuple(draw(st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=5)))
    plans = draw(
        st.lists(
            st.builds(
                ClientPlan,
                patterns=st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=2, unique=True).map(tuple),
                drop_after=st.lists(st.integers(min_value=0, max_value=n), max_size=4).map(
                    lambda xs: tuple(sorted(set(xs)))
                ),
                msgpack=st.booleans(),
                abrupt=st.booleans(),
                high_only=st.booleans(),
            ),
            min_size=2,
            max_size=4,
        )
    )
    return Scenario(topics, high, bursts, tuple(plans))


class ResumingClient:
    """Follows one subscription, drops the connection at planned points and resumes by cursor."""

    def __init__(self, url: str, prefix: str, plan: ClientPlan, expected: int) -> None:
        self.url = url
        self.topics = [f"{prefix}.{p}" for p in plan.patterns]
        self.plan = plan
        self.expected = expected
        self.received: list[Frame] = []
        self.cursor: str | None = None
        self.connections = 0
        self.subscribed = asyncio.Event()

    def encode(self, frame: Frame) -> str | bytes:
        return msgspec.msgpack.encode(frame) if self.plan.msgpack else json.dumps(frame)

    async def recv(self, conn: ClientConnection) -> Frame:
        data = await asyncio.wait_for(conn.recv(), scaled(20))
        doc: Frame = msgspec.msgpack.decode(data) if isinstance(data, bytes) else json.loads(data)
        return doc

    async def run(self) -> None:
        drops = list(self.plan.drop_after)
        while True:
            conn = await connect(
                self.url,
                subprotocols=[Subprotocol(MSGPACK if self.plan.msgpack else JSON)],
                proxy=None,
                max_size=None,
            )
            self.connections += 1
            try:
                await self.subscribe(conn)
                if drops and len(self.received) >= drops[0]:
                    drop_reached(drops, len(self.received))
                    continue  # drop right after subscribing
                while len(self.received) < self.expected:
                    frame = await self.recv(conn)
                    if frame["op"] != "events":
                        continue
                    self.received.extend(frame["events"])
                    self.cursor = frame["cursor"]
                    if drops and len(self.received) >= drops[0]:
                        drop_reached(drops, len(self.received))
                        break
                else:
                    return
            finally:
                if self.plan.abrupt:
                    conn.transport.abort()
                await conn.close()

    async def subscribe(self, conn: ClientConnection) -> Frame:
        """Subscribe (from the last cursor once there is one); the `subscribed` frame."""
        frame = await self.recv(conn)
        assert frame["op"] == "welcome"
        request: Frame = {"op": "subscribe", "id": "1", "sub": "s", "topics": self.topics}
        if self.cursor is not None:
            request["cursor"] = self.cursor
        if self.plan.high_only:
            request["where"] = {"priority": "high"}
        await conn.send(self.encode(request))
        frame = await self.recv(conn)
        assert frame["op"] == "subscribed" and frame["recovered"] is True, frame
        if self.cursor is None:
            self.cursor = frame["cursor"]
        self.subscribed.set()
        return frame


def drop_reached(drops: list[int], received: int) -> None:
    """Forget the drop points `received` has reached."""
    while drops and received >= drops[0]:
        drops.pop(0)


async def run_scenario(url: str, scenario: Scenario) -> None:
    prefix = f"p{uuid.uuid4().hex[:10]}"
    full_topics = [f"{prefix}.{t}" for t in scenario.topics]
    expected: list[list[int]] = []
    for plan in scenario.clients:
        matcher = TopicSet([f"{prefix}.{p}" for p in plan.patterns])
        expected.append(
            [
                i
                for i, t in enumerate(full_topics)
                if matcher.matches(t) and (scenario.high[i] or not plan.high_only)
            ]
        )
    clients = [
        ResumingClient(url, prefix, plan, len(want))
        for plan, want in zip(scenario.clients, expected, strict=True)
    ]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    publisher = await WsClient.connect(url)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.subscribed.wait() for c in clients)), scaled(20))
        n, burst = 0, 0
        while n < len(full_topics):
            size = scenario.bursts[burst % len(scenario.bursts)]
            burst += 1
            chunk = [
                event(t, i, priority="high" if scenario.high[i] else "normal")
                for i, t in enumerate(full_topics[n : n + size], start=n)
            ]
            await publisher.publish_many(chunk)
            n += len(chunk)
        await asyncio.wait_for(asyncio.gather(*tasks), scaled(60))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.close()
    for client in clients:  # nothing is left after the last cursor: no late duplicate can follow
        protocol = Subprotocol(MSGPACK if client.plan.msgpack else JSON)
        conn = await connect(url, subprotocols=[protocol], proxy=None)
        try:
            assert (await client.subscribe(conn))["replayed"] == 0
        finally:
            await conn.close()
    for client, want in zip(clients, expected, strict=True):
        by_topic: dict[str, list[int]] = defaultdict(list)
        for ev in client.received:
            by_topic[ev["topic"]].append(ev["data"]["seq"])
        wanted: dict[str, list[int]] = defaultdict(list)
        for i in want:
            wanted[full_topics[i]].append(i)
        assert dict(by_topic) == dict(wanted), (client.plan, client.connections)


@settings(max_examples=20, deadline=None)
@given(scenario=scenarios())
def test_clients_that_drop_and_resume_anywhere_see_every_event_once_in_order(
    shared_dev_server: ServerProcess, scenario: Scenario
) -> None:
    asyncio.run(run_scenario(shared_dev_server.ws_url, scenario))
