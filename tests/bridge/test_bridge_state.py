"""The state file, its journal, and the dead-letter queue file."""

from __future__ import annotations

from pathlib import Path

import pytest
from bridge_support import config, event, memory_doc

from bridge.config import Badges
from bridge.digest import Digester
from bridge.dlq import DeadLetter, JsonlDeadLetterQueue
from bridge.errors import StateError
from bridge.model import Message
from bridge.render import build_message
from bridge.rules import Router
from bridge.state import FileStateStore, PersistedState


def message(reason: str) -> Message:
    router = Router(config(memory_doc(group_by=["..."])))
    ev = event(data={"reason": reason})
    [flush] = Digester().add(router.deliveries(ev)[0], ev, now=0)
    return build_message(flush, badges=Badges(), origin="dash-bridge", now=0)


def test_checkpoint_and_journal_round_trip(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "state.json")
    assert store.open() is None
    a, b, c = message("a"), message("b"), message("c")
    store.save(
        PersistedState(cursor="e.0-5", ledger=[("r", "e.0-7")], inflight=[a], dedup=[("k", 9e9, "e.0-3")])
    )
    store.journal([b, c], [])
    store.journal([], [a.id, b.id])
    state = store.load()
    assert state is not None
    assert (
        state.cursor == "e.0-5" and state.ledger == [("r", "e.0-7")] and state.dedup == [("k", 9e9, "e.0-3")]
    )
    assert state.inflight == [c]
    store.save(state)
    assert (tmp_path / "state.json.wal").read_bytes() == b""  # the checkpoint emptied the journal
    store.close()


def test_a_torn_last_journal_line_is_ignored(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "state.json")
    m = message("x")
    store.journal([m], [])
    with (tmp_path / "state.json.wal").open("ab") as f:
        f.write(b'{"add":[{"id":"dbm-torn')
    state = store.load()
    assert state is not None and state.inflight == [m]


def test_a_corrupt_state_file_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{nope")
    with pytest.raises(StateError, match=r"state\.json: not a valid state file"):
        FileStateStore(tmp_path / "state.json").load()


def test_one_bridge_per_state_file(tmp_path: Path) -> None:
    first = FileStateStore(tmp_path / "state.json")
    first.open()
    with pytest.raises(StateError, match="in use by another bridge"):
        FileStateStore(tmp_path / "state.json").open()
    first.close()
    second = FileStateStore(tmp_path / "state.json")
    second.open()
    second.close()


def test_the_dlq_keeps_the_latest_entry_per_message_and_is_bounded(tmp_path: Path) -> None:
    dlq = JsonlDeadLetterQueue(tmp_path / "dlq.jsonl", max_entries=2)
    a, b, c = message("a"), message("b"), message("c")
    assert dlq.append(DeadLetter(id=a.id, receiver="r", message=a, reason="http_401", attempts=1))
    assert dlq.append(DeadLetter(id=a.id, receiver="r", message=a, reason="retries_exhausted", attempts=3))
    assert dlq.append(DeadLetter(id=b.id, receiver="r", message=b, reason="http_400"))
    assert not dlq.append(DeadLetter(id=c.id, receiver="r", message=c, reason="http_400"))  # full
    entries = dlq.entries()
    assert [(e.id, e.reason) for e in entries] == [(a.id, "retries_exhausted"), (b.id, "http_400")]
    assert dlq.get(a.id[:10]) == entries[0]
    assert dlq.remove([a.id]) == 1
    assert [e.id for e in dlq.entries()] == [b.id]
    assert entries[0].message == a  # the very message: same text, same id
