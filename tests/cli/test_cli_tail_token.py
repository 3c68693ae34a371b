"""`dash-stream tail` and `dash-stream token` as subprocesses against real servers."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import jwt
from client.dash_server import DASH_STREAM, REPO, DashServer, clean_env, free_port, scaled

from cli.conftest import JWT_SECRET, RunCli


def publish(server: DashServer, events: list[dict[str, object]]) -> None:
    """Publish a batch over HTTP (the tests of `tail` do not depend on `publish`)."""
    response = httpx.post(f"{server.url}/v1/events", json={"events": events}, trust_env=False)
    assert response.status_code == 202, response.text


def seq(topic: str, numbers: range, **extra: object) -> list[dict[str, object]]:
    return [{"topic": topic, "type": "seq", "data": i, **extra} for i in numbers]


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_tail_json_limit_prints_n_events_as_json_lines_and_exits_0(
    run_cli: RunCli, live_server: DashServer, unique_topic: str
) -> None:
    publish(live_server, seq(f"{unique_topic}.a", range(5)))
    result = run_cli(
        "tail", f"{unique_topic}.>", "--url", live_server.url, "--from", "earliest", "--json", "--limit", "3"
    )
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert [e["data"] for e in events] == [0, 1, 2]
    assert all(e["topic"] == f"{unique_topic}.a" and e["offset"] for e in events)


def test_tail_where_filters_on_the_server(
    run_cli: RunCli, live_server: DashServer, unique_topic: str
) -> None:
    publish(
        live_server,
        seq(f"{unique_topic}.w", range(3)) + seq(f"{unique_topic}.w", range(3, 5), priority="critical"),
    )
    result = run_cli(
        "tail", f"{unique_topic}.>", "--url", live_server.url, "--from", "earliest", "--json", "--limit", "2",
        "--where", '{"priority": {"gte": "high"}}',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [e["data"] for e in json_lines(result.stdout)] == [3, 4]


def test_tail_pretty_output_shows_time_priority_topic_type_and_data(
    run_cli: RunCli, live_server: DashServer, unique_topic: str
) -> None:
    publish(
        live_server,
        [{"topic": f"{unique_topic}.p", "type": "agent.failed", "priority": "critical", "data": {"x": 1}}],
    )
    result = run_cli(
        "tail", f"{unique_topic}.>", "--url", live_server.url, "--from", "earliest", "--limit", "1"
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert "critical" in line and f"{unique_topic}.p" in line and "agent.failed" in line and '{"x":1}' in line
    assert line[2] == ":" and line[5] == ":"  # HH:MM:SS.mmm first
    assert "\x1b[" not in line  # no colour codes when stdout is not a terminal


def test_tail_with_a_cursor_file_resumes_across_runs_without_gap_or_duplicate(
    run_cli: RunCli, live_server: DashServer, unique_topic: str, tmp_path: Path
) -> None:
    topic = f"{unique_topic}.c"
    cursor_file = tmp_path / "tail.cursor"
    common = [
        "tail",
        f"{unique_topic}.>",
        "--url",
        live_server.url,
        "--json",
        "--cursor-file",
        str(cursor_file),
    ]
    publish(live_server, seq(topic, range(5)))
    # the 5 events arrive in one frame; stopping after 3 must still save the cursor of the 3rd
    first = run_cli(*common, "--from", "earliest", "--limit", "3")
    assert first.returncode == 0, first.stderr
    saved = cursor_file.read_text().strip()
    assert saved
    publish(live_server, seq(topic, range(5, 8)))
    second = run_cli(*common, "--limit", "5")
    assert second.returncode == 0, second.stderr
    got = [e["data"] for e in json_lines(first.stdout) + json_lines(second.stdout)]
    assert got == list(range(8))
    assert cursor_file.read_text().strip() != saved
    assert not [p for p in tmp_path.iterdir() if p.name != "tail.cursor"]  # no temp files left behind


def test_ctrl_c_stops_tail_with_exit_0(live_server: DashServer, unique_topic: str, tmp_path: Path) -> None:
    cursor_file = tmp_path / "live.cursor"
    proc = subprocess.Popen(
        [
            DASH_STREAM,
            "tail",
            f"{unique_topic}.>",
            "--url",
            live_server.url,
            "--json",
            "--cursor-file",
            str(cursor_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + scaled(20)
        while not cursor_file.exists():  # written (atomically) as soon as the subscription stands
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "tail did not subscribe in time"
            time.sleep(0.05)
        subscribed_at = cursor_file.read_text()
        publish(live_server, seq(f"{unique_topic}.live", range(1)))
        deadline = time.monotonic() + scaled(20)
        while cursor_file.read_text() == subscribed_at:  # moves on once the event was printed
            assert time.monotonic() < deadline, "tail did not receive the event in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=scaled(20))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert [e["data"] for e in json_lines(out)] == [0]
    assert "Traceback" not in err


def test_tail_reports_an_unreachable_server_in_one_line_with_exit_2(run_cli: RunCli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("tail", "a.>", "--url", url)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: cannot connect to {url}: connection refused — is `dash-stream serve` running?"
    )


def test_tail_usage_errors_exit_2(run_cli: RunCli, live_server: DashServer) -> None:
    bad_json = run_cli("tail", "a.>", "--url", live_server.url, "--where", "{nope")
    assert bad_json.returncode == 2 and "--where" in bad_json.stderr
    bad_filter = run_cli("tail", "a.>", "--url", live_server.url, "--where", '{"priority": {"gte": 5}}')
    assert bad_filter.returncode == 2 and "where.priority" in bad_filter.stderr


def test_token_prints_a_jwt_that_verifies_and_carries_the_acl(run_cli: RunCli, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(JWT_SECRET + "\n")
    result = run_cli(
        "token", "--secret-file", str(secret_file), "--sub", "dashboard", "--subscribe", "swarm.>",
        "--subscribe", "metrics.*", "--publish", "swarm.s1.agent.a7", "--ttl", "15m",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "dashboard"
    assert claims["dash"] == {"subscribe": ["swarm.>", "metrics.*"], "publish": ["swarm.s1.agent.a7"]}
    assert abs(claims["exp"] - (time.time() + 900)) < 60

    from_env = run_cli("token", "--sub", "x", "--publish", "a.>", env={"DASH_JWT_SECRET": JWT_SECRET})
    assert from_env.returncode == 0, from_env.stderr
    assert jwt.decode(from_env.stdout.strip(), JWT_SECRET, algorithms=["HS256"])["dash"]["publish"] == ["a.>"]


def test_token_errors_exit_2(run_cli: RunCli) -> None:
    for args, expected in [
        (["--secret", "short", "--sub", "x", "--subscribe", "a"], "at least 32 bytes"),
        (["--secret", JWT_SECRET, "--sub", "x", "--ttl", "soon"], "--ttl"),
        (["--secret", JWT_SECRET, "--sub", "x", "--subscribe", "a.>.b"], "--subscribe"),
        (["--sub", "x", "--subscribe", "a"], "no signing key"),
    ]:
        result = run_cli("token", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)


def test_a_minted_token_lets_tail_read_only_its_topics(
    run_cli: RunCli, auth_server: DashServer, unique_topic: str
) -> None:
    minted = run_cli(
        "token", "--sub", "reader", "--subscribe", f"{unique_topic}.>", "--publish", f"{unique_topic}.>",
        env={"DASH_JWT_SECRET": JWT_SECRET},
    )  # fmt: skip
    env = {"DASH_URL": auth_server.url, "DASH_TOKEN": minted.stdout.strip()}
    sent = run_cli("publish", "--topic", f"{unique_topic}.a", "--type", "t", "--data", "1", env=env)
    assert sent.returncode == 0, sent.stderr
    read = run_cli("tail", f"{unique_topic}.>", "--from", "earliest", "--json", "--limit", "1", env=env)
    assert read.returncode == 0, read.stderr
    assert [e["data"] for e in json_lines(read.stdout)] == [1]
    refused = run_cli("tail", "other.>", "--json", "--limit", "1", env=env)
    assert refused.returncode == 2
    assert "forbidden" in refused.stderr
    bad = run_cli("tail", "a.>", "--limit", "1", env={**env, "DASH_TOKEN": "not-a-jwt"})
    assert bad.returncode == 2
    assert "4501" in bad.stderr


def test_every_command_has_examples_in_its_help_and_completion_stays_available(run_cli: RunCli) -> None:
    for command in ("publish", "tail", "token"):
        result = run_cli(command, "--help", env={"COLUMNS": "120"})
        assert result.returncode == 0
        assert "Examples" in result.stdout and f"dash-stream {command}" in result.stdout
    root = run_cli("--help", env={"COLUMNS": "120"})
    assert "--install-completion" in root.stdout
