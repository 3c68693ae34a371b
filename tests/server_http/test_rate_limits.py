"""Rate limits (PROTOCOL.md sections 3 and 5): publish per subject and connection, connects per IP."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .conftest import ServerFactory
from .support import (
    SECRET,
    Server,
    assert_error,
    bearer,
    event,
    recv,
    recv_until,
    request,
    timeout,
    token,
    unique,
    ws_connect,
)

RATE = 20


@pytest.fixture(scope="module")
def server(serve_module: ServerFactory) -> Server:
    """Publish limited to 20 events/s (burst 40) per token subject."""
    return serve_module("--jwt-secret", SECRET, "--publish-rate", str(RATE))


async def flood(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    """Send `count` publishes without waiting, then collect their `count` replies."""
    topic = unique("flood")
    for n in range(count):
        await ws.send(json.dumps({"op": "publish", "id": f"p{n}", "event": event(topic, data={"n": n})}))
    replies: list[dict[str, Any]] = []
    while len(replies) < count:
        replies.append(await recv_until(ws, lambda f: str(f.get("id", "")).startswith("p")))
    return replies


async def test_websocket_publish_flood_is_rate_limited_and_the_connection_stays_usable(
    server: Server,
) -> None:
    ws = await ws_connect(server, headers=bearer(token(sub="ws-flooder")))
    try:
        assert (await recv(ws))["op"] == "welcome"
        replies = await flood(ws, 5 * RATE)
        acks = [r for r in replies if r["op"] == "ack"]
        limited = [r for r in replies if r["op"] == "error"]
        assert acks, "the burst should let some publishes through"
        assert limited, "a flood of 5x the rate should be limited"
        assert len(acks) + len(limited) == 5 * RATE
        for err in limited:
            assert err["code"] == "rate_limited", err
            assert err["retryable"] is True
            assert isinstance(err["retry_after_ms"], int) and 0 < err["retry_after_ms"] <= 60_000
        assert (await request(ws, {"op": "ping", "id": "still-there"}))["op"] == "pong"
        # after the suggested delay, publishing works again
        wait_ms = max(int(err["retry_after_ms"]) for err in limited)
        await asyncio.sleep(wait_ms / 1000)
        deadline = time.monotonic() + timeout(10)
        while True:
            reply = await request(ws, {"op": "publish", "id": "again", "event": event(unique("flood"))})
            if reply["op"] == "ack" or time.monotonic() > deadline:
                break
            await asyncio.sleep(reply.get("retry_after_ms", 100) / 1000)
        assert reply["op"] == "ack", reply
    finally:
        await ws.close()


async def test_limits_are_per_subject(server: Server) -> None:
    first = await ws_connect(server, headers=bearer(token(sub="noisy")))
    second = await ws_connect(server, headers=bearer(token(sub="quiet")))
    try:
        for ws in (first, second):
            assert (await recv(ws))["op"] == "welcome"
        replies = await flood(first, 5 * RATE)
        assert any(r["op"] == "error" for r in replies)
        reply = await request(second, {"op": "publish", "id": "q", "event": event(unique("quiet"))})
        assert reply["op"] == "ack", reply
    finally:
        await first.close()
        await second.close()


async def test_http_flood_gets_429_with_retry_after(server: Server) -> None:
    headers = bearer(token(sub="http-flooder"))
    topic = unique("flood")
    async with server.client(headers=headers) as http:
        statuses = []
        limited = None
        for n in range(5 * RATE):  # batches of 10: the burst of 40 is spent after 4 of them
            resp = await http.post("/v1/events", json={"events": [event(topic, data={"n": n})] * 10})
            statuses.append(resp.status_code)
            if resp.status_code == 429:
                limited = resp
                break
        assert 202 in statuses
        assert limited is not None, f"never limited: {statuses}"
        err = assert_error(limited, 429, "rate_limited")
        retry_after = int(limited.headers["retry-after"])
        assert 1 <= retry_after <= 60
        assert err["retry_after_ms"] <= retry_after * 1000
        # what was limited was not appended; what was accepted was
        page = await http.get("/v1/events", params={"topics": topic, "limit": "1000"})
        assert len(page.json()["events"]) == 10 * statuses.count(202)


async def test_connection_attempts_per_ip_are_limited(serve: ServerFactory) -> None:
    server = serve("--dev", "--connect-rate", "1")  # burst 2
    for _ in range(8):
        ws = await ws_connect(server)
        try:
            frame = await recv(ws)
        except ConnectionClosed as e:
            assert e.rcvd is not None
            code, reason = e.rcvd.code, json.loads(e.rcvd.reason)
            break
        assert frame["op"] == "welcome"
        await ws.close()
    else:
        raise AssertionError("8 connections in a row at 1/s (burst 2) should hit the limit")
    assert code == 4029
    assert reason["code"] == "rate_limited"
    assert isinstance(reason["retry_after_ms"], int) and reason["retry_after_ms"] > 0
    # after the suggested delay a new connection is welcome again
    await asyncio.sleep(reason["retry_after_ms"] / 1000)
    deadline = time.monotonic() + timeout(10)
    while True:
        ws = await ws_connect(server)
        try:
            assert (await recv(ws))["op"] == "welcome"
            break
        except ConnectionClosed as e:
            assert time.monotonic() < deadline, e
            await asyncio.sleep(0.2)
        finally:
            await ws.close()
