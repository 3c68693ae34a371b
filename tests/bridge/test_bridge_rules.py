"""Filter, templates and the Alertmanager-style routing tree, with @mention deliveries."""

from __future__ import annotations

from typing import Any

from bridge_support import config, event

from bridge.rules import EventFilter, Router, parse_mentions
from bridge.templates import Template, summary, trace_id


def two_receivers(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "receivers": [{"name": "a", "kind": "memory"}, {"name": "b", "kind": "memory", "agent_id": "ops"}],
        "routes": [],
    }
    doc.update(extra)
    return doc


def routed(doc: dict[str, Any], **ev: Any) -> list[str]:
    return [r.id for r in Router(config(doc)).route(event(**ev))]


def test_first_matching_child_wins_unless_it_continues() -> None:
    doc = two_receivers(
        routes=[
            {"name": "crit", "receiver": "a", "match": {"priority": "critical"}},
            {"name": "swarm1", "receiver": "b", "match": {"swarm": "s1"}},
        ]
    )
    assert routed(doc, priority="critical", swarm="s1") == ["crit"]
    doc["routes"][0]["continue"] = True
    assert routed(doc, priority="critical", swarm="s1") == ["crit", "swarm1"]
    assert routed(doc, priority="low", swarm="s2") == []  # the root has no receiver: dropped


def test_a_node_without_a_matching_child_is_itself_the_match() -> None:
    doc = two_receivers(
        defaults={"receiver": "a"},
        routes=[
            {
                "name": "agents",
                "match_re": {"type": "agent\\..*"},
                "receiver": "b",
                "routes": [{"name": "oom", "where": {"data.reason": {"prefix": "oom"}}}],
            },
        ],
    )
    assert routed(doc, type="agent.failed", data={"reason": "oom-killed"}) == ["oom"]
    assert routed(doc, type="agent.failed", data={"reason": "timeout"}) == ["agents"]
    assert routed(doc, type="task.failed") == ["defaults"]  # unmatched: the root's receiver


def test_children_inherit_receiver_grouping_and_targets() -> None:
    cfg = config(
        two_receivers(
            routes=[
                {
                    "receiver": "b",
                    "group_by": ["labels.swarm"],
                    "group_wait": "5s",
                    "session_key": "hook:dash:{labels.swarm}",
                    "routes": [{"name": "child", "match": {"type": "agent.failed"}, "group_wait": "1s"}],
                }
            ]
        )
    )
    child = next(r for r in Router(cfg).routes if r.id == "child")
    assert child.receiver == "b" and child.group_by == ("labels.swarm",)
    assert child.group_wait == 1.0 and child.group_interval == 300.0  # own value, inherited default
    assert child.target is not None
    target = child.target.render(event(swarm="s9"))
    assert target.agent_id == "ops" and target.session_key == "hook:dash:s9"  # receiver < route overrides


def test_mentions_add_deliveries_to_mapped_targets() -> None:
    cfg = config(
        two_receivers(
            routes=[{"name": "r", "receiver": "a", "agent_id": "main"}],
            mentions=[
                {"name": "@alice", "session_key": "hook:dash:alice"},
                {"name": "@bob", "receiver": "b"},
            ],
        )
    )
    router = Router(cfg)
    deliveries = router.deliveries(event(labels={"mentions": "@alice, carol,@bob"}))
    assert [(d.claim, d.target.receiver, d.target.session_key, d.target.agent_id) for d in deliveries] == [
        ("r", "a", None, "main"),
        ("r@alice", "a", "hook:dash:alice", "main"),
        ("r@bob", "b", None, "main"),  # the route's own override still applies
    ]


def test_parse_mentions() -> None:
    assert parse_mentions("@a, b  @c,@a") == ["@a", "@b", "@c"]
    assert parse_mentions("") == [] and parse_mentions(None) == []


def test_loop_safety_drops_the_bridges_own_events() -> None:
    f = EventFilter(None, origin="dash-bridge", forward_own=False)
    assert f.own(event(labels={"origin": "dash-bridge"}))
    assert not f.own(event(labels={"origin": "someone"}))
    assert not EventFilter(None, origin="dash-bridge", forward_own=True).own(
        event(labels={"origin": "dash-bridge"})
    )
    assert f.server_where({"priority": "high"}) == {
        "any": [{"priority": "high"}],
        "not": {"labels.origin": "dash-bridge"},
    }


def test_templates_render_event_fields_defaults_and_context() -> None:
    ev = event(
        data={"reason": "oom", "n": [1, {"k": 2}]}, traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    )
    tpl = Template(
        "{badge} {type} {labels.swarm} {data.reason} {data.n.1.k} {labels.none|n/a} {{x}} {trace_id}"
    )
    assert tpl.render(ev, {"badge": "[HIGH]"}) == f"[HIGH] agent.failed s1 oom 2 n/a {{x}} {'a' * 32}"
    assert trace_id("garbage") is None
    assert summary(event(data={"error": "E"})) == "E"
    assert summary(event(data={"x": 1})) == '{"x":1}'
