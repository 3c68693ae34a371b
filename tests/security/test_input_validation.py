"""Hostile input on every transport: each one a clear `bad_request` / `too_large` (or a documented close
code), never a 500, a crash, a traceback, or a lost accepted event. Good events are published before
and after the garbage and must all be delivered, once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from helpers import JSON, MSGPACK, RawWebSocket, WsClient, scaled
from servers import ServerFactory, ServerProcess

from .support import error_of, unique, welcomed, ws_from

DEEP = 100_000


@pytest.fixture(scope="module")
def srv(module_server: ServerFactory) -> ServerProcess:
    return module_server(
        "--dev",
        "--publish-rate",
        "0",
        "--conn-publish-rate",
        "0",
        "--body-timeout",
        "1",
        "--header-timeout",
        "2",
    )


def _deep_json(inner: str = "1") -> str:
    return "[" * DEEP + inner + "]" * DEEP


def _deep_msgpack() -> bytes:
    return b"\x91" * DEEP + b"\xc0"


def garbage_frames() -> list[tuple[str, str | bytes, set[str]]]:
    """(name, frame, acceptable error codes); text frames are JSON, bytes are binary frames."""
    deep_publish = '{"op":"publish","id":"x","event":{"topic":"a.b","type":"t","data":' + _deep_json() + "}}"
    deep_where = '{"op":"subscribe","id":"x","sub":"s","topics":["a"],"where":' + '{"any":[' * 5000 + "]}"
    bad = {"bad_request"}
    return [
        ("not json", "{nope", bad),
        ("json array", "[1,2,3]", bad),
        ("json number", "42", bad),
        ("json string", '"ping"', bad),
        ("op not a string", '{"op":5,"id":"x"}', bad),
        ("unknown op", '{"op":"shutdown","id":"x"}', bad),
        ("no op", '{"id":"x"}', bad),
        ("topics not a list", '{"op":"subscribe","id":"x","sub":"s","topics":"a.b"}', bad),
        ("sub not a string", '{"op":"subscribe","id":"x","sub":5,"topics":["a"]}', bad),
        ("event not an object", '{"op":"publish","id":"x","event":[]}', bad),
        ("id an object", '{"op":"ping","id":{"a":1}}', bad),
        ("deep json frame", _deep_json(), bad),
        ("deep json in data", deep_publish, bad),
        ("deep json in where", deep_where, bad),
        ("lone surrogate escape", '{"op":"ping","id":"\\ud800"}', bad),
        ("huge id", json.dumps({"op": "ping", "id": "x" * 100_000}), bad),
        ("huge sub id", json.dumps({"op": "unsubscribe", "id": "x", "sub": "s" * 1000}), bad),
        ("deep msgpack frame", _deep_msgpack(), bad),
        ("msgpack invalid utf-8", b"\x82\xa2op\xa4ping\xa2id\xa2\xff\xfe", bad),
        ("msgpack truncated", b"\x82\xa2op", bad),
        ("json with invalid utf-8 as a binary frame", b'{"op":"ping","id":"\xff"}', bad),
    ]


def bad_ops() -> list[tuple[str, dict[str, Any], set[str]]]:
    """Well-formed frames whose content is invalid: answered per op, never counted as malformed."""
    bad = {"bad_request"}
    ev = {"topic": "a.b", "type": "t"}
    big_where = {"data.x": {"in": ["y" * 1000 for _ in range(100)]}}
    return [
        ("topic with empty segment", {"op": "publish", "event": {**ev, "topic": "a..b"}}, bad),
        ("topic with a wildcard", {"op": "publish", "event": {**ev, "topic": "a.*"}}, bad),
        ("topic of 17 segments", {"op": "publish", "event": {**ev, "topic": ".".join("a" * 17)}}, bad),
        ("topic segment of 65 chars", {"op": "publish", "event": {**ev, "topic": "a." + "b" * 65}}, bad),
        ("emoji topic", {"op": "publish", "event": {**ev, "topic": "a.\U0001f600"}}, bad),
        ("rtl override topic", {"op": "publish", "event": {**ev, "topic": "a.\u202eb"}}, bad),
        ("nul in topic", {"op": "publish", "event": {**ev, "topic": "a.b\x00"}}, bad),
        ("type with a space", {"op": "publish", "event": {**ev, "type": "a b"}}, bad),
        ("label not a string", {"op": "publish", "event": {**ev, "labels": {"k": 1}}}, bad),
        ("33 labels", {"op": "publish", "event": {**ev, "labels": {f"k{i}": "v" for i in range(33)}}}, bad),
        ("label value over 1024", {"op": "publish", "event": {**ev, "labels": {"k": "v" * 1025}}}, bad),
        ("bad priority", {"op": "publish", "event": {**ev, "priority": "urgent"}}, bad),
        ("bad time", {"op": "publish", "event": {**ev, "time": "yesterday"}}, bad),
        ("data 33 deep", {"op": "publish", "event": {**ev, "data": json.loads("[" * 33 + "]" * 33)}}, bad),
        ("event over 64 KiB", {"op": "publish", "event": {**ev, "data": "x" * 70_000}}, {"too_large"}),
        ("pattern > not last", {"op": "subscribe", "sub": "s", "topics": ["a.>.b"]}, bad),
        ("pattern **", {"op": "subscribe", "sub": "s", "topics": ["a.**"]}, bad),
        ("no patterns", {"op": "subscribe", "sub": "s", "topics": []}, bad),
        ("65 patterns", {"op": "subscribe", "sub": "s", "topics": [f"a{i}" for i in range(65)]}, bad),
        (
            "unknown where op",
            {"op": "subscribe", "sub": "s", "topics": ["a"], "where": {"type": {"re": "x"}}},
            bad,
        ),
        ("where 9 deep", {"op": "subscribe", "sub": "s", "topics": ["a"], "where": _nested_not(9)}, bad),
        ("where over 16 KiB", {"op": "subscribe", "sub": "s", "topics": ["a"], "where": big_where}, bad),
        (
            "cursor and from",
            {"op": "subscribe", "sub": "s", "topics": ["a"], "cursor": "x", "from": "earliest"},
            bad,
        ),
        ("from nonsense", {"op": "subscribe", "sub": "s", "topics": ["a"], "from": "yesterday"}, bad),
    ]


def _nested_not(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": "t"}
    for _ in range(depth):
        doc = {"not": doc}
    return doc


async def _good(client: WsClient, topic: str, start: int, n: int) -> None:
    for i in range(start, start + n):
        await client.publish({"topic": topic, "type": "t", "data": {"seq": i}})


async def test_garbage_frames_are_bad_requests_and_accepted_events_all_arrive(srv: ServerProcess) -> None:
    topic = f"{unique('iv')}.good"
    watcher = await ws_from(srv)
    publisher = await ws_from(srv, subprotocols=(MSGPACK,))
    try:
        await welcomed(watcher)
        await welcomed(publisher)
        await watcher.subscribe("w", [topic])
        await _good(publisher, topic, 0, 10)
        frames = garbage_frames()
        for start in range(0, len(frames), 8):  # under the 10-malformed-frames rule per connection
            client = await ws_from(srv, subprotocols=(MSGPACK,))
            try:
                await welcomed(client)
                for name, frame, codes in frames[start : start + 8]:
                    before = len(client.frames)
                    await client.send_raw(frame)
                    reply = await client.wait_for(lambda f: f.get("op") == "error", start=before)
                    assert reply["code"] in codes, (name, reply)
                    assert reply["retryable"] is False, (name, reply)
                await client.ping()
            finally:
                await client.close()
        ops = bad_ops()
        for start in range(0, len(ops), 8):  # many fail decoding (EventIn's checks): malformed too
            client = await ws_from(srv)
            try:
                await welcomed(client)
                for name, op, codes in ops[start : start + 8]:
                    reply = await client.request(op.pop("op"), **op)
                    assert reply["op"] == "error" and reply["code"] in codes, (name, reply)
                await client.ping()
            finally:
                await client.close()
        await _good(publisher, topic, 10, 10)
        events = await watcher.wait_events("w", 20)
        await asyncio.sleep(0.2)
        assert [e["data"]["seq"] for e in watcher.events["w"]] == list(range(20)), events
    finally:
        await watcher.close()
        await publisher.close()
    assert "Traceback" not in srv.log_text()


async def test_unicode_edge_cases_round_trip_exactly_or_are_refused(srv: ServerProcess) -> None:
    topic = f"{unique('uni')}.x"
    values = {
        "nul": "a\x00b",
        "rtl": "\u202egnp.exe",
        "emoji": "\U0001f600\U0001f9d1\u200d\U0001f4bb",
        "combining": "e\u0301",
        "bom": "\ufeffx",
        "c1": "\x85\x9b",
    }
    client = await ws_from(srv)
    mp = await ws_from(srv, subprotocols=(MSGPACK,))
    try:
        await welcomed(client)
        await welcomed(mp)
        await client.subscribe("u", [topic])
        for name, value in values.items():
            ev = {
                "topic": topic,
                "type": "t",
                "source": value,
                "labels": {name: value},
                "data": {name: value},
            }
            assert (await client.request("publish", event=ev))["op"] == "ack", name
            assert (await mp.request("publish", event=ev))["op"] == "ack", name
        got = await client.wait_events("u", 2 * len(values))
        for i, (name, value) in enumerate(values.items()):
            for e in got[2 * i : 2 * i + 2]:
                assert e["labels"][name] == value and e["data"][name] == value and e["source"] == value, name
    finally:
        await client.close()
        await mp.close()


async def test_invalid_utf8_in_a_text_frame_closes_1007_as_rfc_6455_says(srv: ServerProcess) -> None:
    raw = await RawWebSocket.connect(srv.port, subprotocol=JSON)
    try:
        await raw.read_frame()  # welcome
        await raw.send_frame(0x1, b'{"op":"ping","id":"\xff"}')
        close = await raw.read_until(lambda f: f.opcode == 0x8)
        assert close.close_code == 1007
    finally:
        await raw.abort()


async def test_a_websocket_handshake_with_an_oversized_header_is_refused_at_once(srv: ServerProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    try:
        writer.write(
            f"GET /v1/ws?token={'x' * 20_000} HTTP/1.1\r\nHost: x\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.read(200), scaled(5))
        assert head.startswith((b"HTTP/1.1 414", b"HTTP/1.1 431")), head
        assert await asyncio.wait_for(reader.read(), scaled(5)) is not None  # then closed
    finally:
        writer.close()


async def _http_raw(srv: ServerProcess, data: bytes, *, read_for: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    out = b""
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(scaled(read_for)):
            while chunk := await reader.read(65536):
                out += chunk
    except (TimeoutError, ConnectionResetError):
        pass  # a refusal closes while bytes are still unread: what was answered is in `out`
    finally:
        writer.close()
    return out


def _status_and_error(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    doc = json.loads(body[: body.rindex(b"}") + 1]) if b"{" in body else {}
    return status, doc.get("error", {})


async def test_hostile_http_bodies_and_headers_get_clear_errors_and_lose_nothing(srv: ServerProcess) -> None:
    topic = f"{unique('http')}.good"
    async with httpx.AsyncClient(base_url=srv.base_url, trust_env=False, timeout=scaled(30)) as http:

        async def good(start: int) -> None:
            batch = [{"topic": topic, "type": "t", "data": {"seq": i}} for i in range(start, start + 5)]
            assert (await http.post("/v1/events", json={"events": batch})).status_code == 202

        await good(0)
        cases: list[tuple[str, bytes, str, set[int]]] = [
            (
                "deep nesting",
                b'{"topic":"a.b","type":"t","data":' + _deep_json().encode() + b"}",
                "json",
                {400},
            ),
            ("deep events", b'{"events":' + _deep_json().encode() + b"}", "json", {400}),
            ("deep cloudevent", _deep_json().encode(), "application/cloudevents-batch+json", {400, 422}),
            ("invalid utf-8", b'{"topic":"a.b","type":"\xff"}', "json", {400}),
            ("lone surrogate", b'{"topic":"a.b","type":"t","data":"\\udc00"}', "json", {400}),
            ("not json", b"<xml/>", "json", {400}),
            ("json but text/plain", b'{"topic":"a.b","type":"t"', "text/plain", {400}),
            (
                "cloudevent without topic",
                b'{"id":"1","source":"s","type":"t"}',
                "application/cloudevents+json",
                {422},
            ),
            ("empty batch", b'{"events":[]}', "json", {400, 422}),
            (
                "batch over 1000",
                json.dumps({"events": [{"topic": "a.b", "type": "t"}] * 1001}).encode(),
                "json",
                {413},
            ),
        ]
        for name, body, ctype, statuses in cases:
            headers = {"content-type": "application/json" if ctype == "json" else ctype}
            resp = await http.post("/v1/events", content=body, headers=headers)
            assert resp.status_code in statuses, (name, resp.status_code, resp.text[:300])
            assert error_of(resp)["code"] in ("bad_request", "too_large"), name

        async def chunks() -> Any:
            for _ in range(17):
                yield b"x" * (1024 * 1024)

        resp = await http.post("/v1/events", content=chunks(), headers={"content-type": "application/json"})
        assert resp.status_code == 413 and error_of(resp)["code"] == "too_large"
        await good(5)
    # framing lies, straight on the socket
    short = (
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n"
    )
    raw = await _http_raw(srv, short + b'{"topic":"a.b","type":"t"}')  # the rest is read as a next request
    _, _, rest = raw.partition(b"HTTP/1.1 400")
    assert rest and b'"bad_request"' in rest, raw[:400]  # a 400 for the leftover bytes (one request or two)
    long_ = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{"
    status, err = _status_and_error(await _http_raw(srv, long_))
    assert status == 408 and err["code"] == "bad_request", (status, err)
    for name, request in (
        ("huge header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"),
        ("many headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 500 + b"\r\n"),
    ):
        status, err = _status_and_error(await _http_raw(srv, request))
        assert status == 431 and err["code"] == "too_large", (name, status, err)
    for name, request in (
        ("nul in a header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
        ("bad header line", b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"),
        (
            "bad chunk size",
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ),
        (
            "both framings",
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
    ):
        status, err = _status_and_error(await _http_raw(srv, request))
        assert status == 400 and err.get("code") == "bad_request", (name, status, err)
    async with httpx.AsyncClient(base_url=srv.base_url, trust_env=False, timeout=scaled(30)) as http:
        page = await http.get("/v1/events", params={"topics": topic, "limit": "1000"})
        assert [e["data"]["seq"] for e in page.json()["events"]] == list(range(10))
    assert "Traceback" not in srv.log_text()
