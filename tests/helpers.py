"""Reusable test clients for a real dash-stream server (all traffic to 127.0.0.1).

- `scaled(seconds)`: a timeout multiplied by `DASH_TEST_TIMEOUT_SCALE` (default 1) for slow machines.
- `WsClient`: a protocol client over the `websockets` library. A background task reads every frame
  (JSON text or msgpack binary) into `frames`; `request`, `subscribe`, `publish`, `ping`,
  `wait_for`, `wait_events` and `wait_closed` poll those frames with generous, scaled timeouts.
- `RawWebSocket`: a minimal RFC 6455 client over a plain socket. It never answers pings and reads
  nothing unless asked, so it can play a dead or stalled client (the `websockets` client answers
  pings and reads eagerly by itself).
- `check_close_reason(code, reason)`: the JSON close reason of PROTOCOL.md section 3.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

JSON = "dash.v1.json"
MSGPACK = "dash.v1.msgpack"
HOST = "127.0.0.1"

TIMEOUT_SCALE = float(os.environ.get("DASH_TEST_TIMEOUT_SCALE", "1") or "1")

Frame = dict[str, Any]
_REPLY_OPS = frozenset({"ack", "authed", "subscribed", "unsubscribed", "pong", "error"})


def scaled(seconds: float) -> float:
    """`seconds` times DASH_TEST_TIMEOUT_SCALE: every wait in the tests goes through this."""
    return seconds * TIMEOUT_SCALE


async def eventually(predicate: Callable[[], Any], within: float = 10.0, what: str = "a condition") -> Any:
    """Poll `predicate` until it is truthy (scaled timeout); its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(within)
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {scaled(within):.1f}s waiting for {what}")
        await asyncio.sleep(0.01)


def event(topic: str, seq: int, **fields: Any) -> Frame:
    """A publishable event whose `data.seq` identifies it; extra fields override the defaults."""
    doc: Frame = {"topic": topic, "type": "test.seq", "data": {"seq": seq}}
    doc.update(fields)
    return doc


def seqs(events: Sequence[Frame]) -> list[int]:
    """The `data.seq` of each event, in order."""
    return [int(e["data"]["seq"]) for e in events]


def check_close_reason(code: int, reason: str) -> dict[str, Any]:
    """Parse a close reason and check its shape: JSON with `code`, and `retry_after_ms` when the
    close code means "reconnect" (1001 and 4000-4499). Returns the parsed reason."""
    assert reason, f"close {code} has an empty reason"
    assert len(reason.encode()) <= 123, f"close reason too long for a control frame: {reason!r}"
    doc = json.loads(reason)
    assert isinstance(doc, dict), reason
    assert isinstance(doc.get("code"), str) and doc["code"], reason
    if code == 1001 or 4000 <= code < 4500:
        retry = doc.get("retry_after_ms")
        assert isinstance(retry, int) and retry > 0, f"close {code} without retry_after_ms: {reason!r}"
    return doc


class WsClient:
    """A dash-stream WebSocket client for tests; see the module docstring.

    `frames` holds every decoded server frame in arrival order and `binary` whether each arrived
    as a binary frame; `events[sub]` and `cursors[sub]` are the events and the last cursor of each
    subscription; after the connection ends, `close_code` / `close_reason` are what the server sent.
    """

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.msgpack = conn.subprotocol == MSGPACK
        self.frames: list[Frame] = []
        self.binary: list[bool] = []
        self.events: dict[str, list[Frame]] = {}
        self.cursors: dict[str, str] = {}
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.reader_error: BaseException | None = None  # a frame the client could not decode
        self._ids = itertools.count(1)
        self._wakeup = asyncio.Event()
        self.done = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name="ws-client-reader")

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        subprotocols: Sequence[str] | None = (JSON,),
        headers: dict[str, str] | None = None,
        within: float = 10.0,
    ) -> WsClient:
        """Open a connection offering `subprotocols` (None or () offers none)."""
        conn = await connect(
            url,
            subprotocols=[Subprotocol(p) for p in subprotocols] if subprotocols else None,
            additional_headers=headers,
            proxy=None,
            open_timeout=scaled(within),
            ping_interval=None,
            close_timeout=scaled(5),
            max_size=64 * 1024 * 1024,
            max_queue=None,
            compression=None,
        )
        return cls(conn)

    async def __aenter__(self) -> WsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ reading

    async def _read(self) -> None:
        try:
            while True:
                message = await self.conn.recv()
                is_binary = isinstance(message, bytes)
                doc = msgspec.msgpack.decode(message) if is_binary else json.loads(message)
                self.frames.append(doc)
                self.binary.append(is_binary)
                if doc.get("op") == "events":
                    self.events.setdefault(doc["sub"], []).extend(doc["events"])
                    self.cursors[doc["sub"]] = doc["cursor"]
                self._wakeup.set()
        except ConnectionClosed as e:
            if e.rcvd is not None:
                self.close_code, self.close_reason = e.rcvd.code, e.rcvd.reason
        except Exception as e:
            self.reader_error = e
        finally:
            self.done.set()

    def _describe(self, what: str) -> str:
        tail = self.frames[-3:]
        text = f"{what} (last frames: {tail!r}, close: {self.close_code} {self.close_reason!r})"
        return f"{text}, reader failed: {self.reader_error!r}" if self.reader_error else text

    async def _until(self, check: Callable[[], Any], within: float, what: Callable[[], str]) -> Any:
        """The first truthy `check()`, re-checked as frames arrive; AssertionError after `within`
        (scaled) seconds or when the connection ends first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + scaled(within)
        while True:
            result = check()
            if result:
                return result
            if self.done.is_set():
                raise AssertionError(f"connection ended while waiting for {what()}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out after {scaled(within):.1f}s waiting for {what()}")
            self._wakeup.clear()
            waiters = [asyncio.ensure_future(self._wakeup.wait()), asyncio.ensure_future(self.done.wait())]
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)

    async def wait_for(
        self, predicate: Callable[[Frame], bool], within: float = 10.0, start: int = 0
    ) -> Frame:
        """The first frame from index `start` on that satisfies `predicate`."""
        position = [start]

        def check() -> Frame | None:
            while position[0] < len(self.frames):
                frame = self.frames[position[0]]
                position[0] += 1
                if predicate(frame):
                    return frame
            return None

        result: Frame = await self._until(check, within, lambda: self._describe("a matching frame"))
        return result

    async def wait_events(self, sub: str, count: int, within: float = 10.0) -> list[Frame]:
        """The events of `sub` once at least `count` have arrived."""
        await self._until(
            lambda: len(self.events.get(sub, [])) >= count,
            within,
            lambda: self._describe(f"{count} events on {sub} (have {len(self.events.get(sub, []))})"),
        )
        return self.events[sub]

    async def wait_closed(self, within: float = 10.0) -> tuple[int | None, str | None]:
        """Wait until the server ends the connection; the close code and reason it sent."""
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), scaled(within))
        except TimeoutError:
            raise AssertionError(self._describe(f"no close within {scaled(within):.1f}s")) from None
        return self.close_code, self.close_reason

    # ------------------------------------------------------------ sending

    def next_id(self) -> str:
        """A fresh correlation id."""
        return f"c{next(self._ids)}"

    def encode(self, frame: Frame) -> str | bytes:
        """A frame in this connection's subprotocol."""
        return msgspec.msgpack.encode(frame) if self.msgpack else json.dumps(frame)

    async def send(self, frame: Frame) -> None:
        """Send one frame without waiting for a reply."""
        await self.conn.send(self.encode(frame))

    async def send_raw(self, data: str | bytes) -> None:
        """Send bytes (binary frame) or str (text frame) as they are."""
        await self.conn.send(data)

    async def request(self, op: str, within: float = 10.0, **fields: Any) -> Frame:
        """Send `op` with a fresh id and return the reply (or error) frame that echoes the id."""
        frame_id = self.next_id()
        start = len(self.frames)
        await self.send({"op": op, "id": frame_id, **fields})
        return await self.wait_for(
            lambda f: f.get("id") == frame_id and f.get("op") in _REPLY_OPS, within, start=start
        )

    async def subscribe(self, sub: str, topics: Sequence[str], **fields: Any) -> Frame:
        """Subscribe and return the `subscribed` frame (AssertionError on an error reply)."""
        reply = await self.request("subscribe", sub=sub, topics=list(topics), **fields)
        assert reply["op"] == "subscribed", reply
        return reply

    async def publish(self, ev: Frame) -> Frame:
        """Publish one event and return its `ack` (AssertionError on an error reply)."""
        reply = await self.request("publish", event=ev)
        assert reply["op"] == "ack", reply
        return reply

    async def publish_many(self, events: Sequence[Frame]) -> list[str]:
        """Publish events pipelined (all frames sent, then all acks awaited); their offsets in order."""
        if not events:
            return []
        ids = [self.next_id() for _ in events]
        start = len(self.frames)
        for i, ev in zip(ids, events, strict=True):
            await self.conn.send(self.encode({"op": "publish", "id": i, "event": ev}))
        last = ids[-1]
        await self.wait_for(lambda f: f.get("id") == last and f.get("op") in _REPLY_OPS, 30.0, start=start)
        replies = {f["id"]: f for f in self.frames[start:] if f.get("op") in _REPLY_OPS and "id" in f}
        out = []
        for i in ids:
            reply = replies.get(i)
            assert reply is not None and reply["op"] == "ack", reply
            out.append(reply["offset"])
        return out

    async def ping(self) -> Frame:
        """A `ping` op answered by `pong`: proves the connection still works and is in order."""
        reply = await self.request("ping")
        assert reply["op"] == "pong", reply
        return reply

    async def close(self) -> None:
        """Close the connection (if still open) and stop the reader."""
        await self.conn.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


# ---------------------------------------------------------------- raw socket client

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass
class RawFrame:
    """One WebSocket frame as read off the wire."""

    opcode: int
    payload: bytes
    fin: bool = True

    @property
    def close_code(self) -> int | None:
        """The code of a close frame."""
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        """The reason of a close frame."""
        return self.payload[2:].decode()

    def json(self) -> Frame:
        """A text frame's JSON."""
        doc: Frame = json.loads(self.payload)
        return doc


@dataclass
class RawWebSocket:
    """A minimal WebSocket client: handshake, masked sends, and a frame reader. Nothing automatic."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    subprotocol: str | None = None
    seen: list[RawFrame] = field(default_factory=list)

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        path: str = "/v1/ws",
        subprotocol: str | None = JSON,
        rcvbuf: int | None = None,
        buffer_limit: int = 64 * 1024,
        within: float = 10.0,
    ) -> RawWebSocket:
        """Connect to 127.0.0.1:`port`; `rcvbuf` sets SO_RCVBUF before connecting (a small window),
        and `buffer_limit` bounds what is read ahead of the test (reading pauses beyond twice it)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), scaled(within))
            reader, writer = await asyncio.open_connection(sock=sock, limit=buffer_limit)
        except BaseException:
            sock.close()
            raise
        ws = cls(reader, writer)
        try:
            await asyncio.wait_for(ws._handshake(port, path, subprotocol), scaled(within))
        except BaseException:
            await ws.abort()
            raise
        return ws

    async def _handshake(self, port: int, path: str, subprotocol: str | None) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {HOST}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if subprotocol:
            lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = head.split("\r\n", 1)[0]
        assert " 101 " in status, f"handshake refused: {head!r}"
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-protocol":
                self.subprotocol = value.strip()

    async def read_frame(self, within: float = 10.0) -> RawFrame:
        """The next frame (fragments are returned as they come)."""
        frame = await asyncio.wait_for(self._read_frame(), scaled(within))
        self.seen.append(frame)
        return frame

    async def _read_frame(self) -> RawFrame:
        b0, b1 = await self.reader.readexactly(2)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        mask = await self.reader.readexactly(4) if b1 & 0x80 else None
        payload = await self.reader.readexactly(length)
        if mask is not None:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return RawFrame(opcode=b0 & 0x0F, payload=payload, fin=bool(b0 & 0x80))

    async def read_until(
        self, predicate: Callable[[RawFrame], bool], within: float = 10.0, max_frames: int = 1_000_000
    ) -> RawFrame:
        """Read frames until one satisfies `predicate` (a close frame ends the search with an error)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + scaled(within)
        for _ in range(max_frames):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            frame = await asyncio.wait_for(self._read_frame(), remaining)
            self.seen.append(frame)
            if predicate(frame):
                return frame
            if frame.opcode == OP_CLOSE:
                raise AssertionError(f"closed {frame.close_code} {frame.close_reason!r} before the frame")
        raise AssertionError(f"no matching frame within {scaled(within):.1f}s")

    async def send_frame(self, opcode: int, payload: bytes) -> None:
        """Send one masked, final frame."""
        header = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        header += mask
        self.writer.write(bytes(header) + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        await self.writer.drain()

    async def send_json(self, frame: Frame) -> None:
        """Send a JSON text frame."""
        await self.send_frame(OP_TEXT, json.dumps(frame).encode())

    async def abort(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        self.writer.transport.abort()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


def metric_value(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text output (0.0 when absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    return 0.0


WsClientFactory = Callable[..., Awaitable[WsClient]]
