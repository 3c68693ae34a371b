"""`GET /v1/events` (PROTOCOL.md sections 2 and 5): pages of history, filters, unusable cursors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from .conftest import ServerFactory
from .support import Server, assert_error, event, publish, unique


@pytest.fixture(scope="module")
def server(serve_module: ServerFactory) -> Server:
    """A dev server with default retention."""
    return serve_module("--dev", "--publish-rate", "0")


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as client:
        yield client


async def page(http: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    """One page of history; fails the test unless it is a 200."""
    resp = await http.get("/v1/events", params=params)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    doc: dict[str, Any] = resp.json()
    return doc


async def test_pages_continue_from_the_returned_cursor(http: httpx.AsyncClient) -> None:
    topic = unique("hist")
    offsets = await publish(http, *(event(topic, data={"n": n}) for n in range(10)))
    seen: list[int] = []
    cursors: list[str] = []
    params = {"topics": topic, "limit": "4"}
    for expected in (4, 4, 2):
        doc = await page(http, **params)
        assert doc["recovered"] is True
        assert len(doc["events"]) == expected
        seen.extend(e["data"]["n"] for e in doc["events"])
        assert doc["cursor"] == doc["events"][-1]["offset"]
        cursors.append(doc["cursor"])
        params["cursor"] = doc["cursor"]
    assert seen == list(range(10))
    assert cursors[-1] == offsets[-1]
    tail = await page(http, **params)
    assert tail["events"] == [] and tail["recovered"] is True


async def test_without_a_cursor_pages_start_at_the_earliest_event(http: httpx.AsyncClient) -> None:
    topic = unique("hist")
    offsets = await publish(http, *(event(topic, data={"n": n}) for n in range(3)))
    doc = await page(http, topics=topic, limit="2")
    assert [e["offset"] for e in doc["events"]] == offsets[:2]


async def test_limit_defaults_to_100(http: httpx.AsyncClient) -> None:
    topic = unique("hist")
    await publish(http, *(event(topic) for _ in range(120)))
    doc = await page(http, topics=topic)
    assert len(doc["events"]) == 100
    rest = await page(http, topics=topic, cursor=doc["cursor"])
    assert len(rest["events"]) == 20


async def test_topics_filter_keeps_only_matching_topics_in_order(http: httpx.AsyncClient) -> None:
    base = unique("hist")
    events = [event(f"{base}.{kind}", data={"n": n}) for n, kind in enumerate("abcabcabc")]
    await publish(http, *events)
    doc = await page(http, topics=f"{base}.a,{base}.c")
    assert [(e["topic"].rsplit(".", 1)[1], e["data"]["n"]) for e in doc["events"]] == [
        ("a", 0),
        ("c", 2),
        ("a", 3),
        ("c", 5),
        ("a", 6),
        ("c", 8),
    ]
    wildcard = await page(http, topics=f"{base}.*")
    assert len(wildcard["events"]) == 9


async def test_where_filter_applies_and_pages_still_advance(http: httpx.AsyncClient) -> None:
    topic = unique("hist")
    priorities = ["low", "high", "normal", "critical", "high", "low", "normal", "critical"]
    await publish(http, *(event(topic, priority=p, data={"n": n}) for n, p in enumerate(priorities)))
    where = json.dumps({"priority": {"gte": "high"}})
    first = await page(http, topics=topic, where=where, limit="2")
    assert [e["data"]["n"] for e in first["events"]] == [1, 3]
    second = await page(http, topics=topic, where=where, limit="2", cursor=first["cursor"])
    assert [e["data"]["n"] for e in second["events"]] == [4, 7]
    labelled = await page(http, topics=topic, where=json.dumps({"data.n": {"in": [0, 5]}}))
    assert [e["priority"] for e in labelled["events"]] == ["low", "low"]


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten"])
async def test_limit_out_of_range_is_bad_request(http: httpx.AsyncClient, limit: str) -> None:
    err = assert_error(await http.get("/v1/events", params={"limit": limit}), 400, "bad_request")
    assert "limit" in err["message"]


async def test_malformed_where_names_the_offending_path(http: httpx.AsyncClient) -> None:
    resp = await http.get("/v1/events", params={"where": json.dumps({"priority": {"gte": "urgent"}})})
    err = assert_error(resp, 400, "bad_request")
    assert "where.priority" in err["message"]
    assert_error(await http.get("/v1/events", params={"where": "{nope"}), 400, "bad_request")


@pytest.mark.parametrize("cursor", ["%%garbage%%", "abc.0-x", "UPPER.0-1"])
async def test_garbage_cursor_is_not_recovered(http: httpx.AsyncClient, cursor: str) -> None:
    topic = unique("hist")
    await publish(http, event(topic))
    doc = await page(http, topics=topic, cursor=cursor)
    assert doc["recovered"] is False and doc["reason"] == "bad_cursor"
    assert doc["events"] == []
    # it starts from now: the cursor handed back resumes without replaying the old event
    after = await page(http, topics=topic, cursor=doc["cursor"])
    assert after["recovered"] is True and after["events"] == []


async def test_cursor_past_the_end_is_bad_cursor(http: httpx.AsyncClient) -> None:
    topic = unique("hist")
    [offset] = await publish(http, event(topic))
    epoch = offset.split(".", 1)[0]
    doc = await page(http, topics=topic, cursor=f"{epoch}.0-999999999")
    assert doc["recovered"] is False and doc["reason"] == "bad_cursor"


async def test_cursor_of_another_epoch_is_epoch_changed(http: httpx.AsyncClient) -> None:
    topic = unique("hist")
    [offset] = await publish(http, event(topic))
    epoch = offset.split(".", 1)[0]
    other = "0" * len(epoch) if epoch != "0" * len(epoch) else "1" * len(epoch)
    doc = await page(http, topics=topic, cursor=f"{other}.0-1")
    assert doc["recovered"] is False and doc["reason"] == "epoch_changed"
    assert doc["events"] == []


async def test_trimmed_cursor_is_not_recovered(serve: ServerFactory) -> None:
    server = serve("--dev", "--retention-events", "16")
    async with server.client() as http:
        topic = unique("trim")
        [old] = await publish(http, event(topic, data={"n": 0}))
        await publish(http, *(event(topic, data={"n": n}) for n in range(1, 21)))
        doc = await page(http, topics=topic, cursor=old)
        assert doc["recovered"] is False and doc["reason"] == "trimmed"
        assert doc["events"] == []
        # without a cursor: only what is retained, oldest first
        retained = await page(http, topics=topic)
        assert [e["data"]["n"] for e in retained["events"]] == list(range(5, 21))
