"""Frames as the SDK sees them (PROTOCOL.md section 3), and their encoding per subprotocol.

Outgoing frames omit unset fields, so the wire carries only what the caller chose. Incoming
frames decode into typed Structs in one pass: the events of an `events` frame become
`dash_stream.events.Event` values directly. Unknown ops and unknown fields are tolerated, so an
older SDK keeps working against a newer server.
"""

from __future__ import annotations

from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from dash_stream.events import Event

Subprotocol = Literal["json", "msgpack"]
SUBPROTOCOL_NAMES: Final[dict[str, str]] = {"json": "dash.v1.json", "msgpack": "dash.v1.msgpack"}
WS_PATH: Final = "/v1/ws"


# ---------------------------------------------------------------- client -> server


class _Op(msgspec.Struct, tag_field="op", kw_only=True, frozen=True, omit_defaults=True):
    id: str | None = None


class Auth(_Op, tag="auth", kw_only=True, frozen=True):
    """Authenticate the connection with a JWT."""

    token: str


class Refresh(_Op, tag="refresh", kw_only=True, frozen=True):
    """Replace the connection's token before it expires."""

    token: str


class Subscribe(_Op, tag="subscribe", kw_only=True, frozen=True):
    """Subscribe to topic patterns, optionally filtered and resumed from a cursor."""

    sub: str
    topics: list[str]
    where: dict[str, Any] | None = None
    cursor: str | None = None
    from_: Literal["latest", "earliest"] | None = msgspec.field(default=None, name="from")


class Unsubscribe(_Op, tag="unsubscribe", kw_only=True, frozen=True):
    """End one subscription."""

    sub: str


class Publish(_Op, tag="publish", kw_only=True, frozen=True):
    """Publish one event (already reduced to the fields the publisher set)."""

    event: dict[str, Any]


class Ping(_Op, tag="ping", kw_only=True, frozen=True):
    """Application-level ping."""


ClientFrame = Auth | Refresh | Subscribe | Unsubscribe | Publish | Ping


# ---------------------------------------------------------------- server -> client


class _Reply(msgspec.Struct, tag_field="op", kw_only=True, frozen=True, forbid_unknown_fields=False):
    pass


class Welcome(_Reply, tag="welcome", kw_only=True, frozen=True):
    """First frame of every connection."""

    session: str = ""
    heartbeat_s: float = 25.0
    limits: dict[str, int] = {}


class Authed(_Reply, tag="authed", kw_only=True, frozen=True):
    """Answer to auth and refresh."""

    id: str | None = None
    sub: str = ""
    exp: float | None = None


class Ack(_Reply, tag="ack", kw_only=True, frozen=True):
    """Answer to publish."""

    id: str | None = None
    offset: str
    duplicate: bool = False


class Subscribed(_Reply, tag="subscribed", kw_only=True, frozen=True):
    """Answer to subscribe, sent before any replayed events."""

    id: str | None = None
    sub: str
    cursor: str
    recovered: bool = True
    replayed: int = 0
    reason: str | None = None


class Unsubscribed(_Reply, tag="unsubscribed", kw_only=True, frozen=True):
    """Answer to unsubscribe."""

    id: str | None = None
    sub: str = ""


class Pong(_Reply, tag="pong", kw_only=True, frozen=True):
    """Answer to ping."""

    id: str | None = None


class Error(_Reply, tag="error", kw_only=True, frozen=True):
    """An op failed; the connection stays usable."""

    id: str | None = None
    code: str
    message: str = ""
    retryable: bool = False
    retry_after_ms: int | None = None


class Events(_Reply, tag="events", kw_only=True, frozen=True):
    """Events of one subscription and the cursor after them (an empty list: the cursor advanced)."""

    sub: str
    events: list[Event]
    cursor: str


ServerFrame = Welcome | Authed | Ack | Subscribed | Unsubscribed | Pong | Error | Events


class Codec:
    """Encoding and decoding of frames for one subprotocol; build once per client."""

    def __init__(self, subprotocol: Subprotocol) -> None:
        """`subprotocol` is "json" (text frames) or "msgpack" (binary frames)."""
        if subprotocol not in SUBPROTOCOL_NAMES:
            raise ValueError(f"subprotocol must be 'json' or 'msgpack', not {subprotocol!r}")
        self.name = SUBPROTOCOL_NAMES[subprotocol]
        self.binary = subprotocol == "msgpack"
        self._json_decoder: msgspec.json.Decoder[ServerFrame] = msgspec.json.Decoder(ServerFrame)
        self._msgpack_decoder: msgspec.msgpack.Decoder[ServerFrame] = msgspec.msgpack.Decoder(ServerFrame)
        self._json_encoder = msgspec.json.Encoder()
        self._msgpack_encoder = msgspec.msgpack.Encoder()

    def encode(self, frame: ClientFrame) -> str | bytes:
        """A frame ready for `websocket.send`: text for JSON, bytes for MessagePack."""
        if self.binary:
            return self._msgpack_encoder.encode(frame)
        return self._json_encoder.encode(frame).decode()

    def decode(self, data: str | bytes) -> ServerFrame:
        """Decode one server frame; msgspec.MsgspecError when it is not one we understand.

        The frame type decides the decoder, not the negotiated subprotocol, so a server that
        answered with the other encoding is still understood.
        """
        if isinstance(data, str):
            return self._json_decoder.decode(data)
        if self.binary:
            return self._msgpack_decoder.decode(data)
        return self._json_decoder.decode(data)


def event_payload(event: Any) -> dict[str, Any]:
    """An event as plain builtins with unset (None) fields and empty labels left out."""
    doc = msgspec.to_builtins(event)
    if not isinstance(doc, dict):
        raise TypeError(f"an event must be a dict or an EventIn, not {type(event).__name__}")
    return {k: v for k, v in doc.items() if v is not None and not (k == "labels" and v == {})}


def websocket_url(url: str) -> str:
    """`ws(s)://host[:port]/v1/ws` from a ws, wss, http or https URL (the path defaults to /v1/ws)."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a dash-stream URL: {url!r} (expected ws://, wss://, http:// or https://)")
    path = parts.path if parts.path not in ("", "/") else WS_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))
