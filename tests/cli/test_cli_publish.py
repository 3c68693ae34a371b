"""`dash-stream publish` as a subprocess against a real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from client.dash_server import DashServer, free_port

from cli.conftest import JWT_SECRET, RunCli
from dash_stream.server.auth import mint_token


def history(server: DashServer, topic: str) -> list[dict[str, Any]]:
    """Every retained event of `topic`, oldest first."""
    response = httpx.get(f"{server.url}/v1/events", params={"topics": topic, "limit": 1000}, trust_env=False)
    response.raise_for_status()
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def test_one_event_from_flags_is_published_with_every_field(
    run_cli: RunCli, live_server: DashServer, unique_topic: str
) -> None:
    topic = f"{unique_topic}.agent.a7"
    args = [
        "publish", "--url", live_server.url, "--topic", topic, "--type", "agent.failed",
        "--priority", "high", "--source", "agent/a7", "--label", "swarm=s1", "-l", "agent=a7",
        "--data", '{"reason":"oom"}', "--id", "f1",
    ]  # fmt: skip
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("accepted 1, duplicates 0, failed 0")
    [event] = history(live_server, topic)
    assert event["type"] == "agent.failed" and event["priority"] == "high" and event["source"] == "agent/a7"
    assert event["labels"] == {"swarm": "s1", "agent": "a7"}
    assert event["data"] == {"reason": "oom"} and event["id"] == "f1"
    assert event["offset"] in result.stdout

    again = run_cli(*args)
    assert again.returncode == 0
    assert again.stdout.startswith("accepted 0, duplicates 1, failed 0")


def test_a_file_with_one_bad_line_publishes_the_rest_and_exits_1_naming_the_line(
    run_cli: RunCli, live_server: DashServer, unique_topic: str, tmp_path: Path
) -> None:
    topic = f"{unique_topic}.f"
    lines = [json.dumps({"topic": topic, "type": "t", "data": i}) for i in range(5)]
    lines[2] = '{"topic": "' + topic + '", "type": "t", "labels": {"n": 1}}'  # labels must be strings
    lines.insert(4, "")  # blank lines are skipped but still counted
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = run_cli("publish", "--url", live_server.url, "--file", str(path))
    assert result.returncode == 1
    assert "line 3:" in result.stderr and "labels" in result.stderr
    assert "accepted 4, duplicates 0, failed 1" in result.stdout
    assert [e["data"] for e in history(live_server, topic)] == [0, 1, 3, 4]


def test_an_event_the_server_rejects_is_reported_by_line_and_the_batch_goes_through_without_it(
    run_cli: RunCli, live_server: DashServer, unique_topic: str
) -> None:
    topic = f"{unique_topic}.s"
    lines = [json.dumps({"topic": topic, "type": "t", "data": i}) for i in range(4)]
    lines[1] = json.dumps({"topic": topic, "type": "t", "time": "yesterday"})  # only the server checks times
    result = run_cli("publish", "--url", live_server.url, "--file", "-", input="\n".join(lines))
    assert result.returncode == 1
    assert "line 2:" in result.stderr and "RFC 3339" in result.stderr
    assert "accepted 3, duplicates 0, failed 1" in result.stdout
    assert [e["data"] for e in history(live_server, topic)] == [0, 2, 3]


def test_stdin_is_sent_in_batches_in_order(
    run_cli: RunCli, live_server: DashServer, unique_topic: str
) -> None:
    topic = f"{unique_topic}.b"
    text = "".join(json.dumps({"topic": topic, "type": "t", "data": i}) + "\n" for i in range(25))
    result = run_cli("publish", "--url", live_server.url, "--file", "-", "--batch-size", "10", input=text)
    assert result.returncode == 0, result.stderr
    assert "accepted 25, duplicates 0, failed 0" in result.stdout
    assert "events/s" in result.stdout
    assert [e["data"] for e in history(live_server, topic)] == list(range(25))


def test_quiet_prints_nothing_on_success(run_cli: RunCli, live_server: DashServer, unique_topic: str) -> None:
    result = run_cli("publish", "-q", "--url", live_server.url, "--topic", f"{unique_topic}.q", "--type", "t")
    assert result.returncode == 0
    assert result.stdout == "" and result.stderr == ""


def test_usage_errors_exit_2_with_one_clear_line(run_cli: RunCli, live_server: DashServer) -> None:
    cases = [
        (["publish", "--url", live_server.url], "give --topic and --type"),
        (["publish", "--url", live_server.url, "--topic", "a", "--type", "t", "--data", "{oops"], "--data"),
        (
            ["publish", "--url", live_server.url, "--topic", "a", "--type", "t", "--label", "novalue"],
            "KEY=VALUE",
        ),
        (["publish", "--url", live_server.url, "--topic", "bad topic", "--type", "t"], "topic"),
        (["publish", "--url", live_server.url, "--file", "/nonexistent/events.jsonl"], "cannot read"),
    ]
    for args, expected in cases:
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unreachable_server_is_one_line_and_exit_2(run_cli: RunCli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("publish", "--url", url, "--topic", "a.b", "--type", "t")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: cannot connect to {url}: connection refused — is `dash-stream serve` running?"
    )


def test_a_missing_token_exits_2_and_a_forbidden_topic_exits_1(
    run_cli: RunCli, auth_server: DashServer, unique_topic: str
) -> None:
    env = {"DASH_URL": auth_server.url}
    denied = run_cli("publish", "--topic", f"{unique_topic}.e", "--type", "t", env=env)
    assert denied.returncode == 2
    assert "unauthorized" in denied.stderr and "DASH_TOKEN" in denied.stderr

    token = mint_token(JWT_SECRET, sub="pub", subscribe=[], publish=[f"{unique_topic}.>"])
    forbidden = run_cli("publish", "--topic", "other.e", "--type", "t", env={**env, "DASH_TOKEN": token})
    assert forbidden.returncode == 1
    assert "forbidden" in forbidden.stderr


def test_a_rate_limited_batch_waits_for_retry_after_and_goes_through(
    run_cli: RunCli, unique_topic: str
) -> None:
    server = DashServer.start("--dev", "--publish-rate", "50")  # bursts of 100, then 50/s
    try:
        topic = f"{unique_topic}.r"
        text = "".join(json.dumps({"topic": topic, "type": "t", "data": i}) + "\n" for i in range(150))
        result = run_cli("publish", "--url", server.url, "--file", "-", "--batch-size", "100", input=text)
        assert result.returncode == 0, result.stderr
        assert "accepted 150, duplicates 0, failed 0" in result.stdout
        assert [e["data"] for e in history(server, topic)] == list(range(150))
        metrics = httpx.get(f"{server.url}/metrics", trust_env=False).text
        assert 'dash_rate_limited_total{what="publish"} 1.0' in metrics  # one 429, then success
    finally:
        server.stop()
