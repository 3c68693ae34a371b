"""A simulated OpenClaw swarm: agents spawn, start, run tasks, fail, get restarted and finish,
publishing realistic events to a dash-stream server over HTTP. Watch it on the dashboard (`/`).

    .venv/bin/python examples/simulated_swarm.py --swarms 2 --agents 8 --rate 20 --duration 30
    .venv/bin/python examples/simulated_swarm.py --url http://127.0.0.1:8080 --token "$DASH_TOKEN"

Bounded: it stops after `--duration` seconds or `--max-events` events, whichever comes first,
then marks every agent completed and every swarm `stopped`. Topics follow the live swarm state
convention: `swarm.<swarm>.agent.<agent>`, `swarm.<swarm>.task.<task>`, `swarm.<swarm>.status`,
`swarm.<swarm>.errors`, `swarm.<swarm>.metrics`. Events carry ids, so a retried batch is
deduplicated. Exit status: 0 done, 1 the server refused events, 2 it could not be reached.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

Event = dict[str, Any]


@dataclass
class Agent:
    """One simulated agent and what it is doing."""

    agent_id: str
    status: str = "new"
    task: str | None = None
    task_started: float = 0.0
    tasks_done: int = 0


@dataclass
class Swarm:
    """One simulated swarm."""

    swarm_id: str
    agents: list[Agent] = field(default_factory=list)
    status: str = "starting"


class Simulation:
    """Turns the passage of time into events, about `rate` per second over all swarms."""

    def __init__(self, swarms: int, agents: int, rng: random.Random) -> None:
        self.rng = rng
        self.run = uuid.uuid4().hex[:6]
        self.swarms = [
            Swarm(f"sim-{self.run}-{i}", [Agent(f"agent-{j:02d}") for j in range(agents)])
            for i in range(swarms)
        ]
        self.task_seq = 0

    def event(
        self, swarm: Swarm, topic: str, type_: str, data: dict[str, Any], priority: str = "normal"
    ) -> Event:
        return {
            "id": uuid.uuid4().hex,
            "topic": f"swarm.{swarm.swarm_id}.{topic}",
            "type": type_,
            "source": f"simulator/{self.run}",
            "priority": priority,
            "labels": {"swarm": swarm.swarm_id},
            "data": {"swarm_id": swarm.swarm_id, **data},
        }

    def agent_event(
        self, swarm: Swarm, agent: Agent, type_: str, priority: str = "normal", **data: Any
    ) -> Event:
        e = self.event(
            swarm, f"agent.{agent.agent_id}", type_, {"agent_id": agent.agent_id, **data}, priority
        )
        e["labels"]["agent"] = agent.agent_id
        return e

    def start(self) -> list[Event]:
        """Every swarm starting, every agent spawned."""
        out: list[Event] = []
        for s in self.swarms:
            out.append(
                self.event(s, "status", "swarm.status", {"status": "starting", "agents": len(s.agents)})
            )
            for a in s.agents:
                a.status = "spawned"
                out.append(
                    self.agent_event(s, a, "agent.spawned", session_key=f"hook:{s.swarm_id}:{a.agent_id}")
                )
        return out

    def step(self) -> list[Event]:
        """The next plausible event of a random swarm (two when an agent dies during a task)."""
        out = self._step()
        return out if isinstance(out, list) else [out]

    def _abandon(self, s: Swarm, a: Agent, reason: str) -> list[Event]:
        task, a.task = a.task, None
        if task is None:
            return []
        data = {"task_id": task, "agent_id": a.agent_id, "error": reason}
        return [self.event(s, f"task.{task}", "task.failed", data, "high")]

    def _step(self) -> Event | list[Event]:
        rng = self.rng
        s = rng.choice(self.swarms)
        a = rng.choice(s.agents)
        if s.status == "starting" and all(x.status != "spawned" for x in s.agents):
            s.status = "up"
            return self.event(s, "status", "swarm.status", {"status": "up", "agents": len(s.agents)})
        if s.status in ("degraded", "down") and all(x.status == "running" for x in s.agents):
            s.status = "up"
            return self.event(s, "status", "swarm.status", {"status": "up", "message": "all agents back"})
        if a.status in ("spawned", "failed", "killed"):
            if a.status != "spawned":  # restart it
                a.status = "spawned"
                return self.agent_event(s, a, "agent.spawned", reason="restart")
            a.status = "running"
            return self.agent_event(s, a, "agent.started")
        roll = rng.random()
        if a.task is None:
            self.task_seq += 1
            a.task, a.task_started = f"t{self.task_seq}", time.monotonic()
            return self.event(
                s, f"task.{a.task}", "task.started", {"task_id": a.task, "agent_id": a.agent_id}
            )
        if roll < 0.55:
            task, a.task = a.task, None
            a.tasks_done += 1
            ms = round((time.monotonic() - a.task_started) * 1000, 1)
            return self.event(
                s,
                f"task.{task}",
                "task.completed",
                {"task_id": task, "agent_id": a.agent_id, "duration_ms": ms},
            )
        if roll < 0.62:
            task, a.task = a.task, None
            error = rng.choice(["tool timeout", "rate limited by provider", "invalid JSON from model"])
            return self.event(
                s,
                f"task.{task}",
                "task.failed",
                {"task_id": task, "agent_id": a.agent_id, "error": error},
                "high",
            )
        if roll < 0.66:
            reason = rng.choice(["out of memory", "context window exceeded", "sandbox crashed"])
            lost = self._abandon(s, a, f"agent failed: {reason}")
            a.status = "failed"
            self.degrade(s)
            return [*lost, self.agent_event(s, a, "agent.failed", "high", error=reason)]
        if roll < 0.67:
            return self.event(
                s,
                "errors",
                "error",
                {"message": "gateway unreachable", "kind": "network", "agent_id": a.agent_id},
                "critical",
            )
        if roll < 0.68:
            lost = self._abandon(s, a, "agent killed")
            a.status = "killed"
            return [*lost, self.agent_event(s, a, "agent.killed", reason="operator")]
        values = {"tokens_per_s": round(rng.uniform(20, 90), 1), "queue_depth": rng.randint(0, 12)}
        return self.event(s, "metrics", "metrics", {"values": values, "agent_id": a.agent_id}, "low")

    def degrade(self, s: Swarm) -> None:
        failed = sum(1 for a in s.agents if a.status == "failed")
        s.status = "degraded" if failed * 4 < len(s.agents) else "down"

    def finish(self) -> list[Event]:
        """Every agent completed, every swarm stopped."""
        out: list[Event] = []
        for s in self.swarms:
            for a in s.agents:
                if a.task is not None:
                    task, a.task = a.task, None
                    data = {"task_id": task, "agent_id": a.agent_id}
                    out.append(self.event(s, f"task.{task}", "task.completed", data))
                if a.status in ("spawned", "running"):
                    a.status = "completed"
                    out.append(self.agent_event(s, a, "agent.completed", tasks=a.tasks_done))
            out.append(
                self.event(s, "status", "swarm.status", {"status": "stopped", "agents": len(s.agents)})
            )
        return out


class Publisher:
    """POSTs batches to /v1/events, honouring 429/503 Retry-After; the same ids on a retry."""

    def __init__(self, url: str, token: str | None) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30.0, trust_env=False)
        self.sent = 0

    def send(self, events: list[Event]) -> None:
        for attempt in range(10):
            try:
                resp = self.http.post("/v1/events", json={"events": events})
            except httpx.TransportError as e:
                if attempt >= 2:
                    raise SystemExit(f"error: cannot reach {self.http.base_url}: {e}") from None
                time.sleep(0.5)
                continue
            if resp.status_code == 202:
                self.sent += len(events)
                return
            if resp.status_code in (429, 503):
                time.sleep(min(5.0, float(resp.headers.get("retry-after", "1"))))
                continue
            sys.stderr.write(f"error: the server refused a batch: {resp.status_code} {resp.text[:300]}\n")
            raise SystemExit(1)
        raise SystemExit("error: the server kept answering 429/503")

    def close(self) -> None:
        self.http.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="dash-stream server (default %(default)s)")
    p.add_argument("--token", default=None, help="JWT or API key allowed to publish to swarm.>")
    p.add_argument("--swarms", type=int, default=2, help="swarms to simulate (default %(default)s)")
    p.add_argument("--agents", type=int, default=6, help="agents per swarm (default %(default)s)")
    p.add_argument(
        "--rate", type=float, default=10.0, help="events per second, all swarms (default %(default)s)"
    )
    p.add_argument("--duration", type=float, default=30.0, help="seconds to run (default %(default)s)")
    p.add_argument(
        "--max-events", type=int, default=10_000, help="stop after this many (default %(default)s)"
    )
    p.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable run")
    args = p.parse_args(argv)
    if not (1 <= args.swarms <= 100 and 1 <= args.agents <= 1000 and 0 < args.rate <= 10_000):
        p.error("--swarms 1..100, --agents 1..1000, --rate 0..10000")
    if not (0 < args.duration <= 24 * 3600 and args.max_events >= 1):
        p.error("--duration must be in (0, 86400] and --max-events >= 1")

    sim = Simulation(args.swarms, args.agents, random.Random(args.seed))
    pub = Publisher(args.url, args.token)
    started = time.monotonic()
    try:
        pub.send(sim.start())
        budget = args.max_events - pub.sent
        due = 0.0
        last = started
        while budget > 0 and time.monotonic() - started < args.duration:
            time.sleep(0.1)
            now = time.monotonic()
            due += (now - last) * args.rate
            last = now
            n = min(int(due), budget, 1000)
            if n:
                batch: list[Event] = []
                while len(batch) < n:
                    batch.extend(sim.step())
                pub.send(batch)
                due -= len(batch)
                budget -= len(batch)
        pub.send(sim.finish())
    except KeyboardInterrupt:
        pub.send(sim.finish())
    finally:
        pub.close()
    ids = ", ".join(s.swarm_id for s in sim.swarms)
    print(f"published {pub.sent} events in {time.monotonic() - started:.1f}s to {args.url} (swarms: {ids})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
