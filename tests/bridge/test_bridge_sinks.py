"""The OpenClaw sink's requests and judgement of answers (against httpx's in-process transport),
the retry policy, and the dispatcher's splitting, ordering and bounds."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx
import pytest
from bridge_support import config, event, memory_doc

from bridge.clock import ManualClock
from bridge.config import Badges, ReceiverConfig
from bridge.digest import Digester
from bridge.dispatch import Dispatcher, RetryPolicy, send_with_retries
from bridge.dlq import MemoryDeadLetterQueue
from bridge.errors import ConfigError
from bridge.metrics import BridgeMetrics
from bridge.model import Message, Target
from bridge.render import build_message
from bridge.rules import Router
from bridge.sinks import MemorySink, OpenClawSink, Secret, SendResult
from bridge.sinks.base import parse_retry_after
from bridge.sinks.openclaw import load_token


def message(n: int = 1, **route: Any) -> Message:
    router = Router(config(memory_doc(group_by=["labels.swarm"], **route)))
    dig = Digester()
    for _ in range(n):
        ev = event(swarm="s1", labels={"mentions": "@alice"})
        dig.add(router.deliveries(ev)[0], ev, now=0)
    [flush] = dig.flush_all(now=0)
    return build_message(flush, badges=Badges(), origin="dash-bridge", now=0)


def receiver(**kw: Any) -> ReceiverConfig:
    return ReceiverConfig(name="ops", url="http://gw:1", token_env="T", **kw)


def sink_with(handler: Any, **kw: Any) -> OpenClawSink:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return OpenClawSink(receiver(**kw), Secret("s3cret"), client=client)


async def test_posts_the_message_with_token_idempotency_key_and_trace() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True, "runId": "r1"})

    msg = message(3)
    msg = Message(
        **{
            **{f: getattr(msg, f) for f in msg.__struct_fields__},
            "target": Target(receiver="ops", agent_id="main", session_key="hook:dash:s1", deliver=False),
        }
    )
    sink = sink_with(handler)
    result = await sink.send(msg)
    await sink.close()

    assert result.ok and result.status == 200
    [req] = seen
    assert str(req.url) == "http://gw:1/hooks/agent"
    assert req.headers["authorization"] == "Bearer s3cret"
    assert req.headers["idempotency-key"] == msg.id
    # a digest has many parents: with tracing off there is no context to pass on (the body lists
    # every source's traceparent); tracing of sends: tests/otel/test_bridge_tracing.py
    assert "traceparent" not in req.headers
    body = json.loads(req.content)
    assert body == {
        "message": msg.text,
        "name": "dash-bridge",
        "agentId": "main",
        "sessionKey": "hook:dash:s1",
        "deliver": False,
    }
    assert sink.measure(msg) == len(req.content)


async def test_wake_endpoint_payload() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    msg = message(1)
    msg = Message(
        **{
            **{f: getattr(msg, f) for f in msg.__struct_fields__},
            "target": Target(receiver="ops", endpoint="wake"),
        }
    )
    sink = sink_with(handler)
    await sink.send(msg)
    await sink.close()
    assert str(seen[0].url).endswith("/hooks/wake")
    assert json.loads(seen[0].content) == {"text": msg.text, "mode": "now"}


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (403, False),
        (413, False),
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (501, False),
    ],
)
async def test_answers_are_judged(status: int, retryable: bool) -> None:
    sink = sink_with(lambda r: httpx.Response(status, text="nope", headers={"Retry-After": "7"}))
    result = await sink.send(message())
    await sink.close()
    assert not result.ok and result.status == status and result.retryable is retryable
    assert result.retry_after == 7.0 and result.detail == "nope"


async def test_network_errors_are_retryable_results() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    sink = sink_with(handler)
    result = await sink.send(message())
    await sink.close()
    assert not result.ok and result.retryable and result.status is None


def test_the_token_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T", "very-secret")
    token = load_token(receiver(), "receivers[0]")
    assert token.reveal() == "very-secret"
    assert "very-secret" not in repr(token) + str(token)
    sink = OpenClawSink(receiver(), token)
    assert "very-secret" not in repr(sink) + repr(sink.__dict__)
    monkeypatch.delenv("T")
    with pytest.raises(ConfigError, match=r"receivers\[0\]\.token_env: environment variable T is not set"):
        load_token(receiver(), "receivers[0]")


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3", now=0) == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon", now=0) is None


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(backoff_initial=1.0, backoff_max=8.0, max_retry_after=60.0)
    delays = [policy.delay(n, None, random.Random(1).random) for n in range(1, 7)]
    assert all(
        0.5 * min(8, 2 ** (n - 1)) <= d <= min(8, 2 ** (n - 1))
        for n, d in zip(range(1, 7), delays, strict=True)
    )
    assert policy.delay(1, 30.0, lambda: 0.0) == 30.0
    assert policy.delay(1, 3600.0, lambda: 0.0) == 60.0  # capped


async def test_retries_stop_at_max_attempts() -> None:
    sink = MemorySink("mem")
    sink.fail_next([SendResult(ok=False, status=429, retryable=True, retry_after=2.0)] * 10)
    clock = ManualClock(auto_advance=True)
    attempted = await send_with_retries(sink, message(), RetryPolicy(max_attempts=4), clock)
    assert attempted.reason == "retries_exhausted" and attempted.attempts == 4
    assert all(s >= 2.0 for s in clock.slept)  # never sooner than Retry-After


def dispatcher(sink: MemorySink, **kw: Any) -> tuple[Dispatcher, list[Message], MemoryDeadLetterQueue]:
    settled: list[Message] = []
    dlq = MemoryDeadLetterQueue()

    async def journal(added: Any, removed: Any) -> None:
        return None

    d = Dispatcher(
        {"mem": sink},
        {"mem": ReceiverConfig(name="mem", kind="memory", max_attempts=2)},
        dlq,
        clock=ManualClock(auto_advance=True),
        metrics=BridgeMetrics(),
        on_settled=settled.append,
        journal=journal,
        **kw,
    )
    return d, settled, dlq


async def test_a_413_splits_the_message_and_every_part_settles() -> None:
    sink = MemorySink("mem")
    sink.fail_next([SendResult(ok=False, status=413)])
    d, settled, dlq = dispatcher(sink)
    msg = message(50)
    await d.submit([msg])
    await d.close(grace_s=5)
    assert len(sink.messages) == 2 and not dlq.entries()
    assert [s for m in sink.messages for s in m.sources] == list(msg.sources)
    assert {m.id for m in settled} == {m.id for m in sink.messages}


async def test_messages_of_one_target_are_sent_in_order_and_pending_is_bounded() -> None:
    gate = asyncio.Event()

    class Slow(MemorySink):
        async def send(self, message: Message) -> SendResult:
            await gate.wait()
            return await super().send(message)

    sink = Slow("mem")
    d, settled, _ = dispatcher(sink, max_pending=2)
    msgs = [message(1) for _ in range(3)]
    await d.submit(msgs[:2])
    third = asyncio.create_task(d.submit(msgs[2:]))
    await asyncio.sleep(0.05)
    assert not third.done()  # full: the caller (the source) waits
    gate.set()
    await asyncio.wait_for(third, 5)
    await d.close(grace_s=5)
    assert list(sink.messages) == msgs and settled == msgs
