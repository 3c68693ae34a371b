"""examples/simulated_swarm.py runs against a real server, stays within its bounds, and leaves a
consistent live state (every swarm stopped, no task left running)."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
from helpers import scaled
from servers import REPO, ServerFactory, server_env

EXAMPLE = REPO / "examples" / "simulated_swarm.py"


def simulate(url: str, *args: str) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--url", url, "--seed", "7", *args],
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"published (\d+) events .*\(swarms: (.*)\)", proc.stdout)
    assert match, proc.stdout
    return int(match.group(1)), match.group(2).split(", ")


async def test_the_simulated_swarm_publishes_a_consistent_lifecycle(
    server: ServerFactory, http: httpx.AsyncClient
) -> None:
    srv = server("--dev")
    sent, swarms = simulate(
        srv.base_url, "--swarms", "2", "--agents", "4", "--rate", "150", "--duration", "1.5"
    )
    assert len(swarms) == 2 and sent > 50
    doc = (await http.get(f"{srv.base_url}/v1/swarms")).json()
    views = {v["swarm_id"]: v for v in doc["swarms"]}
    assert set(views) == set(swarms)
    assert sum(v["events"] for v in views.values()) == sent
    for view in views.values():
        assert view["status"] == "stopped" and view["tasks_running"] == []
        assert view["agent_counts"]["running"] == 0 and view["agent_counts"]["spawned"] == 0
        assert (
            view["agent_counts"]["completed"]
            + view["agent_counts"]["failed"]
            + view["agent_counts"]["killed"]
            == 4
        )


async def test_the_simulated_swarm_stops_at_max_events(server: ServerFactory) -> None:
    srv = server("--dev")
    sent, _ = simulate(srv.base_url, "--swarms", "1", "--agents", "3", "--rate", "1000", "--max-events", "30")
    start_and_finish = 1 + 3 + 3 + 1 + 3  # status + spawns; completions, stop, open tasks at most
    assert sent <= 30 + start_and_finish
