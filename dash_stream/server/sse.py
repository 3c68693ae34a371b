"""Server-Sent Events `/v1/sse` (PROTOCOL.md section 4): the WebSocket cursor, over plain HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dash_stream.bus.base import Record
from dash_stream.filters import TopicSet, compile_where
from dash_stream.protocol.errors import BadRequest, DashError, Forbidden
from dash_stream.server.context import ServerContext
from dash_stream.server.errors import from_dash_error
from dash_stream.server.hub import Subscription

_RETRY_MS = 2000


class SseConnection:
    """One SSE stream: a hub Subscriber with a bounded queue of ready-made SSE messages."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.closed = False

    def _push(self, data: bytes) -> None:
        s = self.ctx.settings
        if self.closed:
            return
        if len(self.queue) >= s.outbox_max_frames or self.queued_bytes + len(data) > s.outbox_max_bytes:
            self.ctx.metrics.slow_consumer_closes.inc()
            self.lost("slow_consumer")
            return
        self.queue.append(data)
        self.queued_bytes += len(data)
        self.wake.set()

    def deliver(self, sub: Subscription, records: list[Record]) -> None:
        """One SSE message per event, `id:` = the cursor after it."""
        parts: list[bytes] = []
        for rec in records:
            sub.advance_to(rec)
            assert sub.cursor is not None
            parts.append(b"id: %s\ndata: %s\n\n" % (sub.cursor.encode().encode(), rec.encoded))
        self._push(b"".join(parts))
        tally = self.ctx.metrics.tally
        tally.sse_frames += 1
        tally.sse_bytes += sum(len(p) for p in parts)

    def advance(self, sub: Subscription) -> None:
        """A message with only an id moves the client's Last-Event-ID past filtered events."""
        assert sub.cursor is not None
        self._push(b"id: %s\n\n" % sub.cursor.encode().encode())

    def lost(self, reason: str) -> None:
        """End the stream; the client reconnects with Last-Event-ID."""
        self.closed = True
        self.wake.set()

    def drain(self) -> None:
        """Server shutdown: end the stream now (the client resumes elsewhere with Last-Event-ID)."""
        self.lost("draining")


async def sse_endpoint(request: Request) -> Response:
    """`GET /v1/sse?topics=a.*,b.>&where=<json>` with `Last-Event-ID` or `?cursor=` to resume."""
    ctx: ServerContext = request.app.state.ctx
    try:
        client = request.client.host if request.client else "?"
        principal = ctx.verify_bearer(_authorization(request), client)
        raw_topics = request.query_params.get("topics") or ""
        topics = TopicSet([t for t in raw_topics.split(",") if t], path="topics")
        for pattern in topics.patterns:
            if not principal.can_subscribe(pattern):
                raise Forbidden(f"topics: subscribe to {pattern} not allowed")
        where_text = request.query_params.get("where")
        where_doc = None
        if where_text:
            try:
                where_doc = orjson.loads(where_text)
            except orjson.JSONDecodeError:
                raise BadRequest("where: not valid JSON") from None
        where = compile_where(where_doc, "where")
        cursor = request.headers.get("last-event-id") or request.query_params.get("cursor") or None
        start = request.query_params.get("from")
        if start not in (None, "latest", "earliest"):
            raise BadRequest("from: expected 'latest' or 'earliest'")
        if cursor is not None and start is not None:
            raise BadRequest("send either a cursor (Last-Event-ID) or 'from', not both")
    except DashError as e:
        return from_dash_error(e)
    conn = SseConnection(ctx)
    sub = Subscription(conn, "sse", topics, where, ctx.settings.max_replay)
    recovery = await ctx.hub.attach(sub, cursor=cursor, earliest=start == "earliest")
    head = {
        "cursor": recovery.cursor.encode(),
        "recovered": recovery.recovered,
        "replayed": len(recovery.replay),
    }
    if recovery.reason:
        head["reason"] = recovery.reason
    first = b"retry: %d\nevent: subscribed\ndata: %s\n\n" % (_RETRY_MS, orjson.dumps(head))
    if recovery.replay or recovery.pending:
        final = sub.cursor
        sub.cursor = recovery.cursor
        conn.deliver(sub, recovery.replay + recovery.pending)
        if final is not None:
            sub.cursor = final.merged(sub.cursor)
    ctx.metrics.connections.labels("sse").inc()
    ctx.connections.add(conn)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield first
            s = ctx.settings
            keepalive = s.sse_keepalive_s if s.sse_keepalive_s is not None else s.heartbeat_s
            while not conn.closed and not ctx.draining:
                if principal.expired(time.time()):  # no refresh over SSE: the client reconnects
                    yield b"event: expired\ndata: {}\n\n"
                    return
                if not conn.queue:
                    conn.wake.clear()
                    wait = keepalive if principal.exp is None else min(keepalive, principal.exp - time.time())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(conn.wake.wait(), max(0.0, wait))
                    if principal.expired(time.time()) or ctx.draining:
                        continue
                    if not conn.queue and not conn.closed:
                        yield b": keepalive\n\n"
                        continue
                out = b"".join(conn.queue)
                conn.queue.clear()
                conn.queued_bytes = 0
                if out:
                    yield out
        finally:
            conn.closed = True
            ctx.connections.discard(conn)
            ctx.hub.remove(sub)
            ctx.metrics.connections.labels("sse").dec()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _authorization(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        return header
    token = request.query_params.get("token")
    return f"Bearer {token}" if token else None
