"""The pipeline: filter -> route -> dedup / inhibit / throttle -> digest -> message, as one object.

Synchronous and clock-free: `ingest(events, cursor, now)` takes a batch from the source and
returns the messages ready to send at once; `tick(now)` returns those whose digest timer passed;
`settle(message)` is called once the sink accepted a message or the DLQ stored it. The tracker
turns settlements into the durable watermark. The async runtime (runner.py) owns the loops.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.config import BridgeConfig
from bridge.dedup import Deduper, Inhibitor, InhibitRule, Throttle, dedup_key
from bridge.digest import Digester, Flush
from bridge.metrics import BridgeMetrics
from bridge.model import Message
from bridge.render import build_message
from bridge.rules import EventFilter, Router
from bridge.tracker import Tracker
from dash_stream.events import Event


class Pipeline:
    """Every stage of the bridge between the source and the sink."""

    def __init__(
        self, config: BridgeConfig, *, metrics: BridgeMetrics | None = None, tracker: Tracker | None = None
    ) -> None:
        """Compile the stages from a validated config."""
        self.config = config
        self.metrics = metrics if metrics is not None else BridgeMetrics()
        self.tracker = tracker if tracker is not None else Tracker(max_ledger=config.state.max_ledger)
        self.filter = EventFilter(
            config.source.where, origin=config.origin, forward_own=config.source.forward_own
        )
        self.router = Router(config)
        self.inhibitor = Inhibitor([InhibitRule(r, i) for i, r in enumerate(config.inhibit_rules)])
        self.deduper = Deduper(config.limits.max_dedup_keys)
        self.throttle = Throttle()
        self.digester = Digester(
            max_groups=config.limits.max_groups, max_group_events=config.limits.max_group_events
        )
        m = self.metrics
        self._counters = {
            r.id: (m.deduped.labels(r.id), m.inhibited.labels(r.id), m.throttled.labels(r.id))
            for r in self.router.routes
        }
        self._dropped = {k: m.dropped.labels(k) for k in ("loop", "filter", "unrouted")}

    # ------------------------------------------------------------ input

    def ingest(self, events: Sequence[Event], cursor: str | None, now: float) -> list[Message]:
        """Process one source batch; the messages that must go out now."""
        tracker = self.tracker
        seq = tracker.open(cursor)
        flushes: list[Flush] = []
        try:
            for event in events:
                self._ingest_event(event, seq, now, flushes)
        finally:
            tracker.close(seq)
        self.metrics.events_in.inc(len(events))
        if not flushes:
            return []
        return self._messages(flushes, now)

    def _ingest_event(self, event: Event, seq: int, now: float, flushes: list[Flush]) -> None:
        offset = event.offset or ""
        if self.filter.own(event):
            self._dropped["loop"].inc()
            return
        if not self.filter.accepts(event):
            self._dropped["filter"].inc()
            return
        inhibitor = self.inhibitor
        inhibitor.observe(event, now)
        deliveries = self.router.deliveries(event)
        if not deliveries:
            self._dropped["unrouted"].inc()
            return
        muted = inhibitor.inhibited(event, now) if inhibitor.rules else None
        tracker, digester = self.tracker, self.digester
        for delivery in deliveries:
            route, claim = delivery.route, delivery.claim
            if tracker.done(seq, claim, offset):
                continue  # made before a restart: the ledger says so
            deduped, inhibited, throttled = self._counters[route.id]
            if muted is not None:
                inhibited.inc()
                digester.suppressed(delivery, event)
                continue
            key = f"{claim}\x1f{dedup_key(route.dedup_key, event)}"
            if self.deduper.repeat(key, offset, now, route.dedup_window):
                deduped.inc()
                digester.suppressed(delivery, event)
                continue
            if not self.throttle.allow(claim, route.throttle, event.priority, now):
                throttled.inc()
                digester.suppressed(delivery, event)
                continue
            if tracker.hold(seq, claim, offset):
                flushes.extend(digester.add(delivery, event, now))

    def gap(self) -> None:
        """The source could not resume from the cursor (events were missed)."""
        self.tracker.gap()

    # ------------------------------------------------------------ timers

    def tick(self, now: float) -> list[Message]:
        """Messages of groups whose timer passed."""
        flushes = self.digester.due(now)
        return self._messages(flushes, now) if flushes else []

    def next_deadline(self) -> float | None:
        """When `tick` next has work."""
        return self.digester.next_deadline()

    def flush_all(self, now: float) -> list[Message]:
        """Every pending group as a message now (tests and benchmarks)."""
        return self._messages(self.digester.flush_all(now), now)

    # ------------------------------------------------------------ output

    def _messages(self, flushes: list[Flush], now: float) -> list[Message]:
        out = []
        m = self.metrics
        for flush in flushes:
            message = build_message(flush, badges=self.config.badges, origin=self.config.origin, now=now)
            m.messages.labels(flush.route.id).inc()
            if len(flush.events) > 1:
                m.digested.labels(flush.route.id).inc(len(flush.events))
            out.append(message)
        m.pending_events.set(self.digester.pending_events)
        m.groups.set(self.digester.groups)
        return out

    def settle(self, message: Message) -> None:
        """The message was accepted by its sink or stored in the DLQ: release its events."""
        release = self.tracker.release
        for src in message.sources:
            release(src.claim, src.offset)

    def expire(self, now: float) -> None:
        """Forget expired dedup entries (called now and then by the runtime)."""
        self.deduper.expire(now)
