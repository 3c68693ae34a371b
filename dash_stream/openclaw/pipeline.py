"""The watcher's processing, without I/O: gateway frames in, events ready to publish out.

    pipeline = Pipeline(config)
    step = pipeline.frame("agent", payload, boot_id=conn.boot_id, now=time.time())
    for out in step.events: await outbox.put(out.event, out.attributes, out.ts_ms)
    for session_key in step.history: ...fetch chat.history, then pipeline.transcript(key, text, now)
    pipeline.expire(now)          # every 100 ms: runs whose origin did not arrive in time

frame -> `translate` / `status` (drafts) -> `runs.RunTracker` (one start per run, origin)
-> `mapping.Mapper` (topic, labels) -> `translate.finish` (id, labels, time) -> skip ids this
watcher already emitted -> check the event as the server would (`events.complete`).

Synchronous and deterministic (time is an argument), so tests and the benchmark replay recorded
frames through exactly the code the watcher runs.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Final, NamedTuple

import msgspec

from dash_stream.events import EventIn, complete
from dash_stream.openclaw import status as st
from dash_stream.openclaw import translate as tr
from dash_stream.openclaw.config import WatchConfig
from dash_stream.openclaw.mapping import Mapper
from dash_stream.openclaw.metrics import WatchMetrics
from dash_stream.openclaw.runs import Ready, RunTracker
from dash_stream.protocol.errors import DashError

log = logging.getLogger("dash_stream.openclaw")

KNOWN_EVENTS: Final = frozenset(
    {"agent", "chat", "session.tool", "session.message", "sessions.changed", "health", "shutdown", "tick"}
)
SEEN_MAX: Final = 100_000

Attributes = dict[str, str | int | float | bool]


class Outgoing(NamedTuple):
    """An event ready to publish, its span attributes and the gateway's time of it (epoch ms)."""

    event: EventIn
    attributes: Attributes
    ts_ms: int | None


class Step(NamedTuple):
    """What one input produced: events to publish, and sessions whose history to fetch."""

    events: list[Outgoing]
    history: list[str]


class Pipeline:
    """See the module docstring; `metrics` (optional) counts frames, runs and translation errors."""

    def __init__(self, config: WatchConfig, metrics: WatchMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.gateway = config.gateway_name
        self.origin = config.origin_marker
        self.mapper = Mapper(config)
        self.tracker = RunTracker(
            origin=self.origin, wait_s=config.origin_wait, inherit_s=config.origin_inherit
        )
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._runs_counted = 0
        self._outcomes_counted: dict[str, int] = {}

    def frame(self, name: str, payload: Any, *, boot_id: str, now: float) -> Step:
        """One gateway event frame (`frame["event"]`, `frame["payload"]`)."""
        if self.metrics is not None:
            self.metrics.frames.labels(name if name in KNOWN_EVENTS else "other").inc()
        if not isinstance(payload, dict):
            return Step([], [])
        try:
            if name == "session.message":
                turn = tr.user_transcript(payload)
                if turn is None:
                    return Step([], [])
                return self.transcript(turn[0], turn[1], now)
            drafts = [
                d if d.ts_ms is not None else msgspec.structs.replace(d, ts_ms=int(now * 1000))
                for d in self._drafts(name, payload, boot_id, now)
            ]  # frames without a time (chat) are timed when they arrived, not when released
        except Exception as e:  # a frame shape we do not know: count it, never stop watching
            self._error("frame")
            log.warning("cannot translate a %s frame: %s: %s", name, type(e).__name__, e)
            return Step([], [])
        return self.offer(drafts, now)

    def _drafts(self, name: str, payload: dict[str, Any], boot_id: str, now: float) -> list[tr.Draft]:
        if name == "agent":
            return tr.agent_frame(payload)
        if name == "chat":
            return tr.chat_frame(payload, max_text=self.config.max_text)
        if name == "session.tool":
            return tr.session_tool_frame(payload)
        if name == "sessions.changed":
            return tr.sessions_changed_frame(payload)
        if name == "health" and self.config.health_events:
            return [st.health_frame(payload, boot_id)]
        if name == "shutdown":
            return [st.shutdown_frame(payload, boot_id, int(now * 1000))]
        return []

    def offer(self, drafts: Iterable[tr.Draft], now: float) -> Step:
        """Drafts made elsewhere (the start-up snapshot, `unreachable`)."""
        events: list[Outgoing] = []
        history: list[str] = []
        for draft in drafts:
            offer = self.tracker.offer(draft, now)
            if offer.history is not None:
                history.append(offer.history)
            events.extend(self._finish(offer.ready, now))
        self._count()
        return Step(events, history)

    def transcript(self, session_key: str, prompt: str | None, now: float) -> Step:
        """A session's prompt (a user turn, live or from its history; None: none found, nothing
        decided): the runs held on that session go out, labelled when it is a bridge message."""
        if prompt is None:
            return Step([], [])
        step = Step(self._finish(self.tracker.transcript(session_key, self._bridge(prompt), now), now), [])
        self._count()
        return step

    def expire(self, now: float) -> Step:
        """Runs whose origin did not arrive within `origin_wait`: their events, without an origin;
        and the sessions of runs whose prompt is overdue, whose history to read."""
        step = Step(self._finish(self.tracker.expire(now), now), self.tracker.overdue(now))
        self._count()
        return step

    def is_held(self, run_id: str) -> bool:
        """Whether a run's events wait for its origin."""
        return self.tracker.is_held(run_id)

    # ------------------------------------------------------------ internals

    def _bridge(self, prompt: str) -> bool:
        return tr.carries_origin(prompt, self.origin)

    def _finish(self, ready: Iterable[Ready], now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        for draft, origin in ready:
            if draft.run_id is None and draft.type == st.GATEWAY_STATUS:
                placement = self.mapper.gateway_placement()
            else:
                placement = self.mapper.place(draft.agent_id, draft.session_key)
            if placement.fallback:
                self._error("topic_fallback")
            event = tr.finish(
                draft,
                gateway=self.gateway,
                source=self.config.source,
                placement=placement,
                origin=origin,
                now_ms=int(now * 1000),
            )
            assert event.id is not None
            if event.id in self._seen:
                if self.metrics is not None:
                    self.metrics.skipped.inc()
                continue
            try:
                complete(event)  # the server's own checks (time, size, depth), before it is queued
            except DashError as e:
                self._error("invalid_event")
                log.warning("dropping an invalid %s event: %s", event.type, e.message)
                continue
            self._seen[event.id] = None
            if len(self._seen) > SEEN_MAX:
                self._seen.popitem(last=False)
            out.append(Outgoing(event, self._attributes(draft), draft.ts_ms))
        return out

    def _attributes(self, draft: tr.Draft) -> Attributes:
        attributes: Attributes = {"openclaw.gateway": self.gateway}
        for key, value in (
            ("openclaw.run.id", draft.run_id),
            ("openclaw.session.key", draft.session_key),
            ("openclaw.agent.id", draft.agent_id),
        ):
            if value:
                attributes[key] = value
        return attributes

    def _error(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.translation_errors.labels(reason).inc()

    def _count(self) -> None:
        if self.metrics is None:
            return
        seen = self.tracker.runs_seen
        if seen > self._runs_counted:
            self.metrics.runs_seen.inc(seen - self._runs_counted)
            self._runs_counted = seen
        for outcome, n in self.tracker.outcomes.items():
            before = self._outcomes_counted.get(outcome, 0)
            if n > before:
                self.metrics.runs_origin.labels(outcome).inc(n - before)
                self._outcomes_counted[outcome] = n
        self.metrics.held_runs.set(self.tracker.held_runs)
