"""The two subprotocols: dash.v1.json (text frames) and dash.v1.msgpack (binary frames).

Decoders and encoders are built once. Events are spliced into `events` frames as pre-encoded
bytes, so an event is serialised once per server whatever the number of subscribers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from dash_stream.bus.base import Record
from dash_stream.protocol.errors import BadRequest
from dash_stream.protocol.frames import ClientFrame, Envelope, Events

JSON: Final = "dash.v1.json"
MSGPACK: Final = "dash.v1.msgpack"
SUBPROTOCOLS: Final = (JSON, MSGPACK)


class Codec:
    """Frame encoding for one subprotocol."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.binary = name == MSGPACK
        if self.binary:
            self._decoder: msgspec.json.Decoder[ClientFrame] | msgspec.msgpack.Decoder[ClientFrame] = (
                msgspec.msgpack.Decoder(ClientFrame)
            )
            self._envelope: msgspec.json.Decoder[Envelope] | msgspec.msgpack.Decoder[Envelope] = (
                msgspec.msgpack.Decoder(Envelope)
            )
            self._encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder = msgspec.msgpack.Encoder()
        else:
            self._decoder = msgspec.json.Decoder(ClientFrame)
            self._envelope = msgspec.json.Decoder(Envelope)
            self._encoder = msgspec.json.Encoder()

    def decode(self, data: bytes | str) -> ClientFrame:
        """Decode one client frame; BadRequest names the path of what is wrong."""
        data = _utf8(data)
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as e:
            raise BadRequest(_describe(e, self._peek_op(data))) from None
        except msgspec.DecodeError as e:
            kind = "MessagePack" if self.binary else "JSON"
            raise BadRequest(f"frame is not valid {kind}: {e}") from None
        except UnicodeDecodeError:  # msgspec raises it (not a DecodeError) for a string that is not UTF-8
            raise BadRequest("frame holds a string that is not valid UTF-8") from None
        except RecursionError:  # msgspec recurses per nesting level: 100k `[` must not escape as a crash
            raise BadRequest("frame is nested too deeply") from None

    def _peek_op(self, data: bytes) -> object:
        try:
            return self._envelope.decode(data).op
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            return None

    def correlation_id(self, data: bytes | str) -> str | None:
        """The `id` of a frame that failed to decode, if it has a usable one."""
        try:
            value = self._envelope.decode(_utf8(data)).id
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            return None
        return value if isinstance(value, str) and len(value) <= 128 else None

    def encode(self, frame: msgspec.Struct) -> bytes:
        """Encode a server frame."""
        return self._encoder.encode(frame)

    def events_prefix(self, sub: str) -> bytes | None:
        """The constant start of a subscription's JSON events frames (None for MessagePack)."""
        if self.binary:
            return None
        return b'{"op":"events","sub":' + _json_str(sub) + b',"events":['

    def events_frame(
        self, sub: str, records: Sequence[Record], cursor: str, prefix: bytes | None = None
    ) -> bytes:
        """An `events` frame built by splicing each record's encoding made at publish time."""
        if prefix is not None:
            if len(records) == 1:
                return b"".join((prefix, records[0].encoded, b'],"cursor":', _json_str(cursor), b"}"))
            return b"".join(
                (prefix, b",".join([r.encoded for r in records]), b'],"cursor":', _json_str(cursor), b"}")
            )
        if self.binary:
            return self._encoder.encode(
                Events(sub=sub, events=[msgspec.Raw(r.msgpack) for r in records], cursor=cursor)
            )
        return b"".join(
            (
                b'{"op":"events","sub":',
                _json_str(sub),
                b',"events":[',
                b",".join([r.encoded for r in records]),
                b'],"cursor":',
                _json_str(cursor),
                b"}",
            )
        )


_str_encoder = msgspec.json.Encoder()


def _utf8(data: bytes | str) -> bytes:
    """Bytes to decode; a str with a lone surrogate becomes invalid UTF-8, which the decoder refuses."""
    return data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data


def _json_str(value: str) -> bytes:
    return _str_encoder.encode(value)


def _describe(error: msgspec.ValidationError, op: object) -> str:
    text = str(error)
    if "Invalid value" in text and "`$.op`" in text:
        return f"unknown op {op!r} (expected auth, refresh, subscribe, unsubscribe, publish, ping)"
    if "missing required field `op`" in text.replace("Object missing", "missing"):
        return "frame has no 'op'"
    return text.replace("`$.", "`").replace("`$`", "frame")


CODECS: Final = {JSON: Codec(JSON), MSGPACK: Codec(MSGPACK)}
