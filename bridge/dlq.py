"""The dead-letter queue: messages a sink refused for good, or that exhausted their retries.

An entry keeps the message exactly as it was (same text, same id), so `dash-stream bridge dlq
replay` posts the same bytes under the same idempotency key. The queue is behind a small Protocol
(`DeadLetterQueue`); `JsonlDeadLetterQueue` is a JSON-lines file, appended with fsync and
rewritten atomically on removal, with `flock` so the CLI and a running bridge can share it.

Bound: `max_entries`. When full, `append` refuses (returns False): the bridge counts the loss
(`dash_bridge_dlq_dropped_total`), logs it as an error and moves on, because stalling every later
alert behind a full DLQ would be worse.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Protocol

import msgspec

from bridge.errors import StateError
from bridge.model import Message


class DeadLetter(msgspec.Struct, kw_only=True, frozen=True):
    """One failed message and why it failed."""

    id: str
    receiver: str
    message: Message
    reason: str
    status: int | None = None
    detail: str = ""
    attempts: int = 0
    failed_at: float = 0.0


class DeadLetterQueue(Protocol):
    """Somewhere failed messages wait for a person."""

    def append(self, entry: DeadLetter) -> bool:
        """Store an entry durably; False when the queue is full (nothing stored)."""
        ...

    def entries(self) -> list[DeadLetter]:
        """Every entry, oldest first (one per message id: the latest failure)."""
        ...

    def remove(self, ids: Iterable[str]) -> int:
        """Delete entries by message id; how many were deleted."""
        ...


_decoder = msgspec.json.Decoder(DeadLetter)
_encoder = msgspec.json.Encoder()


class JsonlDeadLetterQueue:
    """A JSON-lines file; see the module docstring."""

    def __init__(self, path: Path, *, max_entries: int = 10_000, fsync: bool = True) -> None:
        """Nothing is touched until the first call."""
        self.path = Path(path)
        self.max_entries = max_entries
        self.fsync = fsync

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (self.path.parent / f"{self.path.name}.lock").open("ab") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read(self) -> list[DeadLetter]:
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StateError(f"{self.path}: cannot read: {e.strerror}") from None
        latest: dict[str, DeadLetter] = {}
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = _decoder.decode(line)
            except msgspec.DecodeError as e:
                raise StateError(f"{self.path}:{n}: not a dead letter ({e})") from None
            latest.pop(entry.id, None)
            latest[entry.id] = entry
        return list(latest.values())

    def _sync(self, f: IO[bytes]) -> None:
        f.flush()
        if self.fsync:
            os.fsync(f.fileno())

    def append(self, entry: DeadLetter) -> bool:
        """Append one line (fsync); False when `max_entries` other messages are already waiting."""
        with self._locked():
            current = self._read()
            if len(current) >= self.max_entries and all(e.id != entry.id for e in current):
                return False
            try:
                with self.path.open("ab") as f:
                    f.write(_encoder.encode(entry) + b"\n")
                    self._sync(f)
            except OSError as e:
                raise StateError(f"{self.path}: cannot write: {e.strerror}") from None
        return True

    def entries(self) -> list[DeadLetter]:
        """Every entry, oldest first."""
        with self._locked():
            return self._read()

    def get(self, message_id: str) -> DeadLetter | None:
        """The entry of one message id (a unique prefix also works), or None."""
        found = [e for e in self.entries() if e.id == message_id or e.id.startswith(message_id)]
        exact = [e for e in found if e.id == message_id]
        return exact[0] if exact else found[0] if len(found) == 1 else None

    def remove(self, ids: Iterable[str]) -> int:
        """Rewrite the file without those ids (atomically)."""
        wanted = set(ids)
        with self._locked():
            current = self._read()
            keep = [e for e in current if e.id not in wanted]
            if len(keep) == len(current):
                return 0
            tmp = self.path.parent / f".{self.path.name}.tmp"
            try:
                with tmp.open("wb") as f:
                    f.writelines(_encoder.encode(e) + b"\n" for e in keep)
                    self._sync(f)
                os.replace(tmp, self.path)
            except OSError as e:
                raise StateError(f"{self.path}: cannot write: {e.strerror}") from None
            return len(current) - len(keep)


class MemoryDeadLetterQueue:
    """A DLQ in memory, for tests and dry runs."""

    def __init__(self, max_entries: int = 10_000) -> None:
        """Empty."""
        self.max_entries = max_entries
        self._entries: dict[str, DeadLetter] = {}

    def append(self, entry: DeadLetter) -> bool:
        """Store unless full."""
        if len(self._entries) >= self.max_entries and entry.id not in self._entries:
            return False
        self._entries.pop(entry.id, None)
        self._entries[entry.id] = entry
        return True

    def entries(self) -> list[DeadLetter]:
        """Oldest first."""
        return list(self._entries.values())

    def remove(self, ids: Iterable[str]) -> int:
        """Delete by id."""
        return sum(1 for i in set(ids) if self._entries.pop(i, None) is not None)
