"""How bytes reach a WebSocket client without the fan-out ever awaiting it.

`DashWebSocketProtocol` is uvicorn's sans-I/O websockets protocol with four additions:
frames are written straight to the transport while it is writable and queued in a bounded
outbox while it is not (`send_frame`, which reports overflow instead of blocking); a close can
be forced even when the transport is congested (`force_close`); heartbeat timeouts close with
4002; and server shutdown closes with 1001 and a jittered retry delay. The ASGI app finds the
protocol object in `scope["extensions"]["dash.wire"]`.

`AsgiWire` is the fallback for other ASGI servers: a bounded outbox drained by a writer task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from dash_stream.protocol.errors import CloseCode, close_reason

log = logging.getLogger("dash_stream.ws")

_ABORT_AFTER_S = 30.0
_NO_OUTBOX: deque[tuple[bytes, bool]] = deque(maxlen=0)  # shared, always empty
_HEADER16 = struct.Struct("!BBH")
_HEADER64 = struct.Struct("!BBQ")


class Wire(Protocol):
    """A WebSocket as the connection sees it: non-blocking, bounded sends."""

    closed: bool

    def send_frame(self, data: bytes, binary: bool) -> bool:
        """Write or queue one frame; False when the outbox bound was exceeded (nothing queued)."""
        ...

    def force_close(self, code: int, reason: str, flush: bool = False) -> None:
        """Close now; with `flush`, queued frames go out first."""
        ...

    def queued_frames(self) -> int:
        """Frames waiting in the outbox."""
        ...


class DashWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with a non-blocking bounded outbox (see module doc)."""

    outbox_max_bytes = 8 * 1024 * 1024
    outbox_max_frames = 20_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closed = False
        # the outbox exists only while the transport is congested: most connections never need one
        self._outbox: deque[tuple[bytes, bool]] = _NO_OUTBOX
        self._outbox_bytes = 0
        self._paused = False
        self.on_close: Callable[[], None] | None = None

    # ---------------------------------------------------------------- handshake

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and self.response.status_code == 101:
            scope["extensions"]["dash.wire"] = self

    # ---------------------------------------------------------------- sending

    def send_frame(self, data: bytes, binary: bool) -> bool:
        """Write one frame now, or queue it while the transport is congested."""
        if self.closed or self.close_sent or self.disconnected:
            return True
        if self._paused or self._outbox:
            if (
                len(self._outbox) >= self.outbox_max_frames
                or self._outbox_bytes + len(data) > self.outbox_max_bytes
            ):
                return False
            if self._outbox is _NO_OUTBOX:
                self._outbox = deque()
            self._outbox.append((data, binary))
            self._outbox_bytes += len(data)
            return True
        self._write(data, binary)
        return True

    def _write(self, data: bytes, binary: bool) -> None:
        if self.conn.state is not State.OPEN:
            # the peer's close frame has arrived; uvicorn reports the disconnect only later
            self.closed = True
            self._outbox = _NO_OUTBOX
            self._outbox_bytes = 0
            return
        # A server frame is unmasked and, without extensions (permessage-deflate is off), its
        # header is two to ten bytes: build it here instead of through the protocol's Frame
        # objects, the single most expensive step of a fan-out to thousands of connections.
        n = len(data)
        first = 0x82 if binary else 0x81
        if n < 126:
            header = bytes((first, n))
        elif n < 65536:
            header = _HEADER16.pack(first, 126, n)
        else:
            header = _HEADER64.pack(first, 127, n)
        if n < 4096:
            self.transport.write(header + data)
        else:
            self.transport.writelines((header, data))

    def queued_frames(self) -> int:
        """Frames waiting in the outbox."""
        return len(self._outbox)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._paused = True

    def resume_writing(self) -> None:
        super().resume_writing()
        self._paused = False
        self._flush()

    def _flush(self) -> None:
        while self._outbox and not self._paused and not self.close_sent:
            data, binary = self._outbox.popleft()
            self._outbox_bytes -= len(data)
            self._write(data, binary)

    # ---------------------------------------------------------------- closing

    def force_close(self, code: int, reason: str, flush: bool = False) -> None:
        """Send a close frame now (after queued frames when `flush`) and end the connection."""
        if self.closed or self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.closed = True
        if flush:
            while self._outbox:
                data, binary = self._outbox.popleft()
                self._write(data, binary)
        self._outbox = _NO_OUTBOX
        self._outbox_bytes = 0
        self.stop_keepalive()
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        # a client that never reads would keep the buffer (and us) forever: abort after a while
        self.close_timer = self.loop.call_later(_ABORT_AFTER_S, self.transport.abort)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # websockets refused the opening handshake itself (a header line over its 8 KiB, too many
        # headers): it queued the HTTP refusal but yields no event, so uvicorn would never send it
        # and the socket would stay open forever; send it and close
        if (
            self.conn.handshake_exc is not None
            and not self.handshake_complete
            and not self.transport.is_closing()
        ):
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type != "text" or self.close_sent:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        try:
            text = data.decode()
        except UnicodeDecodeError:
            # RFC 6455: close 1007. uvicorn logs this client error with a traceback at ERROR level,
            # which would let any client flood the log; one info line says it
            log.info("closed a WebSocket that sent a text frame that is not UTF-8 (1007)")
            self.conn.send_close(CloseCode.INVALID_DATA)
            self.handle_parser_exception()
            return
        self.queue.put_nowait({"type": "websocket.receive", "text": text})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def keepalive_timeout(self) -> None:
        self.pong_timer = None
        self.pending_ping_payload = None
        self.force_close(CloseCode.HEARTBEAT_TIMEOUT, close_reason(CloseCode.HEARTBEAT_TIMEOUT))

    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent and not self.disconnected:
            self.force_close(CloseCode.GOING_AWAY, close_reason(CloseCode.GOING_AWAY), flush=True)
            self.transport.close()
            return
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._outbox = _NO_OUTBOX
        super().connection_lost(exc)


class AsgiWire:
    """A Wire over plain ASGI sends: a bounded outbox drained by one writer task."""

    def __init__(self, send: Callable[[dict[str, Any]], Any], *, max_bytes: int, max_frames: int) -> None:
        self._send = send
        self._outbox: deque[tuple[bytes, bool]] = deque()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._max_frames = max_frames
        self._wake = asyncio.Event()
        self.closed = False
        self._close: tuple[int, str] | None = None
        self._task = asyncio.create_task(self._writer())

    def send_frame(self, data: bytes, binary: bool) -> bool:
        """Queue one frame for the writer task."""
        if self.closed:
            return True
        if len(self._outbox) >= self._max_frames or self._bytes + len(data) > self._max_bytes:
            return False
        self._outbox.append((data, binary))
        self._bytes += len(data)
        self._wake.set()
        return True

    def queued_frames(self) -> int:
        """Frames waiting in the outbox."""
        return len(self._outbox)

    def force_close(self, code: int, reason: str, flush: bool = False) -> None:
        """Close after the queued frames (when `flush`) or at once."""
        if self.closed:
            return
        self.closed = True
        if not flush:
            self._outbox.clear()
        self._close = (code, reason)
        self._wake.set()

    async def _writer(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outbox:
                    data, binary = self._outbox.popleft()
                    self._bytes -= len(data)
                    if binary:
                        await self._send({"type": "websocket.send", "bytes": data})
                    else:
                        await self._send({"type": "websocket.send", "text": data.decode()})
                if self._close is not None:
                    code, reason = self._close
                    await self._send({"type": "websocket.close", "code": code, "reason": reason})
                    return

    async def aclose(self) -> None:
        """Stop the writer task."""
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
