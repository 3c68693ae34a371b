"""The watermark moves only past settled batches; the ledger remembers deliveries beyond it."""

from __future__ import annotations

from bridge.tracker import Tracker


def test_the_watermark_waits_for_the_oldest_held_delivery() -> None:
    t = Tracker("c0")
    b1 = t.open("c1")
    t.hold(b1, "r", "o1")
    t.close(b1)
    b2 = t.open("c2")
    t.hold(b2, "r", "o2")
    t.close(b2)
    assert t.watermark == "c0"
    t.release("r", "o2")
    assert t.watermark == "c0"  # o1 still holds batch 1
    assert t.ledger() == [("r", "o2")]
    t.release("r", "o1")
    assert t.watermark == "c2"
    assert t.ledger() == []  # behind the watermark: forgotten


def test_batches_without_deliveries_move_the_watermark_at_once() -> None:
    t = Tracker(None)
    t.close(t.open("c1"))
    assert t.watermark == "c1"
    t.close(t.open("c2"))
    t.close(t.open(None))  # a gap marker is no resumable position
    assert t.watermark == "c2"


def test_a_batch_is_held_by_every_claim_of_every_event() -> None:
    t = Tracker(None)
    b = t.open("c1")
    t.hold(b, "r1", "o1")
    t.hold(b, "r1@alice", "o1")
    t.close(b)
    t.release("r1", "o1")
    assert t.watermark is None
    t.release("r1@alice", "o1")
    assert t.watermark == "c1"


def test_restored_ledger_entries_skip_re_read_deliveries() -> None:
    t = Tracker("c0", [("r", "o2")])
    b = t.open("c2")
    assert t.done(b, "r", "o2")
    assert not t.done(b, "r", "o1")
    assert not t.done(b, "other", "o2")
    t.close(b)
    assert t.watermark == "c2"
    assert t.ledger() == []


def test_settled_batches_collapse_so_memory_follows_held_events() -> None:
    t = Tracker(None)
    first = t.open("c1")
    t.hold(first, "r", "o1")
    t.close(first)
    for i in range(2, 1000):
        t.close(t.open(f"c{i}"))
    assert len(t._batches) == 2  # the held batch and one collapsed run after it
    t.release("r", "o1")
    assert t.watermark == "c999"


def test_the_ledger_is_bounded() -> None:
    t = Tracker(None, max_ledger=3)
    b = t.open("c1")
    for i in range(5):
        t.hold(b, "r", f"o{i}")
    for i in range(5):
        t.release("r", f"o{i}")
    assert len(t.ledger()) <= 3


def test_a_gap_drops_restored_entries() -> None:
    t = Tracker("c0", [("r", "o9")])
    t.gap()
    assert t.ledger() == []


def test_a_repeated_delivery_is_held_once() -> None:
    t = Tracker(None)
    b = t.open("c1")
    assert t.hold(b, "r", "o1")
    assert not t.hold(b, "r", "o1")
    t.close(b)
    t.release("r", "o1")
    assert t.watermark == "c1"
