"""The trace context survives the Redis bus: published on node A, delivered and replayed on node B."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis_servers

from .conftest import named, otel_env, traceparent
from .otlp_receiver import OtlpReceiver, ReceivedLink, ReceivedSpan

pytestmark = pytest.mark.timeout(60)

CALLER_TRACE = "5c6f2a1b9d8e7f6a5b4c3d2e1f0a9b8c"
CALLER_SPAN = "1a2b3c4d5e6f7a8b"


@pytest.fixture
def redis_url() -> Iterator[str]:
    deployment = redis_servers.standalone()
    try:
        yield deployment.url
    finally:
        deployment.stop()


async def test_the_send_context_crosses_redis_to_another_node(
    server, ws_client, http: httpx.AsyncClient, otlp: OtlpReceiver, redis_url: str, topic: str
) -> None:
    def node(name: str) -> Any:
        env = otel_env(otlp.endpoint, OTEL_RESOURCE_ATTRIBUTES=f"service.instance.id={name}")
        return server("--dev", "--bus", redis_url, "--otel-deliver-ratio", "1", env=env)

    node_a, node_b = node("node-a"), node("node-b")
    dashboard = await ws_client(node_b.ws_url)
    await dashboard.subscribe("s1", [f"{topic}.>"])
    event_topic = f"{topic}.swarm.s1"

    r = await http.post(
        f"{node_a.base_url}/v1/events",
        json={"topic": event_topic, "type": "swarm.status", "data": {"swarm_id": "s1", "status": "down"}},
        headers={"traceparent": traceparent(CALLER_TRACE, CALLER_SPAN)},
    )
    assert r.status_code == 202, r.text
    delivered = (await dashboard.wait_events("s1", 1))[0]

    send = otlp.wait_for(lambda spans: named(spans, f"send {event_topic}"), what="the send span")[0]
    assert send.resource["service.instance.id"] == "node-a"
    assert (send.trace_id, send.parent_span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert delivered["traceparent"] == traceparent(CALLER_TRACE, send.span_id)

    def on_node_b(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [
            s for s in named(spans, f"process {event_topic}") if s.resource["service.instance.id"] == "node-b"
        ]

    process = otlp.wait_for(on_node_b, what="node B's process span")[0]
    assert ReceivedLink(CALLER_TRACE, send.span_id) in process.links
    assert (process.trace_id, process.parent_span_id) == (CALLER_TRACE, send.span_id)
    deliver = otlp.wait_for(lambda spans: named(spans, f"deliver {event_topic}"), what="the deliver span")[0]
    assert deliver.parent_span_id == process.span_id

    # the context is stored in Redis: a history read on either node returns it
    for base in (node_a.base_url, node_b.base_url):
        page = (await http.get(f"{base}/v1/events", params={"topics": f"{topic}.>"})).json()
        assert [e["traceparent"] for e in page["events"]] == [delivered["traceparent"]]
