"""The Event struct (PROTOCOL.md section 1), its validation limits, and typed well-known payloads."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from dash_stream.protocol.errors import BadRequest, TooLarge

Priority = Literal["low", "normal", "high", "critical"]
PRIORITY_RANK: Final[dict[str, int]] = {"low": 0, "normal": 1, "high": 2, "critical": 3}

TOPIC_SEGMENT = r"[A-Za-z0-9_-]{1,64}"
TOPIC_REGEX: Final = rf"^{TOPIC_SEGMENT}(\.{TOPIC_SEGMENT}){{0,15}}$"

Topic = Annotated[str, msgspec.Meta(pattern=TOPIC_REGEX, description="dotted topic, at most 16 segments")]
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
EventType = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\s\x00-\x1f]+$")]
Source = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
LabelKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
LabelValue = Annotated[str, msgspec.Meta(max_length=1024)]
Labels = Annotated[dict[LabelKey, LabelValue], msgspec.Meta(max_length=32)]
TraceHeader = Annotated[str, msgspec.Meta(max_length=512)]


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Validation limits (PROTOCOL.md section 1); every one is configurable."""

    max_event_bytes: int = 64 * 1024
    max_frame_bytes: int = 1024 * 1024
    max_batch: int = 1000
    max_data_depth: int = 32


DEFAULT_LIMITS: Final = Limits()


class EventIn(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=False):
    """An event as a publisher sends it: only `topic` and `type` are required."""

    topic: Topic
    type: EventType
    id: EventId | None = None
    source: Source | None = None
    time: str | None = None
    priority: Priority = "normal"
    labels: Labels = {}
    data: Any = None
    traceparent: TraceHeader | None = None
    tracestate: TraceHeader | None = None


class Event(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A complete event as stored and delivered; `offset` is set by the bus."""

    id: str
    topic: str
    type: str
    source: str
    time: str
    priority: Priority
    labels: dict[str, str] = {}
    data: Any = None
    traceparent: str | None = None
    tracestate: str | None = None
    offset: str | None = None


# ---------------------------------------------------------------- well-known payloads


class AgentData(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """`data` of agent.spawned|started|completed|failed|killed."""

    agent_id: str
    swarm_id: str | None = None
    session_key: str | None = None
    run_id: str | None = None
    reason: str | None = None
    error: str | None = None


class SwarmStatusData(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """`data` of swarm.status."""

    swarm_id: str
    status: Literal["starting", "up", "degraded", "down", "stopped"]
    agents: int | None = None
    message: str | None = None


class TaskData(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """`data` of task.completed|failed."""

    task_id: str
    agent_id: str | None = None
    swarm_id: str | None = None
    duration_ms: float | None = None
    error: str | None = None


class ErrorData(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """`data` of error."""

    message: str
    kind: str | None = None
    agent_id: str | None = None


class MetricsData(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """`data` of metrics: a flat map of numbers."""

    values: dict[str, float]


WELL_KNOWN: Final[dict[str, type[msgspec.Struct]]] = {
    "agent.spawned": AgentData,
    "agent.started": AgentData,
    "agent.completed": AgentData,
    "agent.failed": AgentData,
    "agent.killed": AgentData,
    "swarm.status": SwarmStatusData,
    "task.completed": TaskData,
    "task.failed": TaskData,
    "error": ErrorData,
    "metrics": MetricsData,
}


# ---------------------------------------------------------------- helpers


def uuid7() -> str:
    """A UUIDv7 string: 48 bits of Unix milliseconds, then random bits (RFC 9562)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with microseconds and a `Z`."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _check_time(value: str, where: str) -> None:
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{where}: {value[:40]!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None or "t" not in value.lower():
        raise BadRequest(f"{where}: {value[:40]!r} is not an RFC 3339 time (needs a 'T' and a UTC offset)")


def data_depth_exceeds(value: Any, limit: int) -> bool:
    """True when `value` nests deeper than `limit` containers (iterative, no recursion limit)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in item)
    return False


_json_encoder = msgspec.json.Encoder()


def complete(
    ev: EventIn,
    *,
    limits: Limits = DEFAULT_LIMITS,
    where: str = "event",
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> tuple[Event, bytes]:
    """Fill the server-set fields, check the limits, and return the event with its JSON encoding.

    The encoding carries no `offset`; the bus splices it in (see `with_offset`), so an event is
    serialised exactly once on its way in.
    """
    if ev.time is not None:
        _check_time(ev.time, f"{where}.time")
    if ev.data is not None and data_depth_exceeds(ev.data, limits.max_data_depth):
        raise BadRequest(f"{where}.data: nested deeper than {limits.max_data_depth} levels")
    event = Event(
        id=ev.id if ev.id is not None else uuid7(),
        topic=ev.topic,
        type=ev.type,
        source=ev.source if ev.source is not None else "unknown",
        time=ev.time if ev.time is not None else now_rfc3339(),
        priority=ev.priority,
        labels=ev.labels,
        data=ev.data,
        traceparent=traceparent if traceparent is not None else ev.traceparent,
        tracestate=tracestate if tracestate is not None else ev.tracestate,
    )
    encoded = _json_encoder.encode(event)
    if len(encoded) > limits.max_event_bytes:
        raise TooLarge(f"{where}: encoded size {len(encoded)} bytes exceeds {limits.max_event_bytes}")
    return event, encoded


def with_offset(encoded: bytes, offset: str) -> bytes:
    """Splice `"offset"` into an event's JSON encoding (the last field, as `Event` declares it)."""
    return b"".join((encoded[:-1], b',"offset":', _json_encoder.encode(offset), b"}"))


def validate_typed_data(event: Event) -> None:
    """Check `data` of a well-known type against its schema; free-form types pass as they are."""
    schema = WELL_KNOWN.get(event.type)
    if schema is None:
        return
    try:
        msgspec.convert(event.data, schema)
    except msgspec.ValidationError as e:
        raise BadRequest(f"data of {event.type}: {e}") from None
