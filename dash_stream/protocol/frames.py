"""Wire frames (PROTOCOL.md section 3) as tagged msgspec Structs, decoded by decoders built once."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from dash_stream.events import EventIn
from dash_stream.state import SwarmView

CorrelationId = Annotated[str, msgspec.Meta(max_length=128)]
SubId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=16 * 1024)]


class _Op(msgspec.Struct, tag_field="op", kw_only=True, frozen=True, forbid_unknown_fields=False):
    id: CorrelationId | None = None


class Auth(_Op, tag="auth", kw_only=True, frozen=True):
    """Authenticate the connection with a JWT."""

    token: Token


class Refresh(_Op, tag="refresh", kw_only=True, frozen=True):
    """Replace the connection's token before it expires."""

    token: Token


class Subscribe(_Op, tag="subscribe", kw_only=True, frozen=True):
    """Subscribe to topic patterns, optionally filtered and resumed."""

    sub: SubId
    topics: list[str]
    where: dict[str, Any] | None = None
    cursor: str | None = None
    # `from` is a keyword in Python: the wire name is "from"
    from_: Literal["latest", "earliest"] | None = msgspec.field(default=None, name="from")
    # start with a `snapshot` frame of the live swarm state, then the events after its cursor
    snapshot: bool = False


class Unsubscribe(_Op, tag="unsubscribe", kw_only=True, frozen=True):
    """End one subscription."""

    sub: SubId


class Publish(_Op, tag="publish", kw_only=True, frozen=True):
    """Publish one event, answered with an ack."""

    event: EventIn


class Ping(_Op, tag="ping", kw_only=True, frozen=True):
    """Application-level ping, answered with pong."""


ClientFrame = Auth | Refresh | Subscribe | Unsubscribe | Publish | Ping


class Envelope(msgspec.Struct, forbid_unknown_fields=False):
    """Just enough of a frame to echo its id and name its op when the full decode fails."""

    id: Any = None
    op: Any = None


# ---------------------------------------------------------------- server frames


class _Reply(msgspec.Struct, tag_field="op", kw_only=True, omit_defaults=True):
    pass


class Welcome(_Reply, tag="welcome", kw_only=True):
    """First frame of every connection."""

    session: str
    heartbeat_s: float
    limits: dict[str, int]
    auth: str
    server: str


class Authed(_Reply, tag="authed", kw_only=True):
    """Answer to auth and refresh."""

    id: str | None = None
    sub: str
    exp: int | None = None


class Ack(_Reply, tag="ack", kw_only=True):
    """Answer to publish."""

    id: str | None = None
    offset: str
    duplicate: bool = False


class Subscribed(_Reply, tag="subscribed", kw_only=True):
    """Answer to subscribe, sent before any replayed events."""

    id: str | None = None
    sub: str
    cursor: str
    recovered: bool
    replayed: int
    reason: str | None = None


class Unsubscribed(_Reply, tag="unsubscribed", kw_only=True):
    """Answer to unsubscribe."""

    id: str | None = None
    sub: str


class Pong(_Reply, tag="pong", kw_only=True):
    """Answer to ping."""

    id: str | None = None


class Error(_Reply, tag="error", kw_only=True):
    """An op failed; the connection stays usable."""

    id: str | None = None
    code: str
    message: str
    retryable: bool  # no default: omit_defaults would drop `"retryable":false` from the wire
    retry_after_ms: int | None = None


class Events(_Reply, tag="events", kw_only=True):
    """Events for one subscription; `events` are pre-encoded (`msgspec.Raw`)."""

    sub: str
    events: list[msgspec.Raw]
    cursor: str


class Snapshot(_Reply, tag="snapshot", kw_only=True):
    """The live swarm state of a `snapshot: true` subscription, sent after `subscribed` and before
    its events; the events that follow are exactly those after `cursor`."""

    sub: str
    cursor: str
    swarms: list[SwarmView]


ServerFrame = Welcome | Authed | Ack | Subscribed | Unsubscribed | Pong | Error | Events | Snapshot
