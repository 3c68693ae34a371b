"""The bridge against a REAL OpenClaw gateway (tests/integration fixtures): delivery is proven by
a unique marker reaching the mock LLM the gateway calls. The bridge runs in-process on a
MemoryBus with the real OpenClaw sink, real state file and real DLQ file."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from bridge_support import config, publish, to_toml, until
from integration import scaled
from integration.fault_proxy import FaultProxyFactory
from integration.mock_llm import MockLLM
from integration.openclaw import Gateway

from bridge.dlq import JsonlDeadLetterQueue
from bridge.runner import Bridge
from dash_stream.bus.memory import MemoryBus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(scaled(300))]

REPO = Path(__file__).resolve().parents[2]
DASH_STREAM = REPO / ".venv" / "bin" / "dash-stream"
TOKEN_ENV = "DASH_BRIDGE_TEST_HOOKS_TOKEN"


def marker(label: str) -> str:
    return f"{label}-{secrets.token_hex(6)}"


def bridge_doc(
    tmp_path: Path, url: str, *, route: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "name": "swarm-high",
        "receiver": "gw",
        "where": {"priority": {"gte": "high"}},
        "session_key": "hook:dash:{labels.swarm}",
        "group_by": ["labels.swarm", "type"],
        "group_wait": "1s",
        "group_interval": "10s",
        "repeat_interval": "1h",
    }
    r.update(route or {})
    doc: dict[str, Any] = {
        "source": {"topics": ["swarm.>"], "start": "earliest"},
        "receivers": [
            {
                "name": "gw",
                "kind": "openclaw",
                "url": url,
                "token_env": TOKEN_ENV,
                "agent_id": "main",
                "deliver": False,
                "backoff_initial": "200ms",
                "backoff_max": "1s",
                "max_attempts": 4,
            }
        ],
        "routes": [r],
        "state": {"path": str(tmp_path / "state.json"), "checkpoint_interval": "200ms"},
        "dlq": {"path": str(tmp_path / "dlq.jsonl")},
    }
    doc.update(extra)
    return doc


@pytest.fixture
def hooks_token(openclaw_gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(TOKEN_ENV, openclaw_gateway.hooks_token)
    return openclaw_gateway.hooks_token


@pytest.fixture
async def running() -> AsyncIterator[Callable[[dict[str, Any]], Any]]:
    """Start bridges on fresh MemoryBuses; every one is stopped at teardown."""
    started: list[Bridge] = []

    async def start(doc: dict[str, Any]) -> tuple[Bridge, MemoryBus]:
        bus = MemoryBus()
        bridge = Bridge(config(doc), bus=bus)
        await bridge.start()
        started.append(bridge)
        return bridge, bus

    yield start
    for bridge in started:
        await bridge.stop()


async def llm_marker(
    mock_llm: MockLLM, text: str, count: int = 1, within_s: float = 60
) -> list[dict[str, Any]]:
    return await asyncio.to_thread(mock_llm.wait_for_marker, text, within_s, count=count)


def user_message(request: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content")) for m in request["messages"] if m.get("role") == "user")


async def test_a_burst_becomes_one_digest_and_low_priority_is_not_forwarded(
    tmp_path: Path, openclaw_gateway: Gateway, mock_llm: MockLLM, hooks_token: str, running: Any
) -> None:
    m, low = marker("burst"), marker("low")
    bridge, bus = await running(bridge_doc(tmp_path, openclaw_gateway.url))
    await publish(bus, 3, priority="low", labels={"swarm": m}, data={"reason": low})
    for i in range(8):
        await publish(
            bus, 1, topic=f"swarm.{m}.agent.a{i}", labels={"swarm": m}, data={"reason": f"{m}-oom-{i}"}
        )

    [request] = await llm_marker(mock_llm, m)
    await until(lambda: bridge.idle, 30)
    text = user_message(request)
    assert f"8 events in swarm={m} type=agent.failed" in text
    assert all(f"{m}-oom-{i}" in text for i in range(8))
    assert text.count("traceparent 00-") == 8  # every source event's trace is listed
    assert "origin: dash-bridge" in text
    assert bridge.metrics.forwarded.labels("gw")._value.get() == 1
    assert bridge.metrics.dropped.labels("unrouted")._value.get() == 3
    await asyncio.sleep(scaled(1))
    assert mock_llm.count_marker(m) == 1 and mock_llm.count_marker(low) == 0


async def test_a_critical_event_bypasses_the_digest_wait(
    tmp_path: Path, openclaw_gateway: Gateway, mock_llm: MockLLM, hooks_token: str, running: Any
) -> None:
    m = marker("crit")
    _, bus = await running(bridge_doc(tmp_path, openclaw_gateway.url, route={"group_wait": "10m"}))
    await publish(bus, 1, labels={"swarm": m}, data={"reason": f"{m}-first"})
    started = time.time()
    await publish(bus, 1, priority="critical", labels={"swarm": m}, data={"reason": f"{m}-critical"})

    [request] = await llm_marker(mock_llm, f"{m}-critical")
    received = max(r.received_at for r in mock_llm.requests if f"{m}-critical" in r.raw)
    assert received - started < 60  # not 10 minutes: the wait was bypassed
    assert f"{m}-first" in user_message(request)  # the pending event of the group went along
    assert "[CRITICAL]" in user_message(request)


async def test_mentions_are_rendered_and_routed_to_their_targets(
    tmp_path: Path, openclaw_gateway: Gateway, mock_llm: MockLLM, hooks_token: str, running: Any
) -> None:
    m = marker("mention")
    doc = bridge_doc(
        tmp_path,
        openclaw_gateway.url,
        route={"group_by": ["..."]},
        mentions=[{"name": "@alice", "session_key": "hook:dash:alice"}],
    )
    bridge, bus = await running(doc)
    await publish(bus, 1, labels={"swarm": m, "mentions": "@alice,@bob"}, data={"reason": m})

    requests = await llm_marker(mock_llm, m, count=2)
    assert all("mentions: @alice @bob" in user_message(r) for r in requests)
    assert {r for r in ("route swarm-high |",) if all(r in user_message(x) for x in requests)}
    await until(lambda: bridge.idle, 30)
    assert bridge.metrics.forwarded.labels("gw")._value.get() == 2


async def test_a_bad_token_is_401_not_retried_dead_lettered_and_replay_delivers(
    tmp_path: Path,
    openclaw_gateway: Gateway,
    mock_llm: MockLLM,
    monkeypatch: pytest.MonkeyPatch,
    running: Any,
) -> None:
    m = marker("badtoken")
    monkeypatch.setenv(TOKEN_ENV, "not-the-hooks-token")
    doc = bridge_doc(tmp_path, openclaw_gateway.url, route={"group_by": ["..."]})
    bridge, bus = await running(doc)
    try:
        await publish(bus, 1, labels={"swarm": m}, data={"reason": m})
        await until(
            lambda: bridge.idle and bridge.metrics.dead_lettered.labels("gw", "http_401")._value.get() == 1,
            30,
            "a 401 in the DLQ",
        )
    finally:
        openclaw_gateway.reset_hook_auth_throttle()
    assert bridge.metrics.retried.labels("gw")._value.get() == 0
    assert bridge.metrics.sink_requests.labels("gw", "4xx")._value.get() == 1
    [entry] = JsonlDeadLetterQueue(tmp_path / "dlq.jsonl").entries()
    assert entry.status == 401 and entry.attempts == 1

    cfg_path = tmp_path / "bridge.toml"
    cfg_path.write_text(to_toml(doc))
    env = {**os.environ, TOKEN_ENV: openclaw_gateway.hooks_token}
    listed = run_cli(["bridge", "dlq", "list", "--config", str(cfg_path)], env)
    assert entry.id in listed.stdout and "http_401" in listed.stdout
    replay = run_cli(["bridge", "dlq", "replay", entry.id[:12], "--config", str(cfg_path)], env)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    [request] = await llm_marker(mock_llm, m)
    assert entry.id in user_message(request)  # the same message: its id is in the footer
    assert JsonlDeadLetterQueue(tmp_path / "dlq.jsonl").entries() == []


async def test_429_and_503_are_retried_until_success_with_one_idempotency_key(
    tmp_path: Path,
    openclaw_gateway: Gateway,
    mock_llm: MockLLM,
    hooks_token: str,
    fault_proxy: FaultProxyFactory,
    running: Any,
) -> None:
    m = marker("retry")
    proxy = fault_proxy()
    proxy.fail_next(429, retry_after=1, match="/hooks/")
    proxy.fail_next(503, match="/hooks/")
    bridge, bus = await running(bridge_doc(tmp_path, proxy.url, route={"group_by": ["..."]}))
    await publish(bus, 1, labels={"swarm": m}, data={"reason": m})

    await llm_marker(mock_llm, m)
    await until(lambda: bridge.idle, 30)
    hooks = [r for r in proxy.requests if r.path.startswith("/hooks/")]
    assert [r.outcome.split(":")[0] for r in hooks] == ["fault", "fault", "forwarded"]
    assert len({r.header("Idempotency-Key") for r in hooks}) == 1
    assert bridge.metrics.retried.labels("gw")._value.get() == 2
    assert not JsonlDeadLetterQueue(tmp_path / "dlq.jsonl").entries()
    assert mock_llm.count_marker(m) == 1


async def test_retries_exhausted_go_to_the_dlq_and_replay_delivers(
    tmp_path: Path,
    openclaw_gateway: Gateway,
    mock_llm: MockLLM,
    hooks_token: str,
    fault_proxy: FaultProxyFactory,
    running: Any,
) -> None:
    m = marker("exhaust")
    proxy = fault_proxy()
    proxy.fail_next(503, count=4, match="/hooks/")
    doc = bridge_doc(tmp_path, proxy.url, route={"group_by": ["..."]})
    bridge, bus = await running(doc)
    await publish(bus, 1, labels={"swarm": m}, data={"reason": m})
    await until(lambda: bridge.idle and bool(JsonlDeadLetterQueue(tmp_path / "dlq.jsonl").entries()), 30)
    [entry] = JsonlDeadLetterQueue(tmp_path / "dlq.jsonl").entries()
    assert entry.reason == "retries_exhausted" and entry.status == 503 and entry.attempts == 4
    assert mock_llm.count_marker(m) == 0

    cfg_path = tmp_path / "bridge.toml"
    cfg_path.write_text(to_toml(doc))
    replay = run_cli(["bridge", "dlq", "replay", "--all", "--config", str(cfg_path)], dict(os.environ))
    assert replay.returncode == 0, replay.stdout + replay.stderr
    await llm_marker(mock_llm, m)
    keys = {r.header("Idempotency-Key") for r in proxy.requests if r.path.startswith("/hooks/")}
    assert keys == {entry.id}  # the replay used the same idempotency key


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DASH_STREAM), *args], capture_output=True, text=True, env=env, timeout=scaled(120), check=False
    )
