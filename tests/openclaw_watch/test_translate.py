"""Pure translation: recorded gateway frames through the watcher's pipeline, no I/O, no sleeps."""

from __future__ import annotations

import msgspec

from dash_stream.events import TOPIC_REGEX, WELL_KNOWN
from dash_stream.openclaw import status as st
from dash_stream.openclaw import translate as tr
from dash_stream.openclaw.pipeline import Pipeline
from dash_stream.openclaw.runs import RunTracker

from .watch_support import config, frames, of_type, replay


def types(events: list[object]) -> list[str]:
    return [e.type for e in events]  # type: ignore[attr-defined]


def test_a_hook_run_becomes_started_message_completed_with_labels() -> None:
    events = replay(frames("plain"))

    run = [e for e in events if e.type.startswith("agent.")]
    # the gateway sends the lifecycle end before the final chat message
    assert types(run) == ["agent.started", "agent.completed", "agent.message"]
    started, completed, message = run
    assert started.topic == "openclaw.main.cron"
    assert started.source == "openclaw/gw1"
    session = started.data["session_key"]
    assert session.startswith("agent:main:cron:") and ":run:" in session
    assert started.labels == {"gateway": "gw1", "swarm": "gw1", "agent": "main", "session": session}
    assert started.priority == completed.priority == "normal"
    assert message.data["text"] == "OK"
    assert completed.data["stop_reason"] == "stop" and completed.data["duration_ms"] >= 0
    assert started.time.endswith("Z") and started.time < completed.time
    assert len({e.data["run_id"] for e in run}) == 1


def test_agent_events_fit_the_well_known_agent_schema() -> None:
    for event in replay(frames("plain", "fail400", "fail500", "tool")):
        schema = WELL_KNOWN.get(event.type)
        if schema is not None:
            msgspec.convert(event.data, schema)  # what `serve --strict-types` checks


def test_a_tool_call_becomes_one_low_priority_event_per_step() -> None:
    events = replay(frames("tool"))

    tools = of_type(events, "agent.tool")
    # `item` (kind tool) and `session.tool` both report each step: one event per step survives
    assert [(t.data["phase"], t.data["tool"]) for t in tools] == [("start", "ls"), ("end", "ls")]
    assert {t.priority for t in tools} == {"low"}
    assert tools[0].data["tool_call_id"] == "call_1"
    assert types([e for e in events if e.type.startswith("agent.")]) == [
        "agent.started",
        "agent.tool",
        "agent.tool",
        "agent.completed",
        "agent.message",
    ]


def test_a_provider_error_gives_one_high_priority_failure_and_no_completion() -> None:
    events = replay(frames("fail400"))

    [failed] = of_type(events, "agent.failed")
    assert failed.priority == "high"
    assert failed.data["error"].startswith("LLM request failed")
    assert failed.data["failure_kind"] == "format"
    assert not of_type(events, "agent.completed")
    # the failed hook makes the main session post a system event; that turn is its own run
    assert [e.topic for e in of_type(events, "agent.started")] == ["openclaw.main.cron"]


def test_a_retried_run_starts_once_and_reports_each_retry() -> None:
    events = [e for e in replay(frames("fail500")) if e.topic == "openclaw.main.cron"]

    assert types(events) == [
        "agent.started",
        "agent.retrying",
        "agent.retrying",
        "agent.completed",
        "agent.message",
    ]
    assert [e.data["attempt"] for e in of_type(events, "agent.retrying")] == [2, 3]
    assert len({e.id for e in events}) == len(events)


def test_a_bridge_message_run_is_labelled_with_the_origin() -> None:
    events = replay(frames("bridge"))

    run = [e for e in events if e.type.startswith("agent.")]
    assert types(run) == ["agent.started", "agent.completed", "agent.message"]
    assert {e.labels.get("origin") for e in run} == {"dash-bridge"}
    assert {e.data.get("origin") for e in run} == {"dash-bridge"}
    assert not any("origin" in e.labels for e in replay(frames("plain")))


def test_the_origin_marker_is_configurable() -> None:
    assert not any("origin" in e.labels for e in replay(frames("bridge"), config(origin="other-bridge")))


def test_heartbeat_runs_seen_only_through_sessions_changed_are_published() -> None:
    events = replay(frames("wake"))

    main = [e for e in events if e.topic == "openclaw.main.main"]
    assert types(main) == ["agent.started", "agent.completed"]
    assert main[0].data["run_id"] == main[1].data["run_id"]


def test_a_main_session_turn_right_after_a_bridge_run_inherits_its_origin() -> None:
    pipeline = Pipeline(config())
    replay(frames("bridge"), pipeline=pipeline, start=1000.0)
    heartbeat = replay(frames("wake"), pipeline=pipeline, start=1010.0)
    later = replay(frames("wake"), pipeline=Pipeline(config()), start=1000.0)

    assert {e.labels.get("origin") for e in heartbeat if e.topic == "openclaw.main.main"} == {"dash-bridge"}
    assert {e.labels.get("origin") for e in later if e.topic == "openclaw.main.main"} == {None}


def test_ids_are_deterministic_per_gateway_and_happening() -> None:
    first = replay(frames("fail500"))
    again = replay(frames("fail500"))
    elsewhere = replay(frames("fail500"), config(name="gw2"))

    assert [e.id for e in first] == [e.id for e in again]
    assert not {e.id for e in first} & {e.id for e in elsewhere}
    assert all(e.id is not None and e.id.startswith("oc-") and len(e.id) == 35 for e in first)


def test_a_run_first_seen_mid_way_gets_its_started_with_the_same_id() -> None:
    recorded = frames("fail500")
    start_at = next(i for i, (name, p) in enumerate(recorded) if name == "agent" and p["seq"] == 9)

    whole = replay(recorded)
    late = replay(recorded[start_at:])

    [started] = [e for e in of_type(whole, "agent.started") if e.topic.endswith("cron")]
    [late_started] = [e for e in of_type(late, "agent.started") if e.topic.endswith("cron")]
    assert late_started.id == started.id
    assert late_started.data["late"] is True
    assert {e.id for e in late if e.topic.endswith("cron")} <= {e.id for e in whole}


def test_a_run_first_seen_mid_way_asks_for_its_history() -> None:
    recorded = frames("bridge")
    prompt = next(p["message"]["content"] for name, p in recorded if name == "session.message")
    name, end = next((n, p) for n, p in recorded if n == "agent" and p["data"].get("phase") == "end")
    pipeline = Pipeline(config())

    step = pipeline.frame(name, end, boot_id="b", now=10.0)
    assert step.events == [] and step.history == [end["sessionKey"]]

    decided = pipeline.transcript(end["sessionKey"], prompt, 10.1)  # what chat.history answered
    assert [(o.event.type, o.event.labels["origin"]) for o in decided.events] == [
        ("agent.started", "dash-bridge"),
        ("agent.completed", "dash-bridge"),
    ]
    assert decided.events[0].event.data["late"] is True


def test_events_whose_origin_never_arrives_go_out_unlabelled_after_the_wait() -> None:
    recorded = [f for f in frames("plain") if f[0] != "session.message"]
    pipeline = Pipeline(config(origin_wait="2s"))
    held = [o for name, p in recorded for o in pipeline.frame(name, p, boot_id="b", now=100.0).events]
    assert [o.event.type for o in held] == []
    assert pipeline.expire(101.9).events == []
    out = pipeline.expire(102.0).events
    assert [o.event.type for o in out] == ["agent.started", "agent.completed", "agent.message"]
    assert pipeline.tracker.outcomes["unresolved"] == 1


def test_gateway_status_events() -> None:
    [stopping] = replay(frames("restart"))
    assert (stopping.type, stopping.topic, stopping.data["status"]) == (
        st.GATEWAY_STATUS,
        "openclaw.gateway.gw1",
        "stopping",
    )
    hello = {"server": {"version": "2026.9.6", "bootId": "b1"}}
    agents = {"defaultId": "main", "agents": [{"id": "main"}, {"id": "ops"}]}
    sessions = {"totalCount": 2, "sessions": [{"key": "agent:main:main", "status": "running"}]}
    up = st.gateway_up(hello, agents, sessions, 1)
    assert up.data == {
        "status": "up",
        "version": "2026.9.6",
        "boot_id": "b1",
        "agents": ["main", "ops"],
        "default_agent": "main",
        "sessions": 2,
        "active_sessions": 1,
    }
    health = st.health_frame({"ok": False, "ts": 5}, "b1")
    assert (health.priority, health.data["status"]) == ("high", "degraded")
    assert st.gateway_unreachable("b1", 9, "refused", 31.0).priority == "high"


def test_the_snapshot_publishes_sessions_and_their_active_runs() -> None:
    sessions = {
        "sessions": [
            {
                "key": "agent:main:main",
                "agentId": "main",
                "status": "running",
                "updatedAt": 7,
                "hasActiveRun": True,
                "activeRunIds": ["r-1"],
                "startedAt": 5,
            },
            {"key": "agent:main:cron:j1", "agentId": "main", "updatedAt": 3},
        ]
    }
    drafts = st.snapshot(sessions, limit=10)
    assert [(d.type, d.scope) for d in drafts] == [
        ("openclaw.session", "session:agent:main:main"),
        ("agent.started", "r-1"),
        ("openclaw.session", "session:agent:main:cron:j1"),
    ]
    live = tr.agent_frame({"runId": "r-1", "stream": "lifecycle", "data": {"phase": "start"}})[0]
    assert tr.event_id("g", drafts[1].scope, drafts[1].key) == tr.event_id("g", live.scope, live.key)
    assert len(st.snapshot(sessions, limit=1)) == 2


def test_unknown_and_malformed_frames_are_ignored() -> None:
    pipeline = Pipeline(config())
    for name, payload in [
        ("agent", {"runId": "r", "stream": "assistant", "data": {"text": "x"}}),
        ("agent", {"stream": "lifecycle", "data": {"phase": "start"}}),
        ("agent", {"runId": "r2", "stream": "lifecycle", "data": "not an object"}),
        ("chat", {"runId": "r", "state": "delta"}),
        ("presence", {"anything": 1}),
        ("agent", None),
    ]:
        assert pipeline.frame(name, payload, boot_id="b", now=1.0).events == []


def test_carries_origin_reads_the_hook_name_or_the_bridge_footer() -> None:
    assert tr.carries_origin("Source: Webhook\nTask: dash-bridge\n---\nx", "dash-bridge")
    assert tr.carries_origin("x\norigin: dash-bridge | route r1 | message dbm-1", "dash-bridge")
    assert not tr.carries_origin("Task: dash-bridge-2\nthe origin: dash-bridge is mentioned", "dash-bridge")


def test_every_topic_is_valid_and_every_event_validates() -> None:
    import re

    from dash_stream.events import complete

    for event in replay(frames("plain", "tool", "fail400", "fail500", "bridge", "wake", "restart")):
        assert re.match(TOPIC_REGEX, event.topic)
        complete(event)


def test_the_tracker_bounds_its_runs() -> None:
    tracker = RunTracker(origin="dash-bridge", max_runs=3)
    for i in range(10):
        start = tr.agent_frame(
            {
                "runId": f"r{i}",
                "agentId": "a",
                "sessionKey": f"k{i}",
                "stream": "lifecycle",
                "data": {"phase": "start"},
            }
        )[0]
        tracker.offer(start, float(i))
    assert len(tracker._runs) == 3 and tracker.held_runs <= 3


def test_a_run_first_seen_at_a_retry_start_asks_for_its_history_when_its_prompt_is_overdue() -> None:
    recorded = frames("fail500")
    restart = next(i for i, (name, p) in enumerate(recorded) if name == "agent" and p["seq"] == 6)
    name, payload = recorded[restart]
    assert payload["data"]["phase"] == "start"  # a retry's start looks like the first one
    pipeline = Pipeline(config(origin_wait="2s"))

    assert pipeline.frame(name, payload, boot_id="b", now=50.0).history == []
    assert pipeline.expire(50.2).history == []
    assert pipeline.expire(50.3).history == [payload["sessionKey"]]
    assert pipeline.expire(50.4).history == []  # asked once
    decided = pipeline.transcript(payload["sessionKey"], "Task: dash-test\n---\nhello", 50.5)
    assert [(o.event.type, o.event.labels.get("origin")) for o in decided.events] == [("agent.started", None)]
    assert pipeline.tracker.outcomes["other"] == 1
