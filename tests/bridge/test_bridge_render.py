"""Messages: digest text, every source listed, stable ids, and splitting over the body limit."""

from __future__ import annotations

from bridge_support import config, event, memory_doc

from bridge.config import Badges
from bridge.digest import Digester
from bridge.model import Message
from bridge.render import build_message, split_message
from bridge.rules import Router


def digest_of(events: list, **route: object) -> Message:
    router = Router(config(memory_doc(group_by=["labels.swarm", "type"], **route)))
    dig = Digester()
    for ev in events:
        dig.add(router.deliveries(ev)[0], ev, now=0)
    [flush] = dig.due(now=10_000)
    return build_message(flush, badges=Badges(), origin="dash-bridge", now=0)


def test_a_digest_summarises_counts_worst_priority_times_items_and_every_source() -> None:
    evs = [event(swarm="s1", priority="high", data={"reason": "oom"}, agent="a1") for _ in range(3)]
    evs.append(event(swarm="s1", priority="critical", data={"reason": "disk"}, agent="a2"))
    # critical flushes at once; build the digest of the first three plus one more high
    msg = digest_of([*evs[:3], event(swarm="s1", data={"reason": "net"}, agent="a3")])
    text = msg.text
    assert msg.count == 4 and msg.priority == "high"
    assert text.startswith("[HIGH] 4 events in swarm=s1 type=agent.failed")
    assert "counts: agent.failed x4 | worst: high" in text
    assert "- [HIGH] agent.failed swarm.s1.agent.a1: oom (x3)" in text
    assert "sources (4):" in text
    for ev in evs[:3]:
        assert f"- {ev.offset} traceparent {ev.traceparent}" in text
    assert text.endswith(f"origin: dash-bridge | route routes[0] | message {msg.id}")


def test_one_event_renders_title_text_links_and_mentions() -> None:
    ev = event(swarm="s1", labels={"mentions": "@alice,@bob"}, data={"reason": "oom"})
    msg = digest_of([ev], links=["http://dash/{topic}?c={offset}"], title="{badge} {type} in {labels.swarm}")
    lines = msg.text.splitlines()
    assert lines[0] == "[HIGH] agent.failed in s1"
    assert f"http://dash/{ev.topic}?c={ev.offset}" in lines
    assert "mentions: @alice @bob" in lines
    assert f"source: {ev.offset} traceparent {ev.traceparent}" in lines


def test_the_id_is_stable_for_the_same_events_and_differs_for_others() -> None:
    evs = [event(swarm="s1") for _ in range(2)]
    assert digest_of(evs).id == digest_of(evs).id
    assert digest_of(evs).id != digest_of(evs[:1]).id


def test_a_message_over_the_limit_is_split_by_sources_deterministically() -> None:
    evs = [event(swarm="s1") for _ in range(400)]
    msg = digest_of(evs)

    def measure(m: Message) -> int:
        return len(m.text.encode()) + 100

    parts = split_message(msg, 8000, measure)
    assert len(parts) > 1
    assert all(measure(p) <= 8000 for p in parts)
    assert [s for p in parts for s in p.sources] == list(msg.sources)  # every source exactly once, in order
    assert [p.id for p in parts] == [f"{msg.id}.{i}of{len(parts)}" for i in range(1, len(parts) + 1)]
    assert parts == split_message(msg, 8000, measure)
    assert "(part 2 of" in parts[1].text and "continued" in parts[1].text


def test_a_huge_head_is_truncated_to_fit() -> None:
    evs = [event(data={"reason": c * 50_000}) for c in "abcdefghij"]
    msg = digest_of(evs, text="{data.reason}")  # lines are capped at 1000 characters; ten of them
    parts = split_message(msg, 6000, lambda m: len(m.text.encode()))
    assert all(len(p.text.encode()) <= 6000 for p in parts)
    assert "[truncated]" in parts[0].text
