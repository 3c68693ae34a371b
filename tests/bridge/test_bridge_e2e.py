"""End to end with real processes: `dash-stream serve` + `dash-stream bridge run` + the OpenClaw
gateway. A SIGKILL of the bridge mid-burst loses nothing and sends nothing twice; the embedded
mode (`serve --bridge`) delivers too; and the publish-to-LLM latency of a critical event is
measured (printed, and written to $DASH_BRIDGE_LATENCY_FILE when set)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bridge_support import to_toml
from integration import scaled
from integration.fault_proxy import FaultProxyFactory
from integration.mock_llm import MockLLM
from integration.openclaw import Gateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(scaled(300))]

REPO = Path(__file__).resolve().parents[2]
DASH_STREAM = REPO / ".venv" / "bin" / "dash-stream"
TOKEN_ENV = "DASH_BRIDGE_E2E_HOOKS_TOKEN"


def doc(tmp_path: Path, *, server: str, hooks_url: str, group_by: list[str]) -> dict[str, Any]:
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
                "backoff_initial": "200ms",
                "backoff_max": "2s",
            }
        ],
        "routes": [
            {
                "name": "swarm-high",
                "receiver": "gw",
                "where": {"priority": {"gte": "high"}},
                "session_key": "hook:dash:{labels.swarm}",
                "group_by": group_by,
                "group_wait": "1s",
                "group_interval": "5s",
            }
        ],
        "state": {"path": str(tmp_path / "state.json"), "checkpoint_interval": "200ms"},
        "dlq": {"path": str(tmp_path / "dlq.jsonl")},
    }


class BridgeProcess:
    """`dash-stream bridge run --config` as a child process, logging to a file."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.config, self.env, self.log = config, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BridgeProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(DASH_STREAM), "bridge", "run", "--config", str(self.config)],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=scaled(10))

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=scaled(20))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


@pytest.fixture
def bridges(tmp_path: Path) -> Iterator[list[BridgeProcess]]:
    started: list[BridgeProcess] = []
    yield started
    for b in started:
        b.stop()


def publish(srv: Any, events: list[dict[str, Any]]) -> list[str]:
    with httpx.Client(trust_env=False, timeout=scaled(30)) as client:
        response = client.post(f"{srv.base_url}/v1/events", json={"events": events})
    assert response.status_code == 202, response.text
    offsets: list[str] = response.json()["offsets"]
    return offsets


def wait_for(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + scaled(seconds)
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_killing_the_bridge_mid_burst_neither_loses_nor_duplicates(
    tmp_path: Path,
    server: Any,
    openclaw_gateway: Gateway,
    mock_llm: MockLLM,
    fault_proxy: FaultProxyFactory,
    bridges: list[BridgeProcess],
) -> None:
    srv = server("--dev")
    proxy = fault_proxy()  # pass-through: records every hook request and its idempotency key
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(to_toml(doc(tmp_path, server=srv.ws_url, hooks_url=proxy.url, group_by=["..."])))
    env = {**os.environ, TOKEN_ENV: openclaw_gateway.hooks_token}
    log = tmp_path / "bridge.log"
    first = BridgeProcess(cfg, env, log).start()
    bridges.append(first)

    run = f"kill{secrets.token_hex(4)}"
    swarms = [f"{run}x", f"{run}y"]  # two sessions: two ordered chains of three messages each
    markers = [f"{swarm}-m{i}" for swarm in swarms for i in range(3)]
    publish(
        srv,
        [
            {
                "topic": f"swarm.{m.split('-')[0]}.agent.a{i}",
                "type": "agent.failed",
                "priority": "high",
                "labels": {"swarm": m.split("-")[0]},
                "data": {"reason": m},
            }
            for i, m in enumerate(markers)
        ],
    )

    def forwarded() -> int:
        return sum(
            1 for r in proxy.requests if r.path.startswith("/hooks/") and r.outcome.startswith("forwarded")
        )

    wait_for(lambda: forwarded() >= 1, 60, "the first message accepted by the gateway")
    first.kill()  # mid-burst: each session's messages go one at a time
    accepted_before = forwarded()

    second = BridgeProcess(cfg, env, log).start()
    bridges.append(second)
    wait_for(lambda: all(mock_llm.count_marker(m) for m in markers), 90, f"all markers\n{log.read_text()}")
    time.sleep(scaled(2))  # a duplicate run would reach the LLM within this time
    counts = {m: mock_llm.count_marker(m) for m in markers}
    assert counts == dict.fromkeys(markers, 1), counts
    assert second.stop() == 0, log.read_text()
    assert not (tmp_path / "dlq.jsonl").exists() or not (tmp_path / "dlq.jsonl").read_text().strip()
    keys = [r.header("Idempotency-Key") for r in proxy.requests if r.path.startswith("/hooks/")]
    print(
        f"\nkill/restart: {accepted_before}/{len(markers)} accepted before the kill; {len(keys)} hook "
        f"requests, {len(set(keys))} distinct idempotency keys (a repeat is a re-send the gateway replayed)"
    )
    assert len(set(keys)) == len(markers)


def test_embedded_bridge_and_critical_latency(
    tmp_path: Path, server: Any, openclaw_gateway: Gateway, mock_llm: MockLLM
) -> None:
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(
        to_toml(
            doc(
                tmp_path,
                server="ws://unused",
                hooks_url=openclaw_gateway.url,
                group_by=["labels.swarm", "type"],
            )
        )
    )
    srv = server("--dev", "--bridge", str(cfg), env={TOKEN_ENV: openclaw_gateway.hooks_token})
    latencies = []
    for i in range(int(os.environ.get("DASH_BRIDGE_LATENCY_SAMPLES", "2"))):
        m = f"lat{secrets.token_hex(4)}-{i}"
        started = time.time()
        publish(
            srv,
            [
                {
                    "topic": f"swarm.{m}.agent.a1",
                    "type": "agent.failed",
                    "priority": "critical",
                    "labels": {"swarm": m},
                    "data": {"reason": m},
                }
            ],
        )
        mock_llm.wait_for_marker(m, 60)
        received = next(r.received_at for r in mock_llm.requests if m in r.raw)
        latencies.append(received - started)
    with httpx.Client(trust_env=False) as client:
        metrics = client.get(f"{srv.base_url}/metrics").text
    assert (
        f'dash_bridge_forwarded_total{{receiver="gw"}} {len(latencies)}.0' in metrics
    )  # the server's registry

    def metric(name: str) -> float:
        line = next(x for x in metrics.splitlines() if x.startswith(f'{name}{{receiver="gw"}}'))
        return float(line.rsplit(" ", 1)[1])

    post_s = metric("dash_bridge_sink_latency_seconds_sum") / metric("dash_bridge_sink_latency_seconds_count")
    report = {"publish_to_llm_s": [round(x, 3) for x in latencies], "hook_post_mean_s": round(post_s, 3)}
    print(f"\ncritical event, publish -> gateway LLM request: {report}")
    if os.environ.get("DASH_BRIDGE_LATENCY_FILE"):
        Path(os.environ["DASH_BRIDGE_LATENCY_FILE"]).write_text(json.dumps(report))
