"""The WebSocket protocol (PROTOCOL.md section 3) against a real `dash-stream serve` process."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest
from helpers import (
    JSON,
    MSGPACK,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Frame,
    RawFrame,
    RawWebSocket,
    WsClient,
    WsClientFactory,
    check_close_reason,
    event,
    seqs,
)
from servers import ServerFactory, ServerProcess

from dash_stream.bus.cursor import decode_cursor
from dash_stream.protocol.errors import CloseCode, close_reason

EVENT_FIELDS = {"id", "topic", "type", "source", "time", "priority", "data", "offset"}


@pytest.fixture(scope="module")
def small_limits_server(module_server: ServerFactory) -> ServerProcess:
    """A server with small frame and event limits."""
    return module_server(
        "--dev", "--max-frame-bytes", "65536", "--max-event-bytes", "4096", "--max-subscriptions", "3"
    )


async def connected(ws_client: WsClientFactory, srv: ServerProcess, **kwargs: Any) -> WsClient:
    """A client whose welcome has arrived."""
    client = await ws_client(srv.ws_url, **kwargs)
    await client.wait_for(lambda f: f.get("op") == "welcome")
    return client


# ---------------------------------------------------------------- welcome and subprotocols


async def test_welcome_is_the_first_frame_and_describes_the_server(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory
) -> None:
    a = await connected(ws_client, shared_dev_server)
    b = await connected(ws_client, shared_dev_server)
    welcome = a.frames[0]
    assert welcome["op"] == "welcome"
    assert isinstance(welcome["session"], str) and welcome["session"]
    assert welcome["session"] != b.frames[0]["session"]
    assert welcome["heartbeat_s"] == 25
    assert welcome["limits"]["max_event_bytes"] == 64 * 1024
    assert welcome["limits"]["max_frame_bytes"] == 1024 * 1024
    assert welcome["auth"] == "none"


async def test_welcome_reports_configured_limits(
    small_limits_server: ServerProcess, ws_client: WsClientFactory
) -> None:
    client = await connected(ws_client, small_limits_server)
    limits = client.frames[0]["limits"]
    assert limits["max_event_bytes"] == 4096
    assert limits["max_frame_bytes"] == 65536


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ([JSON], JSON),
        ([MSGPACK], MSGPACK),
        ([MSGPACK, JSON], MSGPACK),
        ([JSON, MSGPACK], JSON),
        (None, None),
        (["x.unknown.v9"], None),
    ],
    ids=["json", "msgpack", "msgpack-first", "json-first", "none", "unknown"],
)
async def test_subprotocols_choose_the_frame_encoding(
    shared_dev_server: ServerProcess,
    ws_client: WsClientFactory,
    topic: str,
    offered: list[str] | None,
    chosen: str | None,
) -> None:
    client = await connected(ws_client, shared_dev_server, subprotocols=offered)
    assert client.conn.subprotocol == chosen
    binary = chosen == MSGPACK
    await client.subscribe("s1", [f"{topic}.>"])
    ack = await client.publish(event(f"{topic}.a", 7, labels={"k": "v"}, priority="high"))
    [ev] = await client.wait_events("s1", 1)
    assert set(client.binary) == {binary}, "every frame uses the subprotocol's frame type"
    assert set(ev) >= EVENT_FIELDS
    assert ev["offset"] == ack["offset"]
    assert ev["data"] == {"seq": 7} and ev["labels"] == {"k": "v"} and ev["priority"] == "high"
    assert ev["topic"] == f"{topic}.a" and ev["type"] == "test.seq" and ev["source"] == "unknown"


async def test_msgpack_frames_are_binary_and_decode(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    client = await ws_client(shared_dev_server.ws_url, subprotocols=[MSGPACK])
    raw = await client.conn.recv()
    assert isinstance(raw, bytes)
    assert msgspec.msgpack.decode(raw)["op"] == "welcome"
    await client.send_raw(msgspec.msgpack.encode({"op": "ping", "id": "p1"}))
    raw = await client.conn.recv()
    assert isinstance(raw, bytes) and msgspec.msgpack.decode(raw) == {"op": "pong", "id": "p1"}


async def test_json_frames_are_text(shared_dev_server: ServerProcess, ws_client: WsClientFactory) -> None:
    client = await ws_client(shared_dev_server.ws_url, subprotocols=None)
    raw = await client.conn.recv()
    assert isinstance(raw, str) and json.loads(raw)["op"] == "welcome"


# ---------------------------------------------------------------- ops and replies


async def test_auth_and_refresh_in_dev_mode_answer_authed(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory
) -> None:
    client = await connected(ws_client, shared_dev_server)
    authed = await client.request("auth", token="anything")
    assert authed["op"] == "authed" and authed["sub"] == "dev" and authed["id"].startswith("c")
    refreshed = await client.request("refresh", token="anything-else")
    assert refreshed["op"] == "authed" and refreshed["sub"] == "dev"
    assert refreshed["id"] != authed["id"]


async def test_ping_is_answered_with_pong_echoing_the_id(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory
) -> None:
    client = await connected(ws_client, shared_dev_server)
    await client.send({"op": "ping", "id": "my-ping-42"})
    pong = await client.wait_for(lambda f: f.get("op") == "pong")
    assert pong == {"op": "pong", "id": "my-ping-42"}


async def test_subscribe_from_latest_answers_subscribed_then_delivers_live_events(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    client = await connected(ws_client, shared_dev_server)
    await client.publish(event(f"{topic}.a", 0))  # before the subscription: not delivered
    sub = await client.subscribe("s1", [f"{topic}.*"])
    assert sub["sub"] == "s1" and sub["recovered"] is True and sub["replayed"] == 0
    assert "reason" not in sub
    decode_cursor(sub["cursor"])
    acks = [await client.publish(event(f"{topic}.a", n)) for n in range(1, 4)]
    events = await client.wait_events("s1", 3)
    assert seqs(events) == [1, 2, 3]
    assert [e["offset"] for e in events] == [a["offset"] for a in acks]
    frames = [f for f in client.frames if f.get("op") == "events"]
    for frame in frames:
        assert frame["sub"] == "s1"
        assert frame["cursor"] == frame["events"][-1]["offset"]


async def test_publish_is_acked_with_the_offset_of_the_stored_event(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    watcher = await connected(ws_client, shared_dev_server)
    await watcher.subscribe("w", [f"{topic}.>"])
    publisher = await connected(ws_client, shared_dev_server)
    await publisher.send({"op": "publish", "id": "pub-1", "event": event(f"{topic}.x", 1, id="e-1")})
    ack = await publisher.wait_for(lambda f: f.get("id") == "pub-1")
    assert ack["op"] == "ack" and ack.get("duplicate", False) is False
    [ev] = await watcher.wait_events("w", 1)
    assert ev["offset"] == ack["offset"] and ev["id"] == "e-1"
    assert decode_cursor(ack["offset"]).epoch == decode_cursor(watcher.cursors["w"]).epoch


async def test_republishing_a_source_and_id_acks_the_original_offset(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    client = await connected(ws_client, shared_dev_server)
    await client.subscribe("s", [f"{topic}.>"])
    first = await client.publish(event(f"{topic}.x", 1, id="dup-1", source="agent/a7"))
    again = await client.publish(event(f"{topic}.x", 2, id="dup-1", source="agent/a7"))
    assert again["duplicate"] is True and again["offset"] == first["offset"]
    await client.publish(event(f"{topic}.x", 3))
    events = await client.wait_events("s", 2)
    assert seqs(events) == [1, 3]


async def test_unsubscribe_answers_unsubscribed_and_stops_delivery(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    client = await connected(ws_client, shared_dev_server)
    await client.subscribe("gone", [f"{topic}.>"])
    await client.subscribe("kept", [f"{topic}.>"])
    reply = await client.request("unsubscribe", sub="gone")
    assert reply == {"op": "unsubscribed", "id": reply["id"], "sub": "gone"}
    await client.publish(event(f"{topic}.x", 1))
    await client.wait_events("kept", 1)
    await client.ping()
    assert "gone" not in client.events
    again = await client.subscribe("gone", [f"{topic}.>"])  # the id is free again
    assert again["sub"] == "gone"


async def test_unsubscribe_of_an_unknown_sub_is_not_found(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory
) -> None:
    client = await connected(ws_client, shared_dev_server)
    reply = await client.request("unsubscribe", sub="never")
    assert reply["op"] == "error" and reply["code"] == "not_found"
    assert reply["retryable"] is False and "never" in reply["message"]
    await client.ping()


async def test_a_duplicate_sub_id_is_a_conflict_and_the_first_stays(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    client = await connected(ws_client, shared_dev_server)
    await client.subscribe("s", [f"{topic}.a"])
    reply = await client.request("subscribe", sub="s", topics=[f"{topic}.b"])
    assert reply["op"] == "error" and reply["code"] == "conflict"
    await client.publish(event(f"{topic}.a", 1))
    await client.publish(event(f"{topic}.b", 2))
    await client.publish(event(f"{topic}.a", 3))
    assert seqs(await client.wait_events("s", 2)) == [1, 3]
    await client.ping()
    assert seqs(client.events["s"]) == [1, 3]


async def test_cursor_and_from_together_is_bad_request(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    client = await connected(ws_client, shared_dev_server)
    ack = await client.publish(event(f"{topic}.a", 1))
    reply = await client.request(
        "subscribe", sub="s", topics=[f"{topic}.a"], cursor=ack["offset"], **{"from": "earliest"}
    )
    assert reply["op"] == "error" and reply["code"] == "bad_request"
    assert (await client.subscribe("s", [f"{topic}.a"]))["sub"] == "s"  # nothing was registered


BAD_FRAMES: list[tuple[Any, str]] = [
    ({"op": "launch", "id": "b1"}, "unknown op"),
    ({"id": "b2", "sub": "x"}, "op"),
    ("this is not json", "JSON"),
    ([1, 2, 3], ""),
    ({"op": "subscribe", "id": "b3", "sub": "s", "topics": ["bad..topic"]}, "topics[0]"),
    ({"op": "subscribe", "id": "b4", "sub": "s", "topics": []}, "topics"),
    ({"op": "subscribe", "id": "b5", "sub": "s", "topics": ["a.>"], "from": "middle"}, "from"),
    (
        {
            "op": "subscribe",
            "id": "b6",
            "sub": "s",
            "topics": ["a.>"],
            "where": {"priority": {"gte": "urgent"}},
        },
        "where.priority",
    ),
    ({"op": "publish", "id": "b7", "event": {"topic": "a.b"}}, "type"),
    ({"op": "publish", "id": "b8", "event": {"topic": "a.b", "type": "t", "labels": {"k": 1}}}, "labels"),
    ({"op": "publish", "id": "b9", "event": {"topic": "a..b", "type": "t"}}, "topic"),
]


async def test_bad_ops_answer_bad_request_and_keep_the_connection_usable(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    client = await connected(ws_client, shared_dev_server)
    for frame, mentions in BAD_FRAMES:
        start = len(client.frames)
        await client.send_raw(frame if isinstance(frame, str) else json.dumps(frame))
        error = await client.wait_for(lambda f: f.get("op") == "error", start=start)
        assert error["code"] == "bad_request", (frame, error)
        assert error["retryable"] is False
        assert mentions in error["message"], (frame, error)
        if isinstance(frame, dict) and "id" in frame:
            assert error["id"] == frame["id"]
        await client.ping()
    await client.subscribe("s", [f"{topic}.>"])
    await client.publish(event(f"{topic}.ok", 1))
    assert seqs(await client.wait_events("s", 1)) == [1]


async def test_the_msgpack_subprotocol_answers_in_msgpack_and_refuses_garbage(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory
) -> None:
    client = await connected(ws_client, shared_dev_server, subprotocols=[MSGPACK])
    start = len(client.frames)
    await client.send_raw(b"\xc1\xc1 not msgpack")
    error = await client.wait_for(lambda f: f.get("op") == "error", start=start)
    assert error["code"] == "bad_request" and "MessagePack" in error["message"]
    # a JSON text frame is still understood; the reply keeps the negotiated encoding
    await client.send_raw('{"op":"ping","id":"t1"}')
    pong = await client.wait_for(lambda f: f.get("op") == "pong", start=start)
    assert pong["id"] == "t1"
    assert all(client.binary)
    await client.ping()


async def test_ten_malformed_frames_close_the_connection_with_4504(
    shared_dev_server: ServerProcess, ws_client: WsClientFactory
) -> None:
    client = await connected(ws_client, shared_dev_server)
    for n in range(9):
        await client.send_raw(f"{{not json {n}")
    await client.ping()  # nine are tolerated
    await client.send_raw("{not json 10")
    code, reason = await client.wait_closed()
    assert code == 4504
    assert reason is not None
    assert check_close_reason(code, reason)["code"] == "protocol_violation"
    errors = [f for f in client.frames if f.get("op") == "error"]
    assert len(errors) == 10 and all(e["code"] == "bad_request" for e in errors)


async def test_a_frame_over_max_frame_bytes_closes_with_1009(
    small_limits_server: ServerProcess, ws_client: WsClientFactory
) -> None:
    client = await connected(ws_client, small_limits_server)
    await client.ping()
    padding = "x" * 70_000
    await client.send_raw(json.dumps({"op": "ping", "id": "big", "pad": padding}))
    code, _ = await client.wait_closed()
    assert code == 1009


async def test_a_frame_under_max_frame_bytes_is_accepted(
    small_limits_server: ServerProcess, ws_client: WsClientFactory
) -> None:
    client = await connected(ws_client, small_limits_server)
    await client.send_raw(json.dumps({"op": "ping", "id": "fits", "pad": "x" * 60_000}))
    assert (await client.wait_for(lambda f: f.get("op") == "pong"))["id"] == "fits"


async def test_an_event_over_max_event_bytes_is_too_large(
    small_limits_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    client = await connected(ws_client, small_limits_server)
    await client.subscribe("s", [f"{topic}.>"])
    reply = await client.request("publish", event=event(f"{topic}.big", 1, data={"pad": "x" * 5000}))
    assert reply["op"] == "error" and reply["code"] == "too_large" and reply["retryable"] is False
    await client.publish(event(f"{topic}.small", 2, data={"seq": 2, "pad": "x" * 3000}))
    assert seqs(await client.wait_events("s", 1)) == [2]


async def test_subscriptions_beyond_max_subscriptions_are_too_large(
    small_limits_server: ServerProcess, ws_client: WsClientFactory, topic: str
) -> None:
    client = await connected(ws_client, small_limits_server)
    assert client.frames[0]["limits"]["max_subscriptions"] == 3
    for n in range(3):
        await client.subscribe(f"s{n}", [f"{topic}.{n}"])
    reply = await client.request("subscribe", sub="s3", topics=[f"{topic}.3"])
    assert reply["op"] == "error" and reply["code"] == "too_large"
    await client.request("unsubscribe", sub="s0")
    await client.subscribe("s3", [f"{topic}.3"])
    await client.publish(event(f"{topic}.3", 1))
    assert seqs(await client.wait_events("s3", 1)) == [1]


# ---------------------------------------------------------------- heartbeat


async def silent_client(raw: RawWebSocket) -> RawFrame:
    """Read frames, answer nothing, until the server closes; the close frame."""
    welcome = await raw.read_frame()
    assert welcome.opcode == OP_TEXT and welcome.json()["heartbeat_s"] == 1
    return await raw.read_until(lambda f: f.opcode == OP_CLOSE, within=15)


async def answering_client(raw: RawWebSocket, pings: int) -> Frame:
    """Answer `pings` pings with pongs, then prove the connection still works with a ping op."""
    await raw.read_frame()  # welcome
    for _ in range(pings):
        ping = await raw.read_until(lambda f: f.opcode == OP_PING, within=10)
        await raw.send_frame(OP_PONG, ping.payload)
    await raw.send_json({"op": "ping", "id": "alive"})
    return (await raw.read_until(lambda f: f.opcode == OP_TEXT, within=10)).json()


async def test_heartbeat_closes_a_client_that_never_answers_pings_with_4002(server: ServerFactory) -> None:
    srv = server("--dev", "--heartbeat", "1")
    silent = await RawWebSocket.connect(srv.port)
    answering = await RawWebSocket.connect(srv.port)
    try:
        close, pong = await asyncio.gather(silent_client(silent), answering_client(answering, pings=3))
    finally:
        await silent.abort()
        await answering.abort()
    pings = [f for f in silent.seen if f.opcode == OP_PING]
    assert pings, "the server never pinged"
    assert silent.seen.index(pings[0]) < silent.seen.index(close)
    assert close.close_code == 4002
    assert check_close_reason(4002, close.close_reason)["code"] == "heartbeat_timeout"
    # three intervals later, a client that answers every ping is still connected
    assert pong == {"op": "pong", "id": "alive"}
    assert not any(f.opcode == OP_CLOSE for f in answering.seen)


# ---------------------------------------------------------------- shutdown and close reasons


async def test_sigterm_closes_open_clients_with_1001_and_a_retry_delay(
    server: ServerFactory, ws_client: WsClientFactory
) -> None:
    srv = server("--dev")
    clients = [
        await connected(ws_client, srv, subprotocols=[JSON]),
        await connected(ws_client, srv, subprotocols=[MSGPACK]),
    ]
    for n, client in enumerate(clients):
        await client.subscribe(f"s{n}", ["shutdown.>"])
    srv.terminate()
    for client in clients:
        code, reason = await client.wait_closed(within=15)
        assert code == 1001
        assert reason is not None
        doc = check_close_reason(1001, reason)
        assert doc["code"] == "going_away"
        assert 500 <= doc["retry_after_ms"] <= 5000
    srv.wait()
    assert "Traceback" not in srv.log_text()


@pytest.mark.parametrize("code", list(CloseCode), ids=lambda c: f"{c.name}-{int(c)}")
def test_every_close_reason_is_short_json_and_reconnect_codes_carry_retry_after_ms(code: CloseCode) -> None:
    if 4000 <= code < 4500 or code == 1001:
        assert code.reconnect
    for message in (None, "short", "x" * 500, "ünïcødé " * 40):
        reason = close_reason(code, message=message)
        assert len(reason.encode()) <= 123, reason
        doc = json.loads(reason)
        assert isinstance(doc["code"], str) and doc["code"]
        if code.reconnect:
            assert isinstance(doc.get("retry_after_ms"), int) and doc["retry_after_ms"] >= 1, reason


def test_close_reason_keeps_an_explicit_retry_after_ms() -> None:
    doc = json.loads(close_reason(CloseCode.RATE_LIMITED, retry_after_ms=1234))
    assert doc == {"code": "rate_limited", "retry_after_ms": 1234}
