"""The runs in flight: which events of a run may be published now, and with which `origin` label.

Loop safety needs each run's origin before its events leave: a run the event bridge triggered
(its prompt carries the bridge's origin marker, see `translate.carries_origin`) is labelled
`origin=<marker>`, and the bridge never forwards such events. The gateway sends a run's lifecycle
`start` *before* the transcript row that shows its prompt, so the tracker holds a run's events
until one of these decides:

1. the prompt (`session.message`, user turn) of the run's session arrives (milliseconds later);
2. the answer to a `chat.history` the watcher sends for a run first seen mid-way (a watcher
   started or reconnected while the run was going): at once when its first frame is not a
   `start` (`Offer.history`), else when its prompt has not come within `ask_s` (`overdue`);
3. for runs without a transcript (a main session's heartbeat or system-event turn, seen only
   through `sessions.changed`): inheritance, the origin of the same agent's bridge-triggered run
   that was active within `inherit_s` (such turns are what a bridge message's run leaves behind);
4. `wait_s` passes: published without an origin (counted as `unresolved`).

A run first seen after its start also gets its `agent.started` (`translate.late_start`), with the
id of the real one, so whichever watcher saw the start, the server keeps exactly one.

Pure: time is an argument, no I/O; every map is bounded (oldest forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from dash_stream.openclaw.translate import START, Draft, late_start


class Ready(NamedTuple):
    """A draft that may be published now, and its run's origin (None: not a bridge run)."""

    draft: Draft
    origin: str | None


class Offer(NamedTuple):
    """What offering a draft gave: drafts ready now, and a session whose history to fetch."""

    ready: list[Ready]
    history: str | None = None


class _Run:
    __slots__ = ("agent_id", "ask_at", "deadline", "origin", "pending", "resolved", "session_key")

    def __init__(self, agent_id: str | None, session_key: str | None) -> None:
        self.agent_id = agent_id
        self.session_key = session_key
        self.origin: str | None = None
        self.resolved = False
        self.pending: list[Draft] = []
        self.deadline = 0.0
        self.ask_at = 0.0  # when to read the session's history if its prompt has not come by then


class RunTracker:
    """Holds each run's drafts until its origin is known; see the module docstring."""

    def __init__(
        self,
        *,
        origin: str,
        wait_s: float = 2.0,
        ask_s: float = 0.3,
        inherit_s: float = 30.0,
        remember_s: float = 120.0,
        max_runs: int = 10_000,
        max_sessions: int = 10_000,
        max_pending: int = 256,
    ) -> None:
        """`origin` is the bridge's marker; `ask_s` how long to wait for a run's prompt before asking for
        its session's history; `remember_s` how long a session's prompt decides new runs."""
        self.origin = origin
        self.wait_s = wait_s
        self.ask_s = ask_s
        self.inherit_s = inherit_s
        self.remember_s = remember_s
        self.max_runs = max_runs
        self.max_sessions = max_sessions
        self.max_pending = max_pending
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._held: dict[str, _Run] = {}  # run id -> unresolved run, in arrival order
        self._sessions: OrderedDict[str, tuple[bool, float]] = OrderedDict()  # key -> (bridge?, when)
        self._bridge_active: dict[str, float] = {}  # agent id -> last time a bridge run of it had news
        self.runs_seen = 0
        self.outcomes: dict[str, int] = {"bridge": 0, "other": 0, "inherited": 0, "unresolved": 0}

    @property
    def held_runs(self) -> int:
        """Runs whose drafts wait for their origin."""
        return len(self._held)

    def is_held(self, run_id: str) -> bool:
        """Whether a run's drafts wait for its origin."""
        return run_id in self._held

    def offer(self, draft: Draft, now: float) -> Offer:
        """Take one draft; the drafts that may go out now (this one, or a run's held ones)."""
        if draft.run_id is None:
            return Offer([Ready(draft, None)])
        run = self._runs.get(draft.run_id)
        history: str | None = None
        ready: list[Ready] = []
        drafts = [draft]
        if run is None:
            run, ready = self._new_run(draft, now)
            if draft.key != START:
                drafts.insert(0, late_start(draft))
                if not run.resolved and draft.session_key:
                    history = draft.session_key  # its prompt went by before we were here
        else:
            self._runs.move_to_end(draft.run_id)
        if run.resolved:
            if run.origin is not None and run.agent_id is not None:
                self._bridge_active[run.agent_id] = now
            ready.extend(Ready(d, run.origin) for d in drafts)
            return Offer(ready, None)
        run.pending.extend(drafts)
        if len(run.pending) > self.max_pending:
            ready.extend(self._resolve(draft.run_id, run, None, "unresolved", now))
        return Offer(ready, history)

    def transcript(self, session_key: str, bridge: bool, now: float) -> list[Ready]:
        """A user turn (prompt) of `session_key` was seen: decide the runs held on that session."""
        self._sessions[session_key] = (bridge, now)
        self._sessions.move_to_end(session_key)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        ready: list[Ready] = []
        for run_id, run in list(self._held.items()):
            if run.session_key == session_key:
                origin = self.origin if bridge else None
                ready.extend(self._resolve(run_id, run, origin, "bridge" if bridge else "other", now))
        return ready

    def expire(self, now: float) -> list[Ready]:
        """Publish, without an origin, the runs whose origin did not arrive within `wait_s`."""
        ready: list[Ready] = []
        for run_id, run in list(self._held.items()):
            if run.deadline <= now:
                ready.extend(self._resolve(run_id, run, None, "unresolved", now))
        return ready

    def overdue(self, now: float) -> list[str]:
        """Sessions of runs held `ask_s` without their prompt: read their history (asked once per run).

        A run whose first frame we saw was a retry's repeated `start` (a watcher that connected
        mid-run cannot tell it from the first one) never gets its prompt live.
        """
        keys: list[str] = []
        for run in self._held.values():
            if run.ask_at and run.ask_at <= now:
                run.ask_at = 0.0
                if run.session_key and run.session_key not in keys:
                    keys.append(run.session_key)
        return keys

    # ------------------------------------------------------------ internals

    def _new_run(self, draft: Draft, now: float) -> tuple[_Run, list[Ready]]:
        assert draft.run_id is not None
        run = _Run(draft.agent_id, draft.session_key)
        self._runs[draft.run_id] = run
        self.runs_seen += 1
        ready: list[Ready] = []
        while len(self._runs) > self.max_runs:
            old_id, old = self._runs.popitem(last=False)
            if not old.resolved:
                ready.extend(self._resolve(old_id, old, None, "unresolved", now))
        known = self._sessions.get(draft.session_key or "")
        if known is not None and now - known[1] <= self.remember_s:
            self._settle(run, self.origin if known[0] else None, "bridge" if known[0] else "other", now)
        elif not draft.transcript:
            since = self._bridge_active.get(draft.agent_id or "")
            inherited = since is not None and now - since <= self.inherit_s
            self._settle(run, self.origin if inherited else None, "inherited" if inherited else "other", now)
        else:
            run.deadline = now + self.wait_s
            run.ask_at = now + self.ask_s if draft.key == START else 0.0  # later firsts ask at once
            self._held[draft.run_id] = run
        return run, ready

    def _settle(self, run: _Run, origin: str | None, outcome: str, now: float) -> None:
        run.resolved = True
        run.origin = origin
        self.outcomes[outcome] += 1
        if origin is not None and run.agent_id is not None:
            self._bridge_active[run.agent_id] = now
            if len(self._bridge_active) > self.max_sessions:
                self._bridge_active.pop(next(iter(self._bridge_active)))

    def _resolve(self, run_id: str, run: _Run, origin: str | None, outcome: str, now: float) -> list[Ready]:
        self._held.pop(run_id, None)
        if run.resolved:
            return []
        self._settle(run, origin, outcome, now)
        pending, run.pending = run.pending, []
        return [Ready(d, origin) for d in pending]
