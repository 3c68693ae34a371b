"""Property-based fuzzing (hypothesis): the frame codec, the `where` compiler and cursor parsing raise
nothing but their documented error on any input, and a real server's WebSocket session survives any
sequence of op frames: it closes only by the malformed-frame rule (4504) and always answers a ping."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from helpers import JSON, MSGPACK
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import ServerFactory, ServerProcess
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from dash_stream.bus.cursor import BadCursor, Cursor, decode_cursor
from dash_stream.events import Event
from dash_stream.filters import compile_where
from dash_stream.protocol.codec import CODECS
from dash_stream.protocol.errors import BadRequest
from dash_stream.protocol.frames import ClientFrame

# every code point, lone surrogates included (hypothesis leaves them out by default)
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=200)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | ANY_TEXT
JSONISH = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(ANY_TEXT | st.sampled_from(["eq", "any"]), inner, max_size=5)
    ),
    max_leaves=30,
)
OPS = st.sampled_from(
    ["auth", "refresh", "subscribe", "unsubscribe", "publish", "ping", "pong", "events", ""]
)
FIELDS = st.sampled_from(["id", "sub", "topics", "where", "cursor", "from", "snapshot", "token", "event"])
EVENTISH = st.fixed_dictionaries(
    {
        "topic": st.sampled_from(["a.b", "a..b", "a.*", "", "x" * 70]) | ANY_TEXT,
        "type": ANY_TEXT | st.just("t"),
    },
    optional={
        "data": JSONISH,
        "labels": st.dictionaries(ANY_TEXT, JSONISH, max_size=3),
        "priority": ANY_TEXT | st.just("high"),
        "id": JSONISH,
        "time": ANY_TEXT,
    },
)
FRAMES = st.builds(
    lambda op, fields, event: {"op": op, **fields, **({"event": event} if event is not None else {})},
    OPS,
    st.dictionaries(FIELDS, JSONISH, max_size=4),
    st.none() | EVENTISH,
)


def _encodable(doc: Any) -> bytes | None:
    try:
        return json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError):
        return None


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=512) | ANY_TEXT)
def test_codec_decode_of_arbitrary_input_raises_only_bad_request(data: bytes | str) -> None:
    for codec in CODECS.values():
        try:
            frame = codec.decode(data)
        except BadRequest:
            continue
        assert isinstance(frame, ClientFrame.__args__)  # type: ignore[attr-defined]
        codec.correlation_id(data)


@settings(max_examples=300, deadline=None)
@given(doc=FRAMES)
def test_codec_decode_of_frame_shaped_input_raises_only_bad_request(doc: dict[str, Any]) -> None:
    text = _encodable(doc)
    packed: bytes | None
    try:
        packed = msgspec.msgpack.encode(doc)
    except (TypeError, ValueError, OverflowError, UnicodeEncodeError):
        packed = None
    for codec, data in ((CODECS[JSON], text), (CODECS[MSGPACK], packed)):
        if data is None:
            continue
        with contextlib.suppress(BadRequest):
            codec.decode(data)


@pytest.mark.parametrize("depth", [10, 1_000, 100_000])
def test_codec_decode_of_deep_nesting_is_bad_request(depth: int) -> None:
    text = (
        '{"op":"publish","id":"1","event":{"topic":"a.b","type":"t","data":'
        + "[" * depth
        + "]" * depth
        + "}}"
    )
    mp = b"\x83\xa2op\xa7publish\xa2id\xa11\xa5event\x83\xa5topic\xa3a.b\xa4type\xa1t\xa4data"
    mp += b"\x91" * depth + b"\xc0"
    for codec, data in ((CODECS[JSON], text.encode()), (CODECS[MSGPACK], mp)):
        with contextlib.suppress(BadRequest):
            codec.decode(data)


SAMPLE_EVENT = Event(
    id="e1",
    topic="swarm.s1.agent.a1",
    type="agent.failed",
    source="s",
    time="2026-11-25T00:00:00Z",
    priority="high",
    labels={"swarm": "s1", "": "x"},
    data={"a": [1, {"b": None}], "n": math.nan, "s": "\ud800"},
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=JSONISH
    | st.dictionaries(
        st.sampled_from(["type", "priority", "labels.swarm", "data.a.0", "any", "not", "topic"]),
        JSONISH,
        max_size=4,
    )
)
def test_compile_where_of_arbitrary_values_raises_only_bad_request_and_never_fails_on_events(
    where: Any,
) -> None:
    try:
        predicate = compile_where(where)
    except BadRequest:
        return
    if predicate is not None:
        assert predicate(SAMPLE_EVENT) in (True, False)


CURSORISH = st.builds(
    lambda epoch, parts, sep: epoch + sep + ".".join(f"{p}-{q}" for p, q in parts),
    st.text(st.sampled_from("abc0129xZ.-٣"), max_size=12),
    st.lists(st.tuples(st.integers(-5, 10**7) | ANY_TEXT, st.integers(-5, 10**22) | ANY_TEXT), max_size=6),
    st.sampled_from([".", "", "..", "-"]),
)


@settings(max_examples=500, deadline=None)
@given(text=ANY_TEXT | CURSORISH)
def test_decode_cursor_of_arbitrary_text_raises_only_bad_cursor_and_round_trips(text: str) -> None:
    try:
        cursor = decode_cursor(text)
    except BadCursor:
        return
    assert isinstance(cursor, Cursor)
    assert decode_cursor(cursor.encode()) == cursor
    assert all(p >= 0 and q >= 0 for p, q in cursor.positions.items())


# ---------------------------------------------------------------- the WebSocket session, live


@pytest.fixture(scope="module")
def fuzz_server(module_server: ServerFactory) -> ServerProcess:
    return module_server(
        "--dev", "--publish-rate", "0", "--conn-publish-rate", "0", "--connect-rate", "10000"
    )


@contextlib.contextmanager
def _open(srv: ServerProcess, subprotocol: str) -> Iterator[ClientConnection]:
    with connect(
        srv.ws_url, subprotocols=[Subprotocol(subprotocol)], proxy=None, open_timeout=10, max_size=None
    ) as ws:
        raw = ws.recv(timeout=10)
        welcome = json.loads(raw) if isinstance(raw, str) else msgspec.msgpack.decode(raw)
        assert welcome["op"] == "welcome"
        yield ws


def _frames_until_pong(ws: ClientConnection, subprotocol: str) -> list[dict[str, Any]]:
    seen = []
    while True:
        raw = ws.recv(timeout=10)
        doc = json.loads(raw) if isinstance(raw, str) else msgspec.msgpack.decode(raw)
        seen.append(doc)
        if doc.get("op") == "pong" and doc.get("id") == "fuzz-ping":
            return seen


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    frames=st.lists(FRAMES | st.binary(max_size=64) | ANY_TEXT, min_size=1, max_size=9), binary=st.booleans()
)
def test_a_live_session_survives_any_op_frames_and_always_answers_ping(
    fuzz_server: ServerProcess, frames: list[Any], binary: bool
) -> None:
    subprotocol = MSGPACK if binary else JSON
    with _open(fuzz_server, subprotocol) as ws:
        try:
            for frame in frames:
                if isinstance(frame, dict):
                    data = _encodable(frame) if not binary else _packed(frame)
                    if data is None:
                        continue
                    ws.send(data if binary else data.decode("utf-8", "replace"))
                elif isinstance(frame, bytes):
                    ws.send(frame)  # a binary frame: decoded with the negotiated codec
                else:
                    ws.send(frame.encode("utf-8", "replace").decode())  # a text frame must be UTF-8
            ws.send(json.dumps({"op": "ping", "id": "fuzz-ping"}))
            replies = _frames_until_pong(ws, subprotocol)
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else None
            raise AssertionError(f"the session closed ({code}) with fewer than 10 malformed frames") from e
    for reply in replies:
        if reply.get("op") == "error":
            assert reply["code"] != "internal", reply


def _packed(doc: dict[str, Any]) -> bytes | None:
    try:
        return msgspec.msgpack.encode(doc)
    except (TypeError, ValueError, OverflowError, UnicodeEncodeError):
        return None


def test_ten_malformed_frames_close_4504_and_nothing_else_closes(fuzz_server: ServerProcess) -> None:
    with _open(fuzz_server, JSON) as ws:
        for n in range(9):
            ws.send("{nope" + str(n))
        ws.send(json.dumps({"op": "ping", "id": "fuzz-ping"}))
        _frames_until_pong(ws, JSON)
        with pytest.raises(ConnectionClosed) as closed:
            ws.send("{nope")
            while True:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4504
