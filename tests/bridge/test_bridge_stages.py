"""Dedup, inhibit, throttle and digest timers, driven by an explicit `now` (instant, deterministic)."""

from __future__ import annotations

from bridge_support import config, event, memory_doc

from bridge.dedup import Deduper, Inhibitor, InhibitRule, Throttle, fingerprint
from bridge.digest import Digester
from bridge.rules import Router


def deliveries(doc: dict, **ev: object) -> tuple[Router, object]:
    router = Router(config(doc))
    return router, router.deliveries(event(**ev))[0]  # type: ignore[arg-type]


def test_dedup_drops_repeats_within_the_window_and_not_the_same_offset() -> None:
    d = Deduper()
    assert not d.repeat("k", "o1", now=0, window=60)
    assert d.repeat("k", "o2", now=30, window=60)
    assert not d.repeat("k", "o1", now=30, window=60)  # the event that claimed it, re-read after a restart
    assert not d.repeat("k", "o3", now=61, window=60)  # the window passed
    snap = d.snapshot(now=61)
    again = Deduper()
    again.restore(snap, now=62)
    assert again.repeat("k", "o4", now=62, window=60)


def test_dedup_is_bounded() -> None:
    d = Deduper(max_keys=2)
    for i in range(5):
        d.repeat(f"k{i}", "o", now=0, window=60)
    assert len(d) == 2


def test_fingerprint_ignores_id_time_and_offset() -> None:
    a = event(data={"reason": "x"}, agent="a1")
    b = event(data={"reason": "x"}, agent="a1")
    assert a.id != b.id and a.offset != b.offset
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(event(data={"reason": "y"}, agent="a1"))


def test_a_swarm_down_inhibits_its_agents_failures_until_it_clears() -> None:
    cfg = config(
        {
            **memory_doc(),
            "inhibit_rules": [
                {
                    "source": {"type": "swarm.status", "data.status": "down"},
                    "target": {"type": {"prefix": "agent."}},
                    "equal": ["labels.swarm"],
                    "duration": "10m",
                }
            ],
        }
    )
    inh = Inhibitor([InhibitRule(r, i) for i, r in enumerate(cfg.inhibit_rules)])
    down = event("swarm.status", swarm="s1", data={"status": "down"})
    failure = event("agent.failed", swarm="s1")
    other_swarm = event("agent.failed", swarm="s2")

    assert inh.inhibited(failure, now=0) is None
    inh.observe(down, now=0)
    assert inh.inhibited(failure, now=1) == "inhibit_rules[0]"
    assert inh.inhibited(other_swarm, now=1) is None
    assert inh.inhibited(down, now=1) is None  # a source never mutes itself
    assert inh.inhibited(failure, now=601) is None  # duration passed
    inh.observe(down, now=700)
    inh.observe(event("swarm.status", swarm="s1", data={"status": "up"}), now=701)  # the default clear
    assert inh.inhibited(failure, now=702) is None


def test_throttle_is_a_token_bucket_per_claim_and_critical_bypasses_it() -> None:
    t = Throttle()
    limit = (1.0, 2.0)  # 1/s, burst 2
    assert [t.allow("r", limit, "high", now=0) for _ in range(3)] == [True, True, False]
    assert t.allow("r", limit, "critical", now=0)
    assert t.allow("other", limit, "high", now=0)
    assert t.allow("r", limit, "high", now=1.0)
    assert not t.allow("r", limit, "high", now=1.0)


def test_a_group_waits_group_wait_then_flushes_everything_as_one() -> None:
    router = Router(config(memory_doc(group_by=["labels.swarm"], group_wait="2s", group_interval="10s")))
    dig = Digester()
    evs = [event(swarm="s1") for _ in range(5)]
    for i, ev in enumerate(evs):
        assert dig.add(router.deliveries(ev)[0], ev, now=i * 0.1) == []
    assert dig.next_deadline() == 2.0
    assert dig.due(now=1.9) == []
    [flush] = dig.due(now=2.0)
    assert flush.events == evs and flush.label == "swarm=s1"


def test_later_events_wait_for_group_interval_and_a_quiet_interval_closes_the_group() -> None:
    router = Router(config(memory_doc(group_by=["labels.swarm"], group_wait="2s", group_interval="10s")))
    dig = Digester()

    def add(now: float) -> None:
        ev = event(swarm="s1")
        assert dig.add(router.deliveries(ev)[0], ev, now) == []

    add(0)
    assert len(dig.due(2)[0].events) == 1
    add(3)
    add(5)
    assert dig.next_deadline() == 12.0 and dig.due(11.9) == []
    assert len(dig.due(12)[0].events) == 2
    assert dig.due(22) == [] and dig.groups == 0  # nothing new for an interval: closed
    add(23)
    assert dig.next_deadline() == 25.0  # a new group: group_wait again


def test_groups_are_per_group_by_values() -> None:
    router = Router(config(memory_doc(group_by=["labels.swarm", "type"])))
    dig = Digester()
    for ev in (event(swarm="s1"), event(swarm="s2"), event("agent.killed", swarm="s1"), event(swarm="s1")):
        dig.add(router.deliveries(ev)[0], ev, now=0)
    flushes = dig.due(now=1000)
    assert sorted((f.label, len(f.events)) for f in flushes) == [
        ("swarm=s1 type=agent.failed", 2),
        ("swarm=s1 type=agent.killed", 1),
        ("swarm=s2 type=agent.failed", 1),
    ]


def test_a_critical_event_flushes_its_group_at_once() -> None:
    router = Router(config(memory_doc(group_by=["labels.swarm"], group_wait="30s")))
    dig = Digester()
    first = event(swarm="s1", priority="high")
    dig.add(router.deliveries(first)[0], first, now=0)
    crit = event(swarm="s1", priority="critical")
    [flush] = dig.add(router.deliveries(crit)[0], crit, now=1)
    assert flush.events == [first, crit]
    assert dig.due(now=30) == []  # nothing left to send at the old deadline


def test_no_grouping_sends_each_event_at_once() -> None:
    router = Router(config(memory_doc(group_by=["..."])))
    dig = Digester()
    ev = event()
    [flush] = dig.add(router.deliveries(ev)[0], ev, now=0)
    assert flush.events == [ev]
    assert dig.groups == 0


def test_digest_bounds_flush_early() -> None:
    router = Router(config(memory_doc(group_by=["labels.swarm"])))
    dig = Digester(max_groups=2, max_group_events=3)
    out = []
    for ev in (event(swarm="s1"), event(swarm="s1"), event(swarm="s1")):
        out += dig.add(router.deliveries(ev)[0], ev, now=0)
    assert [len(f.events) for f in out] == [3]  # the full group flushed early
    for swarm in ("s2", "s3", "s4"):
        ev = event(swarm=swarm)
        out += dig.add(router.deliveries(ev)[0], ev, now=0)
    assert dig.groups == 2 and len(out) == 2  # the third new group evicted (flushed) the one due soonest


def test_the_pipeline_ignores_an_event_delivered_twice() -> None:
    from bridge.pipeline import Pipeline

    pipeline = Pipeline(config(memory_doc(group_by=["labels.swarm"])))
    ev = event(swarm="s1")
    pipeline.ingest([ev], "c1", now=0)
    pipeline.ingest([ev], "c2", now=1)  # e.g. a replayed frame
    [msg] = pipeline.tick(now=1000)
    assert msg.count == 1
    pipeline.settle(msg)
    assert pipeline.tracker.watermark == "c2"
