"""`create_app(settings)`: the Starlette application and the lifespan that owns its tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from dash_stream.bus.base import Bus
from dash_stream.bus.memory import MemoryBus
from dash_stream.events import Limits
from dash_stream.protocol.errors import CloseCode, DashError
from dash_stream.server import http_api, page, specs, swarms
from dash_stream.server.auth import Authenticator, AuthSettings
from dash_stream.server.context import ServerContext
from dash_stream.server.errors import RequestIdMiddleware, error_response, from_dash_error, from_status
from dash_stream.server.hub import Hub
from dash_stream.server.limits import FailureLockout, KeyedBuckets
from dash_stream.server.metrics import HttpMetricsMiddleware, Metrics
from dash_stream.server.publishing import Publisher
from dash_stream.server.sse import sse_endpoint
from dash_stream.server.ws import websocket_endpoint
from dash_stream.settings import Settings
from dash_stream.telemetry import bridge_tracing, start_tracing, tracing_config

log = logging.getLogger("dash_stream.server")


def make_bus(settings: Settings) -> Bus:
    """The bus named by `settings.bus` (`memory://` is the embedded default)."""
    url = settings.bus
    if url in ("memory", "memory://", ""):
        return MemoryBus(
            max_events=settings.retention_events,
            max_age_s=settings.retention_age_s,
            dedup_window_s=settings.dedup_window_s,
        )
    scheme = url.split("://", 1)[0]
    if scheme in ("redis", "rediss", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"):
        try:
            from dash_stream.bus.redis import RedisBus
        except ImportError as e:  # pragma: no cover - the redis extra is missing
            raise ValueError(
                "bus: the Redis bus needs the redis extra: pip install 'dash-stream[redis]'"
            ) from e
        return RedisBus(
            url,
            partitions=settings.redis_partitions,
            max_events=settings.retention_events,
            max_age_s=settings.retention_age_s,
            dedup_window_s=settings.dedup_window_s,
            min_replicas=settings.redis_min_replicas,
        )
    raise ValueError(
        f"bus: unsupported URL scheme {scheme!r} (memory://, redis://, rediss://, redis+sentinel://, redis+cluster://)"
    )


def make_auth(settings: Settings) -> Authenticator:
    """The authenticator for `settings`; ValueError names what is missing."""
    return Authenticator(
        AuthSettings(
            dev=settings.dev,
            jwt_secret=settings.jwt_secret,
            jwt_public_key=settings.jwt_public_key,
            algorithms=settings.jwt_algorithms,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            api_keys=settings.api_keys,
        )
    )


def build_context(settings: Settings, bus: Bus | None = None) -> ServerContext:
    """Everything a server needs, wired together."""
    bus = bus if bus is not None else make_bus(settings)
    metrics = Metrics()
    metrics.connections_limit.set(settings.max_connections)
    # OTEL_* variables and --otel/--no-otel; ValueError names a setting the server cannot honour
    config = tracing_config(os.environ, flag=settings.otel, deliver_ratio=settings.otel_deliver_ratio)
    tracing = start_tracing(config, metrics.otel)
    limits = Limits(
        max_event_bytes=settings.max_event_bytes,
        max_frame_bytes=settings.max_frame_bytes,
        max_batch=settings.max_batch,
    )
    burst = settings.publish_burst if settings.publish_burst is not None else 2 * settings.publish_rate
    return ServerContext(
        settings=settings,
        bus=bus,
        metrics=metrics,
        hub=Hub(
            bus,
            metrics,
            max_replay=settings.max_replay,
            max_buffer=settings.max_replay,
            tracing=tracing.fan_out if tracing is not None else None,
        ),
        auth=make_auth(settings),
        publisher=Publisher(
            bus,
            metrics,
            limits,
            strict_types=settings.strict_types,
            tracing=tracing.publish if tracing is not None else None,
            timeout_s=settings.publish_timeout_s,
        ),
        limits=limits,
        publish_buckets=KeyedBuckets(settings.publish_rate, burst),
        publish_burst=max(1.0, burst),
        connect_buckets=KeyedBuckets(settings.connect_rate_per_ip, settings.connect_burst_per_ip),
        tracing=tracing,
        auth_lockout=FailureLockout(
            settings.auth_fail_limit, settings.auth_fail_window_s, settings.auth_lockout_s
        ),
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else "error"
    if exc.status_code == 404:
        detail = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        detail = f"method {request.method} not allowed on {request.url.path}"
    return from_status(exc.status_code, detail)


async def _dash_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DashError)
    return from_dash_error(exc)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal server error")


def create_app(settings: Settings, *, bus: Bus | None = None) -> Starlette:
    """The ASGI app for `settings`; the lifespan starts the hub and drains on shutdown."""
    ctx = build_context(settings, bus)
    tracker = ctx.swarms = swarms.make_tracker(ctx)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.dev:
            log.warning("AUTH IS OFF (--dev): every client may publish and subscribe to every topic")
        if ctx.tracing is not None:
            log.info("tracing on: %s", ctx.tracing.describe())
        await ctx.hub.start()
        tracker.start()  # folds the retained history, then follows the hub's live batches
        embedded_bridge = None
        if settings.bridge:
            # imported here, lazily: the bridge package imports dash_stream, never the reverse
            from bridge.embed import start_embedded

            embedded_bridge = await start_embedded(
                settings.bridge, ctx.bus, ctx.metrics.registry, bridge_tracing(ctx.tracing)
            )
        embedded_watch = None
        if settings.openclaw_watch:  # after the bridge, so that it sees the watcher's first events
            from dash_stream.openclaw.embed import start_embedded as start_watch

            embedded_watch = await start_watch(
                settings.openclaw_watch, ctx.bus, ctx.metrics.registry, ctx.tracing, limits=ctx.limits
            )
        try:
            yield
        finally:
            ctx.draining = True
            if embedded_watch is not None:
                await embedded_watch.stop()
            if embedded_bridge is not None:
                await embedded_bridge.stop()
            for conn in list(ctx.connections):
                close = getattr(conn, "close", None)
                if close is not None:
                    close(CloseCode.GOING_AWAY, "shutdown", flush=True)
            await ctx.hub.stop()
            await tracker.stop()
            await ctx.bus.close()
            if ctx.tracing is not None:  # bounded: flushes what it can within the export timeout
                await asyncio.get_running_loop().run_in_executor(None, ctx.tracing.shutdown)

    async def openapi(request: Request) -> Response:
        return JSONResponse(specs.openapi())

    async def asyncapi(request: Request) -> Response:
        return JSONResponse(specs.asyncapi())

    app = Starlette(
        routes=[
            WebSocketRoute("/v1/ws", websocket_endpoint),
            Route("/v1/sse", sse_endpoint, methods=["GET"]),
            Route("/v1/events", http_api.publish_events, methods=["POST"]),
            Route("/v1/events", http_api.read_history, methods=["GET"]),
            Route("/healthz", http_api.healthz, methods=["GET"]),
            Route("/readyz", http_api.readyz, methods=["GET"]),
            Route("/metrics", http_api.metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/asyncapi.json", asyncapi, methods=["GET"]),
            Route("/v1/swarms", swarms.list_swarms, methods=["GET"]),
            Route("/v1/swarms/{swarm_id}", swarms.get_swarm, methods=["GET"]),
            Route("/", page.index, methods=["GET"]),
            Route("/web/{name}", page.asset, methods=["GET"]),
        ],
        middleware=[Middleware(RequestIdMiddleware), Middleware(HttpMetricsMiddleware, metrics=ctx.metrics)],
        exception_handlers={HTTPException: _http_error, DashError: _dash_error, Exception: _unexpected},
        lifespan=lifespan,
    )
    app.state.ctx = ctx

    def outbox_depth() -> float:
        total = 0
        for conn in list(ctx.connections):
            wire = getattr(conn, "wire", None)
            if wire is not None:
                total += wire.queued_frames()
        return float(total)

    ctx.metrics.outbox_frames.set_function(outbox_depth)
    app.state.idempotency = http_api.IdempotencyCache(ttl_s=max(600.0, settings.dedup_window_s))
    return app


def asgi_entry(app: Starlette) -> ASGIApp:
    """The app as `serve` hands it to uvicorn: `/v1/ws` goes straight to its endpoint.

    A WebSocket lives for hours; every ASGI layer it passes through keeps a coroutine frame alive
    for that long. The HTTP middleware (request ids, HTTP metrics, exception mapping) has nothing
    to do for `/v1/ws`, so skipping it saves memory per idle connection. Everything else, the
    lifespan included, goes through the Starlette app unchanged.
    """

    async def entry(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/v1/ws":
            scope["app"] = app
            await websocket_endpoint(WebSocket(scope, receive, send))
            return
        await app(scope, receive, send)

    return entry
