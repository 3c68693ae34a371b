"""Digest: group events per route and send one summary message per group, on Alertmanager's timers.

- A group is (claim, target, values of the route's `group_by` fields). A new group waits
  `group_wait` to collect a burst, then flushes everything it holds as one digest.
- After a flush the group stays open: later events wait until `group_interval` after the previous
  flush. A flush that finds nothing new closes the group; its next event opens a new one.
- A `critical` event flushes its group at once (the digest wait is bypassed).
- `group_by = ["..."]` means no grouping: every event is its own message, sent at once.
- `repeat_interval` is the route's default dedup window (see dedup.py): an identical event is not
  notified again before it passes, which is what Alertmanager's repeat interval means for alerts.

Bounds: at most `max_groups` open groups (opening one more flushes the group due soonest) and
`max_group_events` per group (reaching it flushes the group early). Pure: `now` is an argument.
"""

from __future__ import annotations

import heapq
import itertools
from typing import NamedTuple

from bridge.model import Target
from bridge.rules import Delivery, Route
from dash_stream.events import Event


class Flush(NamedTuple):
    """Events leaving a group as one message."""

    route: Route
    claim: str
    target: Target
    key: str
    label: str
    events: list[Event]
    suppressed: int


class _Group:
    __slots__ = (
        "claim",
        "events",
        "key",
        "label",
        "last_flush",
        "next_flush",
        "route",
        "suppressed",
        "target",
    )

    def __init__(self, key: str, delivery: Delivery, label: str, next_flush: float) -> None:
        self.key = key
        self.route = delivery.route
        self.claim = delivery.claim
        self.target = delivery.target
        self.label = label
        self.events: list[Event] = []
        self.next_flush = next_flush
        self.last_flush: float | None = None
        self.suppressed = 0


class Digester:
    """Open groups and their timers."""

    def __init__(self, *, max_groups: int = 10_000, max_group_events: int = 5_000) -> None:
        """No groups yet."""
        self.max_groups = max(1, max_groups)
        self.max_group_events = max(1, max_group_events)
        self._groups: dict[str, _Group] = {}
        self._timers: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self.pending_events = 0

    @staticmethod
    def group_key(delivery: Delivery, event: Event) -> tuple[str, str]:
        """The key and the human label of the group an event joins on this delivery."""
        route = delivery.route
        values = route.group_values(event)
        key = "\x1f".join((delivery.claim, delivery.target.key(), *values))
        return key, route.describe_group(values)

    def add(self, delivery: Delivery, event: Event, now: float) -> list[Flush]:
        """Add an event; returns the flushes it caused (no grouping, critical, or a full buffer)."""
        route = delivery.route
        key, label = self.group_key(delivery, event)
        if not route.grouped:
            return [Flush(route, delivery.claim, delivery.target, key, label, [event], 0)]
        out: list[Flush] = []
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= self.max_groups:
                out.extend(self._evict(now))
            group = self._groups[key] = _Group(key, delivery, label, now + route.group_wait)
            self._schedule(group)
        group.events.append(event)
        self.pending_events += 1
        if event.priority == "critical" or len(group.events) >= self.max_group_events:
            out.append(self._flush(group, now))
        return out

    def suppressed(self, delivery: Delivery, event: Event) -> None:
        """Count an event of an open group that was not forwarded (deduped, inhibited, throttled)."""
        group = self._groups.get(self.group_key(delivery, event)[0])
        if group is not None:
            group.suppressed += 1

    def due(self, now: float) -> list[Flush]:
        """Flush every group whose timer has passed; close groups that had nothing new."""
        out: list[Flush] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, key = heapq.heappop(timers)
            group = self._groups.get(key)
            if group is None or group.next_flush != when:
                continue  # superseded by an earlier flush
            if group.events:
                out.append(self._flush(group, now))
            else:
                del self._groups[key]
        return out

    def next_deadline(self) -> float | None:
        """When `due` next has work (None when no group is open)."""
        timers = self._timers
        while timers:
            when, _, key = timers[0]
            group = self._groups.get(key)
            if group is not None and group.next_flush == when:
                return when
            heapq.heappop(timers)
        return None

    def flush_all(self, now: float) -> list[Flush]:
        """Flush every group holding events (e.g. to drain for a test); groups stay open."""
        return [self._flush(g, now) for g in list(self._groups.values()) if g.events]

    @property
    def groups(self) -> int:
        """How many groups are open."""
        return len(self._groups)

    def _schedule(self, group: _Group) -> None:
        heapq.heappush(self._timers, (group.next_flush, next(self._seq), group.key))

    def _flush(self, group: _Group, now: float) -> Flush:
        events, group.events = group.events, []
        suppressed, group.suppressed = group.suppressed, 0
        self.pending_events -= len(events)
        group.last_flush = now
        group.next_flush = now + group.route.group_interval
        self._schedule(group)
        return Flush(group.route, group.claim, group.target, group.key, group.label, events, suppressed)

    def _evict(self, now: float) -> list[Flush]:
        """Make room for a group: close an empty one, else flush (and close) the one due soonest."""
        soonest = min(self._groups.values(), key=lambda g: (bool(g.events), g.next_flush))
        del self._groups[soonest.key]
        if not soonest.events:
            return []
        events, soonest.events = soonest.events, []
        self.pending_events -= len(events)
        return [
            Flush(
                soonest.route,
                soonest.claim,
                soonest.target,
                soonest.key,
                soonest.label,
                events,
                soonest.suppressed,
            )
        ]
