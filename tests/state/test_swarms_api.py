"""Live swarm state on real servers: `GET /v1/swarms[/{id}]`, auth, and the WebSocket `snapshot`
frame's consistency with the event log on the memory bus and on two Redis-bus nodes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import redis_servers
from helpers import Frame, WsClient, WsClientFactory, scaled
from servers import ServerFactory, ServerProcess

from dash_stream.bus.cursor import decode_cursor
from dash_stream.server.auth import mint_token

SECRET = "swarm-state-tests-secret-0123456789abcdef"


def swarm_id() -> str:
    return f"sw{uuid.uuid4().hex[:8]}"


def lifecycle(swarm: str, agent: str, type_: str, **data: Any) -> Frame:
    return {"topic": f"swarm.{swarm}.agent.{agent}", "type": type_, "data": {"agent_id": agent, **data}}


async def post(
    http: httpx.AsyncClient, srv: ServerProcess, events: list[Frame], token: str | None = None
) -> list[str]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    resp = await http.post(f"{srv.base_url}/v1/events", json={"events": events}, headers=headers)
    assert resp.status_code == 202, resp.text
    offsets: list[str] = resp.json()["offsets"]
    return offsets


async def connected(ws_client: WsClientFactory, srv: ServerProcess, token: str | None = None) -> WsClient:
    client = await ws_client(srv.ws_url)
    await client.wait_for(lambda f: f.get("op") == "welcome")
    if token is not None:
        reply = await client.request("auth", token=token)
        assert reply["op"] == "authed", reply
    return client


async def snapshot_subscribe(client: WsClient, sub: str, topics: list[str]) -> tuple[Frame, Frame]:
    """Subscribe with `snapshot: true`; the subscribed frame and the snapshot frame (which follows it)."""
    start = len(client.frames)
    subscribed = await client.subscribe(sub, topics, snapshot=True)
    snapshot = await client.wait_for(lambda f: f.get("op") == "snapshot" and f.get("sub") == sub, start=start)
    i_sub = client.frames.index(subscribed, start)
    i_snap = client.frames.index(snapshot, start)
    assert i_sub < i_snap, "subscribed comes first"
    events_before = [
        f for f in client.frames[start:i_snap] if f.get("op") == "events" and f.get("sub") == sub
    ]
    assert not events_before, "no events of the subscription before its snapshot"
    return subscribed, snapshot


# ---------------------------------------------------------------- HTTP


async def test_swarm_routes_serve_the_folded_state(
    shared_dev_server: ServerProcess, http: httpx.AsyncClient
) -> None:
    srv = shared_dev_server
    s = swarm_id()
    await post(
        http,
        srv,
        [
            lifecycle(s, "a1", "agent.spawned"),
            lifecycle(s, "a1", "agent.started", session_key="hook:a1"),
            lifecycle(s, "a2", "agent.failed", error="oom"),
            {
                "topic": f"swarm.{s}.task.t1",
                "type": "task.started",
                "data": {"task_id": "t1", "agent_id": "a1"},
            },
            {
                "topic": f"swarm.{s}.status",
                "type": "swarm.status",
                "data": {"swarm_id": s, "status": "degraded"},
            },
        ],
    )

    async def fetched() -> dict[str, Any] | None:
        resp = await http.get(f"{srv.base_url}/v1/swarms/{s}")
        return resp.json() if resp.status_code == 200 and resp.json()["events"] == 5 else None

    doc = None
    for _ in range(200):
        doc = await fetched()
        if doc:
            break
        await asyncio.sleep(0.02)
    assert doc is not None
    assert doc["status"] == "degraded"
    assert doc["agent_counts"]["running"] == 1 and doc["agent_counts"]["failed"] == 1
    assert [(a["agent_id"], a["status"]) for a in doc["agents"]] == [("a1", "running"), ("a2", "failed")]
    assert doc["agents"][0]["session_key"] == "hook:a1"
    assert [t["task_id"] for t in doc["tasks_running"]] == ["t1"]
    assert doc["last_error"]["message"] == "oom"
    assert doc["rates"]["events"] == 5 and len(doc["rates"]["series"]) == 60
    decode_cursor(doc["cursor"])

    listing = (await http.get(f"{srv.base_url}/v1/swarms", params={"agents": "false"})).json()
    mine = [v for v in listing["swarms"] if v["swarm_id"] == s]
    assert mine and mine[0]["agents"] == [] and mine[0]["agent_counts"]["running"] == 1
    assert isinstance(listing["time"], float) and decode_cursor(listing["cursor"])


async def test_unknown_and_invalid_swarms_get_the_error_shape(
    shared_dev_server: ServerProcess, http: httpx.AsyncClient
) -> None:
    base = shared_dev_server.base_url
    resp = await http.get(f"{base}/v1/swarms/{swarm_id()}", headers={"x-request-id": "req-42"})
    assert resp.status_code == 404
    assert resp.json()["error"] == {
        "code": "not_found",
        "message": resp.json()["error"]["message"],
        "request_id": "req-42",
    }
    assert resp.headers["x-request-id"] == "req-42"
    bad = await http.get(f"{base}/v1/swarms/bad%20id")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    flag = await http.get(f"{base}/v1/swarms", params={"agents": "maybe"})
    assert flag.status_code == 400 and "agents" in flag.json()["error"]["message"]


async def test_auth_a_reader_sees_only_swarms_it_may_subscribe_to(
    server: ServerFactory, http: httpx.AsyncClient, ws_client: WsClientFactory
) -> None:
    srv = server("--jwt-secret", SECRET)
    admin = mint_token(SECRET, sub="admin", subscribe=[">"], publish=[">"])
    reader = mint_token(SECRET, sub="reader", subscribe=["swarm.s1.>"], publish=[])
    agents_only = mint_token(SECRET, sub="narrow", subscribe=["swarm.s2.agent.>"], publish=[])
    await post(
        http, srv, [lifecycle("s1", "a1", "agent.started"), lifecycle("s2", "b1", "agent.started")], admin
    )

    def get(path: str, token: str | None) -> Any:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return http.get(f"{srv.base_url}{path}", headers=headers)

    for _ in range(200):
        listing = (await get("/v1/swarms", admin)).json()
        if len(listing.get("swarms", [])) == 2:
            break
        await asyncio.sleep(0.02)
    assert [v["swarm_id"] for v in (await get("/v1/swarms", reader)).json()["swarms"]] == ["s1"]
    assert (await get("/v1/swarms", agents_only)).json()["swarms"] == [], "a partial ACL sees no swarm state"
    assert (await get("/v1/swarms/s1", reader)).status_code == 200
    forbidden = await get("/v1/swarms/s2", reader)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    assert (await get("/v1/swarms/unknown", reader)).status_code == 403, "no existence leak outside the ACL"
    unauthorized = await get("/v1/swarms", None)
    assert unauthorized.status_code == 401 and unauthorized.json()["error"]["code"] == "unauthorized"

    client = await connected(ws_client, srv, reader)
    _, snap = await snapshot_subscribe(client, "s", ["swarm.s1.>"])
    assert [v["swarm_id"] for v in snap["swarms"]] == ["s1"]
    refused = await client.request("subscribe", sub="t", topics=["swarm.>"], snapshot=True)
    assert refused["op"] == "error" and refused["code"] == "forbidden"


# ---------------------------------------------------------------- WebSocket snapshot


async def test_snapshot_with_a_cursor_or_from_is_a_bad_request_and_other_topics_get_no_swarms(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, http: httpx.AsyncClient
) -> None:
    s = swarm_id()
    await post(http, shared_dev_server, [lifecycle(s, "a1", "agent.started")])
    client = await connected(ws_client, shared_dev_server)
    for extra in ({"from": "earliest"}, {"cursor": "abc.0-1"}, {"from": "latest"}):
        reply = await client.request("subscribe", sub="x", topics=[f"swarm.{s}.>"], snapshot=True, **extra)
        assert reply["op"] == "error" and reply["code"] == "bad_request", reply
    _, snap = await snapshot_subscribe(client, "m", ["metrics.>"])
    assert snap["swarms"] == []
    _, snap = await snapshot_subscribe(client, "one", [f"swarm.{s}.agent.*"])
    assert [v["swarm_id"] for v in snap["swarms"]] == [s]


async def check_snapshot_consistency(
    publisher: ServerProcess, watcher: ServerProcess, http: httpx.AsyncClient, ws_client: WsClientFactory
) -> None:
    """Publish through `publisher` continuously while a client of `watcher` takes a snapshot: the
    snapshot's count plus the events after its cursor is exactly what was published."""
    s = swarm_id()
    agents = [f"a{i}" for i in range(8)]
    types = ["agent.spawned", "agent.started", "agent.completed", "agent.failed"]
    published = 0
    await post(http, publisher, [lifecycle(s, a, "agent.spawned") for a in agents])
    published += len(agents)
    for _ in range(200):
        resp = await http.get(f"{watcher.base_url}/v1/swarms/{s}")
        if resp.status_code == 200 and resp.json()["events"] == published:
            break
        await asyncio.sleep(0.02)
    stop = asyncio.Event()
    counts = {"n": published}

    async def keep_publishing() -> None:
        i = 0
        while not stop.is_set():
            batch = [lifecycle(s, agents[(i + k) % 8], types[(i + k) % 4], seq=i + k) for k in range(5)]
            await post(http, publisher, batch)
            counts["n"] += len(batch)
            i += 5

    task = asyncio.create_task(keep_publishing())
    try:
        await asyncio.sleep(scaled(0.2))
        client = await connected(ws_client, watcher)
        subscribed, snap = await snapshot_subscribe(client, "state", [f"swarm.{s}.>"])
        assert subscribed["cursor"] == snap["cursor"] and subscribed["recovered"] is True
        await asyncio.sleep(scaled(0.3))
    finally:
        stop.set()
        await task
    total = counts["n"]
    base = snap["swarms"][0]["events"]
    assert 0 < base < total
    events = await client.wait_events("state", total - base, within=30)
    await asyncio.sleep(scaled(0.2))
    events = client.events["state"]
    assert len(events) == total - base, "every event after the snapshot's cursor, once"
    offsets = [e["offset"] for e in events]
    assert len(set(offsets)) == len(offsets)
    cursor = decode_cursor(snap["cursor"])
    for offset in offsets:
        at = decode_cursor(offset)
        for p, pos in at.positions.items():
            assert pos > cursor.positions.get(p, -1), f"{offset} is covered by the snapshot {snap['cursor']}"
    final = (await http.get(f"{watcher.base_url}/v1/swarms/{s}")).json()
    assert final["events"] == total
    statuses = {a["agent_id"]: a["status"] for a in snap["swarms"][0]["agents"]}
    status_of = {"agent.spawned": "spawned", "agent.started": "running", "agent.completed": "completed"}
    for e in events:
        statuses[e["data"]["agent_id"]] = status_of.get(e["type"], "failed")
    assert statuses == {a["agent_id"]: a["status"] for a in final["agents"]}


async def test_snapshot_and_live_events_are_consistent_on_the_memory_bus(
    server: ServerFactory, http: httpx.AsyncClient, ws_client: WsClientFactory
) -> None:
    srv = server("--dev", "--publish-rate", "0")
    await check_snapshot_consistency(srv, srv, http, ws_client)


async def test_snapshot_on_one_redis_node_is_consistent_with_events_published_on_another(
    server: ServerFactory,
    http: httpx.AsyncClient,
    ws_client: WsClientFactory,
    redis_deployment: redis_servers.Deployment,
) -> None:
    args = ("--dev", "--publish-rate", "0", "--bus", redis_deployment.url, "--redis-partitions", "4")
    node_a, node_b = server(*args), server(*args)
    await check_snapshot_consistency(node_a, node_b, http, ws_client)


async def test_a_restarted_redis_node_rebuilds_the_state_from_the_retained_log(
    server: ServerFactory, http: httpx.AsyncClient, redis_deployment: redis_servers.Deployment
) -> None:
    args = ("--dev", "--bus", redis_deployment.url, "--redis-partitions", "4")
    first = server(*args)
    s = swarm_id()
    await post(http, first, [lifecycle(s, f"a{i}", "agent.started") for i in range(6)])
    await post(http, first, [lifecycle(s, "a0", "agent.failed", error="boom")])
    for _ in range(200):
        before = (await http.get(f"{first.base_url}/v1/swarms/{s}")).json()
        if before.get("events") == 7:
            break
        await asyncio.sleep(0.02)
    first.stop()
    second = server(*args)
    after = (await http.get(f"{second.base_url}/v1/swarms/{s}")).json()
    assert after["events"] == 7
    assert after["agent_counts"] == before["agent_counts"]
    assert after["last_error"] == before["last_error"]
