"""Live swarm state: a pure, bounded fold of the event log into "what is true now" per swarm.

`SwarmState.apply(record)` folds one bus record; `swarm()` / `swarms()` render frozen views. The
fold does no I/O and reads no clock: rates are bucketed by the second the bus accepted each event
(`Record.published_at`), and a view takes `now` as an argument.

Which events count (docs/protocol.md section 8, "Live swarm state"):

- The swarm of an event is the second segment of its topic: `swarm.<swarm>.<anything>...` (three
  segments or more). Events on other topics do not feed the state, whatever their
  `labels.swarm` or `data.swarm_id` say: topics are what ACLs protect, so a publisher can only
  change the state of swarms it may publish to, and a reader sees only swarms it may subscribe to.
- The agent of an event is `data.agent_id`, else `labels.agent`, else the segment after
  `agent` in `swarm.<swarm>.agent.<agent>...`.
- `agent.spawned|started|completed|failed|killed` set the agent's status (`spawned`, `running`,
  `completed`, `failed`, `killed`); any other `agent.*` type, and any event naming a known agent,
  refreshes its last event (a new agent seen first that way has status `unknown`).
- `swarm.status` sets the swarm's status (`data.status`, `data.message`, `data.agents`).
- `task.completed|failed` end a running task (`data.task_id`) and are counted; any other
  `task.*` type (`task.started`, `task.progress`, ...) marks the task running.
- `error`, `agent.failed` and `task.failed` become the swarm's `last_error`.
- Every event of the swarm counts towards its rate over the last minute.

Bounds (`StateLimits`): at most `max_swarms` swarms, `max_agents` agents and `max_tasks` running
tasks per swarm, each evicted least-recently-updated first (the view counts what was evicted);
texts are cut to `max_text` characters; a rate bucket counts at most `max_rate_types` types.

Position: the fold remembers, per partition, the newest position it applied (`position`), and
`apply` ignores a record at or before it, so folding overlapping history and live batches counts
every event once. A record of another epoch means the log was reset: the state starts afresh.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

import msgspec

from dash_stream.bus.base import Record
from dash_stream.bus.cursor import Cursor

RATE_WINDOW_S: Final = 60
AGENT_STATUSES: Final = ("spawned", "running", "completed", "failed", "killed", "unknown")
LIFECYCLE: Final[dict[str, str]] = {
    "agent.spawned": "spawned",
    "agent.started": "running",
    "agent.completed": "completed",
    "agent.failed": "failed",
    "agent.killed": "killed",
}
_TASK_ENDS: Final = frozenset({"task.completed", "task.failed"})
_ERROR_TYPES: Final = frozenset({"error", "agent.failed", "task.failed"})
_MAX_ID: Final = 128


class StateLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How much state one node keeps; every bound evicts the least recently updated entry."""

    max_swarms: int = 1000
    max_agents: int = 1000  # per swarm
    max_tasks: int = 1000  # running tasks per swarm
    max_text: int = 512  # characters kept of an error message or status message
    max_rate_types: int = 32  # event types counted per one-second bucket; more count as "other"


# ---------------------------------------------------------------- views (the wire shape)


class AgentView(msgspec.Struct, frozen=True, kw_only=True):
    """One agent: its lifecycle status and its last event."""

    agent_id: str
    status: str
    last_type: str
    last_event_time: str
    last_offset: str
    session_key: str | None = None
    reason: str | None = None


class TaskView(msgspec.Struct, frozen=True, kw_only=True):
    """A running task."""

    task_id: str
    agent_id: str | None = None
    started_time: str
    last_event_time: str
    last_offset: str


class ErrorView(msgspec.Struct, frozen=True, kw_only=True):
    """The last `error`, `agent.failed` or `task.failed` event of a swarm."""

    type: str
    message: str
    time: str
    offset: str
    priority: str = "normal"
    agent_id: str | None = None
    task_id: str | None = None


class RateView(msgspec.Struct, frozen=True, kw_only=True):
    """Events of a swarm over the last `window_s` seconds; `series` counts per second, oldest first."""

    window_s: int = RATE_WINDOW_S
    events: int
    per_s: float
    by_type: dict[str, int]
    series: list[int]


class SwarmView(msgspec.Struct, frozen=True, kw_only=True):
    """The state of one swarm as of the fold position."""

    swarm_id: str
    status: str | None = None
    status_message: str | None = None
    status_time: str | None = None
    expected_agents: int | None = None
    agent_counts: dict[str, int]
    agents: list[AgentView]
    tasks_running: list[TaskView]
    tasks_completed: int
    tasks_failed: int
    last_error: ErrorView | None = None
    rates: RateView
    events: int
    last_event_time: str
    last_offset: str
    evicted_agents: int = 0
    evicted_tasks: int = 0


# ---------------------------------------------------------------- mutable fold state


class _Agent:
    __slots__ = ("agent_id", "last_offset", "last_time", "last_type", "reason", "session_key", "status")

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.status = "unknown"
        self.last_type = ""
        self.last_time = ""
        self.last_offset = ""
        self.session_key: str | None = None
        self.reason: str | None = None


class _Task:
    __slots__ = ("agent_id", "last_offset", "last_time", "started_time", "task_id")

    def __init__(self, task_id: str, agent_id: str | None, time: str) -> None:
        self.task_id = task_id
        self.agent_id = agent_id
        self.started_time = time
        self.last_time = time
        self.last_offset = ""


class _Swarm:
    __slots__ = (
        "agents",
        "bucket_count",
        "bucket_sec",
        "bucket_types",
        "events",
        "evicted_agents",
        "evicted_tasks",
        "expected_agents",
        "last_error",
        "last_offset",
        "last_time",
        "status",
        "status_message",
        "status_time",
        "swarm_id",
        "tasks",
        "tasks_completed",
        "tasks_failed",
    )

    def __init__(self, swarm_id: str) -> None:
        self.swarm_id = swarm_id
        self.status: str | None = None
        self.status_message: str | None = None
        self.status_time: str | None = None
        self.expected_agents: int | None = None
        self.agents: OrderedDict[str, _Agent] = OrderedDict()
        self.tasks: OrderedDict[str, _Task] = OrderedDict()
        self.tasks_completed = 0
        self.tasks_failed = 0
        self.last_error: ErrorView | None = None
        self.events = 0
        self.last_time = ""
        self.last_offset = ""
        self.evicted_agents = 0
        self.evicted_tasks = 0
        # one bucket per second of the window, reused round-robin (index = second % window)
        self.bucket_sec = [-1] * RATE_WINDOW_S
        self.bucket_count = [0] * RATE_WINDOW_S
        self.bucket_types: list[dict[str, int]] = [{} for _ in range(RATE_WINDOW_S)]


def _ident(value: Any) -> str | None:
    """An id from a payload: a non-empty string (or an integer) of at most 128 characters."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str) and 0 < len(value) <= _MAX_ID:
        return value
    return None


def swarm_of_topic(topic: str) -> str | None:
    """The swarm a topic belongs to: `swarm.<swarm>.…` with at least three segments."""
    if not topic.startswith("swarm."):
        return None
    parts = topic.split(".", 3)
    return parts[1] if len(parts) >= 3 else None


class SwarmState:
    """The fold; see the module docstring."""

    def __init__(self, limits: StateLimits | None = None) -> None:
        self.limits = limits or StateLimits()
        self._swarms: OrderedDict[str, _Swarm] = OrderedDict()
        self.epoch: str | None = None
        self.positions: dict[int, int] = {}
        self.evicted_swarms = 0

    # ------------------------------------------------------------ position

    @property
    def position(self) -> Cursor | None:
        """The cursor of everything folded so far (None before the first record or seek)."""
        if self.epoch is None:
            return None
        return Cursor(self.epoch, dict(self.positions))

    def reset(self) -> None:
        """Forget everything (the log was reset)."""
        self._swarms.clear()
        self.epoch = None
        self.positions = {}

    def seek(self, cursor: Cursor) -> None:
        """Move the position to `cursor` after folding everything before it (a history page's end)."""
        if cursor.epoch != self.epoch:
            self.reset()
            self.epoch = cursor.epoch
        positions = self.positions
        for p, pos in cursor.positions.items():
            if positions.get(p, -1) < pos:
                positions[p] = pos

    def covers(self, record: Record) -> bool:
        """Whether `record` is already folded."""
        epoch = record.offset.partition(".")[0]
        return epoch == self.epoch and record.position <= self.positions.get(record.partition, -1)

    # ------------------------------------------------------------ fold

    def apply(self, record: Record) -> bool:
        """Fold one record; False (and nothing changes) when the position already covers it."""
        epoch = record.offset.partition(".")[0]
        if epoch != self.epoch:
            if self.epoch is not None:
                self.reset()
            self.epoch = epoch
        partition = record.partition
        if record.position <= self.positions.get(partition, -1):
            return False
        self.positions[partition] = record.position
        swarm_id = swarm_of_topic(record.event.topic)
        if swarm_id is not None:
            self._fold(self._swarm(swarm_id), record)
        return True

    def _swarm(self, swarm_id: str) -> _Swarm:
        swarms = self._swarms
        swarm = swarms.get(swarm_id)
        if swarm is None:
            swarm = swarms[swarm_id] = _Swarm(swarm_id)
            while len(swarms) > self.limits.max_swarms:
                swarms.popitem(last=False)
                self.evicted_swarms += 1
        else:
            swarms.move_to_end(swarm_id)
        return swarm

    def _fold(self, swarm: _Swarm, record: Record) -> None:
        ev = record.event
        kind = ev.type
        data: dict[str, Any] = ev.data if isinstance(ev.data, dict) else {}
        swarm.events += 1
        swarm.last_time = ev.time
        swarm.last_offset = record.offset
        self._count(swarm, kind, record.published_at)
        agent_id = _ident(data.get("agent_id")) or _ident(ev.labels.get("agent"))
        if agent_id is None:
            parts = ev.topic.split(".", 5)
            if len(parts) >= 4 and parts[2] == "agent":
                agent_id = _ident(parts[3])
        if agent_id is not None:
            agent = swarm.agents.get(agent_id)
            if agent is None and kind.startswith("agent."):
                agent = self._new_agent(swarm, agent_id)
            if agent is not None:
                swarm.agents.move_to_end(agent_id)
                agent.last_type = kind
                agent.last_time = ev.time
                agent.last_offset = record.offset
                status = LIFECYCLE.get(kind)
                if status is not None:
                    agent.status = status
                    session_key = _ident(data.get("session_key"))
                    if session_key is not None:
                        agent.session_key = session_key
                    agent.reason = self._text(data.get("error") or data.get("reason"))
        if kind == "swarm.status":
            status_value = data.get("status")
            if isinstance(status_value, str) and status_value:
                swarm.status = status_value[:32]
            swarm.status_message = self._text(data.get("message"))
            swarm.status_time = ev.time
            expected = data.get("agents")
            if isinstance(expected, int) and not isinstance(expected, bool):
                swarm.expected_agents = expected
        elif kind.startswith("task."):
            self._task(swarm, kind, data, agent_id, record)
        if kind in _ERROR_TYPES:
            message = self._text(data.get("message") or data.get("error") or data.get("reason"))
            if message is None and isinstance(ev.data, str):
                message = self._text(ev.data)
            swarm.last_error = ErrorView(
                type=kind,
                message=message or kind.replace(".", " "),
                time=ev.time,
                offset=record.offset,
                priority=ev.priority,
                agent_id=agent_id,
                task_id=_ident(data.get("task_id")),
            )

    def _new_agent(self, swarm: _Swarm, agent_id: str) -> _Agent:
        agent = swarm.agents[agent_id] = _Agent(agent_id)
        while len(swarm.agents) > self.limits.max_agents:
            swarm.agents.popitem(last=False)
            swarm.evicted_agents += 1
        return agent

    def _task(
        self, swarm: _Swarm, kind: str, data: dict[str, Any], agent_id: str | None, record: Record
    ) -> None:
        task_id = _ident(data.get("task_id"))
        if kind in _TASK_ENDS:
            if kind == "task.completed":
                swarm.tasks_completed += 1
            else:
                swarm.tasks_failed += 1
            if task_id is not None:
                swarm.tasks.pop(task_id, None)
            return
        if task_id is None:
            return
        task = swarm.tasks.get(task_id)
        if task is None:
            task = swarm.tasks[task_id] = _Task(task_id, agent_id, record.event.time)
            while len(swarm.tasks) > self.limits.max_tasks:
                swarm.tasks.popitem(last=False)
                swarm.evicted_tasks += 1
        else:
            swarm.tasks.move_to_end(task_id)
            if agent_id is not None:
                task.agent_id = agent_id
        task.last_time = record.event.time
        task.last_offset = record.offset

    def _count(self, swarm: _Swarm, kind: str, published_at: float) -> None:
        second = int(published_at)
        index = second % RATE_WINDOW_S
        held = swarm.bucket_sec[index]
        if held > second:  # older than the window this bucket now holds: out of the last minute
            return
        if held < second:
            swarm.bucket_sec[index] = second
            swarm.bucket_count[index] = 0
            swarm.bucket_types[index] = {}
        swarm.bucket_count[index] += 1
        types = swarm.bucket_types[index]
        if kind not in types and len(types) >= self.limits.max_rate_types:
            kind = "other"
        types[kind] = types.get(kind, 0) + 1

    def _text(self, value: Any) -> str | None:
        if not isinstance(value, str) or not value:
            return None
        return value[: self.limits.max_text]

    # ------------------------------------------------------------ views

    def __len__(self) -> int:
        return len(self._swarms)

    def __contains__(self, swarm_id: object) -> bool:
        return swarm_id in self._swarms

    def swarm_ids(self) -> list[str]:
        """The ids of every swarm held, sorted."""
        return sorted(self._swarms)

    def swarm(self, swarm_id: str, now: float, *, agents: bool = True) -> SwarmView | None:
        """The view of one swarm (None when unknown); `agents=False` leaves the agent list empty."""
        swarm = self._swarms.get(swarm_id)
        return None if swarm is None else self._view(swarm, now, agents)

    def swarms(
        self, now: float, swarm_ids: list[str] | None = None, *, agents: bool = True
    ) -> list[SwarmView]:
        """Views of the given swarms (default: all), sorted by id, skipping unknown ids."""
        ids = self.swarm_ids() if swarm_ids is None else sorted(set(swarm_ids))
        return [self._view(self._swarms[s], now, agents) for s in ids if s in self._swarms]

    def _view(self, swarm: _Swarm, now: float, with_agents: bool) -> SwarmView:
        counts = dict.fromkeys(AGENT_STATUSES, 0)
        for agent in swarm.agents.values():
            counts[agent.status] = counts.get(agent.status, 0) + 1
        agent_views = (
            [
                AgentView(
                    agent_id=a.agent_id,
                    status=a.status,
                    last_type=a.last_type,
                    last_event_time=a.last_time,
                    last_offset=a.last_offset,
                    session_key=a.session_key,
                    reason=a.reason,
                )
                for a in sorted(swarm.agents.values(), key=lambda a: a.agent_id)
            ]
            if with_agents
            else []
        )
        tasks = [
            TaskView(
                task_id=t.task_id,
                agent_id=t.agent_id,
                started_time=t.started_time,
                last_event_time=t.last_time,
                last_offset=t.last_offset,
            )
            for t in swarm.tasks.values()
        ]
        return SwarmView(
            swarm_id=swarm.swarm_id,
            status=swarm.status,
            status_message=swarm.status_message,
            status_time=swarm.status_time,
            expected_agents=swarm.expected_agents,
            agent_counts=counts,
            agents=agent_views,
            tasks_running=tasks,
            tasks_completed=swarm.tasks_completed,
            tasks_failed=swarm.tasks_failed,
            last_error=swarm.last_error,
            rates=_rates(swarm, now),
            events=swarm.events,
            last_event_time=swarm.last_time,
            last_offset=swarm.last_offset,
            evicted_agents=swarm.evicted_agents,
            evicted_tasks=swarm.evicted_tasks,
        )


def _rates(swarm: _Swarm, now: float) -> RateView:
    """Counts of the `RATE_WINDOW_S` whole seconds ending with the second of `now`."""
    last = int(now)
    series: list[int] = []
    by_type: dict[str, int] = {}
    for second in range(last - RATE_WINDOW_S + 1, last + 1):
        index = second % RATE_WINDOW_S
        if swarm.bucket_sec[index] == second:
            series.append(swarm.bucket_count[index])
            for kind, n in swarm.bucket_types[index].items():
                by_type[kind] = by_type.get(kind, 0) + n
        else:
            series.append(0)
    total = sum(series)
    return RateView(
        events=total,
        per_s=round(total / RATE_WINDOW_S, 3),
        by_type=dict(sorted(by_type.items())),
        series=series,
    )
