"""`POST /v1/events` (PROTOCOL.md sections 1 and 5): single, batch, CloudEvents, limits, dedup."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from .conftest import ServerFactory
from .support import (
    Server,
    assert_error,
    collect_events,
    event,
    publish,
    recv,
    request,
    unique,
    ws_connect,
)

MAX_BODY = 256 * 1024


@pytest.fixture(scope="module")
def server(serve_module: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Server:
    """A dev server without publish rate limits and with a small body limit."""
    config = tmp_path_factory.mktemp("publish") / "dash.toml"
    config.write_text(f"[serve]\nmax_body_bytes = {MAX_BODY}\n")
    return serve_module("--dev", "--publish-rate", "0", "--conn-publish-rate", "0", "--config", str(config))


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as client:
        yield client


async def history(http: httpx.AsyncClient, topics: str) -> list[dict[str, Any]]:
    """Every retained event of `topics`."""
    resp = await http.get("/v1/events", params={"topics": topics, "limit": "1000"})
    assert resp.status_code == 200, resp.text
    events: list[dict[str, Any]] = resp.json()["events"]
    return events


async def test_single_event_is_accepted_with_its_offset(http: httpx.AsyncClient) -> None:
    topic = unique("pub")
    resp = await http.post("/v1/events", json=event(topic, "agent.spawned", data={"agent_id": "a7"}))
    assert resp.status_code == 202, resp.text
    doc = resp.json()
    assert set(doc) == {"accepted", "duplicates", "offsets"}
    assert doc["accepted"] == 1 and doc["duplicates"] == 0
    assert len(doc["offsets"]) == 1 and isinstance(doc["offsets"][0], str)
    [stored] = await history(http, topic)
    assert stored["offset"] == doc["offsets"][0]
    assert stored["topic"] == topic and stored["type"] == "agent.spawned"
    assert stored["data"] == {"agent_id": "a7"}
    # server-filled fields
    assert stored["source"] == "unknown" and stored["priority"] == "normal"
    assert stored["id"] and "T" in stored["time"]


async def test_batch_is_delivered_in_order_over_websocket(server: Server, http: httpx.AsyncClient) -> None:
    topic = unique("pub")
    ws = await ws_connect(server)
    try:
        assert (await recv(ws))["op"] == "welcome"
        reply = await request(ws, {"op": "subscribe", "id": "1", "sub": "s", "topics": [topic]})
        assert reply["op"] == "subscribed", reply
        batch = [event(topic, data={"n": n}) for n in range(25)]
        offsets = await publish(http, *batch)
        assert len(offsets) == 25 and len(set(offsets)) == 25
        got, _ = await collect_events(ws, "s", 25)
    finally:
        await ws.close()
    assert [e["data"]["n"] for e in got] == list(range(25))
    assert [e["offset"] for e in got] == offsets


async def test_cloudevents_structured_maps_extension_attributes(http: httpx.AsyncClient) -> None:
    topic = unique("ce")
    ce = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "openclaw/gateway-1",
        "type": "agent.failed",
        "time": "2026-01-02T03:04:05Z",
        "topic": topic,
        "priority": "high",
        "labels": {"swarm": "s1", "agent": "a7"},
        "data": {"reason": "oom"},
    }
    resp = await http.post(
        "/v1/events", content=json.dumps(ce), headers={"Content-Type": "application/cloudevents+json"}
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["accepted"] == 1
    [stored] = await history(http, topic)
    assert stored["id"] == "ce-1" and stored["source"] == "openclaw/gateway-1"
    assert stored["type"] == "agent.failed" and stored["time"] == "2026-01-02T03:04:05Z"
    assert stored["priority"] == "high" and stored["labels"] == {"swarm": "s1", "agent": "a7"}
    assert stored["data"] == {"reason": "oom"}
    assert "specversion" not in stored


async def test_cloudevents_batch_is_accepted_in_order(http: httpx.AsyncClient) -> None:
    topic = unique("ce")
    batch = [
        {
            "specversion": "1.0",
            "id": f"ceb-{n}",
            "source": "test/ce-batch",
            "type": "metrics",
            "topic": topic,
            "priority": "critical" if n == 1 else "low",
            "labels": {"n": str(n)},
            "data": {"n": n},
        }
        for n in range(3)
    ]
    resp = await http.post(
        "/v1/events",
        content=json.dumps(batch),
        headers={"Content-Type": "application/cloudevents-batch+json; charset=utf-8"},
    )
    assert resp.status_code == 202, resp.text
    doc = resp.json()
    assert doc["accepted"] == 3 and doc["duplicates"] == 0
    stored = await history(http, topic)
    assert [e["id"] for e in stored] == ["ceb-0", "ceb-1", "ceb-2"]
    assert [e["offset"] for e in stored] == doc["offsets"]
    assert [e["priority"] for e in stored] == ["low", "critical", "low"]
    assert [e["labels"] for e in stored] == [{"n": "0"}, {"n": "1"}, {"n": "2"}]


async def test_cloudevent_without_topic_extension_is_rejected(http: httpx.AsyncClient) -> None:
    ce = {"specversion": "1.0", "id": "x", "source": "s", "type": "t"}
    resp = await http.post(
        "/v1/events", content=json.dumps(ce), headers={"Content-Type": "application/cloudevents+json"}
    )
    err = assert_error(resp, 422, "bad_request")
    assert "topic" in err["message"]


async def test_batch_with_one_invalid_event_appends_nothing(http: httpx.AsyncClient) -> None:
    topic = unique("pub")
    batch = [event(topic, data={"n": n}) for n in range(5)]
    batch[3]["topic"] = "not..valid"
    resp = await http.post("/v1/events", json={"events": batch})
    err = assert_error(resp, 422, "bad_request")
    assert "events[3].topic" in err["message"]
    assert await history(http, topic) == []


async def test_batch_with_one_semantically_invalid_event_appends_nothing(http: httpx.AsyncClient) -> None:
    topic = unique("pub")
    batch = [event(topic, data={"n": n}) for n in range(5)]
    batch[2]["time"] = "yesterday"
    resp = await http.post("/v1/events", json={"events": batch})
    err = assert_error(resp, 422, "bad_request")
    assert "events[2].time" in err["message"]
    assert await history(http, topic) == []


async def test_malformed_json_is_400(http: httpx.AsyncClient) -> None:
    resp = await http.post(
        "/v1/events", content=b'{"topic": "a.b", "type":', headers={"Content-Type": "application/json"}
    )
    assert_error(resp, 400, "bad_request")


async def test_batch_over_1000_events_is_too_large(http: httpx.AsyncClient) -> None:
    topic = unique("pub")
    resp = await http.post("/v1/events", json={"events": [event(topic) for _ in range(1001)]})
    err = assert_error(resp, 413, "too_large")
    assert "1000" in err["message"]
    assert await history(http, topic) == []


async def test_batch_of_exactly_1000_events_is_accepted(http: httpx.AsyncClient) -> None:
    topic = unique("pub")
    offsets = await publish(http, *(event(topic) for _ in range(1000)))
    assert len(offsets) == 1000


async def test_body_over_the_limit_is_too_large(http: httpx.AsyncClient) -> None:
    topic = unique("pub")
    resp = await http.post("/v1/events", json=event(topic, data="x" * (MAX_BODY + 10)))
    assert_error(resp, 413, "too_large")
    assert await history(http, topic) == []


async def test_event_over_64_kib_is_too_large(http: httpx.AsyncClient) -> None:
    topic = unique("pub")
    resp = await http.post("/v1/events", json=event(topic, data="x" * (64 * 1024)))
    err = assert_error(resp, 413, "too_large")
    assert "65536" in err["message"]
    assert await history(http, topic) == []


async def test_retry_with_same_source_and_id_is_a_duplicate_delivered_once(
    server: Server, http: httpx.AsyncClient
) -> None:
    topic = unique("dedup")
    ev = event(topic, id="evt-1", source="test/dedup", data={"v": 1})
    ws = await ws_connect(server)
    try:
        assert (await recv(ws))["op"] == "welcome"
        assert (await request(ws, {"op": "subscribe", "id": "1", "sub": "s", "topics": [topic]}))[
            "op"
        ] == "subscribed"
        first = await http.post("/v1/events", json=ev)
        assert first.status_code == 202 and first.json()["duplicates"] == 0
        retry = await http.post("/v1/events", json=ev)
        assert retry.status_code == 202, retry.text
        assert retry.json() == {"accepted": 1, "duplicates": 1, "offsets": first.json()["offsets"]}
        # another source with the same id is a different event
        other = await http.post("/v1/events", json={**ev, "source": "test/other"})
        assert other.json()["duplicates"] == 0
        await publish(http, event(topic, id="sentinel", source="test/dedup"))
        got: list[dict[str, Any]] = []
        while not got or got[-1]["id"] != "sentinel":
            batch, _ = await collect_events(ws, "s", 1)
            got.extend(batch)
    finally:
        await ws.close()
    assert [(e["source"], e["id"]) for e in got] == [
        ("test/dedup", "evt-1"),
        ("test/other", "evt-1"),
        ("test/dedup", "sentinel"),
    ]


async def test_idempotency_key_retry_returns_the_same_offsets(http: httpx.AsyncClient) -> None:
    topic = unique("idem")
    body = {"events": [event(topic, data={"n": n}) for n in range(3)]}  # no ids: only the key dedups
    headers = {"Idempotency-Key": f"key-{topic}"}
    first = await http.post("/v1/events", json=body, headers=headers)
    assert first.status_code == 202, first.text
    assert first.json()["duplicates"] == 0
    retry = await http.post("/v1/events", json=body, headers=headers)
    assert retry.status_code == 202, retry.text
    assert retry.json() == {"accepted": 3, "duplicates": 3, "offsets": first.json()["offsets"]}
    assert len(await history(http, topic)) == 3


async def test_idempotency_key_reused_with_another_body_is_conflict(http: httpx.AsyncClient) -> None:
    topic = unique("idem")
    headers = {"Idempotency-Key": f"key-{topic}"}
    first = await http.post("/v1/events", json=event(topic, data=1), headers=headers)
    assert first.status_code == 202
    resp = await http.post("/v1/events", json=event(topic, data=2), headers=headers)
    assert_error(resp, 409, "conflict")
    assert [e["data"] for e in await history(http, topic)] == [1]


async def test_label_with_non_string_value_is_rejected(http: httpx.AsyncClient) -> None:
    topic = unique("pub")
    resp = await http.post("/v1/events", json=event(topic, labels={"swarm": "s1", "count": 3}))
    err = assert_error(resp, 422, "bad_request")
    assert "labels" in err["message"]
    assert await history(http, topic) == []


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value] if len(str(value)) % 2 else {"k": value}
    return value


async def test_data_nesting_is_limited_to_32_levels(http: httpx.AsyncClient) -> None:
    topic = unique("pub")
    ok = await http.post("/v1/events", json=event(topic, data=_nested(32)))
    assert ok.status_code == 202, ok.text
    resp = await http.post("/v1/events", json=event(topic, data=_nested(33)))
    err = assert_error(resp, 422, "bad_request")
    assert "data" in err["message"]
    assert len(await history(http, topic)) == 1


async def test_unknown_route_and_wrong_method_have_the_error_shape(http: httpx.AsyncClient) -> None:
    assert_error(await http.post("/v1/nothing-here", json={}), 404, "not_found")
    resp = await http.put("/v1/events", json={})
    assert_error(resp, 405, "bad_request")
    assert "PUT" in resp.json()["error"]["message"]
