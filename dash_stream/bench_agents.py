"""The `agents-1000` event mix and dashboard views (used by dash_stream/bench.py).

Every agent (publisher `p`) publishes its `s`-th event as kind `kind_of(p, s)`: a deterministic mix
of lifecycle, task, metrics and error events, each on its own topic `<prefix>.p<p>.<kind>` with its
own type and priority. Every dashboard subscriber takes one of four views (by its id): topic
patterns and, for two of them, a `where` filter. Because both are deterministic, each subscriber
knows exactly which (publisher, sequence) pairs it must receive, and loss accounting stays exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterable

    from dash_stream.bench import PubCount, SeqAccount

# (topic suffix, type, priority)
KINDS: Final = (
    ("lifecycle", "agent.started", "normal"),
    ("lifecycle", "agent.heartbeat", "low"),
    ("task", "task.started", "normal"),
    ("task", "task.progress", "normal"),
    ("task", "task.completed", "high"),
    ("metrics", "agent.metrics", "low"),
    ("error", "agent.error", "critical"),
)
# 20 slots: 2 lifecycle, 8 task, 8 metrics, 2 error (10 % errors is a bad day, which dashboards are for)
MIX: Final = (0, 3, 5, 3, 5, 2, 5, 3, 5, 6, 1, 3, 5, 4, 5, 3, 5, 2, 5, 6)


class View(msgspec.Struct, frozen=True):
    """A dashboard: topic patterns (suffixes after the run prefix), an optional filter, what it gets."""

    name: str
    patterns: tuple[str, ...]
    where: dict[str, Any] | None
    mask: tuple[bool, ...]  # per MIX slot: does this view receive it?


def _view(name: str, patterns: tuple[str, ...], where: dict[str, Any] | None, kinds: set[int]) -> View:
    return View(name, patterns, where, tuple(k in kinds for k in MIX))


_PRIORITY_HIGH = {i for i, (_, _, prio) in enumerate(KINDS) if prio in ("high", "critical")}
VIEWS: Final = (
    _view("tasks", ("*.task",), None, {2, 3, 4}),
    _view("alerts", (">",), {"priority": {"in": ["high", "critical"]}}, _PRIORITY_HIGH),
    _view("lifecycle+errors", ("*.lifecycle", "*.error"), None, {0, 1, 6}),
    _view("overview", (">",), {"type": {"nin": ["agent.metrics"]}}, {0, 1, 2, 3, 4, 6}),
)


def kind_of(pub: int, seq: int) -> int:
    """Index into KINDS of publisher `pub`'s `seq`-th event."""
    return MIX[(pub + seq) % len(MIX)]


def event_json(prefix: str, pub: int, seq: int, sent_ns: int, pad: bytes = b"") -> bytes:
    """Agent `pub`'s `seq`-th event, stamped with `sent_ns`."""
    suffix, etype, prio = KINDS[kind_of(pub, seq)]
    return (
        b'{"topic":"%s.p%d.%s","type":"%s","priority":"%s","source":"agent/%d",'
        b'"labels":{"agent":"a%d"},"data":{"p":%d,"s":%d,"t":%d%s}}'
        % (
            prefix.encode(),
            pub,
            suffix.encode(),
            etype.encode(),
            prio.encode(),
            pub,
            pub,
            pub,
            seq,
            sent_ns,
            pad,
        )
    )


def view_of(sid: int) -> View:
    """The view subscriber `sid` takes."""
    return VIEWS[sid % len(VIEWS)]


def subscribe_topics(prefix: str, view: View) -> list[str]:
    """The view's topic patterns under the run's prefix."""
    return [f"{prefix}.{p}" for p in view.patterns]


def _wanted(pc: PubCount, mask: tuple[bool, ...]) -> list[int]:
    n = len(MIX)
    return [s for s in range(pc.sent) if mask[(pc.pub + s) % n]]


def expected_count(expected: Iterable[PubCount], mask: tuple[bool, ...]) -> int:
    """Accepted events a subscriber with `mask` must receive."""
    total = 0
    for pc in expected:
        rejected = set(pc.rejected)
        total += sum(1 for s in _wanted(pc, mask) if s not in rejected)
    return total


def missing(account: SeqAccount, expected: Iterable[PubCount], mask: tuple[bool, ...]) -> int:
    """Accepted events a subscriber with `mask` should have received and did not."""
    lost = 0
    for pc in expected:
        bits = account.seen.get(pc.pub, bytearray())
        rejected = set(pc.rejected)
        lost += sum(1 for s in _wanted(pc, mask) if s not in rejected and (s >= len(bits) or not bits[s]))
    return lost
