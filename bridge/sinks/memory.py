"""Sinks that keep or print messages instead of posting them: tests and `--dry-run`."""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import orjson

from bridge.model import Message
from bridge.sinks.base import SendResult


class MemorySink:
    """Records every message it accepts; `script` results (e.g. a 503) are answered first, in order."""

    def __init__(
        self, name: str = "memory", *, max_body_bytes: int = 250_000, max_messages: int = 100_000
    ) -> None:
        """An empty sink that accepts everything unless scripted otherwise."""
        self.name = name
        self.max_body_bytes = max_body_bytes
        self.messages: deque[Message] = deque(maxlen=max_messages)
        self.attempts: list[Message] = []
        self.script: deque[SendResult] = deque()

    def fail_next(self, results: Iterable[SendResult]) -> None:
        """Answer the next sends with these results."""
        self.script.extend(results)

    def measure(self, message: Message) -> int:
        """The UTF-8 size of the text plus a fixed allowance for the envelope."""
        return len(message.text.encode()) + 200

    async def send(self, message: Message) -> SendResult:
        """Record the message (unless a scripted failure comes first)."""
        self.attempts.append(message)
        if self.script:
            result = self.script.popleft()
            if not result.ok:
                return result
        self.messages.append(message)
        return SendResult(ok=True, status=200)

    async def close(self) -> None:
        """Nothing to release."""


class PrintSink:
    """`--dry-run` and `kind = "stdout"`: print what would be sent, one JSON line per message."""

    def __init__(
        self,
        name: str,
        *,
        describe: Callable[[Message], dict[str, Any]] | None = None,
        max_body_bytes: int = 250_000,
        measure: Callable[[Message], int] | None = None,
        out: TextIO | None = None,
    ) -> None:
        """`describe` turns a message into the request it would be (default: target and text)."""
        self.name = name
        self.max_body_bytes = max_body_bytes
        self._describe = describe
        self._measure = measure
        self._out = out

    def measure(self, message: Message) -> int:
        """The wrapped sink's measure, else the text size."""
        return self._measure(message) if self._measure else len(message.text.encode()) + 200

    async def send(self, message: Message) -> SendResult:
        """Print and report success."""
        doc = self._describe(message) if self._describe else {"target": message.target, "text": message.text}
        line = orjson.dumps({"receiver": self.name, "idempotency_key": message.id, **doc}, default=_default)
        out = self._out or sys.stdout
        out.write(line.decode() + "\n")
        out.flush()
        return SendResult(ok=True, status=200)

    async def close(self) -> None:
        """Nothing to release."""


def _default(value: object) -> object:
    import msgspec

    return msgspec.to_builtins(value)
