"""`dash-stream bridge check|run --dry-run|dlq ...` and `serve --bridge` with a bad config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from bridge_support import event, memory_doc, scaled, to_toml
from typer.testing import CliRunner

from bridge.config import Badges, parse_config
from bridge.digest import Digester
from bridge.dlq import DeadLetter, JsonlDeadLetterQueue
from bridge.render import build_message
from bridge.rules import Router
from dash_stream.cli import app

REPO = Path(__file__).resolve().parents[2]
DASH_STREAM = REPO / ".venv" / "bin" / "dash-stream"
runner = CliRunner()


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(to_toml(doc))
    return path


def test_check_prints_the_routing_tree(tmp_path: Path) -> None:
    doc = memory_doc(name="high", where={"priority": {"gte": "high"}}, group_by=["labels.swarm"])
    result = runner.invoke(app, ["bridge", "check", "--config", str(write(tmp_path, doc))])
    assert result.exit_code == 0, result.output
    assert "- high -> mem group_by=['labels.swarm'] wait=30s interval=300s repeat=14400s" in result.output


def test_a_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    doc = memory_doc(group_wait="soon")
    result = runner.invoke(app, ["bridge", "check", "--config", str(write(tmp_path, doc))])
    assert result.exit_code == 2
    assert 'routes[0].group_wait: expected a duration like "2s"' in result.output


def test_dlq_list_show_and_purge(tmp_path: Path) -> None:
    doc = {**memory_doc(group_by=["..."]), "dlq": {"path": str(tmp_path / "dlq.jsonl")}}
    cfg_path = write(tmp_path, doc)
    router = Router(parse_config(doc))
    ev = event(data={"reason": "disk full"})
    [flush] = Digester().add(router.deliveries(ev)[0], ev, now=0)
    msg = build_message(flush, badges=Badges(), origin="dash-bridge", now=0)
    JsonlDeadLetterQueue(tmp_path / "dlq.jsonl").append(
        DeadLetter(
            id=msg.id, receiver="mem", message=msg, reason="http_400", status=400, detail="bad", attempts=1
        )
    )
    listed = runner.invoke(app, ["bridge", "dlq", "list", "--config", str(cfg_path), "--json"])
    assert listed.exit_code == 0
    assert json.loads(listed.output.splitlines()[0])["reason"] == "http_400"
    shown = runner.invoke(app, ["bridge", "dlq", "show", msg.id[:12], "--config", str(cfg_path)])
    assert shown.exit_code == 0 and "disk full" in json.loads(shown.output)["text"]
    purged = runner.invoke(app, ["bridge", "dlq", "purge", "--all", "--yes", "--config", str(cfg_path)])
    assert purged.exit_code == 0 and "purged 1" in purged.output
    assert JsonlDeadLetterQueue(tmp_path / "dlq.jsonl").entries() == []


def test_dry_run_prints_the_requests_without_the_token_and_saves_no_cursor(
    tmp_path: Path, server: Any
) -> None:
    srv = server("--dev")
    doc = {
        "source": {"server": srv.ws_url, "topics": ["swarm.>"], "start": "earliest"},
        "receivers": [
            {"name": "gw", "url": "http://127.0.0.1:9", "token_env": "DRY_TOKEN", "agent_id": "main"}
        ],
        "routes": [{"receiver": "gw", "group_by": ["..."], "session_key": "hook:dash:{labels.swarm}"}],
        "state": {"path": str(tmp_path / "state.json")},
    }
    httpx.post(
        f"{srv.base_url}/v1/events",
        json={
            "topic": "swarm.s7.agent.a1",
            "type": "agent.failed",
            "priority": "critical",
            "labels": {"swarm": "s7"},
        },
        trust_env=False,
    )
    env = {**os.environ, "DRY_TOKEN": "super-secret-token"}
    proc = subprocess.Popen(
        [str(DASH_STREAM), "bridge", "run", "--dry-run", "--config", str(write(tmp_path, doc))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the first request is printed
        printed = json.loads(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=scaled(20))
    assert printed["url"] == "http://127.0.0.1:9/hooks/agent"
    assert printed["body"]["sessionKey"] == "hook:dash:s7" and "[CRITICAL]" in printed["body"]["message"]
    assert printed["headers"]["Authorization"] == "Bearer ***"
    assert "super-secret-token" not in line + err
    assert proc.returncode == 0, err
    assert not (tmp_path / "state.json").exists()


def test_serve_refuses_a_bad_bridge_config_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, memory_doc(receiver="nobody"))
    started = time.monotonic()
    result = subprocess.run(
        [str(DASH_STREAM), "serve", "--dev", "--port", "0", "--bridge", str(path)],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "routes[0].receiver: no receiver named 'nobody'" in result.stderr
    assert time.monotonic() - started < scaled(20)
