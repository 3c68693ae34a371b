"""The durable state: the cursor, the delivery ledger, in-flight messages, dedup and inhibitions.

Two files:

- the *checkpoint* (`state.json`): one small JSON document replaced atomically (write a temporary
  file, fsync, rename, fsync the directory), so a crash leaves the old or the new one, never a torn
  one. It holds the cursor (the tracker's watermark: a restart resumes the source from it), the
  ledger (deliveries made beyond the cursor, skipped when re-read), the in-flight messages, the
  notification log (dedup) and active inhibitions. Written every `checkpoint_interval` when
  something changed, and at shutdown.
- the *journal* (`state.json.wal`): JSON lines appended between checkpoints. A message is
  journaled (appended and fsynced) *before* its first attempt; settled messages are noted too. A
  restart sends journaled messages that were not settled again, byte for byte, under the same
  idempotency key (OpenClaw answers a replay with the original run instead of running again).
  Each checkpoint empties the journal. A torn last line (a crash mid-append) is ignored: its
  message was never sent, since sending waits for the append.

The store is behind a Protocol (`StateStore`) so that a Redis-backed one can follow. A lock file
stops a second bridge from using the same state.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Protocol

import msgspec

from bridge.errors import StateError
from bridge.model import Message

STATE_VERSION = 1


class PersistedState(msgspec.Struct, kw_only=True):
    """What one checkpoint saves."""

    version: int = STATE_VERSION
    cursor: str | None = None
    ledger: list[tuple[str, str]] = []
    inflight: list[Message] = []
    dedup: list[tuple[str, float, str]] = []
    inhibitions: list[tuple[str, float, str]] = []
    saved_at: float = 0.0


class StateStore(Protocol):
    """Where the bridge keeps its state between runs."""

    def open(self) -> PersistedState | None:
        """Take ownership (lock) and return the saved state, or None on a first start."""
        ...

    def save(self, state: PersistedState) -> None:
        """Replace the checkpoint atomically and empty the journal (blocking; call it in a thread)."""
        ...

    def journal(self, added: Sequence[Message], settled: Sequence[str]) -> None:
        """Durably note messages about to be sent, and ids settled since (blocking)."""
        ...

    def close(self) -> None:
        """Release ownership."""
        ...


class JournalRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One line of the journal."""

    add: list[Message] = []
    done: list[str] = []


_decoder = msgspec.json.Decoder(PersistedState)
_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(JournalRecord)


def apply_journal(state: PersistedState, records: Sequence[JournalRecord]) -> PersistedState:
    """The checkpoint with journaled additions and settlements applied, in order."""
    inflight = {m.id: m for m in state.inflight}
    for record in records:
        for message in record.add:
            inflight[message.id] = message
        for done in record.done:
            inflight.pop(done, None)
    state.inflight = list(inflight.values())
    return state


class FileStateStore:
    """A JSON file next to a `.lock` file; see the module docstring."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        """Nothing is touched until `open()`."""
        self.path = Path(path)
        self.fsync = fsync
        self._lock: IO[bytes] | None = None

    def open(self) -> PersistedState | None:
        """Lock the state and read it; StateError when locked by another bridge or unreadable."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = (self.path.parent / f"{self.path.name}.lock").open("ab")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise StateError(f"{self.path}: in use by another bridge (lock file {lock.name})") from None
        self._lock = lock
        return self.load()

    @property
    def wal_path(self) -> Path:
        """The journal next to the checkpoint."""
        return self.path.parent / f"{self.path.name}.wal"

    def _records(self) -> list[JournalRecord]:
        try:
            lines = self.wal_path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StateError(f"{self.wal_path}: cannot read: {e.strerror}") from None
        records = []
        for n, line in enumerate(lines, 1):
            try:
                records.append(_record_decoder.decode(line))
            except msgspec.DecodeError:
                if n == len(lines):
                    break  # torn by a crash mid-append: that message was never sent
                raise StateError(f"{self.wal_path}:{n}: corrupt journal line") from None
        return records

    def load(self) -> PersistedState | None:
        """The saved state with the journal applied (no lock taken), or None on a first start."""
        records = self._records()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return apply_journal(PersistedState(), records) if records else None
        except OSError as e:
            raise StateError(f"{self.path}: cannot read: {e.strerror}") from None
        try:
            state = _decoder.decode(data)
        except msgspec.DecodeError as e:
            raise StateError(
                f"{self.path}: not a valid state file ({e}); move it away to start from source.start"
            ) from None
        if state.version != STATE_VERSION:
            raise StateError(
                f"{self.path}: state version {state.version} is not supported ({STATE_VERSION} is)"
            )
        return apply_journal(state, records)

    def journal(self, added: Sequence[Message], settled: Sequence[str]) -> None:
        """Append one line; fsync when it adds messages (settlements may be lost: a replay is harmless)."""
        line = _encoder.encode(JournalRecord(add=list(added), done=list(settled))) + b"\n"
        try:
            with self.wal_path.open("ab") as f:
                f.write(line)
                f.flush()
                if self.fsync and added:
                    os.fsync(f.fileno())
        except OSError as e:
            raise StateError(f"{self.wal_path}: cannot write: {e.strerror}") from None

    def save(self, state: PersistedState) -> None:
        """Write to a temporary file, fsync, rename over the state, fsync the directory."""
        data = _encoder.encode(state)
        tmp = self.path.parent / f".{self.path.name}.tmp"
        try:
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, self.path)
            if self.fsync:
                fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.truncate(self.wal_path, 0)  # the checkpoint now holds everything it said
        except OSError as e:
            raise StateError(f"{self.path}: cannot write: {e.strerror}") from None

    def close(self) -> None:
        """Release the lock."""
        lock, self._lock = self._lock, None
        if lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
            lock.close()


class MemoryStateStore:
    """State kept in memory: dry runs (which must not move the real cursor) and tests."""

    def __init__(self, initial: PersistedState | None = None) -> None:
        """Start with `initial` as the saved state."""
        self.state = initial
        self.saves = 0

    def open(self) -> PersistedState | None:
        """The saved state."""
        return self.state

    def save(self, state: PersistedState) -> None:
        """Keep a copy."""
        self.state = _decoder.decode(_encoder.encode(state))
        self.saves += 1

    def journal(self, added: Sequence[Message], settled: Sequence[str]) -> None:
        """Apply to the kept copy."""
        record = JournalRecord(add=list(added), done=list(settled))
        self.state = apply_journal(self.state or PersistedState(), [record])

    def close(self) -> None:
        """Nothing to release."""
