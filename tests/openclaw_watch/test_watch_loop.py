"""Loop safety with everything real: `serve --bridge F --openclaw-watch F` (one TOML file holding the
bridge's config and the watcher's `[openclaw]` table), a REAL OpenClaw gateway and its mock LLM.

The bridge forwards every high or critical event to the gateway; the watcher publishes the runs
that causes. Without loop safety the run a forwarded message starts (here: it fails, so it is
`agent.failed`, high) would be forwarded again, and so on. Proven by counting the bridge's
messages that reach the mock LLM.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from helpers import scaled
from integration.mock_llm import MockLLM
from integration.openclaw import Gateway
from servers import ServerFactory

from .watch_support import Dashboard

pytestmark = pytest.mark.integration

FOOTER = "origin: dash-bridge | route urgent"  # the last line of every message the bridge sends
QUIET_S = 30.0


def bridge_and_watch_config(tmp_path: Path, gateway: Gateway) -> Path:
    path = tmp_path / "dash.toml"
    path.write_text(
        f"""
[source]
topics = [">"]

[[receivers]]
name = "gw"
kind = "openclaw"
url = "{gateway.url}"
token_env = "LOOP_TEST_HOOKS_TOKEN"
agent_id = "main"
deliver = false
backoff_initial = "200ms"
max_attempts = 3

[[routes]]
name = "urgent"
receiver = "gw"
where = {{ priority = {{ gte = "high" }} }}
group_by = ["..."]

[state]
path = "{tmp_path / "bridge-state.json"}"
checkpoint_interval = "200ms"

[dlq]
path = "{tmp_path / "bridge-dlq.jsonl"}"

[openclaw]
gateway = "{gateway.ws_url}"
token_env = "LOOP_TEST_GATEWAY_TOKEN"
name = "loop-gw"
"""
    )
    return path


def forwarded(mock_llm: MockLLM) -> int:
    """Hook runs the bridge started: LLM requests whose prompt ends with the bridge's footer."""
    return sum(FOOTER in line for line in mock_llm.logged_bodies())


async def test_a_forwarded_event_starts_one_run_and_no_feedback_loop(
    tmp_path: Path, openclaw_gateway: Gateway, mock_llm: MockLLM, server: ServerFactory
) -> None:
    env = {
        "LOOP_TEST_HOOKS_TOKEN": openclaw_gateway.hooks_token,
        "LOOP_TEST_GATEWAY_TOKEN": openclaw_gateway.gateway_token,
    }
    config = bridge_and_watch_config(tmp_path, openclaw_gateway)
    srv = server("--dev", "--bridge", str(config), "--openclaw-watch", str(config), env=env)
    before = forwarded(mock_llm)

    async with Dashboard(srv.ws_url, ["openclaw.>"], from_="earliest") as dash:
        await dash.wait_for(lambda e: e["data"].get("status") == "up", what="the watcher's connection")
        # control: a failing run nobody forwarded IS forwarded (so the route would catch a loop)
        control = f"control-{secrets.token_hex(5)}"
        mock_llm.fail_next(400, match=control)
        response = await openclaw_gateway.post_agent_async(control, waitForCompletion=True, timeout=90)
        assert response.json()["completion"]["status"] == "error"
        await dash.wait_for(lambda e: e["type"] == "agent.failed" and "origin" not in e["labels"])
        await wait_until(lambda: forwarded(mock_llm) == before + 1, "the control failure to be forwarded")

        # one critical event: one bridge message, one run; that run fails, and is not forwarded
        m = f"loop-{secrets.token_hex(5)}"
        mock_llm.fail_next(400, match=m)
        critical = {
            "topic": "swarm.loop.agent.a1",
            "type": "agent.failed",
            "priority": "critical",
            "labels": {"swarm": "loop"},
            "data": {"agent_id": "a1", "reason": m},
        }
        async with httpx.AsyncClient(trust_env=False, timeout=scaled(10)) as http:
            assert (await http.post(f"{srv.base_url}/v1/events", json=critical)).status_code == 202
            metrics_url = f"{srv.base_url}/metrics"
        own = await dash.wait_for(
            lambda e: e["type"] == "agent.failed" and e["labels"].get("origin") == "dash-bridge",
            what="the bridge run's failure",
        )
        assert mock_llm.count_marker(m) == 1

        await asyncio.sleep(scaled(QUIET_S))  # a loop would forward `own` within milliseconds
        assert mock_llm.count_marker(m) == 1
        assert forwarded(mock_llm) == before + 2  # the control's and the critical event's, nothing else
        run = dash.run_events(own["data"]["run_id"])
        assert {e["labels"].get("origin") for e in run} == {"dash-bridge"}
        assert [e["type"] for e in run] == ["agent.started", "agent.failed"]

    async with httpx.AsyncClient(trust_env=False, timeout=scaled(10)) as http:
        metrics = (await http.get(metrics_url)).text
    assert sample(metrics, "dash_bridge_messages_total") == 2
    assert sample(metrics, "dash_openclaw_runs_origin_total", 'outcome="bridge"') >= 2


async def wait_until(check: Callable[[], bool], what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + scaled(within)
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def sample(metrics: str, name: str, label: str = "") -> float:
    """The sum of the samples of `name` (whose labels contain `label`) in Prometheus text."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name) and label in line and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total
