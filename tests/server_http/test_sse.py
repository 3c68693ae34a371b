"""Server-Sent Events `/v1/sse` (PROTOCOL.md section 4): one cursor format with the WebSocket."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from .conftest import ServerFactory
from .support import (
    SECRET,
    Server,
    SseStream,
    assert_error,
    bearer,
    collect_events,
    event,
    publish,
    recv,
    request,
    sse,
    token,
    unique,
    ws_connect,
)

KEEPALIVE_S = 0.3


@pytest.fixture(scope="module")
def server(serve_module: ServerFactory) -> Server:
    """Auth on, with a short SSE keepalive."""
    return serve_module("--jwt-secret", SECRET, "--sse-keepalive", str(KEEPALIVE_S), "--publish-rate", "0")


@pytest.fixture(scope="module")
def full_access() -> dict[str, str]:
    return bearer(token(sub="sse-tester"))


@pytest.fixture
async def http(server: Server, full_access: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client(headers=full_access) as client:
        yield client


async def data_of(stream: SseStream, count: int) -> list[int]:
    """The `data.n` of the next `count` events; each message's id must be the event's offset."""
    out = []
    for msg in await stream.events(count):
        doc = msg.json()
        assert msg.id == doc["offset"], msg
        out.append(doc["data"]["n"])
    return out


async def test_events_arrive_with_the_cursor_as_id(http: httpx.AsyncClient) -> None:
    topic = unique("sse")
    async with sse(http, {"topics": f"{topic}.>"}) as (stream, first):
        head = first.json()
        assert head["recovered"] is True and head["replayed"] == 0 and head["cursor"]
        offsets = await publish(http, *(event(f"{topic}.a", data={"n": n}) for n in range(5)))
        msgs = await stream.events(5)
    assert [m.id for m in msgs] == offsets
    docs = [m.json() for m in msgs]
    assert [d["data"]["n"] for d in docs] == list(range(5))
    assert all(d["topic"] == f"{topic}.a" and d["type"] == "test.event" for d in docs)


async def test_response_headers(http: httpx.AsyncClient) -> None:
    async with http.stream("GET", "/v1/sse", params={"topics": unique("sse")}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-request-id"]


@pytest.mark.parametrize("how", ["last-event-id", "cursor-param"])
async def test_resume_replays_exactly_the_missed_events(http: httpx.AsyncClient, how: str) -> None:
    topic = unique("sse")
    async with sse(http, {"topics": topic}) as (stream, _):
        await publish(http, *(event(topic, data={"n": n}) for n in range(3)))
        msgs = await stream.events(3)
    last_id = msgs[-1].id
    assert last_id is not None
    await publish(http, *(event(topic, data={"n": n}) for n in range(3, 6)))
    params = {"topics": topic}
    headers = {}
    if how == "last-event-id":
        headers["Last-Event-ID"] = last_id
    else:
        params["cursor"] = last_id
    async with sse(http, params, headers) as (stream, first):
        head = first.json()
        assert head["recovered"] is True and head["replayed"] == 3
        assert await data_of(stream, 3) == [3, 4, 5]
        await publish(http, event(topic, data={"n": 6}))  # live continues right after, no duplicates
        assert await data_of(stream, 1) == [6]


async def test_a_websocket_cursor_resumes_sse(
    server: Server, http: httpx.AsyncClient, full_access: dict[str, str]
) -> None:
    topic = unique("sse")
    ws = await ws_connect(server, headers=full_access)
    try:
        assert (await recv(ws))["op"] == "welcome"
        assert (await request(ws, {"op": "subscribe", "id": "1", "sub": "w", "topics": [topic]}))[
            "op"
        ] == "subscribed"
        await publish(http, *(event(topic, data={"n": n}) for n in range(3)))
        _, cursor = await collect_events(ws, "w", 3)
    finally:
        await ws.close()
    await publish(http, *(event(topic, data={"n": n}) for n in range(3, 5)))
    async with sse(http, {"topics": topic, "cursor": cursor}) as (stream, first):
        assert first.json()["replayed"] == 2
        assert await data_of(stream, 2) == [3, 4]


async def test_an_sse_id_resumes_a_websocket(
    server: Server, http: httpx.AsyncClient, full_access: dict[str, str]
) -> None:
    topic = unique("sse")
    async with sse(http, {"topics": topic}) as (stream, _):
        await publish(http, *(event(topic, data={"n": n}) for n in range(2)))
        msgs = await stream.events(2)
    await publish(http, event(topic, data={"n": 2}))
    ws = await ws_connect(server, headers=full_access)
    try:
        assert (await recv(ws))["op"] == "welcome"
        frame = {"op": "subscribe", "id": "1", "sub": "w", "topics": [topic], "cursor": msgs[-1].id}
        reply = await request(ws, frame)
        assert reply["op"] == "subscribed" and reply["recovered"] is True and reply["replayed"] == 1
        got, _ = await collect_events(ws, "w", 1)
    finally:
        await ws.close()
    assert [e["data"]["n"] for e in got] == [2]


async def test_from_earliest_replays_retained_history(http: httpx.AsyncClient) -> None:
    topic = unique("sse")
    await publish(http, *(event(topic, data={"n": n}) for n in range(3)))
    async with sse(http, {"topics": topic, "from": "earliest"}) as (stream, first):
        assert first.json()["replayed"] == 3
        assert await data_of(stream, 3) == [0, 1, 2]


async def test_unusable_cursor_is_reported_and_starts_live(http: httpx.AsyncClient) -> None:
    topic = unique("sse")
    await publish(http, event(topic, data={"n": 0}))
    async with sse(http, {"topics": topic}, {"Last-Event-ID": "%%not-a-cursor%%"}) as (stream, first):
        head = first.json()
        assert head["recovered"] is False and head["reason"] == "bad_cursor" and head["replayed"] == 0
        await publish(http, event(topic, data={"n": 1}))
        assert await data_of(stream, 1) == [1]


async def test_keepalive_comments_flow_while_idle(http: httpx.AsyncClient) -> None:
    async with sse(http, {"topics": unique("sse")}) as (stream, _):
        started = time.monotonic()
        for _ in range(2):
            msg = await stream.next_matching(lambda m: bool(m.comments))
            assert msg.comments == ["keepalive"] and msg.data is None and msg.id is None
        # two keepalives at 0.3 s intervals: not instant, not stuck
        assert time.monotonic() - started >= KEEPALIVE_S


async def test_where_filter(http: httpx.AsyncClient) -> None:
    topic = unique("sse")
    where = json.dumps({"priority": {"in": ["high", "critical"]}})
    async with sse(http, {"topics": topic, "where": where}) as (stream, _):
        priorities = ["normal", "high", "low", "critical", "normal"]
        await publish(http, *(event(topic, priority=p, data={"n": n}) for n, p in enumerate(priorities)))
        assert await data_of(stream, 2) == [1, 3]
        # the skipped tail still moves Last-Event-ID on (an id-only message), so a resume skips it
        [skipped] = await publish(http, event(topic, priority="low", data={"n": 5}))
        advance = await stream.next_matching(lambda m: m.id == skipped, wait=5)
        assert advance.data is None


async def test_malformed_where_is_bad_request(http: httpx.AsyncClient) -> None:
    resp = await http.get(
        "/v1/sse", params={"topics": "a.b", "where": json.dumps({"priority": {"gt": "nope"}})}
    )
    err = assert_error(resp, 400, "bad_request")
    assert "where.priority" in err["message"]
    resp = await http.get("/v1/sse", params={"topics": "a..b"})
    assert_error(resp, 400, "bad_request")


async def test_token_in_the_query_string(server: Server) -> None:
    topic = unique("sse")
    tok = token(sub="browser", subscribe=(f"{topic}.>",), publish=(f"{topic}.>",))
    async with server.client() as anonymous:
        assert_error(await anonymous.get("/v1/sse", params={"topics": f"{topic}.>"}), 401, "unauthorized")
        resp = await anonymous.get("/v1/sse", params={"topics": f"{topic}.>", "token": "garbage"})
        assert_error(resp, 401, "unauthorized")
        async with sse(anonymous, {"topics": f"{topic}.>", "token": tok}) as (stream, _):
            await publish(anonymous, event(f"{topic}.x", data={"n": 7}), headers=bearer(tok))
            assert await data_of(stream, 1) == [7]
    assert tok not in server.log()


async def test_forbidden_topic_is_403(server: Server) -> None:
    tok = token(sub="narrow", subscribe=("swarm.s1.>",), publish=())
    async with server.client() as anonymous:
        for topics in ("swarm.s2.>", "swarm.>", ">", "swarm.s1.>,swarm.s2.x"):
            resp = await anonymous.get("/v1/sse", params={"topics": topics, "token": tok})
            assert_error(resp, 403, "forbidden")
        async with sse(anonymous, {"topics": "swarm.s1.agent.*", "token": tok}):
            pass
