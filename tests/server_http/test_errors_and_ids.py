"""The one error shape, X-Request-ID, health, metrics and the API documents (PROTOCOL.md section 5)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ServerFactory
from .support import (
    API_KEY,
    SECRET,
    Server,
    assert_error,
    bearer,
    collect_events,
    event,
    recv,
    request,
    timeout,
    token,
    unique,
    ws_connect,
)

Call = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


@pytest.fixture(scope="module")
def server(serve_module: ServerFactory) -> Server:
    """Auth on (JWT and an API key), with a low publish rate so 429 is reachable."""
    return serve_module("--jwt-secret", SECRET, "--api-key", API_KEY, "--publish-rate", "5")


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as client:
        yield client


def _auth(sub: str, **kw: Any) -> dict[str, str]:
    return bearer(token(sub=f"{sub}-{time.monotonic_ns()}", **kw))


async def _bad_json(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post(
        "/v1/events", content=b"{not json", headers={**_auth("e400"), "Content-Type": "application/json"}
    )


async def _no_token(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post("/v1/events", json=event("errs.a"))


async def _bad_token(http: httpx.AsyncClient) -> httpx.Response:
    return await http.get("/v1/events", headers=bearer("not-a-token"))


async def _forbidden_publish(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post(
        "/v1/events", json=event("errs.other"), headers=_auth("e403", publish=("errs.mine.>",))
    )


async def _forbidden_read(http: httpx.AsyncClient) -> httpx.Response:
    return await http.get(
        "/v1/events", params={"topics": "errs.>"}, headers=_auth("e403", subscribe=("x.>",))
    )


async def _no_route(http: httpx.AsyncClient) -> httpx.Response:
    return await http.get("/v2/nothing")


async def _wrong_method(http: httpx.AsyncClient) -> httpx.Response:
    return await http.delete("/v1/events")


async def _conflict(http: httpx.AsyncClient) -> httpx.Response:
    headers = {**_auth("e409"), "Idempotency-Key": f"k{time.monotonic_ns()}"}
    first = await http.post("/v1/events", json=event("errs.a", data=1), headers=headers)
    assert first.status_code == 202, first.text
    return await http.post("/v1/events", json=event("errs.a", data=2), headers=headers)


async def _too_large(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post("/v1/events", json=event("errs.a", data="x" * 70_000), headers=_auth("e413"))


async def _invalid(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post("/v1/events", json={"topic": "errs.a", "type": ""}, headers=_auth("e422"))


async def _rate_limited(http: httpx.AsyncClient) -> httpx.Response:
    headers = _auth("e429")
    deadline = time.monotonic() + timeout(20)
    while time.monotonic() < deadline:
        resp = await http.post("/v1/events", json={"events": [event("errs.a")] * 10}, headers=headers)
        if resp.status_code != 202:
            return resp
    raise AssertionError("never rate limited")


CASES: list[tuple[str, Call, int, str]] = [
    ("malformed-json", _bad_json, 400, "bad_request"),
    ("no-token", _no_token, 401, "unauthorized"),
    ("bad-token", _bad_token, 401, "unauthorized"),
    ("forbidden-publish", _forbidden_publish, 403, "forbidden"),
    ("forbidden-read", _forbidden_read, 403, "forbidden"),
    ("no-route", _no_route, 404, "not_found"),
    ("wrong-method", _wrong_method, 405, "bad_request"),
    ("conflict", _conflict, 409, "conflict"),
    ("too-large", _too_large, 413, "too_large"),
    ("invalid", _invalid, 422, "bad_request"),
    ("rate-limited", _rate_limited, 429, "rate_limited"),
]


@pytest.mark.parametrize(("call", "status", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_every_error_has_the_one_shape(
    http: httpx.AsyncClient, call: Call, status: int, code: str
) -> None:
    resp = await call(http)
    err = assert_error(resp, status, code)
    assert len(err["request_id"]) >= 8
    if status == 429:
        assert int(resp.headers["retry-after"]) >= 1
        assert err["retry_after_ms"] > 0


@pytest.mark.parametrize(
    ("call", "status", "code"), [c[1:] for c in CASES[:7]], ids=[c[0] for c in CASES[:7]]
)
async def test_a_sent_request_id_is_echoed_in_errors(
    http: httpx.AsyncClient, call: Call, status: int, code: str
) -> None:
    rid = f"client-{time.monotonic_ns()}"
    http.headers["X-Request-ID"] = rid
    err = assert_error(await call(http), status, code)
    assert err["request_id"] == rid


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json", "/asyncapi.json"])
async def test_successful_responses_carry_a_request_id(http: httpx.AsyncClient, path: str) -> None:
    resp = await http.get(path)
    assert resp.status_code == 200
    generated = resp.headers["x-request-id"]
    assert generated
    again = await http.get(path)
    assert again.headers["x-request-id"] != generated
    echoed = await http.get(path, headers={"X-Request-ID": "abc-123.xyz"})
    assert echoed.headers["x-request-id"] == "abc-123.xyz"


async def test_publish_and_history_echo_the_request_id(http: httpx.AsyncClient) -> None:
    headers = {**_auth("rid"), "X-Request-ID": "rid-publish-1"}
    resp = await http.post("/v1/events", json=event(unique("errs")), headers=headers)
    assert resp.status_code == 202 and resp.headers["x-request-id"] == "rid-publish-1"
    resp = await http.get(
        "/v1/events", params={"limit": "1"}, headers={**headers, "X-Request-ID": "rid-read-1"}
    )
    assert resp.status_code == 200 and resp.headers["x-request-id"] == "rid-read-1"


async def test_an_unusable_request_id_is_replaced(http: httpx.AsyncClient) -> None:
    for bad in ("has spaces in it", "x" * 500, "<script>"):
        resp = await http.get("/nowhere", headers={"X-Request-ID": bad})
        err = assert_error(resp, 404, "not_found")
        assert err["request_id"] != bad


async def test_health_and_readiness(http: httpx.AsyncClient) -> None:
    health = await http.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200, ready.text


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


METRIC_NAMES = [
    "dash_connections",
    "dash_subscriptions",
    "dash_events_in_total",
    "dash_deliveries_total",
    "dash_slow_consumer_closes_total",
    "dash_recoveries_total",
    "dash_publish_to_deliver_seconds_bucket",
]


async def test_metrics_name_every_metric_and_move_after_a_publish(
    server: Server, http: httpx.AsyncClient
) -> None:
    topic = unique("metrics")
    tok = token(sub=f"metrics-{time.monotonic_ns()}")
    before = _samples((await http.get("/metrics")).text)
    ws = await ws_connect(server, headers=bearer(tok))
    try:
        assert (await recv(ws))["op"] == "welcome"
        reply = await request(ws, {"op": "subscribe", "id": "1", "sub": "m", "topics": [topic]})
        assert reply["op"] == "subscribed", reply
        resp = await http.post("/v1/events", json={"events": [event(topic)] * 3}, headers=bearer(tok))
        assert resp.status_code == 202, resp.text
        await collect_events(ws, "m", 3)
        deadline = time.monotonic() + timeout(10)
        while True:
            resp = await http.get("/metrics")
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/plain")
            after = _samples(resp.text)
            moved = (
                _total(after, "dash_events_in_total") >= _total(before, "dash_events_in_total") + 3
                and _total(after, "dash_deliveries_total") >= _total(before, "dash_deliveries_total") + 3
                and _total(after, "dash_publish_to_deliver_seconds_count")
                > _total(before, "dash_publish_to_deliver_seconds_count")
            )
            if moved or time.monotonic() > deadline:
                break
        assert moved, resp.text
        for name in METRIC_NAMES:
            assert any(n == name for n, _ in after), name
        assert after[("dash_events_in_total", (("transport", "http"),))] >= 3
        assert after[("dash_connections", (("transport", "ws"),))] >= 1
        assert _total(after, "dash_subscriptions") >= 1
    finally:
        await ws.close()


async def test_openapi_is_a_valid_openapi_3_1_document(http: httpx.AsyncClient) -> None:
    resp = await http.get("/openapi.json")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    assert doc["openapi"].startswith("3.1")
    OpenAPIV31SpecValidator(doc).validate()
    assert {"post", "get"} <= set(doc["paths"]["/v1/events"])
    for path in ("/v1/sse", "/healthz", "/readyz", "/metrics"):
        assert path in doc["paths"], path
    error = doc["components"]["schemas"]["Error"]["properties"]["error"]
    assert set(error["required"]) == {"code", "message", "request_id"}


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


async def test_asyncapi_lists_every_op(http: httpx.AsyncClient) -> None:
    resp = await http.get("/asyncapi.json")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    assert doc["asyncapi"].startswith("3.")
    ops: dict[str, set[str]] = {}
    for name, operation in doc["operations"].items():
        _resolve(doc, operation["channel"]["$ref"])
        tags: set[str] = set()
        for ref in operation["messages"]:
            message = _resolve(doc, ref["$ref"])
            if "$ref" in message:
                message = _resolve(doc, message["$ref"])
            payload = message["payload"]
            if "$ref" in payload:
                payload = _resolve(doc, payload["$ref"])
            tags.update(payload["properties"]["op"].get("enum", [payload["properties"]["op"].get("const")]))
        ops[operation["action"]] = tags
        assert name
    assert ops["receive"] == {"auth", "refresh", "subscribe", "unsubscribe", "publish", "ping"}
    assert ops["send"] == {
        "welcome",
        "authed",
        "ack",
        "subscribed",
        "unsubscribed",
        "pong",
        "error",
        "events",
        "snapshot",
    }
