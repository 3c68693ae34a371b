"""Dedup, inhibit and throttle: the stages that decide an event is not worth a message (now).

All three are pure state machines that take `now` (seconds) as an argument: no clock, no I/O.

- `Deduper`: Alertmanager's notification log. Per route, an event whose dedup key (a template,
  default: a fingerprint of type, topic, source, labels and data, i.e. "the same event again") was
  forwarded within the window (default: the route's `repeat_interval`) is dropped. Entries remember
  the offset that claimed them, so re-reading that same event after a restart is not a repeat.
- `Inhibitor`: while an event matching a rule's `source` lasts (until a `clear` event with the same
  `equal` values, or `duration`), events matching its `target` with equal values are muted.
- `Throttle`: a token bucket per route; `critical` events bypass it.

Every table is bounded; when full, the oldest entries are forgotten first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Final

import msgspec

from bridge.config import InhibitRuleConfig
from bridge.errors import ConfigError
from bridge.rules import compile_filter, getter
from bridge.templates import MISSING, Getter, Template
from dash_stream.events import Event
from dash_stream.filters import Predicate

_encoder: Final = msgspec.json.Encoder(order="sorted")


def fingerprint(event: Event) -> str:
    """A short hash of what an event says (type, topic, source, labels, data), not when or which."""
    doc = (event.type, event.topic, event.source, event.labels, event.data)
    return hashlib.blake2b(_encoder.encode(doc), digest_size=12).hexdigest()


def dedup_key(template: Template | None, event: Event) -> str:
    """The event's dedup key under a route's `dedup_key` template (fingerprint when None)."""
    return fingerprint(event) if template is None else template.render(event)


class Deduper:
    """The notification log: key -> (expiry, offset that claimed it); bounded, oldest out first."""

    def __init__(self, max_keys: int = 100_000) -> None:
        """An empty log holding at most `max_keys` keys."""
        self.max_keys = max_keys
        self._log: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def repeat(self, key: str, offset: str, now: float, window: float) -> bool:
        """True when `key` was claimed by another event within the window; else claim it now."""
        if window <= 0:
            return False
        seen = self._log.get(key)
        if seen is not None and seen[0] > now:
            return seen[1] != offset  # the claiming event itself (re-read) passes, without a new window
        self._log[key] = (now + window, offset)
        self._log.move_to_end(key)
        while len(self._log) > self.max_keys:
            self._log.popitem(last=False)
        return False

    def expire(self, now: float) -> None:
        """Forget expired entries."""
        for key in [k for k, (expiry, _) in self._log.items() if expiry <= now]:
            del self._log[key]

    def snapshot(self, now: float) -> list[tuple[str, float, str]]:
        """Live entries, for the state file."""
        return [(k, e, o) for k, (e, o) in self._log.items() if e > now]

    def restore(self, entries: list[tuple[str, float, str]], now: float) -> None:
        """Load entries saved by `snapshot` (expired ones are skipped)."""
        for key, expiry, offset in entries:
            if expiry > now:
                self._log[key] = (expiry, offset)
        while len(self._log) > self.max_keys:
            self._log.popitem(last=False)

    def __len__(self) -> int:
        return len(self._log)


class InhibitRule:
    """One compiled `[[inhibit_rules]]` entry."""

    def __init__(self, rule: InhibitRuleConfig, index: int) -> None:
        """Compile the filters; the default `clear` is an event of the source's `type` that is no source."""
        path = f"inhibit_rules[{index}]"
        self.id = rule.name or path
        source = compile_filter(rule.source, f"{path}.source")
        target = compile_filter(rule.target, f"{path}.target")
        if source is None or target is None:
            raise ConfigError(f"{path}: source and target need at least one condition each")
        self.source: Predicate = source
        self.target: Predicate = target
        clear_doc: dict[str, Any] | None = rule.clear
        if clear_doc is None and "type" in rule.source:
            clear_doc = {"type": rule.source["type"], "not": rule.source}
        self.clear = compile_filter(clear_doc, f"{path}.clear")
        self.equal: tuple[Getter, ...] = tuple(
            getter(n, f"{path}.equal[{i}]") for i, n in enumerate(rule.equal)
        )
        if rule.duration <= 0:
            raise ConfigError(f"{path}.duration: must be more than 0s")
        self.duration = float(rule.duration)

    def key(self, event: Event) -> str:
        """The rule id and the event's `equal` values (absent counts as equal to absent)."""
        values = ["\x00" if (v := g(event)) is MISSING else str(v) for g in self.equal]
        return "\x1f".join([self.id, *values])


class Inhibitor:
    """Active inhibitions: rule+equal values -> (expiry, offset of the source event)."""

    def __init__(self, rules: list[InhibitRule], max_active: int = 10_000) -> None:
        """No inhibition is active at first."""
        self.rules = rules
        self.max_active = max_active
        self._active: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def observe(self, event: Event, now: float) -> None:
        """Start an inhibition on a source event, end it on a clear event."""
        for rule in self.rules:
            if rule.source(event):
                key = rule.key(event)
                self._active[key] = (now + rule.duration, event.offset or "")
                self._active.move_to_end(key)
                if len(self._active) > self.max_active:
                    self._active.popitem(last=False)
            elif rule.clear is not None and rule.clear(event):
                self._active.pop(rule.key(event), None)

    def inhibited(self, event: Event, now: float) -> str | None:
        """The id of a rule muting this event now, or None. A source event never mutes itself."""
        if not self._active:
            return None
        for rule in self.rules:
            if rule.target(event) and not rule.source(event):
                active = self._active.get(rule.key(event))
                if active is not None and active[0] > now:
                    return rule.id
        return None

    def snapshot(self, now: float) -> list[tuple[str, float, str]]:
        """Live inhibitions, for the state file."""
        return [(k, e, o) for k, (e, o) in self._active.items() if e > now]

    def restore(self, entries: list[tuple[str, float, str]], now: float) -> None:
        """Load inhibitions saved by `snapshot`."""
        for key, expiry, offset in entries:
            if expiry > now:
                self._active[key] = (expiry, offset)

    def __len__(self) -> int:
        return len(self._active)


class TokenBucket:
    """`rate` tokens per second up to `burst`; starts full."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        """A full bucket."""
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Throttle:
    """One token bucket per claim (route, or route+@name)."""

    def __init__(self) -> None:
        """No buckets yet; they are made on first use."""
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, claim: str, limit: tuple[float, float] | None, priority: str, now: float) -> bool:
        """Whether an event may pass: no limit, `critical`, or a token was available."""
        if limit is None or priority == "critical":
            return True
        bucket = self._buckets.get(claim)
        if bucket is None:
            bucket = self._buckets[claim] = TokenBucket(limit[0], limit[1], now)
        return bucket.take(now)
