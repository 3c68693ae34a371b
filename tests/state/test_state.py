"""The pure fold `dash_stream.state.SwarmState`: what each event type does, bounds, position, rates."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from dash_stream.bus.base import Record
from dash_stream.bus.cursor import Cursor
from dash_stream.events import Event
from dash_stream.state import RATE_WINDOW_S, StateLimits, SwarmState, swarm_of_topic

NOW = 1_800_000_000.0


def rec(
    topic: str,
    type_: str,
    data: Any = None,
    *,
    pos: int,
    partition: int = 0,
    epoch: str = "e1",
    at: float = NOW,
    labels: dict[str, str] | None = None,
    priority: str = "normal",
) -> Record:
    """A bus record at `partition`-`pos`, accepted at unix time `at`."""
    event = Event(
        id=f"i{partition}-{pos}",
        topic=topic,
        type=type_,
        source="test",
        time=f"2027-01-15T08:00:{pos % 60:02d}Z",
        priority=priority,  # type: ignore[arg-type]
        labels=labels or {},
        data=data,
    )
    return Record(event, partition, pos, f"{epoch}.{partition}-{pos}", b"{}", at)


class Feed:
    """Numbers records as a bus would."""

    def __init__(self, epoch: str = "e1") -> None:
        self.pos = 0
        self.epoch = epoch

    def __call__(self, topic: str, type_: str, data: Any = None, **kw: Any) -> Record:
        self.pos += 1
        return rec(topic, type_, data, pos=self.pos, epoch=self.epoch, **kw)


def fold(*records: Record, limits: StateLimits | None = None) -> SwarmState:
    state = SwarmState(limits)
    for r in records:
        state.apply(r)
    return state


def test_topic_convention_names_the_swarm() -> None:
    assert swarm_of_topic("swarm.s1.agent.a7") == "s1"
    assert swarm_of_topic("swarm.s1.status") == "s1"
    assert swarm_of_topic("swarm.s1") is None
    assert swarm_of_topic("agents.s1.x") is None


def test_lifecycle_events_set_agent_status_and_counts() -> None:
    f = Feed()
    state = fold(
        f("swarm.s1.agent.a1", "agent.spawned", {"agent_id": "a1", "session_key": "hook:a1"}),
        f("swarm.s1.agent.a1", "agent.started", {"agent_id": "a1"}),
        f("swarm.s1.agent.a2", "agent.spawned", {"agent_id": "a2"}),
        f("swarm.s1.agent.a3", "agent.started", {"agent_id": "a3"}),
        f("swarm.s1.agent.a3", "agent.completed", {"agent_id": "a3"}),
        f("swarm.s1.agent.a4", "agent.failed", {"agent_id": "a4", "error": "oom"}),
        f("swarm.s1.agent.a5", "agent.killed", {"agent_id": "a5", "reason": "operator"}),
    )
    view = state.swarm("s1", NOW)
    assert view is not None
    assert view.agent_counts == {
        "spawned": 1,
        "running": 1,
        "completed": 1,
        "failed": 1,
        "killed": 1,
        "unknown": 0,
    }
    agents = {a.agent_id: a for a in view.agents}
    assert [a.agent_id for a in view.agents] == ["a1", "a2", "a3", "a4", "a5"]
    assert agents["a1"].session_key == "hook:a1" and agents["a1"].last_type == "agent.started"
    assert agents["a4"].reason == "oom" and agents["a5"].reason == "operator"
    assert agents["a1"].last_offset == "e1.0-2"
    assert view.events == 7 and view.last_offset == "e1.0-7"


def test_agent_id_comes_from_data_then_labels_then_topic() -> None:
    f = Feed()
    state = fold(
        f("swarm.s1.agent.fromtopic", "agent.started"),
        f("swarm.s1.agents", "agent.started", None, labels={"agent": "fromlabel"}),
        f("swarm.s1.agent.ignored", "agent.started", {"agent_id": "fromdata"}),
    )
    view = state.swarm("s1", NOW)
    assert view is not None
    assert {a.agent_id for a in view.agents} == {"fromtopic", "fromlabel", "fromdata"}


def test_only_swarm_topics_feed_the_state_whatever_labels_or_data_claim() -> None:
    f = Feed()
    state = fold(
        f("team.x.agent.a1", "agent.started", {"agent_id": "a1", "swarm_id": "s1"}, labels={"swarm": "s1"}),
        f("swarm.s2.agent.a1", "agent.started", {"agent_id": "a1", "swarm_id": "other"}),
    )
    assert state.swarm_ids() == ["s2"]
    assert state.position == Cursor("e1", {0: 2}), "every record moves the position"


def test_other_agent_types_refresh_the_agent_and_unknown_agents_start_unknown() -> None:
    f = Feed()
    state = fold(
        f("swarm.s1.agent.a1", "agent.started", {"agent_id": "a1"}),
        f("swarm.s1.agent.a1", "agent.heartbeat", {"agent_id": "a1"}),
        f("swarm.s1.agent.a2", "agent.heartbeat", {"agent_id": "a2"}),
        f("swarm.s1.metrics", "metrics", {"agent_id": "a9", "values": {}}),
    )
    view = state.swarm("s1", NOW)
    assert view is not None
    agents = {a.agent_id: a for a in view.agents}
    assert agents["a1"].status == "running" and agents["a1"].last_type == "agent.heartbeat"
    assert agents["a2"].status == "unknown"
    assert "a9" not in agents, "a non-agent event does not create an agent"


def test_swarm_status_tasks_and_last_error() -> None:
    f = Feed()
    state = fold(
        f(
            "swarm.s1.status",
            "swarm.status",
            {"swarm_id": "s1", "status": "up", "agents": 3, "message": "ok"},
        ),
        f("swarm.s1.task.t1", "task.started", {"task_id": "t1", "agent_id": "a1"}),
        f("swarm.s1.task.t2", "task.started", {"task_id": "t2"}),
        f("swarm.s1.task.t3", "task.progress", {"task_id": "t3", "agent_id": "a2"}),
        f("swarm.s1.task.t1", "task.completed", {"task_id": "t1"}),
        f("swarm.s1.task.t2", "task.failed", {"task_id": "t2", "error": "timeout"}),
        f("swarm.s1.errors", "error", {"message": "x" * 2000, "agent_id": "a2"}, priority="critical"),
        f("swarm.s1.status", "swarm.status", {"swarm_id": "s1", "status": "degraded"}),
    )
    view = state.swarm("s1", NOW)
    assert view is not None
    assert (view.status, view.status_message, view.expected_agents) == ("degraded", None, 3)
    assert [t.task_id for t in view.tasks_running] == ["t3"]
    assert (view.tasks_completed, view.tasks_failed) == (1, 1)
    error = view.last_error
    assert error is not None
    assert error.type == "error" and error.priority == "critical" and error.agent_id == "a2"
    assert len(error.message) == StateLimits().max_text


def test_failed_tasks_and_agents_become_the_last_error() -> None:
    f = Feed()
    state = fold(f("swarm.s1.task.t2", "task.failed", {"task_id": "t2", "error": "timeout"}))
    view = state.swarm("s1", NOW)
    assert view is not None and view.last_error is not None
    assert (view.last_error.type, view.last_error.message, view.last_error.task_id) == (
        "task.failed",
        "timeout",
        "t2",
    )
    state.apply(f("swarm.s1.agent.a1", "agent.failed", {"agent_id": "a1"}))
    view = state.swarm("s1", NOW)
    assert view is not None and view.last_error is not None
    assert (view.last_error.type, view.last_error.message) == ("agent.failed", "agent failed")


def test_apply_counts_each_record_once_and_a_new_epoch_starts_afresh() -> None:
    f = Feed()
    records = [f("swarm.s1.agent.a1", "agent.started", {"agent_id": "a1"}) for _ in range(5)]
    state = fold(*records)
    assert [state.apply(r) for r in records[2:]] == [False, False, False]
    view = state.swarm("s1", NOW)
    assert view is not None and view.events == 5
    assert state.covers(records[4])
    fresh = rec("swarm.s2.agent.b", "agent.spawned", {"agent_id": "b"}, pos=1, epoch="e2")
    assert state.apply(fresh)
    assert state.swarm_ids() == ["s2"] and state.position == Cursor("e2", {0: 1})


def test_seek_moves_the_position_and_a_foreign_epoch_resets() -> None:
    state = fold(rec("swarm.s1.agent.a", "agent.started", pos=3))
    state.seek(Cursor("e1", {0: 10, 1: 4}))
    assert state.position == Cursor("e1", {0: 10, 1: 4})
    assert not state.apply(rec("swarm.s1.agent.a", "agent.started", pos=9))
    state.seek(Cursor("e9", {0: 1}))
    assert len(state) == 0 and state.position == Cursor("e9", {0: 1})


def test_positions_are_kept_per_partition() -> None:
    state = SwarmState()
    assert state.apply(rec("swarm.s1.a.x", "t", pos=100, partition=0))
    assert state.apply(rec("swarm.s1.a.x", "t", pos=5, partition=1))
    assert not state.apply(rec("swarm.s1.a.x", "t", pos=99, partition=0))
    assert state.position == Cursor("e1", {0: 100, 1: 5})


def test_rates_count_the_last_minute_by_second_and_type() -> None:
    f = Feed()
    state = fold(
        f("swarm.s1.a.b", "metrics", at=NOW - 120),  # out of the window
        f("swarm.s1.a.b", "metrics", at=NOW - 58.8),  # second NOW-59: the oldest in the window
        f("swarm.s1.a.b", "metrics", at=NOW - 1),
        f("swarm.s1.a.b", "agent.started", at=NOW - 1),
        f("swarm.s1.a.b", "agent.started", at=NOW),
    )
    view = state.swarm("s1", NOW + 0.5)
    assert view is not None
    rates = view.rates
    assert rates.window_s == RATE_WINDOW_S and len(rates.series) == RATE_WINDOW_S
    assert rates.events == 4 and rates.series[-1] == 1 and rates.series[-2] == 2 and rates.series[0] == 1
    assert rates.by_type == {"agent.started": 2, "metrics": 2}
    assert rates.per_s == round(4 / 60, 3)
    later_view = state.swarm("s1", NOW + 61)
    assert later_view is not None and later_view.rates.events == 0


def test_a_late_record_older_than_the_window_does_not_count() -> None:
    f = Feed()
    state = fold(f("swarm.s1.a.b", "metrics", at=NOW), f("swarm.s1.a.b", "metrics", at=NOW - RATE_WINDOW_S))
    view = state.swarm("s1", NOW)
    assert view is not None and view.rates.events == 1 and view.events == 2


def test_rate_types_are_bounded() -> None:
    f = Feed()
    state = fold(*(f("swarm.s1.a.b", f"kind.{i}") for i in range(5)), limits=StateLimits(max_rate_types=3))
    view = state.swarm("s1", NOW)
    assert view is not None
    assert view.rates.by_type == {"kind.0": 1, "kind.1": 1, "kind.2": 1, "other": 2}


def test_swarms_agents_and_tasks_are_bounded_least_recently_updated_first() -> None:
    f = Feed()
    limits = StateLimits(max_swarms=2, max_agents=2, max_tasks=1)
    state = fold(
        f("swarm.s1.x.y", "metrics"),
        f("swarm.s2.x.y", "metrics"),
        f("swarm.s1.x.y", "metrics"),  # s1 is now the more recent
        f("swarm.s3.x.y", "metrics"),  # evicts s2
        f("swarm.s3.agent.a1", "agent.started"),
        f("swarm.s3.agent.a2", "agent.started"),
        f("swarm.s3.agent.a1", "agent.completed"),
        f("swarm.s3.agent.a3", "agent.started"),  # evicts a2
        f("swarm.s3.task.t1", "task.started", {"task_id": "t1"}),
        f("swarm.s3.task.t2", "task.started", {"task_id": "t2"}),  # evicts t1
        limits=limits,
    )
    assert state.swarm_ids() == ["s1", "s3"] and state.evicted_swarms == 1
    view = state.swarm("s3", NOW)
    assert view is not None
    assert [a.agent_id for a in view.agents] == ["a1", "a3"] and view.evicted_agents == 1
    assert [t.task_id for t in view.tasks_running] == ["t2"] and view.evicted_tasks == 1


def test_views_without_agents_keep_the_counts() -> None:
    f = Feed()
    state = fold(f("swarm.s1.agent.a1", "agent.started"), f("swarm.s0.agent.a1", "agent.started"))
    views = state.swarms(NOW, agents=False)
    assert [v.swarm_id for v in views] == ["s0", "s1"]
    assert all(v.agents == [] and v.agent_counts["running"] == 1 for v in views)
    assert state.swarms(NOW, ["s1", "nope"])[0].swarm_id == "s1"
    assert state.swarm("nope", NOW) is None


_TYPES = ["agent.spawned", "agent.started", "agent.failed", "task.started", "task.completed", "error", "x"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["s1", "s2"]), st.sampled_from(["a1", "a2", "a3"]), st.sampled_from(_TYPES)
        ),
        min_size=1,
        max_size=40,
    ),
    st.lists(st.tuples(st.integers(1, 8), st.integers(0, 10)), max_size=8),
)
def test_overlapping_deliveries_fold_to_the_same_state_as_one_pass(
    spec: list[tuple[str, str, str]], chunks: list[tuple[int, int]]
) -> None:
    """History pages and live batches overlap (buffer-then-merge): in log order, but a delivery may
    repeat a stretch already folded. Folding the overlaps changes nothing."""
    records = [
        rec(f"swarm.{s}.agent.{a}", t, {"agent_id": a, "task_id": f"t{i % 4}"}, pos=i + 1, at=NOW - (40 - i))
        for i, (s, a, t) in enumerate(spec)
    ]
    once = fold(*records)
    messy = SwarmState()
    delivered = 0
    for size, overlap in chunks:
        start = max(0, delivered - overlap)
        for r in records[start : delivered + size]:
            messy.apply(r)
        delivered = min(len(records), delivered + size)
    for r in records[max(0, delivered - 3) :]:
        messy.apply(r)
    as_doc = msgspec.to_builtins
    assert as_doc(messy.swarms(NOW)) == as_doc(once.swarms(NOW))
    assert messy.position == once.position
