"""HTTP API (PROTOCOL.md section 5): publish, history, health, metrics."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from typing import Any

import msgspec
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from dash_stream.bus.base import Record
from dash_stream.bus.cursor import BadCursor, decode_cursor
from dash_stream.events import EventIn
from dash_stream.filters import TopicSet, compile_where
from dash_stream.protocol.errors import BadRequest, Conflict, DashError, Forbidden, TooLarge
from dash_stream.server.auth import Principal
from dash_stream.server.context import ServerContext
from dash_stream.server.errors import from_dash_error

_CE_JSON = "application/cloudevents+json"
_CE_BATCH = "application/cloudevents-batch+json"


class _Unprocessable(BadRequest):
    """Valid JSON that fails validation (HTTP 422)."""

    status = 422


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """`{"events": [...]}`."""

    events: list[EventIn]


class _Probe(msgspec.Struct, forbid_unknown_fields=False):
    events: msgspec.Raw = msgspec.Raw(b"")


class CloudEvent(msgspec.Struct, forbid_unknown_fields=False):
    """A CloudEvents 1.0 structured event; `topic`, `priority`, `labels` are extension attributes."""

    id: str
    source: str
    type: str
    topic: str
    specversion: str = "1.0"
    time: str | None = None
    data: Any = None
    priority: str = "normal"
    labels: dict[str, str] | str | None = None
    traceparent: str | None = None
    tracestate: str | None = None


_probe = msgspec.json.Decoder(_Probe)
_batch = msgspec.json.Decoder(BatchIn)
_single = msgspec.json.Decoder(EventIn)
_ce_single = msgspec.json.Decoder(CloudEvent)
_ce_batch = msgspec.json.Decoder(list[CloudEvent])


def _path(error: msgspec.ValidationError) -> str:
    return str(error).replace("`$.", "`").replace("`$`", "body").replace("`$[", "`events[")


def _cloudevent(ce: CloudEvent, where: str) -> EventIn:
    labels = ce.labels
    if isinstance(labels, str):
        try:
            labels = dict(item.split("=", 1) for item in labels.split(",") if item)
        except ValueError:
            raise _Unprocessable(f"{where}.labels: expected an object or 'k=v,k2=v2'") from None
    doc = {
        "id": ce.id,
        "source": ce.source,
        "type": ce.type,
        "topic": ce.topic,
        "time": ce.time,
        "data": ce.data,
        "priority": ce.priority,
        "labels": labels or {},
        "traceparent": ce.traceparent,
        "tracestate": ce.tracestate,
    }
    try:
        return msgspec.convert({k: v for k, v in doc.items() if v is not None or k == "data"}, EventIn)
    except msgspec.ValidationError as e:
        raise _Unprocessable(f"{where}: {_path(e)}") from None


def parse_events(body: bytes, content_type: str) -> tuple[list[EventIn], bool]:
    """The events of a publish body and whether it was a single event; errors name the path."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    try:
        if ctype == _CE_JSON:
            return [_cloudevent(_ce_single.decode(body), "event")], True
        if ctype == _CE_BATCH:
            return [_cloudevent(ce, f"events[{i}]") for i, ce in enumerate(_ce_batch.decode(body))], False
        if _probe.decode(body).events:
            return _batch.decode(body).events, False
        return [_single.decode(body)], True
    except msgspec.ValidationError as e:
        raise _Unprocessable(_path(e)) from None
    except msgspec.DecodeError as e:
        raise BadRequest(f"body is not valid JSON: {e}") from None
    except UnicodeDecodeError:  # msgspec raises it (not a DecodeError) for a string that is not UTF-8
        raise BadRequest("body is not valid JSON: a string is not valid UTF-8") from None
    except RecursionError:  # msgspec recurses per nesting level: deep nesting must not become a 500
        raise BadRequest("body is not valid JSON: nested too deeply") from None


class IdempotencyCache:
    """Responses by (principal, Idempotency-Key) for at least `ttl_s`; bounded, oldest evicted first."""

    def __init__(self, ttl_s: float = 600.0, max_keys: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._items: OrderedDict[str, tuple[float, bytes, dict[str, Any]]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[None]] = {}

    def get(self, key: str, digest: bytes) -> dict[str, Any] | None:
        """The stored response, or None; Conflict when the key was used with another body."""
        now = time.monotonic()
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest[0] > now:
                break
            self._items.popitem(last=False)
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] != digest:
            raise Conflict("Idempotency-Key was already used with a different body")
        return item[2]

    async def claim(self, key: str, digest: bytes) -> dict[str, Any] | None:
        """The stored response, or None after marking `key` in flight (a concurrent retry waits)."""
        for _ in range(1000):
            stored = self.get(key, digest)
            if stored is not None:
                return stored
            waiter = self._inflight.get(key)
            if waiter is None:
                self._inflight[key] = asyncio.get_running_loop().create_future()
                return None
            await asyncio.shield(waiter)
        raise Conflict("Idempotency-Key is busy")

    def release(self, key: str) -> None:
        """End the in-flight mark of `key` (whether or not the request succeeded)."""
        waiter = self._inflight.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def put(self, key: str, digest: bytes, response: dict[str, Any]) -> None:
        """Remember a response."""
        self._items[key] = (time.monotonic() + self.ttl_s, digest, response)
        while len(self._items) > self.max_keys:
            self._items.popitem(last=False)


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, refused with 413 past `limit` bytes (checked while streaming), and with 408
    when it has not all arrived within `timeout_s` (a slow body must not hold the request forever)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLarge(f"body of {length} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise BadRequest(f"request body not received within {timeout_s:g} s", status=408) from None
    except ClientDisconnect:  # gone mid-body: nobody to answer, and nothing worth a traceback
        raise BadRequest("client disconnected before sending the whole body") from None
    return b"".join(chunks)


def principal_of(ctx: ServerContext, request: Request) -> Principal:
    """The caller: dev principal when auth is off, else the verified bearer token or API key.

    A client address locked out after too many failed authentications gets `rate_limited` (429).
    """
    client = request.client.host if request.client else "?"
    return ctx.verify_bearer(request.headers.get("authorization"), client)


async def publish_events(request: Request) -> Response:
    """`POST /v1/events`: one event, a batch, or CloudEvents; all-or-nothing; idempotent retries."""
    ctx: ServerContext = request.app.state.ctx
    try:
        principal = principal_of(ctx, request)
        body = await read_body(request, ctx.settings.max_body_bytes, ctx.settings.body_timeout_s)
        events, single = parse_events(body, request.headers.get("content-type", "application/json"))
        key = request.headers.get("idempotency-key")
        cache: IdempotencyCache = request.app.state.idempotency
        cache_key, digest = "", b""
        if key:
            if len(key) > 256:
                raise BadRequest("Idempotency-Key: longer than 256 characters")
            cache_key = f"{principal.kind}:{principal.sub}:{key}"
            digest = hashlib.sha256(body).digest()
            stored = await cache.claim(cache_key, digest)
            if stored is not None:
                return JSONResponse({**stored, "duplicates": stored["accepted"]}, status_code=202)
        try:
            return await _publish(ctx, request, principal, events, single, cache, cache_key, digest)
        finally:
            if key:
                cache.release(cache_key)
    except DashError as e:
        return from_dash_error(e)


async def _publish(
    ctx: ServerContext,
    request: Request,
    principal: Principal,
    events: list[EventIn],
    single: bool,
    cache: IdempotencyCache,
    cache_key: str,
    digest: bytes,
) -> Response:
    try:
        items = ctx.publisher.prepare(
            principal,
            events,
            path="event" if single else "events",
            single=single,
            traceparent=request.headers.get("traceparent"),
            tracestate=request.headers.get("tracestate"),
        )
    except BadRequest as e:  # the body parsed: a failed check is 422, not 400 (PROTOCOL.md 5)
        raise _Unprocessable(e.message) from None
    # rate limits count only events that passed validation and authorization
    try:
        ctx.check_publish_rate(principal, len(events), request.client.host if request.client else "?")
    except DashError as e:
        ctx.publisher.abandon(items, e)
        raise
    published = await ctx.publisher.append(items, "http")
    doc = {
        "accepted": len(published),
        "duplicates": sum(1 for p in published if p.duplicate),
        "offsets": [p.offset for p in published],
    }
    if cache_key:
        cache.put(cache_key, digest, doc)
    return JSONResponse(doc, status_code=202)


async def read_history(request: Request) -> Response:
    """`GET /v1/events?topics=&cursor=&limit=&where=`: a page of retained history."""
    ctx: ServerContext = request.app.state.ctx
    try:
        principal = principal_of(ctx, request)
        q = request.query_params
        topics = TopicSet([t for t in (q.get("topics") or ">").split(",") if t], path="topics")
        for pattern in topics.patterns:
            if not principal.can_subscribe(pattern):
                raise Forbidden(f"topics: reading {pattern} not allowed")
        try:
            limit = int(q.get("limit") or 100)
        except ValueError:
            raise BadRequest("limit: expected an integer 1..1000") from None
        if not 1 <= limit <= 1000:
            raise BadRequest("limit: expected an integer 1..1000")
        where_doc = None
        if q.get("where"):
            try:
                where_doc = orjson.loads(q["where"])
            except orjson.JSONDecodeError:
                raise BadRequest("where: not valid JSON") from None
        where = compile_where(where_doc, "where")
        after = None
        reason = None
        if q.get("cursor"):
            try:
                after = decode_cursor(q["cursor"])
            except BadCursor:
                reason = "bad_cursor"
        bus = ctx.bus
        records: list[Record] = []
        if reason is None:
            for _ in range(100):  # bounded scan: at most 100 bus pages per request
                try:
                    page = await bus.read(topics, after, limit - len(records))
                except BadCursor:  # well-formed but unusable (e.g. past the end): as the WebSocket does
                    reason = "bad_cursor"
                    break
                if page.epoch_changed or page.trimmed:
                    reason = "epoch_changed" if page.epoch_changed else "trimmed"
                    break
                records.extend(r for r in page.records if where is None or where(r.event))
                after = page.cursor
                if not page.more or len(records) >= limit:
                    break
        if reason is not None:
            head = await bus.head(topics)
            doc = {"events": [], "cursor": head.encode(), "recovered": False, "reason": reason, "more": False}
            return JSONResponse(doc)
        assert after is not None or not records
        next_cursor = (after or await bus.head(topics)).encode()
        more = bool(records) and len(records) >= limit
        body = b"".join(
            (
                b'{"events":[',
                b",".join(r.encoded for r in records),
                b'],"cursor":',
                orjson.dumps(next_cursor),
                b',"recovered":true,"more":',
                b"true" if more else b"false",
                b"}",
            )
        )
        return Response(body, media_type="application/json")
    except DashError as e:
        return from_dash_error(e)


async def healthz(request: Request) -> Response:
    """The process is alive."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """The bus is reachable and the server is not draining."""
    ctx: ServerContext = request.app.state.ctx
    if ctx.draining:
        return from_dash_error(_unavailable("draining"))
    try:
        ok = await ctx.bus.ready()
    except Exception:
        ok = False
    if not ok:
        ctx.metrics.bus_unavailable.labels("ready").inc()
        return from_dash_error(_unavailable("event bus not reachable"))
    return JSONResponse({"status": "ready"})


def _unavailable(message: str) -> DashError:
    from dash_stream.protocol.errors import Unavailable

    return Unavailable(message, retry_after_ms=1000)


async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    ctx: ServerContext = request.app.state.ctx
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
