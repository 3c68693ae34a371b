"""`dash-stream swarm status|list` and `dash-stream events` against a real server."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import scaled
from servers import ServerFactory, ServerProcess
from typer.testing import CliRunner

from dash_stream.cli import app
from dash_stream.server.auth import mint_token

SECRET = "cli-swarm-tests-secret-0123456789abcdef"
runner = CliRunner()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def publish(srv: ServerProcess, events: list[dict[str, Any]], token: str | None = None) -> list[str]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(trust_env=False, timeout=scaled(30)) as client:
        resp = client.post(f"{srv.base_url}/v1/events", json={"events": events}, headers=headers)
    assert resp.status_code == 202, resp.text
    offsets: list[str] = resp.json()["offsets"]
    return offsets


def run(srv: ServerProcess, *args: str, token: str | None = None) -> tuple[int, str, str]:
    env = {"DASH_URL": srv.base_url, "DASH_TOKEN": token or "", "NO_COLOR": "1", "COLUMNS": "160"}
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def run_json(srv: ServerProcess, *args: str, token: str | None = None) -> Any:
    code, out, err = run(srv, *args, "--json", token=token)
    assert code == 0, (code, out, err)
    return json.loads(out)


def wait_for_state(srv: ServerProcess, swarm: str, events: int) -> dict[str, Any]:
    deadline = time.monotonic() + scaled(10)
    with httpx.Client(trust_env=False) as client:
        while True:
            resp = client.get(f"{srv.base_url}/v1/swarms/{swarm}")
            if resp.status_code == 200 and resp.json()["events"] == events:
                doc: dict[str, Any] = resp.json()
                return doc
            assert time.monotonic() < deadline, resp.text
            time.sleep(0.02)


def lifecycle(swarm: str, agent: str, type_: str, **data: Any) -> dict[str, Any]:
    return {"topic": f"swarm.{swarm}.agent.{agent}", "type": type_, "data": {"agent_id": agent, **data}}


@pytest.fixture(scope="module")
def srv(shared_dev_server: ServerProcess) -> ServerProcess:
    return shared_dev_server


def test_swarm_status_json_is_the_server_state_and_the_table_shows_it(srv: ServerProcess) -> None:
    s = unique("s")
    publish(
        srv,
        [
            lifecycle(s, "a1", "agent.started"),
            lifecycle(s, "a2", "agent.failed", error="disk full"),
            {
                "topic": f"swarm.{s}.task.t9",
                "type": "task.started",
                "data": {"task_id": "t9", "agent_id": "a1"},
            },
            {
                "topic": f"swarm.{s}.status",
                "type": "swarm.status",
                "data": {"swarm_id": s, "status": "degraded"},
            },
        ],
    )
    served = wait_for_state(srv, s, 4)
    doc = run_json(srv, "swarm", "status", s)
    assert doc["swarm_id"] == s and doc["agent_counts"] == served["agent_counts"]
    assert doc["status"] == "degraded" and doc["last_error"]["message"] == "disk full"
    assert "cursor" in doc
    code, out, _ = run(srv, "swarm", "status", s)
    assert code == 0
    for text in (f"swarm {s}", "degraded", "running 1", "failed 1", "a2", "disk full", "t9 (a1)"):
        assert text in out, (text, out)
    slim = run_json(srv, "swarm", "status", s, "--no-agents")
    assert slim["agents"] == [] and slim["agent_counts"]["failed"] == 1
    listing = run_json(srv, "swarm", "list")
    assert s in [v["swarm_id"] for v in listing["swarms"]]
    code, out, _ = run(srv, "swarm", "list")
    assert code == 0 and s in out and "[agent.failed] disk full" in out


def test_an_unknown_swarm_exits_1_with_the_error_as_json(srv: ServerProcess) -> None:
    code, out, err = run(srv, "swarm", "status", unique("nope"), "--json")
    assert code == 1
    assert json.loads(out)["error"]["code"] == "not_found"
    assert "not_found" in err


def test_events_of_an_agent_are_the_most_recent_oldest_first(srv: ServerProcess) -> None:
    s = unique("s")
    publish(srv, [lifecycle(s, "a7", "agent.heartbeat", seq=i) for i in range(30)])
    publish(
        srv,
        [
            lifecycle(s, "a8", "agent.started", seq=100),
            {"topic": f"swarm.{s}.misc", "type": "note", "labels": {"agent": "a7"}, "data": {"seq": 30}},
            {"topic": f"swarm.{s}.agent.a7.log", "type": "log", "data": {"seq": 31}},
        ],
    )
    doc = run_json(srv, "events", "--agent", "a7", "--swarm", s, "--limit", "5")
    assert [e["data"]["seq"] for e in doc["events"]] == [27, 28, 29, 30, 31]
    assert doc["count"] == 5 and doc["agent_id"] == "a7" and doc["topics"] == [f"swarm.{s}.>"]
    code, out, _ = run(srv, "events", "--agent", "a8", "--swarm", s)
    assert code == 0 and "agent.started" in out and f"swarm.{s}.agent.a8" in out
    failures = run_json(srv, "events", "--swarm", s, "--type", "agent.started", "--limit", "50")
    assert [e["data"]["seq"] for e in failures["events"]] == [100]


def test_notifications_with_a_cursor_file_read_on_without_gap_or_repeat(
    srv: ServerProcess, tmp_path: Path
) -> None:
    s = unique("s")
    inbox = tmp_path / "inbox.cursor"

    def note(seq: int, mentions: str) -> dict[str, Any]:
        return {
            "topic": f"swarm.{s}.chat",
            "type": "note",
            "labels": {"mentions": mentions},
            "data": {"seq": seq},
        }

    publish(srv, [note(0, "@a7"), note(1, "@bob"), note(2, "a9,@a7"), note(3, "@a77")])
    first = run_json(
        srv, "events", "--mention", "a7", "--swarm", s, "--cursor-file", str(inbox), "--limit", "1"
    )
    assert [e["data"]["seq"] for e in first["events"]] == [0] and first["more"] is True
    second = run_json(srv, "events", "--mention", "@a7", "--swarm", s, "--cursor-file", str(inbox))
    assert [e["data"]["seq"] for e in second["events"]] == [2]
    assert inbox.read_text().strip() == second["cursor"]
    assert run_json(srv, "events", "--mention", "a7", "--swarm", s, "--cursor-file", str(inbox))["count"] == 0
    publish(srv, [note(4, "@a7")])
    later = run_json(srv, "events", "--mention", "a7", "--swarm", s, "--cursor-file", str(inbox))
    assert [e["data"]["seq"] for e in later["events"]] == [4] and later["recovered"] is True


def test_auth_errors_exit_2_and_a_token_reads_its_swarms(server: ServerFactory) -> None:
    srv = server("--jwt-secret", SECRET)
    admin = mint_token(SECRET, sub="admin", subscribe=[">"], publish=[">"])
    reader = mint_token(SECRET, sub="r", subscribe=["swarm.s1.>"], publish=[])
    publish(srv, [lifecycle("s1", "a1", "agent.started"), lifecycle("s2", "b1", "agent.started")], admin)
    code, out, err = run(srv, "swarm", "status", "s1", "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "unauthorized" and "DASH_TOKEN" in err
    assert run_json(srv, "swarm", "status", "s1", token=reader)["agent_counts"]["running"] == 1
    code, out, _ = run(srv, "swarm", "status", "s2", "--json", token=reader)
    assert code == 2 and json.loads(out)["error"]["code"] == "forbidden"
    doc = run_json(srv, "events", "--agent", "a1", "--swarm", "s1", token=reader)
    assert doc["count"] == 1
    code, out, _ = run(srv, "events", "--agent", "b1", "--json", token=reader)
    assert code == 2 and json.loads(out)["error"]["code"] == "forbidden", "swarm.> is outside the token"


def test_an_unreachable_server_is_one_clear_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["swarm", "status", "s1", "--url", "http://127.0.0.1:9"], env={"NO_COLOR": "1"}
    )
    assert result.exit_code == 2
    assert "cannot connect" in result.stderr and "Traceback" not in result.output
