"""Auth against a real server (PROTOCOL.md sections 3 and 7): JWT on WebSocket, HTTP and SSE; API keys."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from dash_stream.server.auth import mint_token

from .conftest import ServerFactory
from .support import (
    API_KEY,
    SECRET,
    Server,
    assert_error,
    bearer,
    event,
    recv,
    request,
    sse,
    timeout,
    token,
    unique,
    wait_closed,
    ws_connect,
)


@pytest.fixture(scope="module")
def server(serve_module: ServerFactory) -> Server:
    """Auth on with a JWT secret and an API key; debug logging so that request paths are logged."""
    return serve_module("--jwt-secret", SECRET, "--api-key", API_KEY, "--log-level", "debug")


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as client:
        yield client


def _b64(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def alg_none_token() -> str:
    """An unsigned token that would grant everything if `alg: none` were accepted."""
    claims = {
        "sub": "mallory",
        "exp": int(time.time()) + 3600,
        "dash": {"subscribe": [">"], "publish": [">"]},
    }
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def expired_token() -> str:
    return token(sub="late", now=time.time() - 3600, ttl_s=60)


def foreign_token() -> str:
    return mint_token(
        "another-secret-that-is-long-enough-0123456789", sub="x", subscribe=[">"], publish=[">"]
    )


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "garbage": lambda: "garbage",
    "alg-none": alg_none_token,
    "expired": expired_token,
    "wrong-secret": foreign_token,
    "api-key": lambda: API_KEY,  # API keys are for HTTP publish only
}


async def welcomed(ws: ClientConnection) -> dict[str, Any]:
    frame = await recv(ws)
    assert frame["op"] == "welcome", frame
    return frame


async def assert_usable(ws: ClientConnection, n: int = 0) -> None:
    reply = await request(ws, {"op": "ping", "id": f"ping-{n}"})
    assert reply == {"op": "pong", "id": f"ping-{n}"}


async def test_without_a_token_every_op_but_auth_and_ping_is_unauthorized(server: Server) -> None:
    ws = await ws_connect(server)
    try:
        assert (await welcomed(ws))["auth"] == "required"
        ops: list[dict[str, Any]] = [
            {"op": "subscribe", "id": "s", "sub": "a", "topics": ["x.>"]},
            {"op": "publish", "id": "p", "event": event("x.y")},
            {"op": "unsubscribe", "id": "u", "sub": "a"},
        ]
        for op in ops:
            reply = await request(ws, op)
            assert reply["op"] == "error" and reply["code"] == "unauthorized", reply
            assert reply["retryable"] is False
        await assert_usable(ws)
        tok = token(sub="late-auth", subscribe=("x.>",), publish=("x.>",))
        authed = await request(ws, {"op": "auth", "id": "a", "token": tok})
        assert authed["op"] == "authed" and authed["sub"] == "late-auth", authed
        reply = await request(ws, ops[0])
        assert reply["op"] == "subscribed", reply
    finally:
        await ws.close()


async def test_auth_op_answers_with_subject_and_expiry(server: Server) -> None:
    tok = token(sub="alice", ttl_s=600)
    exp = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "==="))["exp"]
    ws = await ws_connect(server)
    try:
        await welcomed(ws)
        assert await request(ws, {"op": "auth", "id": "1", "token": tok}) == {
            "op": "authed",
            "id": "1",
            "sub": "alice",
            "exp": exp,
        }
    finally:
        await ws.close()


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_auth_op_with_a_bad_token_is_an_error(server: Server, kind: str) -> None:
    ws = await ws_connect(server)
    try:
        await welcomed(ws)
        reply = await request(ws, {"op": "auth", "id": "1", "token": BAD_TOKENS[kind]()})
        assert reply["op"] == "error" and reply["code"] == "unauthorized", reply
        await assert_usable(ws)
    finally:
        await ws.close()


@pytest.mark.parametrize("where", ["header", "query"])
@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_bad_token_at_connect_closes_4501_right_after_welcome(
    server: Server, kind: str, where: str
) -> None:
    bad = BAD_TOKENS[kind]()
    if where == "header":
        ws = await ws_connect(server, headers=bearer(bad))
    else:
        ws = await ws_connect(server, query=f"token={bad}")
    await welcomed(ws)
    code, reason = await wait_closed(ws)
    assert code == 4501
    assert reason["code"] == "unauthorized"


async def test_token_in_header_or_query_authenticates(server: Server) -> None:
    tok = token(sub="bob", subscribe=("a.>",))
    for ws in (await ws_connect(server, headers=bearer(tok)), await ws_connect(server, query=f"token={tok}")):
        try:
            await welcomed(ws)
            reply = await request(ws, {"op": "subscribe", "id": "1", "sub": "s", "topics": ["a.b"]})
            assert reply["op"] == "subscribed", reply
        finally:
            await ws.close()


async def test_token_expiring_without_refresh_closes_4501(server: Server) -> None:
    ws = await ws_connect(server, headers=bearer(token(sub="short", ttl_s=2)))
    await welcomed(ws)
    await assert_usable(ws)
    code, reason = await wait_closed(ws, wait=15)
    assert code == 4501 and reason["code"] == "unauthorized"


async def test_refresh_before_expiry_keeps_the_connection(server: Server) -> None:
    short = token(sub="carol", ttl_s=timeout(3))
    old_exp = json.loads(base64.urlsafe_b64decode(short.split(".")[1] + "==="))["exp"]
    ws = await ws_connect(server, headers=bearer(short))
    try:
        await welcomed(ws)
        other = await request(ws, {"op": "refresh", "id": "x", "token": token(sub="mallory")})
        assert other["op"] == "error" and other["code"] == "forbidden", other
        reply = await request(ws, {"op": "refresh", "id": "r", "token": token(sub="carol", ttl_s=3600)})
        assert reply["op"] == "authed" and reply["sub"] == "carol" and reply["exp"] > old_exp + 1000
        n = 0
        while time.time() < old_exp + 1.5:  # past the old token's expiry, the connection still answers
            n += 1
            await assert_usable(ws, n)
            await asyncio.sleep(0.25)
        await assert_usable(ws, n + 1)
    finally:
        await ws.close()


async def test_acl_limits_subscribe_and_publish(server: Server) -> None:
    tok = token(sub="s1-agent", subscribe=("swarm.s1.>",), publish=("swarm.s1.>",))
    ws = await ws_connect(server, headers=bearer(tok))
    try:
        await welcomed(ws)
        for n, topics in enumerate(
            (["swarm.>"], ["swarm.s2.>"], [">"], ["swarm.*.agent"], ["swarm.s1.a", "x.y"])
        ):
            reply = await request(ws, {"op": "subscribe", "id": f"f{n}", "sub": f"f{n}", "topics": topics})
            assert reply["op"] == "error" and reply["code"] == "forbidden", (topics, reply)
        replay = {"op": "subscribe", "id": "e", "sub": "e", "topics": ["swarm.s2.x"], "from": "earliest"}
        assert (await request(ws, replay))["code"] == "forbidden"
        ok = await request(ws, {"op": "subscribe", "id": "ok", "sub": "ok", "topics": ["swarm.s1.agent.*"]})
        assert ok["op"] == "subscribed", ok
        bad = await request(ws, {"op": "publish", "id": "p1", "event": event("swarm.s2.agent.a1")})
        assert bad["op"] == "error" and bad["code"] == "forbidden", bad
        good = await request(ws, {"op": "publish", "id": "p2", "event": event("swarm.s1.agent.a1")})
        assert good["op"] == "ack" and good["offset"], good
    finally:
        await ws.close()


async def test_history_of_a_forbidden_pattern_is_403(http: httpx.AsyncClient) -> None:
    headers = bearer(token(sub="reader", subscribe=("swarm.s1.>",)))
    for topics in ("swarm.>", "swarm.s2.x", ">"):
        resp = await http.get("/v1/events", params={"topics": topics}, headers=headers)
        assert_error(resp, 403, "forbidden")
    # no topics means everything, which this token may not read
    assert_error(await http.get("/v1/events", headers=headers), 403, "forbidden")
    ok = await http.get("/v1/events", params={"topics": "swarm.s1.>"}, headers=headers)
    assert ok.status_code == 200, ok.text
    resp = await http.get("/v1/sse", params={"topics": "swarm.s2.>"}, headers=headers)
    assert_error(resp, 403, "forbidden")


async def test_http_publish_with_a_batch_outside_the_acl_appends_nothing(http: httpx.AsyncClient) -> None:
    topic = unique("acl")
    tok = token(sub="pub", subscribe=(f"{topic}.>",), publish=(f"{topic}.mine.>",))
    batch = [event(f"{topic}.mine.a"), event(f"{topic}.mine.b"), event(f"{topic}.theirs.c")]
    resp = await http.post("/v1/events", json={"events": batch}, headers=bearer(tok))
    err = assert_error(resp, 403, "forbidden")
    assert "events[2].topic" in err["message"]
    page = await http.get("/v1/events", params={"topics": f"{topic}.>"}, headers=bearer(tok))
    assert page.json()["events"] == []


async def test_api_key_may_publish_but_not_read(server: Server, http: httpx.AsyncClient) -> None:
    topic = unique("key")
    resp = await http.post("/v1/events", json=event(topic), headers=bearer(API_KEY))
    assert resp.status_code == 202, resp.text
    wrong = await http.post("/v1/events", json=event(topic), headers=bearer(API_KEY + "x"))
    assert_error(wrong, 401, "unauthorized")
    no_scheme = await http.post("/v1/events", json=event(topic), headers={"Authorization": API_KEY})
    assert_error(no_scheme, 401, "unauthorized")
    history = await http.get("/v1/events", params={"topics": topic}, headers=bearer(API_KEY))
    assert history.status_code in (401, 403)
    assert_error(history, history.status_code, "forbidden" if history.status_code == 403 else "unauthorized")
    stream = await http.get("/v1/sse", params={"topics": topic}, headers=bearer(API_KEY))
    assert stream.status_code in (401, 403)


async def test_http_rejects_alg_none_and_expired_tokens(http: httpx.AsyncClient) -> None:
    for bad in (alg_none_token(), expired_token(), foreign_token()):
        assert_error(
            await http.post("/v1/events", json=event("a.b"), headers=bearer(bad)), 401, "unauthorized"
        )
        assert_error(await http.get("/v1/events", headers=bearer(bad)), 401, "unauthorized")


async def test_no_auth_within_the_deadline_closes_4501(serve: ServerFactory) -> None:
    server = serve("--jwt-secret", SECRET, "--auth-timeout", "1")
    started = time.monotonic()
    ws = await ws_connect(server)
    await welcomed(ws)
    await assert_usable(ws)
    code, reason = await wait_closed(ws, wait=15)
    assert code == 4501 and reason["code"] == "unauthorized"
    assert time.monotonic() - started >= 0.9
    # a client that authenticates in time is not closed by the deadline
    ws = await ws_connect(server)
    try:
        await welcomed(ws)
        assert (await request(ws, {"op": "auth", "id": "1", "token": token(sub="quick")}))["op"] == "authed"
        deadline = time.monotonic() + 1.5 * timeout(1)
        while time.monotonic() < deadline:
            await assert_usable(ws)
            await asyncio.sleep(0.2)
    finally:
        await ws.close()


async def test_tokens_never_reach_the_log(server: Server) -> None:
    """Query tokens above all (PROTOCOL.md section 3), but also headers and auth frames at debug level."""
    good = token(sub="logged", subscribe=("logs.>",))
    bad = expired_token()
    in_header = token(sub="logged-header")
    in_frame = token(sub="logged-frame")
    ws = await ws_connect(server, query=f"token={good}")
    try:
        await welcomed(ws)
        await assert_usable(ws)
    finally:
        await ws.close()
    ws = await ws_connect(server, query=f"token={bad}")
    await welcomed(ws)
    assert (await wait_closed(ws))[0] == 4501
    ws = await ws_connect(server, headers=bearer(in_header))
    try:
        await welcomed(ws)
        assert (await request(ws, {"op": "refresh", "id": "r", "token": in_frame}))["op"] == "error"
        await assert_usable(ws)
    finally:
        await ws.close()
    async with server.client() as http, sse(http, {"topics": "logs.>", "token": good}):
        pass
    async with server.client() as http:
        await http.get("/v1/events", params={"topics": "logs.>", "token": good})
        await http.post("/v1/events", json=event("logs.x"), headers=bearer(API_KEY))
    log = await _log_containing(server, "token=[redacted]")
    for secret in (good, bad, in_header, in_frame, API_KEY):
        for part in secret.split("."):
            assert part not in log


async def _log_containing(server: Server, text: str) -> str:
    """The server's log once it mentions `text` (the log is written asynchronously)."""
    deadline = time.monotonic() + timeout(5)
    while True:
        log = server.log()
        if text in log:
            return log
        assert time.monotonic() < deadline, f"the server never logged {text!r}: nothing was checked"
        await asyncio.sleep(0.05)
