"""Tracing through the bridge: the publisher's trace continues into the OpenClaw request.

With real processes (a real OTLP/HTTP receiver, `dash-stream serve --bridge` or `dash-stream
bridge run`, the real OpenClaw gateway behind the fault proxy, which records request headers):

    caller span -> `send <topic>` (PRODUCER, server) -> `forward <topic>` (CONSUMER, bridge)
                -> `POST` (CLIENT, one per attempt) whose context is the `traceparent` OpenClaw got

and a digest of 3 events is one `digest <route>` span linking the 3 `send` spans. With tracing
off the bridge still delivers and passes the event's own `traceparent`/`tracestate` on.
In-process tests cover the dispatcher and the OpenClaw sink on an in-memory span exporter.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from bridge_support import config, event, memory_doc, to_toml
from integration import scaled
from integration.fault_proxy import FaultProxy, FaultProxyFactory, ProxiedRequest
from integration.openclaw import Gateway
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from otel.conftest import named, otel_env, otlp, traceparent  # noqa: F401 - otlp: a fixture
from otel.otlp_receiver import OtlpReceiver, ReceivedLink, ReceivedSpan
from servers import ServerFactory, free_port, server_env

from bridge.clock import ManualClock
from bridge.config import Badges, ReceiverConfig
from bridge.digest import Digester
from bridge.dispatch import RetryPolicy, send_with_retries
from bridge.model import Message
from bridge.render import build_message
from bridge.rules import Router
from bridge.sinks import OpenClawSink, Secret
from dash_stream.telemetry import NOOP_BRIDGE_TRACING, BridgeTracing
from dash_stream.telemetry.bridge import OtelBridgeTracing

REPO = Path(__file__).resolve().parents[2]
DASH_STREAM = REPO / ".venv" / "bin" / "dash-stream"
TOKEN_ENV = "DASH_BRIDGE_TRACING_HOOKS_TOKEN"

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


# ---------------------------------------------------------------- real processes


def bridge_doc(tmp_path: Path, hooks_url: str, *, server: str = "ws://unused") -> dict[str, Any]:
    """`agent.failed` events go one by one (`forward`); `task.failed` ones are digested per swarm."""
    common = {"receiver": "gw", "session_key": "hook:dash:{labels.swarm}"}
    return {
        "source": {"server": server, "topics": ["swarm.>"], "start": "earliest"},
        "receivers": [
            {
                "name": "gw",
                "kind": "openclaw",
                "url": hooks_url,
                "token_env": TOKEN_ENV,
                "agent_id": "main",
                "deliver": False,
                "backoff_initial": "100ms",
                "backoff_max": "200ms",
                "max_attempts": 4,
            }
        ],
        "routes": [
            {"name": "single", "where": {"type": "agent.failed"}, "group_by": ["..."], **common},
            {
                "name": "digested",
                "where": {"type": "task.failed"},
                "group_by": ["labels.swarm"],
                "group_wait": "500ms",
                **common,
            },
        ],
        "state": {"path": str(tmp_path / "state.json"), "checkpoint_interval": "200ms"},
        "dlq": {"path": str(tmp_path / "dlq.jsonl")},
    }


def write_config(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(to_toml(doc))
    return path


def publish(base_url: str, events: list[dict[str, Any]], headers: dict[str, str] | None = None) -> None:
    with httpx.Client(trust_env=False, timeout=scaled(30)) as client:
        response = client.post(f"{base_url}/v1/events", json={"events": events}, headers=headers or {})
    assert response.status_code == 202, response.text


def hook_requests(proxy: FaultProxy, swarm: str) -> list[ProxiedRequest]:
    """The hook requests the proxy saw for one swarm's session (marker in the body)."""
    return [r for r in proxy.requests if r.path.startswith("/hooks/") and swarm.encode() in r.body]


def wait_for_hooks(proxy: FaultProxy, swarm: str, count: int) -> list[ProxiedRequest]:
    """Until `count` hook requests for `swarm` were seen and the last one got through."""
    import time

    deadline = time.monotonic() + scaled(30)
    while True:
        seen = hook_requests(proxy, swarm)
        if len(seen) >= count and seen[-1].outcome.startswith("forwarded:2"):
            return seen
        assert time.monotonic() < deadline, f"hook requests for {swarm}: {[r.outcome for r in seen]}"
        time.sleep(0.05)


def ids_of(header: str | None) -> tuple[str, str]:
    """(trace id, span id) of a `traceparent` header."""
    assert header is not None, "no traceparent header"
    version, trace_id, span_id, _flags = header.split("-")
    assert version == "00"
    return trace_id, span_id


def children(spans: list[ReceivedSpan], parent: ReceivedSpan, name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name and s.parent_span_id == parent.span_id]


def client_spans_with_hooks(
    spans: list[ReceivedSpan], parent: ReceivedSpan, hooks: list[ProxiedRequest]
) -> list[tuple[ReceivedSpan, ProxiedRequest]]:
    """Each hook request paired with the CLIENT span its `traceparent` names (a child of `parent`)."""
    by_id = {s.span_id: s for s in children(spans, parent, "POST")}
    pairs = []
    for request in hooks:
        trace_id, span_id = ids_of(request.header("traceparent"))
        assert trace_id == parent.trace_id
        assert span_id in by_id, f"the traceparent {request.header('traceparent')} names no CLIENT span"
        pairs.append((by_id[span_id], request))
    return pairs


@pytest.fixture
def gw_proxy(openclaw_gateway: Gateway, fault_proxy: FaultProxyFactory) -> FaultProxy:
    """A pass-through proxy in front of the real gateway; it records every request's headers."""
    return fault_proxy()


@pytest.mark.integration
@pytest.mark.timeout(scaled(300))  # the session gateway may start inside this test
def test_embedded_bridge_continues_the_callers_trace_into_openclaw(
    tmp_path: Path,
    server: ServerFactory,
    otlp: OtlpReceiver,  # noqa: F811 - the fixture imported above
    openclaw_gateway: Gateway,
    gw_proxy: FaultProxy,
) -> None:
    cfg = write_config(tmp_path, bridge_doc(tmp_path, gw_proxy.url))
    env = {**otel_env(otlp.endpoint), TOKEN_ENV: openclaw_gateway.hooks_token}
    srv = server("--dev", "--bridge", str(cfg), env=env)
    swarm = f"tr{os.urandom(4).hex()}"
    topic = f"swarm.{swarm}.agent.a1"

    # one event, whose first hook request fails: two attempts, two CLIENT spans, one forward span
    gw_proxy.fail_next(503, match="/hooks/")
    publish(
        srv.base_url,
        [{"topic": topic, "type": "agent.failed", "labels": {"swarm": swarm}, "data": {"reason": swarm}}],
        headers={"traceparent": traceparent(CALLER_TRACE, CALLER_SPAN), "tracestate": "vendor=abc"},
    )
    hooks = wait_for_hooks(gw_proxy, swarm, 2)
    assert [r.outcome.split(":")[0] for r in hooks] == ["fault", "forwarded"]
    forward = otlp.wait_for(lambda spans: named(spans, f"forward {topic}"), what="the forward span")[0]
    spans = otlp.wait_for(
        lambda spans: spans if len(children(spans, forward, "POST")) == 2 else None, what="2 CLIENT spans"
    )
    [send] = named(spans, f"send {topic}")

    assert send.kind == "PRODUCER"
    assert (send.trace_id, send.parent_span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert forward.kind == "CONSUMER"
    assert (forward.trace_id, forward.parent_span_id) == (CALLER_TRACE, send.span_id)
    assert ReceivedLink(CALLER_TRACE, send.span_id) in forward.links
    assert forward.attributes["messaging.system"] == "dash-stream"
    assert forward.attributes["messaging.destination.name"] == topic
    assert forward.attributes["messaging.message.id"] == send.attributes["messaging.message.id"]
    assert forward.attributes["dash.bridge.route"] == "single"
    assert forward.attributes["dash.bridge.receiver"] == "gw"
    assert forward.attributes["dash.bridge.message.id"] == hooks[0].header("Idempotency-Key")
    assert forward.status_code == 0  # unset: delivered in the end
    assert forward.resource["service.name"] == "dash-stream-test"  # the server's provider

    pairs = client_spans_with_hooks(spans, forward, hooks)
    (first, _), (second, _) = pairs
    for span, request in pairs:  # the header OpenClaw's side received names that very CLIENT span
        assert span.kind == "CLIENT"
        assert span.attributes["http.request.method"] == "POST"
        assert span.attributes["url.full"] == f"{gw_proxy.url}/hooks/agent"
        assert span.attributes["http.response.status_code"] == int(request.outcome.split(":")[1])
        assert request.header("tracestate") == "vendor=abc"
    assert "http.request.resend_count" not in first.attributes
    assert first.status_code == 2 and first.attributes["error.type"] == "503"  # ERROR
    assert second.attributes["http.request.resend_count"] == 1
    assert second.status_code == 0
    assert "authorization" not in json.dumps(first.attributes).lower()

    # a digest of 3 events, each from its own trace: one digest span linking the 3 send spans
    callers = [(f"{i + 1:x}" * 32, f"{i + 1:x}" * 16) for i in range(3)]
    publish(
        srv.base_url,
        [
            {
                "topic": f"swarm.{swarm}.task.t{i}",
                "type": "task.failed",
                "labels": {"swarm": swarm},
                "data": {"reason": f"{swarm}-task-{i}"},
                "traceparent": traceparent(*callers[i]),
            }
            for i in range(3)
        ],
    )
    digest_hooks = wait_for_hooks(gw_proxy, f"{swarm}-task-", 1)
    assert len(digest_hooks) == 1
    digest = otlp.wait_for(lambda spans: named(spans, "digest digested"), what="the digest span")[0]
    spans = otlp.wait_for(
        lambda spans: spans if children(spans, digest, "POST") else None, what="the digest's CLIENT span"
    )
    sends = [named(spans, f"send swarm.{swarm}.task.t{i}")[0] for i in range(3)]
    assert [(s.trace_id, s.parent_span_id) for s in sends] == callers
    assert digest.kind == "CONSUMER"
    assert set(digest.links) == {ReceivedLink(s.trace_id, s.span_id) for s in sends}
    assert digest.parent_span_id == ""  # three traces: the digest starts its own
    assert digest.attributes["messaging.batch.message_count"] == 3
    assert digest.attributes["dash.bridge.route"] == "digested"
    assert digest.attributes["dash.bridge.message.id"] == digest_hooks[0].header("Idempotency-Key")
    [(call, _)] = client_spans_with_hooks(spans, digest, digest_hooks)
    assert call.kind == "CLIENT" and call.trace_id == digest.trace_id


@pytest.mark.integration
@pytest.mark.timeout(scaled(300))
def test_with_tracing_off_the_bridge_delivers_and_passes_the_events_context_on(
    tmp_path: Path,
    server: ServerFactory,
    otlp: OtlpReceiver,  # noqa: F811
    openclaw_gateway: Gateway,
    gw_proxy: FaultProxy,
) -> None:
    cfg = write_config(tmp_path, bridge_doc(tmp_path, gw_proxy.url))
    env = {**otel_env(otlp.endpoint, OTEL_SDK_DISABLED="true"), TOKEN_ENV: openclaw_gateway.hooks_token}
    srv = server("--dev", "--bridge", str(cfg), env=env)
    swarm = f"off{os.urandom(4).hex()}"
    given = traceparent(CALLER_TRACE, CALLER_SPAN)
    publish(
        srv.base_url,
        [
            {
                "topic": f"swarm.{swarm}.agent.a1",
                "type": "agent.failed",
                "labels": {"swarm": swarm},
                "data": {"reason": swarm},
            }
        ],
        headers={"traceparent": given, "tracestate": "vendor=abc"},
    )
    [request] = wait_for_hooks(gw_proxy, swarm, 1)
    assert request.header("traceparent") == given  # no spans anywhere: the caller's context, as is
    assert request.header("tracestate") == "vendor=abc"
    assert otlp.snapshot() == [] and otlp.requests == 0


@pytest.mark.integration
@pytest.mark.timeout(scaled(300))
def test_a_dead_collector_does_not_hold_up_forwarding(
    tmp_path: Path, server: ServerFactory, openclaw_gateway: Gateway, gw_proxy: FaultProxy
) -> None:
    closed = free_port()  # nothing listens: every export fails (after its 1 s timeout)
    env = otel_env(f"http://127.0.0.1:{closed}", OTEL_EXPORTER_OTLP_TIMEOUT="1", OTEL_BSP_MAX_QUEUE_SIZE="8")
    cfg = write_config(tmp_path, bridge_doc(tmp_path, gw_proxy.url))
    srv = server("--dev", "--bridge", str(cfg), env={**env, TOKEN_ENV: openclaw_gateway.hooks_token})
    run = f"dead{os.urandom(4).hex()}"
    publish(  # one session each (sent in parallel); more spans than the export queue holds
        srv.base_url,
        [
            {
                "topic": f"swarm.{run}x{i}.agent.a1",
                "type": "agent.failed",
                "labels": {"swarm": f"{run}x{i}"},
                "data": {"reason": f"{run}-{i}"},
            }
            for i in range(6)
        ],
        headers={"traceparent": traceparent(CALLER_TRACE, CALLER_SPAN)},
    )
    hooks = wait_for_hooks(gw_proxy, run, 6)
    assert all(r.outcome.startswith("forwarded:2") for r in hooks)
    # still traced: each request names its own CLIENT span in the caller's trace
    assert {ids_of(r.header("traceparent"))[0] for r in hooks} == {CALLER_TRACE}
    assert len({ids_of(r.header("traceparent"))[1] for r in hooks} - {CALLER_SPAN}) == 6
    with httpx.Client(trust_env=False, timeout=scaled(10)) as client:
        metrics = client.get(f"{srv.base_url}/metrics").text
    assert "dash_otel_tracing_enabled 1.0" in metrics
    assert srv.alive()


@pytest.fixture
def bridge_process(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=scaled(20))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.integration
@pytest.mark.timeout(scaled(300))
def test_a_standalone_bridge_traces_from_the_otel_variables_as_dash_bridge(
    tmp_path: Path,
    server: ServerFactory,
    otlp: OtlpReceiver,  # noqa: F811
    openclaw_gateway: Gateway,
    gw_proxy: FaultProxy,
    bridge_process: list[subprocess.Popen[bytes]],
) -> None:
    srv = server("--dev", env=otel_env(otlp.endpoint))
    cfg = write_config(tmp_path, bridge_doc(tmp_path, gw_proxy.url, server=srv.ws_url))
    env = server_env({**otel_env(otlp.endpoint), TOKEN_ENV: openclaw_gateway.hooks_token})
    del env["OTEL_SERVICE_NAME"]  # the bridge's default applies
    log = tmp_path / "bridge.log"
    with log.open("wb") as out:
        bridge_process.append(
            subprocess.Popen(
                [str(DASH_STREAM), "bridge", "run", "--config", str(cfg)],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
    swarm = f"sa{os.urandom(4).hex()}"
    topic = f"swarm.{swarm}.agent.a1"
    publish(
        srv.base_url,
        [{"topic": topic, "type": "agent.failed", "labels": {"swarm": swarm}, "data": {"reason": swarm}}],
        headers={"traceparent": traceparent(CALLER_TRACE, CALLER_SPAN)},
    )
    [request] = wait_for_hooks(gw_proxy, swarm, 1)
    forward = otlp.wait_for(lambda spans: named(spans, f"forward {topic}"), what="the forward span")[0]
    spans = otlp.wait_for(lambda spans: spans if children(spans, forward, "POST") else None, what="POST")
    [send] = named(spans, f"send {topic}")
    assert send.resource["service.name"] == "dash-stream-test"
    assert forward.resource["service.name"] == "dash-bridge"
    assert (forward.trace_id, forward.parent_span_id) == (CALLER_TRACE, send.span_id)  # across processes
    [(call, _)] = client_spans_with_hooks(spans, forward, [request])
    assert call.resource["service.name"] == "dash-bridge"

    proc = bridge_process[0]
    proc.terminate()
    assert proc.wait(timeout=scaled(20)) == 0, log.read_text()
    text = log.read_text()
    assert "tracing on: otlp http/protobuf" in text and "Traceback" not in text, text


# ---------------------------------------------------------------- in process: dispatcher and sink


def one_event_message() -> Message:
    return _message(1)


def digest_message() -> Message:
    return _message(3)


def _message(n: int) -> Message:
    doc = memory_doc(group_by=["labels.swarm"])
    doc["receivers"] = [{"name": "ops", "kind": "memory"}]
    doc["routes"][0]["receiver"] = "ops"
    router = Router(config(doc))
    digester = Digester()
    for i in range(n):
        ev = event(swarm="s1", topic=f"swarm.s1.agent.a{i}")
        if i == 0:
            ev = msgspec.structs.replace(ev, tracestate="k=v")
        digester.add(router.deliveries(ev)[0], ev, now=0)
    [flush] = digester.flush_all(now=0)
    return build_message(flush, badges=Badges(), origin="dash-bridge", now=0)


def sink_answering(statuses: list[int], seen: list[httpx.Request], tracing: BridgeTracing) -> OpenClawSink:
    answers = iter(statuses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(next(answers), json={"ok": True})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    receiver = ReceiverConfig(name="ops", url="http://gw:1", token_env="T")
    return OpenClawSink(receiver, Secret("s3cret"), client=client, tracing=tracing)


@pytest.fixture
def memory_tracing() -> Iterator[tuple[OtelBridgeTracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield OtelBridgeTracing(provider.get_tracer("test")), exporter
    provider.shutdown()


def span_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


async def test_every_attempt_is_a_client_span_of_the_one_forward_span(
    memory_tracing: tuple[OtelBridgeTracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory_tracing
    message = one_event_message()
    seen: list[httpx.Request] = []
    sink = sink_answering([503, 502, 200], seen, tracing)
    attempted = await send_with_retries(
        sink, message, RetryPolicy(max_attempts=4), ManualClock(auto_advance=True), tracing=tracing
    )
    await sink.close()
    assert attempted.result.ok and attempted.attempts == 3

    spans = exporter.get_finished_spans()
    [forward] = [s for s in spans if s.name.startswith("forward ")]
    calls = [s for s in spans if s.name == "POST"]
    src = message.sources[0]
    assert forward.name == f"forward {src.topic}" and forward.kind is SpanKind.CONSUMER
    assert src.traceparent is not None and forward.parent is not None and forward.context is not None
    assert f"{forward.parent.span_id:016x}" == src.traceparent.split("-")[2]  # the event's send span
    assert forward.attributes is not None
    assert forward.attributes["messaging.message.id"] == src.event_id
    assert forward.attributes["dash.bridge.message.id"] == message.id
    assert len(calls) == 3 and all(c.kind is SpanKind.CLIENT for c in calls)
    assert all(c.parent is not None and c.parent.span_id == forward.context.span_id for c in calls)
    assert [(c.attributes or {}).get("http.request.resend_count") for c in calls] == [None, 1, 2]
    assert [c.status.status_code for c in calls] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    # each request carried its own attempt's context, and the event's tracestate
    assert [r.headers["traceparent"] for r in seen] == [f"00-{'-'.join(span_ids(c))}-01" for c in calls]
    assert {r.headers["tracestate"] for r in seen} == {"k=v"}


async def test_a_message_that_fails_for_good_fails_its_span(
    memory_tracing: tuple[OtelBridgeTracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory_tracing
    sink = sink_answering([401], [], tracing)
    attempted = await send_with_retries(
        sink, digest_message(), RetryPolicy(), ManualClock(auto_advance=True), tracing=tracing
    )
    await sink.close()
    assert not attempted.result.ok
    [digest] = [s for s in exporter.get_finished_spans() if s.name.startswith("digest ")]
    assert digest.status.status_code is StatusCode.ERROR
    assert digest.attributes is not None and digest.attributes["error.type"] == "http_401"
    assert len(digest.links) == 3


async def test_with_tracing_off_one_event_passes_its_own_context_and_a_digest_none() -> None:
    seen: list[httpx.Request] = []
    sink = sink_answering([503, 200, 200], seen, NOOP_BRIDGE_TRACING)
    single, digest = one_event_message(), digest_message()
    policy, clock = RetryPolicy(), ManualClock(auto_advance=True)
    assert (await send_with_retries(sink, single, policy, clock)).attempts == 2
    assert (await send_with_retries(sink, digest, policy, clock)).result.ok
    await sink.close()
    src = single.sources[0]
    assert [r.headers.get("traceparent") for r in seen] == [src.traceparent, src.traceparent, None]
    assert [r.headers.get("tracestate") for r in seen] == ["k=v", "k=v", None]
