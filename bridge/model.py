"""The data that travels through the bridge: targets, messages and the events they came from.

A `Message` is final once built: its text, target and id never change, so a retry, a restart's
re-send and a DLQ replay all post the very same bytes under the same idempotency key (OpenClaw
replays a run only when key *and* payload match).
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal

import msgspec

from dash_stream.events import Priority

MESSAGE_ID_PREFIX: Final = "dbm-"


class Target(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A rendered destination: the receiver and the OpenClaw fields of the request."""

    receiver: str
    endpoint: Literal["agent", "wake"] = "agent"
    agent_id: str | None = None
    session_key: str | None = None
    channel: str | None = None
    to: str | None = None
    wake_mode: Literal["now", "next-heartbeat"] | None = None
    deliver: bool | None = None
    hook_name: str | None = None
    model: str | None = None
    thinking: str | None = None
    timeout_seconds: int | None = None

    def key(self) -> str:
        """A string that is equal for equal targets (used in group keys and ordering)."""
        return msgspec.json.encode(self).decode()

    def ordering_key(self) -> str:
        """Messages with the same ordering key are sent one after another, in order."""
        return f"{self.receiver}\x1f{self.endpoint}\x1f{self.agent_id}\x1f{self.session_key}\x1f{self.to}"


class SourceRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One source event of a message: its offset (a cursor), the route claim, and its trace.

    `topic`, `event_id` and `tracestate` name the event in the bridge's spans (`forward <topic>`);
    they are absent from messages journaled by older versions, which is fine (not in the body).
    """

    offset: str
    claim: str
    traceparent: str | None = None
    tracestate: str | None = None
    topic: str | None = None
    event_id: str | None = None


class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One message for one target: a single event or a digest of a group (or a part of one).

    `head` is the rendered summary; `text` adds the list of sources and the origin footer.
    `sources` are the events it settles once the sink accepted it or the DLQ stored it; `count`
    is the number of events of the whole digest (a part lists only some of them).
    """

    id: str
    route: str
    group: str
    target: Target
    priority: Priority
    count: int
    head: str
    sources: tuple[SourceRef, ...]
    origin: str
    part: int = 1
    parts: int = 1
    created: float = 0.0

    @property
    def idempotency_key(self) -> str:
        """The `Idempotency-Key` header value: the message id."""
        return self.id

    @property
    def text(self) -> str:
        """The body posted to OpenClaw: head, part marker, sources, origin footer."""
        lines = [self.head]
        if self.parts > 1:
            lines.append(f"(part {self.part} of {self.parts})")
        n = len(self.sources)
        if n == 1 and self.count == 1:
            src = self.sources[0]
            lines.append(f"source: {src.offset} traceparent {src.traceparent or '-'}")
        else:
            of = f" of {self.count}" if n != self.count else ""
            lines.append(f"sources ({n}{of}):")
            lines.extend(f"- {s.offset} traceparent {s.traceparent or '-'}" for s in self.sources)
        lines.append(f"origin: {self.origin} | route {self.route} | message {self.id}")
        return "\n".join(lines)


def message_id(claim: str, group_key: str, offsets: list[str]) -> str:
    """A stable id: a hash of the route claim, the group and the source offsets."""
    h = hashlib.sha256()
    for piece in (claim, group_key, *offsets):
        h.update(piece.encode())
        h.update(b"\x00")
    return MESSAGE_ID_PREFIX + h.hexdigest()[:40]


def part_id(base: str, part: int, parts: int) -> str:
    """The id of one part of a split message (deterministic for a given split)."""
    return f"{base}.{part}of{parts}"
