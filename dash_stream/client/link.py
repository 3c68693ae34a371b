"""`Link`: the client's one live connection at a time, and everything that rides on it.

A supervisor task reads frames, hands events to their streams and answers to their waiting
requests. When the connection drops with a reconnect code (1001, 1006, 4000-4499) it waits the
server's `retry_after_ms` (else a capped, jittered backoff), connects again with a fresh token,
resubscribes every stream from where its buffer ends and re-sends unanswered publishes (each
carries an `id`, so the server's dedup makes the retry safe). Any other close fails every stream
and request with a `ClientError`.

All sends go through one lock, so that a reconnect's resubscriptions and re-sent publishes keep
their order relative to new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from dash_stream.client import policy
from dash_stream.client.errors import ClientError, PublishError
from dash_stream.client.stream import Stream
from dash_stream.client.tokens import Credentials
from dash_stream.client.transport import (
    Transient,
    close_of,
    closed_error,
    describe_exception,
    open_connection,
)
from dash_stream.client.wire import (
    Ack,
    Authed,
    ClientFrame,
    Codec,
    Error,
    Events,
    Pong,
    Publish,
    Subscribed,
    Unsubscribe,
)

log = logging.getLogger("dash_stream.client")

_HEALTHY_AFTER_S = 5.0  # a connection that lived this long resets the backoff


class _Request:
    """An op waiting for its answer; `resend` ops survive a reconnect."""

    __slots__ = ("frame", "future", "resend", "sent_on")

    def __init__(self, frame: ClientFrame, resend: bool) -> None:
        self.frame = frame
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.resend = resend
        self.sent_on: object | None = None


class Link:
    """One connection at a time to `url`, its requests and its streams; owned by a `Client`."""

    def __init__(
        self,
        url: str,
        codec: Codec,
        credentials: Credentials,
        *,
        open_timeout: float,
        request_timeout: float,
        max_backoff_s: float,
    ) -> None:
        """Configure; `start()` connects."""
        self.url = url
        self.session: str | None = None
        self.reconnects = 0
        self.ws: ClientConnection | None = None
        self.streams: dict[str, Stream] = {}
        self.failure: ClientError | None = None
        self._codec = codec
        self._credentials = credentials
        self._open_timeout = open_timeout
        self._request_timeout = request_timeout
        self._max_backoff_s = max_backoff_s
        self._ids = itertools.count(1)
        self._sub_requests: dict[str, Stream] = {}
        self._pending: dict[str, _Request] = {}
        self._send_lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None

    def next_id(self) -> str:
        """A fresh correlation id."""
        return str(next(self._ids))

    async def start(self) -> None:
        """Open the first connection and start the supervisor; raises Transient or ClientError."""
        ws = await self._open()
        self._supervisor = asyncio.create_task(self._supervise(ws), name="dash-client-supervisor")

    async def stop(self) -> None:
        """Stop the supervisor, close the connection, end every stream and request."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        ws, self.ws = self.ws, None
        if ws is not None:
            await ws.close()
        self._end_all(ClientError("closed", "the client was closed"), streams_error=None)

    async def request(self, frame: ClientFrame, resend: bool, what: str) -> Any:
        """Send an op and wait for its answer (`resend`: again after a reconnect)."""
        assert frame.id is not None
        if not resend and self.ws is None:
            raise ClientError("connection_lost", f"cannot {what} while reconnecting")
        request = _Request(frame, resend)
        self._pending[frame.id] = request
        try:
            async with self._send_lock:
                await self._transmit(request)
            async with asyncio.timeout(self._request_timeout):
                return await request.future
        except TimeoutError:
            raise (PublishError if what == "publish" else ClientError)(
                "timeout", f"no answer to {what} within {self._request_timeout}s"
            ) from None
        finally:
            self._pending.pop(frame.id, None)

    async def _transmit(self, request: _Request) -> None:
        """Send a request on the current connection once (call with the send lock held)."""
        ws = self.ws
        if ws is None or request.sent_on is ws:
            return
        request.sent_on = ws
        with contextlib.suppress(ConnectionClosed):
            await ws.send(self._codec.encode(request.frame))

    async def attach(self, stream: Stream) -> None:
        """Register a new stream and subscribe it; ValueError when its `sub` is taken."""
        if stream.sub in self.streams:
            raise ValueError(f"subscription {stream.sub!r} already exists on this client")
        self.streams[stream.sub] = stream
        await self.send_subscribe(stream)

    async def detach(self, stream: Stream) -> None:
        """End a stream: forget it, stop its iteration and unsubscribe it (idempotent)."""
        if self.streams.get(stream.sub) is stream:
            del self.streams[stream.sub]
            stream.fail(None)
            await self.send_unsubscribe(stream)

    async def send_subscribe(self, stream: Stream) -> None:
        """Subscribe a stream on the current connection, unless it already is."""
        async with self._send_lock:
            await self._subscribe_on_current(stream)

    async def _subscribe_on_current(self, stream: Stream) -> None:
        """(Re)subscribe a stream on the current connection once (call with the send lock held)."""
        ws = self.ws
        if ws is None or stream.subscribed_on is ws or stream.paused:
            return
        if self.streams.get(stream.sub) is not stream:
            return
        request_id = self.next_id()
        self._sub_requests[request_id] = stream
        stream.subscribed_on = ws
        with contextlib.suppress(ConnectionClosed):
            await ws.send(self._codec.encode(stream.subscribe_frame(request_id)))

    async def send_unsubscribe(self, stream: Stream) -> None:
        """End a stream's subscription on the current connection (best effort, no answer awaited)."""
        async with self._send_lock:
            ws = self.ws
            if ws is None or stream.subscribed_on is not ws:
                return
            stream.subscribed_on = None
            with contextlib.suppress(ConnectionClosed):
                await ws.send(self._codec.encode(Unsubscribe(id=self.next_id(), sub=stream.sub)))

    # ------------------------------------------------------------ connection

    async def _open(self) -> ClientConnection:
        """Open a verified connection, then resubscribe every stream and re-send publishes.

        Raises Transient (retry) or ClientError (stop).
        """
        ws, welcome = await open_connection(
            self.url, self._codec, await self._credentials.for_connection(), self._open_timeout
        )
        self.session = welcome.session
        # Streams first, so that they see the publishes re-sent below even when the server could
        # not resume them (a new epoch starts them from "now"); one lock hold keeps the order.
        async with self._send_lock:
            self.ws = ws
            for stream in list(self.streams.values()):
                await self._subscribe_on_current(stream)
            for request in list(self._pending.values()):
                if request.resend:
                    await self._transmit(request)
        return ws

    async def _supervise(self, ws: ClientConnection) -> None:
        """Read the connection; on a reconnect code, connect again; on any other, fail the client."""
        backoff = policy.Backoff(cap_s=self._max_backoff_s)
        while True:
            opened_at = time.monotonic()
            code, reason = await self._read(ws)
            async with self._send_lock:
                self.ws = None
            if time.monotonic() - opened_at > _HEALTHY_AFTER_S:
                backoff.reset()  # a connection that dropped at once keeps backing off
            self._drop_unsendable()
            # 4501 means "refresh credentials": with a token provider the client can, on reconnect
            # (a fresh token that is refused at once ends the client in `_open`, so this cannot spin)
            renewable = code == 4501 and self._credentials.provider is not None
            if not policy.should_reconnect(code) and not renewable:
                self._fail(closed_error(code, reason))
                return
            delay = backoff.next_delay(policy.parse_close_reason(reason)[1])
            log.info("connection closed with %s; reconnecting in %.2fs", code, delay)
            while True:
                await asyncio.sleep(delay)
                try:
                    ws = await self._open()
                    break
                except ClientError as e:
                    self._fail(e)
                    return
                except Transient as e:
                    delay = backoff.next_delay(e.retry_after_ms)
                    log.info("reconnect failed (%s); next attempt in %.2fs", e.reason, delay)
                except Exception as e:  # a token_provider failing is worth another try
                    delay = backoff.next_delay()
                    log.warning("reconnect failed: %s; next attempt in %.2fs", describe_exception(e), delay)
            self.reconnects += 1

    async def _read(self, ws: ClientConnection) -> tuple[int, str]:
        """Dispatch frames until the connection ends; return its close code and reason."""
        try:
            while True:
                data = await ws.recv()
                try:
                    frame = self._codec.decode(data)
                except msgspec.MsgspecError as e:
                    log.warning("ignoring a frame the client does not understand: %s", e)
                    continue
                await self._dispatch(frame)
        except ConnectionClosed as e:
            return close_of(e)

    async def _dispatch(self, frame: Any) -> None:
        if isinstance(frame, Events):
            stream = self.streams.get(frame.sub)
            if stream is not None and stream.on_events(frame):
                log.info("stream %s buffer full; pausing it until the application catches up", stream.sub)
                await self.send_unsubscribe(stream)
        elif isinstance(frame, Subscribed):
            self._sub_requests.pop(frame.id or "", None)
            stream = self.streams.get(frame.sub)
            if stream is not None:
                stream.on_subscribed(frame)
        elif isinstance(frame, Error):
            self._on_error(frame)
        elif isinstance(frame, Ack | Pong | Authed):
            request = self._pending.get(frame.id or "")
            if request is not None and not request.future.done():
                request.future.set_result(frame)

    def _on_error(self, frame: Error) -> None:
        stream = self._sub_requests.pop(frame.id or "", None)
        if stream is not None:
            if self.streams.get(stream.sub) is stream:
                del self.streams[stream.sub]
            stream.fail(ClientError(frame.code, f"subscribe {stream.sub!r}: {frame.message}"))
            return
        request = self._pending.get(frame.id or "")
        if request is None or request.future.done():
            log.warning("server error %s: %s", frame.code, frame.message)
            return
        if isinstance(request.frame, Publish):
            request.future.set_exception(PublishError(frame.code, frame.message, frame.retry_after_ms))
        else:
            request.future.set_exception(
                ClientError(frame.code, frame.message, retry_after_ms=frame.retry_after_ms)
            )

    def _drop_unsendable(self) -> None:
        """Fail the requests a reconnect will not send again (pings, refreshes)."""
        lost = ClientError("connection_lost", "the connection dropped before the answer arrived")
        for request in self._pending.values():
            if not request.resend and not request.future.done():
                request.future.set_exception(lost)
        self._sub_requests.clear()
        for stream in self.streams.values():
            stream.subscribed_on = None
            stream.awaiting_subscribed = True

    def _fail(self, error: ClientError) -> None:
        # info, not error: the application receives this very error from its streams and calls
        log.info("dash-stream client stopped: %s", error)
        self.failure = error
        self._end_all(error, streams_error=error)

    def _end_all(self, error: ClientError, streams_error: ClientError | None) -> None:
        for request in self._pending.values():
            if not request.future.done():
                request.future.set_exception(error)
        for stream in self.streams.values():
            stream.fail(streams_error)
        self.streams.clear()
        self._credentials.wake()
