"""Bridge pipeline throughput on one core: filter + route + dedup/throttle + digest + render.

    .venv/bin/python loadtest/bridge_bench.py --events 200000 [--json out.json]

Feeds synthetic events (8 types, 50 swarms, 2000 agents, 4 priorities, batches of 500 like a
busy WebSocket frame) straight into `Pipeline.ingest` with a moving clock, flushes digest timers
as they fall due, and settles every message at once (the memory sink's view: no network), so the
number measured is the pipeline's own cost. A bounded loop: it stops after `--events`.
Also measures the full in-process path: a MemoryBus publish -> BusSource -> pipeline ->
dispatcher (journal fsync) -> MemorySink (`--full`), and the latency of one critical event
from publish to the sink's send (`--latency`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.config import parse_config
from bridge.pipeline import Pipeline
from dash_stream.events import Event

TYPES = [
    "agent.failed",
    "agent.spawned",
    "agent.completed",
    "agent.killed",
    "task.failed",
    "task.completed",
    "swarm.status",
    "error",
]
PRIORITIES = ["low", "normal", "high", "critical"]
PRIORITY_WEIGHTS = [40, 40, 19, 1]

CONFIG = {
    "source": {"topics": ["swarm.>"]},
    "receivers": [{"name": "mem", "kind": "memory"}],
    "defaults": {"group_wait": "2s", "group_interval": "10s", "repeat_interval": "1h"},
    "routes": [
        {
            "name": "high",
            "receiver": "mem",
            "where": {"priority": {"gte": "high"}},
            "session_key": "hook:dash:{labels.swarm}",
            "group_by": ["labels.swarm", "type"],
            "throttle": {"rate": "600/m", "burst": 600},
            "continue": True,
        },
        {"name": "tasks", "receiver": "mem", "match": {"type": "task.failed"}, "group_by": ["labels.swarm"]},
    ],
    "mentions": [{"name": "@oncall", "session_key": "hook:dash:oncall"}],
    "inhibit_rules": [
        {
            "source": {"type": "swarm.status", "data.status": "down"},
            "target": {"type": {"prefix": "agent."}},
            "equal": ["labels.swarm"],
        }
    ],
}


def make_events(n: int, seed: int = 7) -> list[Event]:
    """`n` varied events with offsets `b.0-<i>`."""
    rng = random.Random(seed)
    out = []
    for i in range(1, n + 1):
        swarm = f"s{rng.randrange(50)}"
        agent = f"a{rng.randrange(2000)}"
        type_ = rng.choice(TYPES)
        labels = {"swarm": swarm, "agent": agent}
        if rng.random() < 0.01:
            labels["mentions"] = "@oncall"
        data: dict[str, object] = {"reason": rng.choice(["oom", "timeout", "crash", "exit 1"]), "n": i}
        if type_ == "swarm.status":
            data = {"status": rng.choice(["up", "down", "degraded"]), "swarm_id": swarm}
        out.append(
            Event(
                id=f"e{i}",
                topic=f"swarm.{swarm}.agent.{agent}",
                type=type_,
                source="bench",
                time="2026-11-25T10:00:00Z",
                priority=rng.choices(PRIORITIES, PRIORITY_WEIGHTS)[0],  # type: ignore[arg-type]
                labels=labels,
                data=data,
                traceparent=f"00-{i:032x}-{i:016x}-01",
                offset=f"b.0-{i}",
            )
        )
    return out


def bench_pipeline(events: list[Event], batch: int, rate: float) -> dict[str, float]:
    """Events/s through ingest (+ timers + settle) with time advancing at `rate` events/s."""
    pipeline = Pipeline(parse_config(CONFIG))
    now = 1_700_000_000.0
    messages = 0
    started = time.perf_counter()
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        now += len(chunk) / rate
        out = pipeline.ingest(chunk, chunk[-1].offset, now)
        out += pipeline.tick(now)
        for m in out:
            pipeline.settle(m)
        messages += len(out)
    for m in pipeline.tick(now + 3600):
        pipeline.settle(m)
        messages += 1
    elapsed = time.perf_counter() - started
    return {
        "events": len(events),
        "seconds": round(elapsed, 3),
        "events_per_s": round(len(events) / elapsed),
        "messages": messages,
        "watermark_at_end": pipeline.tracker.watermark == events[-1].offset,
    }


async def bench_full(n: int) -> dict[str, float]:
    """Publish `n` events on a MemoryBus and time until the bridge has settled them all."""
    import tempfile

    from bridge.dlq import MemoryDeadLetterQueue
    from bridge.runner import Bridge
    from bridge.sinks import MemorySink
    from bridge.state import FileStateStore
    from dash_stream.bus.base import Incoming
    from dash_stream.bus.memory import MemoryBus

    events = make_events(n, seed=11)
    bus = MemoryBus(max_events=n + 10)
    with tempfile.TemporaryDirectory() as tmp:
        doc = {**CONFIG, "source": {"topics": ["swarm.>"], "start": "earliest"}}
        doc["defaults"] = {"group_wait": "0s", "group_interval": "1s"}
        cfg = parse_config(doc)
        sink = MemorySink("mem")
        bridge = Bridge(
            cfg,
            bus=bus,
            sinks={"mem": sink},
            store=FileStateStore(Path(tmp) / "s.json"),
            dlq=MemoryDeadLetterQueue(),
        )
        enc = msgspec.json.Encoder()
        items = [
            Incoming(
                msgspec.structs.replace(e, offset=None), enc.encode(msgspec.structs.replace(e, offset=None))
            )
            for e in events
        ]
        for i in range(0, len(items), 1000):
            await bus.publish(items[i : i + 1000])
        last = f"{await bus.epoch()}.0-{n}"
        started = time.perf_counter()
        await bridge.start()
        while True:  # poll: no event announces "all settled"
            if bridge.pipeline is not None and bridge.pipeline.tracker.watermark == last and bridge.idle:
                break
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        await bridge.stop()
    return {
        "events": n,
        "seconds": round(elapsed, 3),
        "events_per_s": round(n / elapsed),
        "messages": len(sink.messages),
    }


async def bench_latency(samples: int) -> dict[str, float]:
    """Publish one critical event at a time on a MemoryBus; time until the sink is asked to send it."""
    import statistics
    import tempfile

    from bridge.dlq import MemoryDeadLetterQueue
    from bridge.model import Message
    from bridge.runner import Bridge
    from bridge.sinks import MemorySink, SendResult
    from bridge.state import FileStateStore
    from dash_stream.bus.base import Incoming
    from dash_stream.bus.memory import MemoryBus
    from dash_stream.events import EventIn, complete

    arrived: dict[str, float] = {}

    class Timing(MemorySink):
        async def send(self, message: Message) -> SendResult:
            arrived[message.sources[0].offset] = time.perf_counter()
            return await super().send(message)

    bus = MemoryBus()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_config({**CONFIG, "source": {"topics": ["swarm.>"], "start": "earliest"}})
        bridge = Bridge(
            cfg,
            bus=bus,
            sinks={"mem": Timing("mem")},
            store=FileStateStore(Path(tmp) / "s.json"),
            dlq=MemoryDeadLetterQueue(),
        )
        await bridge.start()
        for i in range(samples):
            ev, enc = complete(
                EventIn(
                    topic="swarm.s1.agent.a1",
                    type="agent.failed",
                    priority="critical",
                    labels={"swarm": "s1"},
                    data={"reason": f"r{i}"},
                )
            )
            t0 = time.perf_counter()
            [pub] = await bus.publish([Incoming(ev, enc)])
            while True:  # poll: the sink announces nothing
                if pub.offset in arrived:
                    break
                await asyncio.sleep(0.0005)
            out.append(arrived[pub.offset] - t0)
        await bridge.stop()
    ms = sorted(x * 1000 for x in out)
    return {
        "samples": samples,
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 2),
        "max_ms": round(ms[-1], 2),
    }


def main() -> None:
    """Run the benchmark and print (or write) its numbers."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--rate", type=float, default=10_000.0, help="simulated arrival rate (events/s)")
    p.add_argument(
        "--full", type=int, default=50_000, help="events for the in-process end-to-end run (0: skip)"
    )
    p.add_argument("--latency", type=int, default=200, help="critical events timed one by one (0: skip)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    events = make_events(args.events)
    result: dict[str, object] = {"pipeline": bench_pipeline(events, args.batch, args.rate)}
    if args.full:
        result["in_process"] = asyncio.run(bench_full(args.full))
    if args.latency:
        result["critical_publish_to_sink"] = asyncio.run(bench_latency(args.latency))
    text = msgspec.json.format(msgspec.json.encode(result)).decode()
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
