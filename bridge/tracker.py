"""The watermark: which cursor is safe to persist, and which deliveries are already done.

The source hands out batches (events plus the cursor after them). Every delivery of an event
(its route *claim*) holds its batch until the message carrying it was accepted by the sink or
stored in the DLQ. The watermark is the cursor of the newest batch such that it and every batch
before it hold nothing: resuming from it loses nothing.

Deliveries settled beyond the watermark are remembered (the *ledger*) and persisted with it, so
that after a restart the re-read events skip exactly the deliveries already made: nothing is
sent twice. Consecutive settled batches collapse into one, so memory follows the number of
events still held, not the event rate. Pure bookkeeping: no I/O, no clock.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable

_RESTORED = -1


class _Batch:
    __slots__ = ("closed", "cursor", "holds", "seq")

    def __init__(self, seq: int, cursor: str | None) -> None:
        self.seq = seq
        self.cursor = cursor
        self.holds = 0
        self.closed = False


class Tracker:
    """See the module docstring; `max_ledger` bounds the remembered deliveries (oldest out first)."""

    def __init__(
        self, cursor: str | None = None, done: Iterable[tuple[str, str]] = (), *, max_ledger: int = 200_000
    ) -> None:
        """Start at `cursor` (None: the source's start) with the ledger saved by a previous run."""
        self._watermark = cursor
        self._batches: deque[_Batch] = deque()
        self._by_seq: dict[int, _Batch] = {}
        self._next_seq = 0
        self._held: dict[tuple[str, str], int] = {}
        self._done: dict[tuple[str, str], int] = {}
        self._done_by_seq: dict[int, list[tuple[str, str]]] = {}
        self.max_ledger = max_ledger
        for key in done:
            self._remember(key, _RESTORED)
        self.moved = False

    # ------------------------------------------------------------ batches

    def open(self, cursor: str | None) -> int:
        """Start a batch ending at `cursor` (None: a batch that cannot be resumed from); its seq."""
        last = self._batches[-1] if self._batches else None
        if last is not None and last.closed and last.holds == 0:
            last.closed = False  # a settled batch just grows: its seq now covers this one too
            if cursor is not None:
                last.cursor = cursor
            return last.seq
        batch = _Batch(self._next_seq, cursor)
        self._next_seq += 1
        self._batches.append(batch)
        self._by_seq[batch.seq] = batch
        return batch.seq

    def close(self, seq: int) -> None:
        """Every delivery of batch `seq` has been registered."""
        batch = self._by_seq.get(seq)
        if batch is not None:
            batch.closed = True
        self._advance()

    def hold(self, seq: int, claim: str, offset: str) -> bool:
        """A delivery of batch `seq` is on its way to a message; False if it already was (a repeat)."""
        batch = self._find(seq)
        if batch is None:
            raise ValueError(f"batch {seq} is not open")
        key = (claim, offset)
        if key in self._held:
            return False  # the same event delivered twice on one claim (a duplicate frame)
        batch.holds += 1
        self._held[key] = seq
        return True

    def release(self, claim: str, offset: str) -> None:
        """The delivery reached the sink or the DLQ; remember it until the watermark passes it."""
        key = (claim, offset)
        seq = self._held.pop(key, None)
        if seq is None:
            self._remember(key, _RESTORED)  # a restored in-flight message: its events may come again
            return
        self._remember(key, seq)
        batch = self._find(seq)
        if batch is not None:
            batch.holds -= 1
        self._advance()

    def done(self, seq: int, claim: str, offset: str) -> bool:
        """Whether this delivery was already made (it is then re-attached to batch `seq`)."""
        key = (claim, offset)
        old = self._done.get(key)
        if old is None:
            return False
        if old == _RESTORED or old < seq:
            self._forget(key, old)
            self._remember(key, seq)
        return True

    def gap(self) -> None:
        """The source could not resume: restored ledger entries can no longer match anything."""
        for key in list(self._done_by_seq.get(_RESTORED, [])):
            self._done.pop(key, None)
        self._done_by_seq.pop(_RESTORED, None)

    # ------------------------------------------------------------ reading

    @property
    def watermark(self) -> str | None:
        """The cursor it is safe to resume from."""
        return self._watermark

    @property
    def held(self) -> int:
        """Deliveries on their way."""
        return len(self._held)

    def ledger(self) -> list[tuple[str, str]]:
        """Deliveries made beyond the watermark, for the state file."""
        return list(self._done)

    # ------------------------------------------------------------ internals

    def _find(self, seq: int) -> _Batch | None:
        return self._by_seq.get(seq)

    def _advance(self) -> None:
        batches = self._batches
        passed: list[int] = []
        while batches and batches[0].closed and batches[0].holds == 0:
            if len(batches) == 1:
                # keep the last batch open for growth, but its cursor is settled
                batch = batches[0]
                if batch.cursor is not None and batch.cursor != self._watermark:
                    self._watermark = batch.cursor
                    self.moved = True
                passed.append(batch.seq)
                break
            batch = batches.popleft()
            del self._by_seq[batch.seq]
            if batch.cursor is not None:
                self._watermark = batch.cursor
                self.moved = True
            passed.append(batch.seq)
        for seq in passed:
            for key in self._done_by_seq.pop(seq, ()):
                if self._done.get(key) == seq:
                    del self._done[key]

    def _remember(self, key: tuple[str, str], seq: int) -> None:
        self._done[key] = seq
        self._done_by_seq.setdefault(seq, []).append(key)
        if len(self._done) > self.max_ledger:
            oldest = next(iter(self._done))
            self._forget(oldest, self._done[oldest])

    def _forget(self, key: tuple[str, str], seq: int) -> None:
        self._done.pop(key, None)
        keys = self._done_by_seq.get(seq)
        if keys is not None:
            with contextlib.suppress(ValueError):
                keys.remove(key)
