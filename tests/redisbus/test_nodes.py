"""Many dash-stream nodes on one Redis: fan-out across nodes, node loss, Redis loss and reset.

Every test runs real `dash-stream serve` processes on a real redis-server and counts what each
client received: zero lost and zero duplicated events, or the protocol's explicit
`recovered: false` when the log itself was lost.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
import uuid

import httpx
import pytest
import redis_servers
from helpers import WsClient, scaled

pytestmark = pytest.mark.timeout(180)


def _topic() -> str:
    return f"rt{uuid.uuid4().hex[:8]}"


async def _post(base: str, events: list[dict[str, object]], attempts: int = 200) -> list[str]:
    """POST a batch; retry 503/connection errors like a careful publisher (same ids: dedup)."""
    async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=scaled(10)) as c:
        for _ in range(attempts):
            try:
                r = await c.post("/v1/events", json={"events": events})
            except httpx.TransportError:
                await asyncio.sleep(0.1)
                continue
            if r.status_code == 202:
                offsets: list[str] = r.json()["offsets"]
                return offsets
            assert r.status_code in (503, 429), r.text
            await asyncio.sleep(0.1)
    raise AssertionError("publish never succeeded")


def _events(topic: str, start: int, n: int) -> list[dict[str, object]]:
    return [
        {
            "topic": f"{topic}.a{i % 3}",
            "type": "test.seq",
            "id": f"{topic}-{i}",
            "source": "rt",
            "data": {"seq": i},
        }
        for i in range(start, start + n)
    ]


def _seqs(client: WsClient, sub: str) -> list[int]:
    return [int(e["data"]["seq"]) for e in client.events.get(sub, [])]


async def test_publish_on_one_node_delivers_on_all_three(redis_standalone, server):
    nodes = [server("--dev", "--bus", redis_standalone.url, "--redis-partitions", "4") for _ in range(3)]
    topic = _topic()
    clients = [await WsClient.connect(n.ws_url) for n in nodes]
    try:
        for c in clients:
            await c.subscribe("s", [f"{topic}.>"])
        await _post(nodes[0].base_url, _events(topic, 0, 60))
        for c in clients:
            await c.wait_events("s", 60, within=15)
        await asyncio.sleep(0.2)
        for c in clients:
            got = _seqs(c, "s")
            assert sorted(got) == list(range(60)), f"lost or duplicated: {got}"
            for lane in range(3):  # one topic keeps its publish order
                lane_seqs = [s for s in got if s % 3 == lane]
                assert lane_seqs == sorted(lane_seqs)
    finally:
        for c in clients:
            await c.close()


async def test_node_killed_clients_resume_on_another_node_without_loss_or_duplicates(
    redis_standalone, server
):
    node_a = server("--dev", "--bus", redis_standalone.url, "--redis-partitions", "4")
    node_b = server("--dev", "--bus", redis_standalone.url, "--redis-partitions", "4")
    topic = _topic()
    total = 400
    clients = [await WsClient.connect(node_a.ws_url) for _ in range(4)]
    received: list[list[dict[str, object]]] = [[] for _ in clients]
    for c in clients:
        await c.subscribe("s", [f"{topic}.>"])

    async def publish_all() -> None:
        for start in range(0, total, 20):
            await _post(node_b.base_url, _events(topic, start, 20))
            await asyncio.sleep(0.01)

    publisher = asyncio.create_task(publish_all())
    try:
        await clients[0].wait_events("s", 100, within=20)
        node_a.proc.send_signal(signal.SIGKILL)  # mid-stream, no goodbye
        node_a.proc.wait(10)
        resumed = []
        for i, c in enumerate(clients):
            await c.wait_closed(within=10)
            received[i].extend(c.events.get("s", []))
            cursor = c.cursors["s"]
            fresh = await WsClient.connect(node_b.ws_url)
            reply = await fresh.subscribe("s", [f"{topic}.>"], cursor=cursor)
            assert reply["recovered"] is True, reply
            resumed.append(fresh)
        await publisher
        for i, c in enumerate(resumed):
            await c._until(
                lambda c=c, i=i: len(received[i]) + len(c.events.get("s", [])) >= total,
                20,
                lambda: "all events after resume",
            )
            await asyncio.sleep(0.2)
            received[i].extend(c.events.get("s", []))
            seqs = [int(e["data"]["seq"]) for e in received[i]]  # type: ignore[index]
            assert len(seqs) == len(set(seqs)), f"client {i}: duplicates {len(seqs) - len(set(seqs))}"
            assert sorted(seqs) == list(range(total)), f"client {i}: lost {set(range(total)) - set(seqs)}"
            await c.close()
    finally:
        publisher.cancel()
        node_a.stop()


async def test_redis_restarted_empty_gives_epoch_changed(fresh_redis, server):
    node = server("--dev", "--bus", fresh_redis.url, "--redis-partitions", "4")
    topic = _topic()
    async with await WsClient.connect(node.ws_url) as c:
        await c.subscribe("s", [f"{topic}.>"])
        await _post(node.base_url, _events(topic, 0, 5))
        await c.wait_events("s", 5)
        cursor = c.cursors["s"]
    assert fresh_redis.master is not None
    fresh_redis.master.kill()
    fresh_redis.master.start()  # same port, no persistence: an empty Redis
    await _post(node.base_url, _events(topic, 5, 1))  # the node notices the lost epoch and makes a new one
    async with await WsClient.connect(node.ws_url) as c:
        reply = await c.subscribe("s", [f"{topic}.>"], cursor=cursor)
        assert reply["recovered"] is False and reply["reason"] == "epoch_changed", reply
        await _post(node.base_url, _events(topic, 6, 3))
        await c.wait_events("s", 3)
        assert sorted(_seqs(c, "s")) == [6, 7, 8]


async def test_redis_down_five_seconds_gives_503_then_recovers_without_loss(server):
    deployment = redis_servers.standalone(appendonly=True)
    try:
        node = server("--dev", "--bus", deployment.url, "--redis-partitions", "4")
        topic = _topic()
        async with (
            await WsClient.connect(node.ws_url) as c,
            httpx.AsyncClient(base_url=node.base_url, trust_env=False, timeout=scaled(10)) as http,
        ):
            await c.subscribe("s", [f"{topic}.>"])
            await _post(node.base_url, _events(topic, 0, 10))
            await c.wait_events("s", 10)
            assert deployment.master is not None
            deployment.master.kill()
            down_at = time.monotonic()
            r = await http.post("/v1/events", json=_events(topic, 10, 1)[0])
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "unavailable" and "retry-after" in r.headers
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["error"]["code"] == "unavailable"
            await asyncio.sleep(max(0.0, 5 - (time.monotonic() - down_at)))
            deployment.master.start()
            await _post(node.base_url, _events(topic, 10, 10))  # the retried event 10 included
            await c.wait_events("s", 20, within=20)
            assert (await http.get("/readyz")).status_code == 200
            assert c.close_code is None, "the WebSocket client must stay connected through the outage"
            assert sorted(_seqs(c, "s")) == list(range(20))
    finally:
        deployment.stop()


async def test_sentinel_failover_loses_no_acknowledged_event(server):
    deployment = redis_servers.sentinel(replicas=2)
    try:
        node = server(
            "--dev", "--bus", deployment.url, "--redis-partitions", "4", "--redis-min-replicas", "1"
        )
        topic = _topic()
        total = 300
        async with await WsClient.connect(node.ws_url) as c:
            await c.subscribe("s", [f"{topic}.>"])
            acked: set[int] = set()

            acked_at: list[float] = []

            async def publish_all() -> None:
                for start in range(0, total, 10):
                    await _post(node.base_url, _events(topic, start, 10), attempts=600)
                    acked.update(range(start, start + 10))
                    acked_at.append(time.monotonic())

            publisher = asyncio.create_task(publish_all())
            await c.wait_events("s", 50, within=20)
            assert deployment.master is not None
            killed_at = time.monotonic()
            deployment.master.kill()
            await asyncio.wait_for(publisher, scaled(120))
            outage = time.monotonic() - killed_at
            await c.wait_events("s", total, within=60)
            await asyncio.sleep(0.3)
            seqs = _seqs(c, "s")
            assert len(seqs) == len(set(seqs)), "duplicates after failover"
            assert acked <= set(seqs), f"acknowledged but lost: {sorted(acked - set(seqs))[:10]}"
            gaps = [b - a for a, b in itertools.pairwise(acked_at) if b >= killed_at]
            print(
                f"sentinel failover: longest gap between acknowledged publishes {max(gaps):.2f}s; "
                f"all {total} acknowledged {outage:.1f}s after the master's death"
            )
    finally:
        deployment.stop()
