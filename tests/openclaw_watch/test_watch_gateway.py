"""`dash-stream openclaw watch` against a REAL OpenClaw gateway and a real `dash-stream serve`.

Each test triggers hook runs on the session gateway (tests/integration fixtures) and watches what a
dashboard subscribed to the server receives. Runs are told apart by a unique marker: the mock LLM
answers the marked prompt with a reply that carries the marker, so the `agent.message` names the run.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import scaled
from integration.mock_llm import MockLLM
from integration.openclaw import Gateway
from otel.otlp_receiver import OtlpReceiver
from servers import DASH_STREAM, ServerProcess, free_port, server_env

from .watch_support import Dashboard, WatcherProcess, otel_env, spans_named, watchers

pytestmark = pytest.mark.integration


def marker(label: str) -> str:
    return f"{label}-{secrets.token_hex(5)}"


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[Any]:
    with watchers(tmp_path) as start:
        yield start


def start_watcher(
    watcher: Any, gateway: Gateway, server: ServerProcess, name: str, **kw: Any
) -> WatcherProcess:
    return watcher(gateway.ws_url, server.base_url, gateway.gateway_token, "--name", name, **kw)


async def run_with_reply(gateway: Gateway, mock_llm: MockLLM, dash: Dashboard, label: str) -> str:
    """Post a hook whose reply names it; the run id (from its `agent.message`)."""
    m = marker(label)
    mock_llm.text_next(f"reply {m}", match=m)
    response = await gateway.post_agent_async(m, waitForCompletion=True, timeout=90)
    assert response.status_code == 200, response.text
    message = await dash.wait_for(
        lambda e: e["type"] == "agent.message" and m in e["data"].get("text", ""), what=f"the reply of {m}"
    )
    return str(message["data"]["run_id"])


def ids_are_unique(events: list[dict[str, Any]]) -> None:
    counts = Counter(e["id"] for e in events)
    assert not [i for i, n in counts.items() if n > 1], [(e["type"], e["id"]) for e in events]


async def test_a_hook_run_reaches_a_dashboard_as_started_then_completed(
    openclaw_gateway: Gateway, mock_llm: MockLLM, shared_dev_server: ServerProcess, watcher: Any
) -> None:
    name = marker("gw")
    with OtlpReceiver() as otlp:
        async with Dashboard(shared_dev_server.ws_url, ["openclaw.>"]) as dash:
            w = start_watcher(watcher, openclaw_gateway, shared_dev_server, name, env=otel_env(otlp.endpoint))
            up = await dash.wait_for(
                lambda e: e["source"] == f"openclaw/{name}" and e["data"].get("status") == "up",
                what="the gateway status",
            )
            run = await run_with_reply(openclaw_gateway, mock_llm, dash, "hook")
            await dash.wait_for(lambda e: e["type"] == "agent.completed" and e["data"]["run_id"] == run)

            events = dash.run_events(run)
            assert [e["type"] for e in events] == ["agent.started", "agent.completed", "agent.message"]
            session = events[0]["data"]["session_key"]
            for e in events:
                assert e["topic"] == "openclaw.main.cron"
                assert e["source"] == f"openclaw/{name}"
                assert e["labels"] == {"gateway": name, "swarm": name, "agent": "main", "session": session}
            assert up["topic"] == f"openclaw.gateway.{name}" and up["data"]["status"] == "up"
            assert "main" in up["data"]["agents"]
            latency = [t - parse(e["time"]) for t, e in dash.received if e in events]
            print(f"\ngateway event time -> dashboard: {summary(latency)} over {len(latency)} events")

            # one PRODUCER span per ingested event, with the gateway, run and session
            spans = otlp.wait_for(
                lambda s: spans_named(s, "send openclaw.main.cron", **{"openclaw.run.id": run}),
                what="send spans",
            )
            assert {s.kind for s in spans} == {"PRODUCER"}
            assert spans[0].attributes["openclaw.gateway"] == name
            assert spans[0].attributes["openclaw.session.key"] == session
            assert spans[0].resource["service.name"] == "dash-openclaw-watch"
            sent = {tuple(e["traceparent"].split("-")[1:3]) for e in events}
            assert {(s.trace_id, s.span_id) for s in spans} & {t for t in sent}  # the event continues it
            assert await asyncio.to_thread(w.metric, "dash_openclaw_runs_seen_total") >= 1


async def test_a_tool_calling_run_publishes_its_tool_steps(
    openclaw_gateway: Gateway, mock_llm: MockLLM, shared_dev_server: ServerProcess, watcher: Any
) -> None:
    async with Dashboard(shared_dev_server.ws_url, ["openclaw.main.cron"]) as dash:
        w = start_watcher(watcher, openclaw_gateway, shared_dev_server, marker("gw"))
        await asyncio.to_thread(w.wait_connected)
        m = marker("tool")
        mock_llm.tool_call_next("ls", {"path": "."}, match=m)
        mock_llm.text_next(f"listed {m}", match=m)
        response = await openclaw_gateway.post_agent_async(m, waitForCompletion=True, timeout=90)
        assert response.status_code == 200, response.text
        message = await dash.wait_for(lambda e: e["type"] == "agent.message" and m in e["data"]["text"])

        events = dash.run_events(message["data"]["run_id"])
        tools = [e for e in events if e["type"] == "agent.tool"]
        assert [(t["data"]["tool"], t["data"]["phase"], t["priority"]) for t in tools] == [
            ("ls", "start", "low"),
            ("ls", "end", "low"),
        ]
        ids_are_unique(events)


async def test_a_provider_error_publishes_one_failure(
    openclaw_gateway: Gateway, mock_llm: MockLLM, shared_dev_server: ServerProcess, watcher: Any
) -> None:
    async with Dashboard(shared_dev_server.ws_url, ["openclaw.main.cron"]) as dash:
        w = start_watcher(watcher, openclaw_gateway, shared_dev_server, marker("gw"))
        await asyncio.to_thread(w.wait_connected)
        m = marker("fail")
        mock_llm.fail_next(400, match=m)
        response = await openclaw_gateway.post_agent_async(m, waitForCompletion=True, timeout=90)
        assert response.json()["completion"]["status"] == "error"
        failed = await dash.wait_for(lambda e: e["type"] == "agent.failed")
        await asyncio.sleep(1.0)  # anything a retry would add has had time to arrive

        events = dash.run_events(failed["data"]["run_id"])
        assert [e["type"] for e in events] == ["agent.started", "agent.failed"]
        assert failed["priority"] == "high"
        assert failed["data"]["error"].startswith("LLM request failed")


async def test_a_run_retried_after_server_errors_starts_once(
    openclaw_gateway: Gateway, mock_llm: MockLLM, shared_dev_server: ServerProcess, watcher: Any
) -> None:
    async with Dashboard(shared_dev_server.ws_url, ["openclaw.main.cron"]) as dash:
        w = start_watcher(watcher, openclaw_gateway, shared_dev_server, marker("gw"))
        await asyncio.to_thread(w.wait_connected)
        m = marker("retry")
        mock_llm.fail_next(500, match=m)
        mock_llm.text_next(f"recovered {m}", match=m)
        response = await openclaw_gateway.post_agent_async(m, waitForCompletion=True, timeout=90)
        assert response.status_code == 200, response.text
        message = await dash.wait_for(lambda e: e["type"] == "agent.message" and m in e["data"]["text"])

        events = dash.run_events(message["data"]["run_id"])
        assert [e["type"] for e in events] == [
            "agent.started",
            "agent.retrying",
            "agent.completed",
            "agent.message",
        ]


async def test_a_restarted_watcher_and_a_second_watcher_publish_no_duplicates(
    openclaw_gateway: Gateway, mock_llm: MockLLM, shared_dev_server: ServerProcess, watcher: Any
) -> None:
    name = marker("gw")
    async with Dashboard(shared_dev_server.ws_url, ["openclaw.main.cron"]) as dash:
        first = start_watcher(watcher, openclaw_gateway, shared_dev_server, name)
        await asyncio.to_thread(first.wait_connected)

        # a run long enough to kill the watcher in the middle: two provider errors, two retries
        m = marker("slow")
        mock_llm.fail_next(500, count=2, match=m)
        mock_llm.text_next(f"finally {m}", match=m)
        posted = asyncio.create_task(openclaw_gateway.post_agent_async(m, waitForCompletion=True, timeout=90))
        started = await dash.wait_for(lambda e: e["type"] == "agent.started")
        run = started["data"]["run_id"]
        await asyncio.to_thread(first.kill)
        killed = len(dash.received)
        assert not [e for e in dash.events if e["type"] == "agent.completed" and e["data"]["run_id"] == run]
        second = start_watcher(watcher, openclaw_gateway, shared_dev_server, name)
        assert (await posted).status_code == 200
        await dash.wait_for(lambda e: e["type"] == "agent.message" and e["data"]["run_id"] == run)
        await dash.wait_for(lambda e: e["type"] == "agent.completed" and e["data"]["run_id"] == run)

        events = dash.run_events(run)
        ids_are_unique(events)
        kinds = Counter(e["type"] for e in events)
        assert kinds["agent.started"] == 1 and kinds["agent.completed"] == 1 and kinds["agent.message"] == 1
        assert kinds["agent.retrying"] <= 2  # one reported while no watcher ran (it starts in ~1-3 s) is lost
        after_kill = [e["type"] for e in dash.events[killed:] if e["data"].get("run_id") == run]
        assert "agent.completed" in after_kill  # the restarted watcher took over the run it saw mid-way

        # two watchers of one gateway at once: every event arrives once
        third = start_watcher(watcher, openclaw_gateway, shared_dev_server, name)
        await asyncio.to_thread(third.wait_connected)
        await asyncio.to_thread(second.wait_connected)
        again = await run_with_reply(openclaw_gateway, mock_llm, dash, "twice")
        await dash.wait_for(lambda e: e["type"] == "agent.completed" and e["data"]["run_id"] == again)
        await asyncio.sleep(1.0)
        both = dash.run_events(again)
        ids_are_unique(both)
        assert [e["type"] for e in both] == ["agent.started", "agent.completed", "agent.message"]
        skipped = [
            await asyncio.to_thread(w.metric, "dash_openclaw_events_published_total") for w in (second, third)
        ]
        assert all(n > 0 for n in skipped)  # both really published (the server kept one of each)


async def test_the_watcher_reconnects_by_itself_after_a_gateway_restart(
    openclaw_gateway: Gateway, mock_llm: MockLLM, shared_dev_server: ServerProcess, watcher: Any
) -> None:
    name = marker("gw")
    async with Dashboard(shared_dev_server.ws_url, ["openclaw.>"]) as dash:
        w = start_watcher(watcher, openclaw_gateway, shared_dev_server, name)
        await asyncio.to_thread(w.wait_connected)

        def status(value: str) -> Any:
            return lambda e: e["type"] == "openclaw.gateway.status" and e["data"]["status"] == value

        first_up = await dash.wait_for(status("up"))
        await asyncio.to_thread(openclaw_gateway.restart)
        stopping = await dash.wait_for(status("stopping"))
        second_up = await dash.wait_for(
            lambda e: status("up")(e) and e["data"]["boot_id"] != first_up["data"]["boot_id"], within=90
        )
        assert stopping["data"]["boot_id"] == first_up["data"]["boot_id"]
        run = await run_with_reply(openclaw_gateway, mock_llm, dash, "after-restart")
        await dash.wait_for(lambda e: e["type"] == "agent.completed" and e["data"]["run_id"] == run)
        assert await asyncio.to_thread(w.metric, "dash_openclaw_reconnects_total") >= 1
        assert second_up["source"] == f"openclaw/{name}"


def parse(time_text: str) -> float:
    return datetime.fromisoformat(time_text.replace("Z", "+00:00")).timestamp()


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"


def test_a_refused_token_or_an_unreachable_server_exits_2_with_a_clear_message(
    openclaw_gateway: Gateway, shared_dev_server: ServerProcess
) -> None:
    def run(token: str, server: str) -> subprocess.CompletedProcess[str]:
        env = server_env({"WATCH_TEST_TOKEN": token})
        args = ["--gateway", openclaw_gateway.ws_url, "--token-env", "WATCH_TEST_TOKEN", "--server", server]
        return subprocess.run(
            [str(DASH_STREAM), "openclaw", "watch", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=scaled(60),
            check=False,
        )

    refused = run("not-the-gateway-token", shared_dev_server.base_url)
    assert refused.returncode == 2, refused.stderr
    assert "gateway token mismatch" in refused.stderr
    assert "not-the-gateway-token" not in refused.stderr + refused.stdout

    unreachable = run(openclaw_gateway.gateway_token, f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 2, unreachable.stderr
    assert "is `dash-stream serve` running?" in unreachable.stderr
