"""Fan-out (DESIGN.md "Fan-out"): slow-consumer isolation, many subscribers, per-topic order."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import httpx
import pytest
from helpers import (
    MSGPACK,
    OP_CLOSE,
    OP_TEXT,
    Frame,
    RawWebSocket,
    WsClient,
    WsClientFactory,
    check_close_reason,
    event,
    metric_value,
    seqs,
)
from servers import ServerFactory, ServerProcess

FLOOD_LIMIT = 20_000  # events; the stalled client is normally closed long before this
BURST = 500
PAD = "x" * 1000  # ~1 KB events


@pytest.fixture(scope="module")
def fanout_server(module_server: ServerFactory) -> ServerProcess:
    """A server with small outboxes (so a stalled client overflows quickly) and no publish limits."""
    return module_server(
        "--dev",
        "--publish-rate",
        "0",
        "--conn-publish-rate",
        "0",
        "--outbox-max-bytes",
        "262144",
        "--outbox-max-frames",
        "64",
    )


async def connected(ws_client: WsClientFactory, srv: ServerProcess, **kwargs: Any) -> WsClient:
    """A client whose welcome has arrived."""
    client = await ws_client(srv.ws_url, **kwargs)
    await client.wait_for(lambda f: f.get("op") == "welcome")
    return client


async def slow_consumer_closes(http: httpx.AsyncClient, srv: ServerProcess) -> float:
    """dash_slow_consumer_closes_total from /metrics."""
    response = await http.get(f"{srv.base_url}/metrics")
    assert response.status_code == 200
    return metric_value(response.text, "dash_slow_consumer_closes_total")


def raw_events(raw: RawWebSocket) -> tuple[list[Frame], str | None]:
    """The events a raw client read and the cursor of its last events frame."""
    events: list[Frame] = []
    cursor = None
    for frame in raw.seen:
        if frame.opcode == OP_TEXT:
            doc = frame.json()
            if doc.get("op") == "events":
                events.extend(doc["events"])
                cursor = doc["cursor"]
    return events, cursor


async def test_a_stalled_consumer_is_closed_with_4008_and_others_get_every_event(
    fanout_server: ServerProcess, ws_client: WsClientFactory, http: httpx.AsyncClient, topic: str
) -> None:
    srv = fanout_server
    closes_before = await slow_consumer_closes(http, srv)
    stalled = await RawWebSocket.connect(srv.port, rcvbuf=4096, buffer_limit=4096)
    try:
        await stalled.read_frame()  # welcome
        await stalled.send_json({"op": "subscribe", "id": "1", "sub": "s", "topics": [f"{topic}.>"]})
        subscribed = await stalled.read_until(
            lambda f: f.opcode == OP_TEXT and f.json().get("op") == "subscribed"
        )
        normal = await connected(ws_client, srv)
        await normal.subscribe("s", [f"{topic}.>"])
        publisher = await connected(ws_client, srv)

        # the stalled client reads nothing from here on, while the publisher floods
        total = 0
        while total < FLOOD_LIMIT:
            burst = [event(f"{topic}.a", n, data={"seq": n, "pad": PAD}) for n in range(total, total + BURST)]
            await publisher.publish_many(burst)
            total += BURST
            await normal.wait_events("s", total, within=30)  # the normal client keeps up
            if await slow_consumer_closes(http, srv) > closes_before:
                break
        assert await slow_consumer_closes(http, srv) >= closes_before + 1, f"no 4008 after {total} events"
        await publisher.publish_many([event(f"{topic}.a", n) for n in range(total, total + 10)])
        total += 10
        await normal.wait_events("s", total, within=30)
        await normal.ping()
        assert seqs(normal.events["s"]) == list(range(total)), "the normal client missed nothing"

        # reading again, the stalled client finds what was sent before the close, then the close
        close = await stalled.read_until(lambda f: f.opcode == OP_CLOSE, within=30)
    finally:
        await stalled.abort()
    assert close.close_code == 4008
    assert check_close_reason(4008, close.close_reason)["code"] == "slow_consumer"
    got, cursor = raw_events(stalled)
    assert seqs(got) == list(range(len(got))), "what did arrive is a gap-free prefix"
    assert len(got) < total

    # it resumes from its last cursor and gets exactly the rest
    resumed = await connected(ws_client, srv)
    reply = await resumed.subscribe("s", [f"{topic}.>"], cursor=cursor or subscribed.json()["cursor"])
    assert reply["recovered"] is True and reply["replayed"] == total - len(got)
    rest = await resumed.wait_events("s", total - len(got), within=30)
    assert seqs(rest) == list(range(len(got), total))


async def test_many_subscribers_of_one_topic_each_get_every_event_once(
    fanout_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    clients = []
    for n in range(24):
        client = await connected(ws_client, fanout_server, subprotocols=[MSGPACK] if n % 3 == 0 else None)
        await client.subscribe("s", [f"{topic}.agents" if n % 2 else f"{topic}.*"])
        clients.append(client)
    publisher = await connected(ws_client, fanout_server)
    await publisher.publish_many([event(f"{topic}.agents", n) for n in range(300)])
    for client in clients:
        await client.wait_events("s", 300)
    for client in clients:
        await client.ping()  # anything extra would have arrived before the pong
        assert seqs(client.events["s"]) == list(range(300))


async def test_events_of_one_topic_arrive_in_publish_order(
    fanout_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    subscriber = await connected(ws_client, fanout_server)
    await subscriber.subscribe("all", [f"{topic}.>"])
    topics = [f"{topic}.swarm{n}.agent" for n in range(4)]
    publishers = [await connected(ws_client, fanout_server) for _ in topics]

    async def publish(client: WsClient, topic_name: str) -> None:
        for start in range(0, 300, 25):
            await client.publish_many([event(topic_name, n) for n in range(start, start + 25)])

    await asyncio.gather(*(publish(c, t) for c, t in zip(publishers, topics, strict=True)))
    events = await subscriber.wait_events("all", 4 * 300)
    await subscriber.ping()
    by_topic: dict[str, list[int]] = defaultdict(list)
    for ev in subscriber.events["all"]:
        by_topic[ev["topic"]].append(ev["data"]["seq"])
    assert {t: by_topic[t] for t in topics} == {t: list(range(300)) for t in topics}
    assert len(events) == 4 * 300
    offsets = [e["offset"] for e in events]
    assert len(set(offsets)) == len(offsets)
