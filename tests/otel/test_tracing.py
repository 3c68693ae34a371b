"""End-to-end tracing: a real `dash-stream serve` exports to a real OTLP receiver.

The span tree of one event: the caller's span → `send <topic>` (PRODUCER, stored in the event as
`traceparent`) → `process <topic>` (CONSUMER, a child of and a link to the send span) →
`deliver <topic>` per subscription (always for high/critical events, else sampled).
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable

import httpx
import pytest
from helpers import scaled

from .conftest import named, otel_env, traceparent
from .otlp_receiver import OtlpReceiver, ReceivedLink

pytestmark = pytest.mark.timeout(60)

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert m is not None, f"{name} not in /metrics"
    return float(m.group(1))


def _closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (it was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually_async(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll an async predicate until it is true (scaled timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(within)
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_http_publish_continues_the_callers_trace_to_every_delivery(
    server, ws_client, http: httpx.AsyncClient, otlp: OtlpReceiver, topic: str
) -> None:
    srv = server("--dev", "--otel-deliver-ratio", "0", env=otel_env(otlp.endpoint))
    dashboards = [await ws_client(srv.ws_url) for _ in range(2)]
    for ws in dashboards:
        await ws.subscribe("s1", [f"{topic}.>"])
    event_topic = f"{topic}.agent.a7"

    r = await http.post(
        f"{srv.base_url}/v1/events",
        json={
            "topic": event_topic,
            "type": "agent.failed",
            "priority": "critical",
            "data": {"agent_id": "a7"},
        },
        headers={"traceparent": traceparent(CALLER_TRACE, CALLER_SPAN), "tracestate": "vendor=abc"},
    )
    assert r.status_code == 202, r.text
    delivered = [(await ws.wait_events("s1", 1))[0] for ws in dashboards]

    send = otlp.wait_for(lambda spans: named(spans, f"send {event_topic}"), what="the send span")[0]
    assert send.kind == "PRODUCER"
    assert (send.trace_id, send.parent_span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert send.attributes["messaging.system"] == "dash-stream"
    assert send.attributes["messaging.destination.name"] == event_topic
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.message.id"] == delivered[0]["id"]
    assert send.attributes["dash.transport"] == "http"
    assert send.resource["service.name"] == "dash-stream-test"
    for event in delivered:  # the stored context names the send span, on every dashboard
        assert event["traceparent"] == traceparent(CALLER_TRACE, send.span_id)
        assert event["tracestate"] == "vendor=abc"

    process = otlp.wait_for(lambda spans: named(spans, f"process {event_topic}"), what="the process span")[0]
    assert process.kind == "CONSUMER"
    assert (process.trace_id, process.parent_span_id) == (CALLER_TRACE, send.span_id)
    assert ReceivedLink(CALLER_TRACE, send.span_id) in process.links
    assert process.attributes["messaging.system"] == "dash-stream"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.message.id"] == delivered[0]["id"]

    # a critical event gets a deliver span per subscription even at a sampling ratio of 0
    delivers = otlp.wait_for(
        lambda spans: (
            [s for s in named(spans, f"deliver {event_topic}") if s.parent_span_id == process.span_id]
            if len(named(spans, f"deliver {event_topic}")) >= 2
            else None
        ),
        what="two deliver spans",
    )
    assert len(delivers) == 2
    assert {d.trace_id for d in delivers} == {CALLER_TRACE}
    assert {d.attributes["dash.subscription"] for d in delivers} == {"s1"}
    assert len({d.attributes["messaging.client.id"] for d in delivers}) == 2  # one per connection
    assert all(d.attributes["messaging.system"] == "dash-stream" for d in delivers)


async def test_a_normal_event_is_not_deliver_sampled_at_ratio_zero(
    server, ws_client, http: httpx.AsyncClient, otlp: OtlpReceiver, topic: str
) -> None:
    srv = server("--dev", "--otel-deliver-ratio", "0", env=otel_env(otlp.endpoint))
    ws = await ws_client(srv.ws_url)
    await ws.subscribe("s1", [f"{topic}.>"])
    r = await http.post(
        f"{srv.base_url}/v1/events",
        json={"topic": f"{topic}.m", "type": "metrics", "priority": "normal"},
        headers={"traceparent": traceparent(CALLER_TRACE, CALLER_SPAN)},
    )
    assert r.status_code == 202
    await ws.wait_events("s1", 1)
    # children end before their parent, and the exporter sends spans in the order they ended:
    # once the process span is here, a deliver span would be here too
    otlp.wait_for(lambda spans: named(spans, f"process {topic}.m"), what="the process span")
    assert not named(otlp.snapshot(), f"deliver {topic}.m")


async def test_a_full_deliver_ratio_traces_every_subscription(
    server, ws_client, http: httpx.AsyncClient, otlp: OtlpReceiver, topic: str
) -> None:
    srv = server("--dev", "--otel-deliver-ratio", "1", env=otel_env(otlp.endpoint))
    ws = await ws_client(srv.ws_url)
    await ws.subscribe("a", [f"{topic}.>"])
    await ws.subscribe("b", [f"{topic}.m"])
    r = await http.post(
        f"{srv.base_url}/v1/events",
        json={"topic": f"{topic}.m", "type": "metrics"},
        headers={"traceparent": traceparent(CALLER_TRACE, CALLER_SPAN)},
    )
    assert r.status_code == 202
    delivers = otlp.wait_for(
        lambda spans: (
            named(spans, f"deliver {topic}.m") if len(named(spans, f"deliver {topic}.m")) >= 2 else None
        ),
        what="a deliver span per subscription",
    )
    assert {d.attributes["dash.subscription"] for d in delivers} == {"a", "b"}


async def test_ws_publish_continues_the_events_traceparent_else_the_handshakes(
    server, ws_client, http: httpx.AsyncClient, otlp: OtlpReceiver, topic: str
) -> None:
    srv = server("--dev", env=otel_env(otlp.endpoint))
    handshake = traceparent("11111111111111111111111111111111", "2222222222222222")
    own = traceparent("33333333333333333333333333333333", "4444444444444444")
    publisher = await ws_client(srv.ws_url, headers={"traceparent": handshake})
    await publisher.publish({"topic": f"{topic}.own", "type": "t", "traceparent": own})
    await publisher.publish({"topic": f"{topic}.conn", "type": "t"})

    sent_own = otlp.wait_for(lambda spans: named(spans, f"send {topic}.own"), what="send of .own")[0]
    sent_conn = otlp.wait_for(lambda spans: named(spans, f"send {topic}.conn"), what="send of .conn")[0]
    assert (sent_own.trace_id, sent_own.parent_span_id) == ("3" * 32, "4" * 16)
    assert (sent_conn.trace_id, sent_conn.parent_span_id) == ("1" * 32, "2" * 16)
    assert sent_own.attributes["dash.transport"] == "ws"

    # history replays carry the stored context too
    page = (await http.get(f"{srv.base_url}/v1/events", params={"topics": f"{topic}.>"})).json()
    stored = {e["topic"]: e["traceparent"] for e in page["events"]}
    assert stored[f"{topic}.own"] == traceparent("3" * 32, sent_own.span_id)
    assert stored[f"{topic}.conn"] == traceparent("1" * 32, sent_conn.span_id)


async def test_a_publish_without_a_caller_context_starts_a_trace(
    server, http: httpx.AsyncClient, otlp: OtlpReceiver, topic: str
) -> None:
    srv = server("--dev", env=otel_env(otlp.endpoint))
    r = await http.post(f"{srv.base_url}/v1/events", json={"topic": f"{topic}.x", "type": "t"})
    assert r.status_code == 202
    send = otlp.wait_for(lambda spans: named(spans, f"send {topic}.x"), what="the send span")[0]
    assert send.parent_span_id == ""
    page = (await http.get(f"{srv.base_url}/v1/events", params={"topics": f"{topic}.x"})).json()
    stored = page["events"][0]["traceparent"]
    assert stored[:52] == traceparent(send.trace_id, send.span_id)[:52]
    assert int(stored[53:], 16) & 1  # sampled (a new root may also set the W3C "random" flag)


async def test_a_dead_collector_neither_breaks_nor_blocks_publishing(
    server, ws_client, http: httpx.AsyncClient, topic: str
) -> None:
    closed = _closed_port()
    env = otel_env(f"http://127.0.0.1:{closed}", OTEL_EXPORTER_OTLP_TIMEOUT="1", OTEL_BSP_MAX_QUEUE_SIZE="64")
    srv = server("--dev", "--publish-rate", "0", "--otel-deliver-ratio", "1", env=env)
    ws = await ws_client(srv.ws_url)
    await ws.subscribe("s1", [f"{topic}.>"])
    batches = 20
    for i in range(batches):
        events = [{"topic": f"{topic}.e", "type": "t", "data": {"seq": i * 10 + j}} for j in range(10)]
        r = await http.post(
            f"{srv.base_url}/v1/events",
            json={"events": events},
            headers={"traceparent": traceparent(CALLER_TRACE, CALLER_SPAN)},
        )
        assert r.status_code == 202, r.text
    received = await ws.wait_events("s1", batches * 10, within=30)
    assert [e["data"]["seq"] for e in received] == list(range(batches * 10))
    assert all(e["traceparent"].startswith(f"00-{CALLER_TRACE}-") for e in received)

    async def dropped() -> float:
        text = (await http.get(f"{srv.base_url}/metrics")).text
        return _metric(text, 'dash_otel_spans_dropped_total{reason="export_failed"}') + _metric(
            text, 'dash_otel_spans_dropped_total{reason="queue_full"}'
        )

    counts: list[float] = []

    async def some_dropped() -> bool:
        counts.append(await dropped())
        return counts[-1] > 0

    await eventually_async(some_dropped, within=30, what="dropped spans counted")
    assert _metric((await http.get(f"{srv.base_url}/metrics")).text, "dash_otel_tracing_enabled") == 1
    assert (await http.get(f"{srv.base_url}/healthz")).status_code == 200
    assert srv.alive()


async def test_otel_sdk_disabled_switches_tracing_off_and_passes_the_context_through(
    server, http: httpx.AsyncClient, otlp: OtlpReceiver, topic: str
) -> None:
    srv = server("--dev", env=otel_env(otlp.endpoint, OTEL_SDK_DISABLED="true"))
    given = traceparent(CALLER_TRACE, CALLER_SPAN)
    r = await http.post(
        f"{srv.base_url}/v1/events", json={"topic": f"{topic}.x", "type": "t"}, headers={"traceparent": given}
    )
    assert r.status_code == 202
    page = (await http.get(f"{srv.base_url}/v1/events", params={"topics": f"{topic}.x"})).json()
    assert page["events"][0]["traceparent"] == given  # no send span: the caller's context, unchanged
    metrics = (await http.get(f"{srv.base_url}/metrics")).text
    assert _metric(metrics, "dash_otel_tracing_enabled") == 0
