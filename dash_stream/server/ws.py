"""WebSocket `/v1/ws` (PROTOCOL.md section 3): one `Connection` per client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
from starlette.websockets import WebSocket

from dash_stream import __version__
from dash_stream.bus.base import Incoming, Published, Record
from dash_stream.filters import TopicSet, compile_where
from dash_stream.protocol import frames as f
from dash_stream.protocol.codec import CODECS, JSON, SUBPROTOCOLS, Codec
from dash_stream.protocol.errors import (
    BadRequest,
    CloseCode,
    Conflict,
    DashError,
    ErrorCode,
    Forbidden,
    NotFound,
    TooLarge,
    Unauthorized,
    Unavailable,
    close_reason,
)
from dash_stream.server.auth import Principal
from dash_stream.server.context import ServerContext
from dash_stream.server.hub import Subscription
from dash_stream.server.limits import TokenBucket
from dash_stream.server.swarms import subscription_snapshot
from dash_stream.server.wire import AsgiWire, DashWebSocketProtocol, Wire

log = logging.getLogger("dash_stream.ws")

_FRAME_TARGET_BYTES = 256 * 1024
_BURST_MAX = 256  # frames answered as one burst
JSON_CODEC = CODECS[JSON]


def choose_subprotocol(offered: list[str]) -> str | None:
    """The first of the client's offers that we speak; None (and JSON) when it offers none of ours."""
    for name in offered:
        if name in SUBPROTOCOLS:
            return name
    return None


def bearer_from(websocket: WebSocket) -> str | None:
    """The token from `Authorization: Bearer` or `?token=` (browsers)."""
    header = websocket.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else header
    return websocket.query_params.get("token") or None


def chunks(records: list[Record], max_events: int, binary: bool) -> Iterator[list[Record]]:
    """Split records into frames bounded by count and by bytes."""
    if len(records) <= max_events and len(records) * 512 < _FRAME_TARGET_BYTES:
        yield records
        return
    chunk: list[Record] = []
    size = 0
    for rec in records:
        n = len(rec.msgpack if binary else rec.encoded)
        if chunk and (len(chunk) >= max_events or size + n > _FRAME_TARGET_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(rec)
        size += n
    if chunk:
        yield chunk


class Connection:
    """One WebSocket client: its auth state, subscriptions and op handling (a hub Subscriber)."""

    def __init__(self, ctx: ServerContext, websocket: WebSocket, wire: Wire, codec: Codec) -> None:
        self.ctx = ctx
        self.ws = websocket
        self.wire = wire
        self.codec = codec
        self.session = uuid.uuid4().hex[:16]
        self.principal: Principal | None = None if ctx.auth.enabled else ctx.auth.dev_principal()
        self.subs: dict[str, Subscription] = {}
        self.malformed = 0
        s = ctx.settings
        self.bucket = TokenBucket(s.conn_publish_rate, 2 * s.conn_publish_rate)
        self._timers: list[asyncio.TimerHandle] = []
        self._expiry: asyncio.TimerHandle | None = None
        self.closed = False
        self.client = websocket.client.host if websocket.client else "?"
        self.tally = ctx.metrics.tally
        self.frame_max_events = s.frame_max_events
        # the handshake's trace context: the parent of this connection's publishes (an event's own wins)
        self.traceparent = websocket.headers.get("traceparent")
        self.tracestate = websocket.headers.get("tracestate")

    # ------------------------------------------------------------ sending

    def send(self, frame: msgspec.Struct) -> None:
        """Encode and send one frame (never blocks)."""
        self._send_bytes(self.codec.encode(frame))

    def _send_bytes(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.wire.send_frame(data, self.codec.binary):
            self.slow()

    def send_error(self, frame_id: str | None, error: DashError) -> None:
        """Answer one op with the error frame; the connection stays usable."""
        self.ctx.metrics.errors.labels(error.code.value).inc()
        self.send(
            f.Error(
                id=frame_id,
                code=error.code.value,
                message=error.message,
                retryable=error.retryable,
                retry_after_ms=error.retry_after_ms,
            )
        )

    def close(self, code: CloseCode, message: str | None = None, *, flush: bool = False) -> None:
        """Close with `code` and the JSON reason (jittered retry_after_ms for reconnect codes)."""
        if self.closed:
            return
        self.closed = True
        self.ctx.metrics.closes.labels(str(int(code))).inc()
        self.wire.force_close(int(code), close_reason(code, message=message), flush=flush)
        self._detach()

    def slow(self) -> None:
        """The outbox overflowed: close with 4008 so the client resumes from its cursor."""
        self.ctx.metrics.slow_consumer_closes.inc()
        log.info("slow consumer closed", extra={"session": self.session})
        self.close(CloseCode.SLOW_CONSUMER)

    # ------------------------------------------------------------ hub Subscriber

    def deliver(self, sub: Subscription, records: list[Record]) -> None:
        """Send a subscription's records as events frames, each carrying the cursor after it."""
        if self.closed:
            return
        tally = self.tally
        codec = self.codec
        prefix = sub.frame_prefix
        if prefix is None:
            prefix = sub.frame_prefix = codec.events_prefix(sub.sub_id)
        for chunk in chunks(records, self.frame_max_events, codec.binary):
            cursor = sub.advance_through(chunk)
            data = codec.events_frame(sub.sub_id, chunk, cursor, prefix)
            if not self.wire.send_frame(data, codec.binary):
                self.slow()
                return
            tally.ws_frames += 1
            tally.ws_bytes += len(data)
        sub.last_sent = time.monotonic()
        skipped = sub.skipped
        # a record skipped after the last one delivered (same batch) still needs its cursor advance
        if (
            skipped is not None
            and sub.cursor is not None
            and sub.cursor.positions.get(skipped.partition, -1) >= skipped.position
        ):
            sub.skipped = None

    def advance(self, sub: Subscription) -> None:
        """An events frame with no events: the filtered subscription's cursor moved on."""
        assert sub.cursor is not None
        self._send_bytes(self.codec.events_frame(sub.sub_id, [], sub.cursor_text))

    def lost(self, reason: str) -> None:
        """The hub lost events: the client must resume from its cursor."""
        self.close(CloseCode.RESTART, reason)

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Welcome, authenticate, then read and answer frames until the client goes away."""
        ctx = self.ctx
        s = ctx.settings
        self.send(
            f.Welcome(
                session=self.session,
                heartbeat_s=s.heartbeat_s,
                limits={
                    "max_event_bytes": s.max_event_bytes,
                    "max_frame_bytes": s.max_frame_bytes,
                    "max_batch": s.max_batch,
                    "max_subscriptions": s.max_subscriptions,
                },
                auth="none" if not ctx.auth.enabled else "required",
                server=f"dash-stream/{__version__}",
            )
        )
        token = bearer_from(self.ws)
        self._release_handshake()
        if ctx.auth.enabled:
            if token is not None:
                try:
                    self._set_principal(ctx.auth.verify_token(token))
                except Unauthorized as e:
                    ctx.auth_failed(self.client, "ws")
                    self.close(CloseCode.UNAUTHORIZED, e.message)
                    return
            else:
                loop = asyncio.get_running_loop()
                self._timers.append(loop.call_later(s.auth_timeout_s, self._auth_deadline))
        await self._read_loop()

    def _release_handshake(self) -> None:
        """Drop what only the handshake needed (request and response headers): a dashboard
        connection lives for hours, and those copies are a fifth of an idle connection's memory."""
        scope = self.ws.scope
        proto = scope.get("extensions", {}).get("dash.wire")
        if isinstance(proto, DashWebSocketProtocol) and proto.handshake_complete:
            proto.request = None  # type: ignore[assignment]
            proto.response = None  # type: ignore[assignment]
        scope["headers"] = []
        scope["query_string"] = b""
        for cached in ("_headers", "_query_params"):
            self.ws.__dict__.pop(cached, None)

    async def _read_loop(self) -> None:
        proto = self.ws.scope.get("extensions", {}).get("dash.wire")
        waiting = proto.queue if isinstance(proto, DashWebSocketProtocol) else None
        while not self.closed:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = _payload(message)
            if data is None:
                continue
            if waiting is None or waiting.empty() or self.ctx.tracing is not None:
                await self.handle(data)
                continue
            # frames that arrived together are answered together: consecutive publishes become one
            # bus append (one Redis round trip instead of one each), acks still in order
            burst = [data]
            ended = False
            while len(burst) < _BURST_MAX and not waiting.empty():
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    ended = True
                    break
                more = _payload(message)
                if more is not None:
                    burst.append(more)
            await self.handle_burst(burst)
            if ended:
                break

    def _detach(self) -> None:
        for sub in self.subs.values():
            self.ctx.hub.remove(sub)
        self.subs.clear()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._expiry is not None:
            self._expiry.cancel()

    def finish(self) -> None:
        """Release everything the connection holds (called once the socket is gone)."""
        self.closed = True
        self._detach()

    def _auth_deadline(self) -> None:
        if self.principal is None and not self.closed:
            self.close(CloseCode.UNAUTHORIZED, "no auth within the deadline")

    def _set_principal(self, principal: Principal) -> None:
        self.principal = principal
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if principal.exp is not None:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(max(0.0, principal.exp - time.time()), self._expired, principal)

    def _expired(self, principal: Principal) -> None:
        if self.principal is principal and not self.closed:
            self.close(CloseCode.UNAUTHORIZED, "token expired")

    # ------------------------------------------------------------ ops

    async def handle(self, data: bytes | str) -> None:
        """Decode and answer one client frame; errors answer the op and never close the connection."""
        frame = self._decode(data)
        if frame is not None:
            await self._answer(frame)

    def _decode(self, data: bytes | str) -> f.ClientFrame | None:
        """The frame, or None after answering a malformed one (and closing after too many)."""
        # a text frame is JSON whatever the subprotocol; replies use the negotiated one
        codec = JSON_CODEC if isinstance(data, str) else self.codec
        try:
            return codec.decode(data)
        except BadRequest as e:
            self.malformed += 1
            self.send_error(codec.correlation_id(data), e)
            if self.malformed >= self.ctx.settings.malformed_limit:
                self.close(CloseCode.PROTOCOL_VIOLATION, "too many malformed frames")
            return None

    async def handle_burst(self, burst: list[bytes | str]) -> None:
        """Answer frames that arrived together, in order; runs of publishes share one bus append."""
        run: list[f.Publish] = []
        for data in burst:
            if self.closed:
                return
            codec = JSON_CODEC if isinstance(data, str) else self.codec
            try:
                frame = codec.decode(data)
            except BadRequest:
                await self._publish_run(run)
                run = []
                self._decode(data)  # answers it (and counts it) exactly as a lone frame
                continue
            if isinstance(frame, f.Publish) and self.principal is not None:
                run.append(frame)
                continue
            await self._publish_run(run)
            run = []
            await self._answer(frame)
        await self._publish_run(run)

    async def _publish_run(self, run: list[f.Publish]) -> None:
        if len(run) <= 1:
            for frame in run:
                await self._answer(frame)
            return
        ctx = self.ctx
        principal = self.principal
        assert principal is not None
        refused: dict[int, DashError] = {}
        items: list[Incoming] = []
        for i, frame in enumerate(run):
            try:
                prepared = ctx.publisher.prepare(principal, [frame.event], path="event", single=True)
                ctx.check_publish_rate(principal, 1, self.client, self.bucket)
            except DashError as e:
                refused[i] = e
                continue
            items.extend(prepared)
        published: list[Published] = []
        failure: DashError | None = None
        if items:
            try:
                published = await ctx.publisher.append(items, "ws")
            except DashError as e:
                failure = e
        done = iter(published)
        for i, frame in enumerate(run):
            error = refused.get(i) or failure
            if error is not None:
                self.send_error(frame.id, error)
            else:
                p = next(done)
                self.send(f.Ack(id=frame.id, offset=p.offset, duplicate=p.duplicate))

    async def _answer(self, frame: f.ClientFrame) -> None:
        """Answer one decoded frame."""
        try:
            if isinstance(frame, f.Ping):
                self.send(f.Pong(id=frame.id))
            elif isinstance(frame, f.Auth | f.Refresh):
                self._auth(frame)
            elif self.principal is None:
                raise Unauthorized(f"{type(frame).__name__.lower()} needs auth first: send an auth op")
            elif isinstance(frame, f.Publish):
                await self._publish(frame, self.principal)
            elif isinstance(frame, f.Subscribe):
                await self._subscribe(frame, self.principal)
            elif isinstance(frame, f.Unsubscribe):
                self._unsubscribe(frame)
        except DashError as e:
            self.send_error(frame.id, e)
        except Exception:
            log.exception("op failed", extra={"session": self.session})
            self.send_error(frame.id, _Internal("internal error"))

    def _auth(self, frame: f.Auth | f.Refresh) -> None:
        ctx = self.ctx
        if not ctx.auth.enabled:
            principal = ctx.auth.dev_principal()
        else:
            ctx.check_auth_lockout(self.client)
            try:
                principal = ctx.auth.verify_token(frame.token)
            except Unauthorized:
                ctx.auth_failed(self.client, "ws")
                raise
            if (
                isinstance(frame, f.Refresh)
                and self.principal is not None
                and principal.sub != self.principal.sub
            ):
                raise Forbidden("refresh token is for another subject")
            if (
                isinstance(frame, f.Auth)
                and self.principal is not None
                and principal.sub != self.principal.sub
            ):
                raise Forbidden("connection is already authenticated as another subject")
            # every live subscription must stay covered: a narrower token must not keep wider streams
            for sub in self.subs.values():
                for pattern in sub.topics.patterns:
                    if not principal.can_subscribe(pattern):
                        raise Forbidden(
                            f"token does not allow {pattern} of subscription {sub.sub_id!r}: unsubscribe it"
                        )
        self._set_principal(principal)
        self.send(f.Authed(id=frame.id, sub=principal.sub, exp=int(principal.exp) if principal.exp else None))

    async def _publish(self, frame: f.Publish, principal: Principal) -> None:
        ctx = self.ctx
        items = ctx.publisher.prepare(
            principal,
            [frame.event],
            path="event",
            single=True,
            traceparent=self.traceparent,
            tracestate=self.tracestate,
        )
        try:
            ctx.check_publish_rate(principal, 1, self.client, self.bucket)
        except DashError as e:
            ctx.publisher.abandon(items, e)
            raise
        published = await ctx.publisher.append(items, "ws")
        self.send(f.Ack(id=frame.id, offset=published[0].offset, duplicate=published[0].duplicate))

    async def _subscribe(self, frame: f.Subscribe, principal: Principal) -> None:
        ctx = self.ctx
        if frame.sub in self.subs:
            raise Conflict(f"sub: subscription {frame.sub!r} already exists on this connection")
        if len(self.subs) >= ctx.settings.max_subscriptions:
            raise TooLarge(f"sub: at most {ctx.settings.max_subscriptions} subscriptions per connection")
        if frame.cursor is not None and frame.from_ is not None:
            raise BadRequest("subscribe: send either 'cursor' or 'from', not both")
        if frame.snapshot and (frame.cursor is not None or frame.from_ is not None):
            raise BadRequest(
                "subscribe: 'snapshot' starts at the snapshot's cursor; send no 'cursor' or 'from'"
            )
        topics = TopicSet(frame.topics, path="topics")
        for pattern in topics.patterns:
            if not principal.can_subscribe(pattern):
                raise Forbidden(f"topics: subscribe to {pattern} not allowed")
        where = compile_where(frame.where, "where")
        snapshot = None
        if frame.snapshot:  # the state at the fold position F; the subscription resumes from F
            snapshot = await subscription_snapshot(ctx, principal, topics, ctx.settings.outbox_max_bytes // 2)
        start = snapshot.cursor.encode() if snapshot is not None else frame.cursor
        sub = Subscription(self, frame.sub, topics, where, ctx.settings.max_replay)
        self.subs[frame.sub] = sub
        try:
            recovery = await ctx.hub.attach(sub, cursor=start, earliest=frame.from_ == "earliest")
        except OverflowError:
            self.subs.pop(frame.sub, None)
            self.slow()
            return
        except BaseException:
            self.subs.pop(frame.sub, None)
            raise
        if self.closed or self.subs.get(frame.sub) is not sub:
            ctx.hub.remove(sub)
            return
        if snapshot is not None and not recovery.recovered:  # e.g. the log was reset meanwhile
            self.subs.pop(frame.sub, None)
            ctx.hub.remove(sub)
            raise Unavailable(
                f"snapshot: its position cannot be resumed ({recovery.reason}); retry", retry_after_ms=500
            )
        # no await from here on: the subscription is live and must see replay before live events
        self.send(
            f.Subscribed(
                id=frame.id,
                sub=frame.sub,
                cursor=recovery.cursor.encode(),
                recovered=recovery.recovered,
                replayed=len(recovery.replay),
                reason=recovery.reason,
            )
        )
        if snapshot is not None:
            self.send(f.Snapshot(sub=frame.sub, cursor=start or "", swarms=snapshot.swarms))
        final = sub.cursor
        if recovery.replay or recovery.pending:
            sub.cursor = recovery.cursor
            self.deliver(sub, recovery.replay + recovery.pending)
            sent = sub.cursor
            if final is not None and sent is not None and final != sent:
                sub.cursor = final.merged(sent)
                self.advance(sub)  # history after the last match was filtered out: skip it too
        elif final is not None and final != recovery.cursor:
            self.advance(sub)

    def _unsubscribe(self, frame: f.Unsubscribe) -> None:
        sub = self.subs.pop(frame.sub, None)
        if sub is None:
            raise NotFound(f"sub: no subscription {frame.sub!r} on this connection")
        self.ctx.hub.remove(sub)
        self.send(f.Unsubscribed(id=frame.id, sub=frame.sub))


def _payload(message: Any) -> bytes | str | None:
    data: bytes | str | None = message.get("bytes")
    return data if data is not None else message.get("text")


class _Internal(DashError):
    code = ErrorCode.INTERNAL
    status = 500


async def websocket_endpoint(websocket: WebSocket) -> None:
    """ASGI entry of `/v1/ws`."""
    ctx: ServerContext = websocket.app.state.ctx
    settings = ctx.settings
    subprotocol = choose_subprotocol(list(websocket.scope.get("subprotocols") or []))
    codec = CODECS[subprotocol or JSON]
    client_ip = websocket.client.host if websocket.client else "?"
    await websocket.accept(subprotocol=subprotocol)
    proto: Any = websocket.scope.get("extensions", {}).get("dash.wire")
    wire: Wire
    if isinstance(proto, DashWebSocketProtocol):
        proto.outbox_max_bytes = settings.outbox_max_bytes
        proto.outbox_max_frames = settings.outbox_max_frames
        wire = proto
    else:
        wire = AsgiWire(
            websocket.send, max_bytes=settings.outbox_max_bytes, max_frames=settings.outbox_max_frames
        )
    conn = Connection(ctx, websocket, wire, codec)
    metrics = ctx.metrics
    try:
        if ctx.draining:
            conn.close(CloseCode.GOING_AWAY, "draining")
            return
        wait = ctx.connect_buckets.take(client_ip)
        if wait > 0:
            metrics.rate_limited.labels("connect").inc()
            conn.wire.force_close(
                CloseCode.RATE_LIMITED,
                close_reason(CloseCode.RATE_LIMITED, retry_after_ms=int(wait * 1000) + 1),
            )
            return
        locked = ctx.auth_lockout.locked(client_ip) if ctx.auth.enabled else 0.0
        if locked > 0:  # too many failed authentications from this address: refused before any work
            metrics.rate_limited.labels("auth").inc()
            conn.wire.force_close(
                CloseCode.RATE_LIMITED,
                close_reason(CloseCode.RATE_LIMITED, retry_after_ms=int(locked * 1000) + 1),
            )
            return
        if len(ctx.connections) >= settings.max_connections:
            conn.close(CloseCode.RESTART, "server full")
            return
        ctx.connections.add(conn)
        metrics.connections.labels("ws").inc()
        try:
            await conn.run()
        finally:
            ctx.connections.discard(conn)
            metrics.connections.labels("ws").dec()
    finally:
        conn.finish()
        if isinstance(wire, AsgiWire):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(wire.aclose(), 1)
