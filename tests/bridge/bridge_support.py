"""Helpers shared by the bridge tests: events, configs."""

from __future__ import annotations

import itertools
from typing import Any

from bridge.config import BridgeConfig, parse_config
from dash_stream.events import Event, Priority

_seq = itertools.count(1)


def event(
    type: str = "agent.failed",
    *,
    swarm: str = "s1",
    agent: str | None = None,
    priority: Priority = "high",
    data: Any = None,
    labels: dict[str, str] | None = None,
    topic: str | None = None,
    offset: str | None = None,
    epoch: str = "e1",
    traceparent: str | None = None,
) -> Event:
    """An event with a fresh offset (`e1.0-<n>`) unless one is given."""
    n = next(_seq)
    agent = agent or f"a{n}"
    all_labels = {"swarm": swarm, "agent": agent, **(labels or {})}
    return Event(
        id=f"ev-{n}",
        topic=topic or f"swarm.{swarm}.agent.{agent}",
        type=type,
        source="test",
        time=f"2026-11-25T10:00:{n % 60:02d}Z",
        priority=priority,
        labels=all_labels,
        data=data if data is not None else {"reason": f"reason-{n}"},
        traceparent=traceparent or f"00-{n:032x}-{n:016x}-01",
        offset=offset or f"{epoch}.0-{n}",
    )


def config(doc: dict[str, Any]) -> BridgeConfig:
    """Parse a config document (ConfigError on a bad one)."""
    return parse_config(doc)


def memory_doc(**route: Any) -> dict[str, Any]:
    """One memory receiver "mem" and one route whose settings the test gives."""
    base_route: dict[str, Any] = {"receiver": "mem"}
    base_route.update(route)
    return {
        "source": {"topics": ["swarm.>"]},
        "receivers": [{"name": "mem", "kind": "memory"}],
        "routes": [base_route],
    }


async def publish(bus: Any, n: int = 1, **fields: Any) -> list[str]:
    """Publish `n` events built from `fields` (EventIn fields) on a bus; their offsets."""
    import secrets

    from dash_stream.bus.base import Incoming
    from dash_stream.events import EventIn, complete

    items = []
    for _ in range(n):
        # distinct data by default: identical events would be deduped (the default dedup key)
        doc = {
            "topic": "swarm.s1.agent.a1",
            "type": "agent.failed",
            "priority": "high",
            "data": {"reason": f"r{next(_seq)}"},
            "traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
            **fields,
        }
        ev, encoded = complete(EventIn(**doc))
        items.append(Incoming(ev, encoded, dedup=False))
    return [p.offset for p in await bus.publish(items)]


async def until(predicate: Any, limit_s: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate()` (generous, scaled deadline) while the event loop runs other tasks."""
    import asyncio
    import os
    import time

    deadline = time.monotonic() + limit_s * float(os.environ.get("DASH_TEST_TIMEOUT_SCALE", "1"))
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def to_toml(doc: dict[str, Any]) -> str:
    """A config document as TOML (tables, arrays of tables, inline tables for deeper levels)."""
    import json

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    def body(table: dict[str, Any]) -> list[str]:
        return [f"{json.dumps(k)} = {value(v)}" for k, v in table.items()]

    lines: list[str] = [
        f"{json.dumps(k)} = {value(v)}" for k, v in doc.items() if not isinstance(v, dict | list)
    ]
    for key, v in doc.items():
        if isinstance(v, dict):
            lines += ["", f"[{key}]", *body(v)]
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                lines += ["", f"[[{key}]]", *body(item)]
        elif isinstance(v, list):
            lines.insert(0, f"{json.dumps(key)} = {value(v)}")
    return "\n".join(lines) + "\n"


def scaled(seconds: float) -> float:
    """`seconds` times DASH_TEST_TIMEOUT_SCALE (default 1), for slow machines."""
    import os

    return seconds * max(0.1, float(os.environ.get("DASH_TEST_TIMEOUT_SCALE", "1")))
