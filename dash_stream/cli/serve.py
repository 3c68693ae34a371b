"""`dash-stream serve`: run the server (uvicorn) on the configured bus."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dash_stream.settings import Settings, load_file


def _read(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as e:
        raise typer.BadParameter(f"cannot read {what} file {path}: {e.strerror}") from None


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind.", envvar="DASH_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port.", envvar="DASH_PORT")] = None,
    bus: Annotated[
        str | None,
        typer.Option(
            help="Event bus URL: memory:// (default), redis://host:port/db, rediss://…, "
            "redis+sentinel://h:p,h:p/master, redis+cluster://h:p,h:p.",
            envvar="DASH_BUS",
        ),
    ] = None,
    redis_partitions: Annotated[
        int | None,
        typer.Option(help="Redis bus: streams a deployment spreads topics over (same on every node)."),
    ] = None,
    redis_min_replicas: Annotated[
        int | None,
        typer.Option(help="Redis bus: acknowledge a publish only once this many replicas have it (WAIT)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML file with a \\[serve] table of these settings.", envvar="DASH_CONFIG"),
    ] = None,
    dev: Annotated[
        bool | None,
        typer.Option(
            "--dev/--no-dev",
            help="Dev mode: disable auth (anonymous clients get full access).",
            envvar="DASH_DEV",
        ),
    ] = None,
    jwt_secret: Annotated[
        str | None, typer.Option(help="HS256 JWT secret (>= 32 bytes).", envvar="DASH_JWT_SECRET")
    ] = None,
    jwt_secret_file: Annotated[
        Path | None, typer.Option(help="File holding the HS256 JWT secret.", envvar="DASH_JWT_SECRET_FILE")
    ] = None,
    jwt_public_key_file: Annotated[
        Path | None,
        typer.Option(help="PEM public key for RS256/ES256 tokens.", envvar="DASH_JWT_PUBLIC_KEY_FILE"),
    ] = None,
    jwt_algorithm: Annotated[
        list[str] | None, typer.Option(help="Allowed JWT algorithm (repeatable): HS256, RS256, ES256.")
    ] = None,
    jwt_issuer: Annotated[
        str | None, typer.Option(help="Required `iss` claim.", envvar="DASH_JWT_ISSUER")
    ] = None,
    jwt_audience: Annotated[
        str | None, typer.Option(help="Required `aud` claim.", envvar="DASH_JWT_AUDIENCE")
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            help="API key for HTTP publish (repeatable): KEY or KEY=pattern,pattern.", envvar="DASH_API_KEYS"
        ),
    ] = None,
    retention_events: Annotated[
        int | None,
        typer.Option(
            help="History size: events kept (memory bus; per partition stream on Redis).",
            envvar="DASH_RETENTION_EVENTS",
        ),
    ] = None,
    retention_age: Annotated[
        float | None,
        typer.Option(help="Drop events older than this many seconds.", envvar="DASH_RETENTION_AGE"),
    ] = None,
    dedup_window: Annotated[
        float | None,
        typer.Option(help="Seconds a (source, id) is remembered for dedup.", envvar="DASH_DEDUP_WINDOW"),
    ] = None,
    max_event_bytes: Annotated[int | None, typer.Option(help="Largest encoded event.")] = None,
    max_frame_bytes: Annotated[int | None, typer.Option(help="Largest WebSocket frame (close 1009).")] = None,
    max_batch: Annotated[int | None, typer.Option(help="Most events per publish batch.")] = None,
    max_subscriptions: Annotated[int | None, typer.Option(help="Most subscriptions per connection.")] = None,
    max_connections: Annotated[int | None, typer.Option(help="Most concurrent connections.")] = None,
    publish_rate: Annotated[
        float | None,
        typer.Option(help="Publish limit per token subject / API key, events per second (0: off)."),
    ] = None,
    conn_publish_rate: Annotated[
        float | None, typer.Option(help="Publish limit per WebSocket connection, events per second (0: off).")
    ] = None,
    heartbeat: Annotated[
        float | None, typer.Option(help="Seconds between WebSocket pings; 2 missed = close 4002.")
    ] = None,
    outbox_max_bytes: Annotated[
        int | None,
        typer.Option(help="Bytes queued for one slow WebSocket client before it is closed with 4008."),
    ] = None,
    outbox_max_frames: Annotated[
        int | None,
        typer.Option(help="Frames queued for one slow WebSocket client before it is closed with 4008."),
    ] = None,
    connect_rate: Annotated[
        float | None,
        typer.Option(help="WebSocket connection attempts per client IP per second, burst 2x (0: off)."),
    ] = None,
    sse_keepalive: Annotated[
        float | None, typer.Option(help="Seconds between SSE `: keepalive` comments.")
    ] = None,
    auth_timeout: Annotated[
        float | None, typer.Option(help="Seconds a WebSocket client has to authenticate (close 4501).")
    ] = None,
    auth_fail_limit: Annotated[
        int | None,
        typer.Option(
            help="Failed authentications per client IP within --auth-fail-window before the address is "
            "locked out (WebSocket 4029, HTTP 429) for --auth-lockout seconds (0: off)."
        ),
    ] = None,
    auth_fail_window: Annotated[
        float | None, typer.Option(help="Seconds over which failed authentications are counted.")
    ] = None,
    auth_lockout: Annotated[
        float | None, typer.Option(help="Seconds a locked-out client IP is refused.")
    ] = None,
    publish_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds a publish may wait for the bus before it is answered 503 (retry safely)."),
    ] = None,
    header_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds a client has to send a request's headers (408, then close)."),
    ] = None,
    body_timeout: Annotated[
        float | None, typer.Option(help="Seconds a client has to send a request body (408).")
    ] = None,
    max_header_bytes: Annotated[
        int | None, typer.Option(help="Largest request line plus headers (431, then close).")
    ] = None,
    max_headers: Annotated[int | None, typer.Option(help="Most request headers (431, then close).")] = None,
    keep_alive: Annotated[
        float | None, typer.Option(help="Seconds an idle HTTP keep-alive connection stays open.")
    ] = None,
    log_format: Annotated[str | None, typer.Option(help="json or text.", envvar="DASH_LOG_FORMAT")] = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug, info, warning, error.", envvar="DASH_LOG_LEVEL")
    ] = None,
    bridge: Annotated[
        Path | None,
        typer.Option(help="Run the event bridge in-process on this bus (TOML config).", envvar="DASH_BRIDGE"),
    ] = None,
    openclaw_watch: Annotated[
        Path | None,
        typer.Option(
            help="Watch an OpenClaw gateway in-process and publish its runs on this bus (TOML file with "
            "an \\[openclaw] table, e.g. the bridge's).",
            envvar="DASH_OPENCLAW_WATCH",
        ),
    ] = None,
    otel: Annotated[
        bool | None,
        typer.Option(
            "--otel/--no-otel",
            help="Export traces over OTLP (OTEL_* variables configure it). Default: on when "
            "OTEL_TRACES_EXPORTER or an OTEL_EXPORTER_OTLP_*ENDPOINT is set; OTEL_SDK_DISABLED=true wins.",
            envvar="DASH_OTEL",
        ),
    ] = None,
    otel_deliver_ratio: Annotated[
        float | None,
        typer.Option(
            help="Share (0..1) of per-subscription `deliver` spans recorded; high and critical events "
            "always get one. Default 0.01.",
            envvar="DASH_OTEL_DELIVER_RATIO",
        ),
    ] = None,
) -> None:
    """Serve the WebSocket, SSE and HTTP API.

    Examples:

      dash-stream serve --dev                       # local, auth off, memory bus

      DASH_JWT_SECRET=$(cat secret) dash-stream serve --host 0.0.0.0 --api-key "$KEY"

      OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4318 dash-stream serve --dev   # traces to Jaeger
    """
    import uvicorn

    from dash_stream.logs import setup_logging
    from dash_stream.server.app import asgi_entry, create_app
    from dash_stream.server.http_protocol import http_protocol_class
    from dash_stream.server.wire import DashWebSocketProtocol

    base: dict[str, Any] = load_file(config) if config is not None else {}
    flags: dict[str, Any] = {
        "host": host,
        "port": port,
        "bus": bus,
        "redis_partitions": redis_partitions,
        "redis_min_replicas": redis_min_replicas,
        "dev": dev,
        "jwt_secret": jwt_secret or _read(jwt_secret_file, "secret"),
        "jwt_public_key": _read(jwt_public_key_file, "public key"),
        "jwt_algorithms": tuple(jwt_algorithm) if jwt_algorithm else None,
        "jwt_issuer": jwt_issuer,
        "jwt_audience": jwt_audience,
        "api_keys": tuple(k for item in api_key for k in item.split()) if api_key else None,
        "retention_events": retention_events,
        "retention_age_s": retention_age,
        "dedup_window_s": dedup_window,
        "max_event_bytes": max_event_bytes,
        "max_frame_bytes": max_frame_bytes,
        "max_batch": max_batch,
        "max_subscriptions": max_subscriptions,
        "max_connections": max_connections,
        "publish_rate": publish_rate,
        "conn_publish_rate": conn_publish_rate,
        "heartbeat_s": heartbeat,
        "outbox_max_bytes": outbox_max_bytes,
        "outbox_max_frames": outbox_max_frames,
        "connect_rate_per_ip": connect_rate,
        "connect_burst_per_ip": 2 * connect_rate if connect_rate is not None else None,
        "sse_keepalive_s": sse_keepalive,
        "auth_timeout_s": auth_timeout,
        "auth_fail_limit": auth_fail_limit,
        "auth_fail_window_s": auth_fail_window,
        "auth_lockout_s": auth_lockout,
        "publish_timeout_s": publish_timeout,
        "header_timeout_s": header_timeout,
        "body_timeout_s": body_timeout,
        "max_header_bytes": max_header_bytes,
        "max_headers": max_headers,
        "keep_alive_s": keep_alive,
        "log_format": log_format,
        "log_level": log_level,
        "bridge": str(bridge) if bridge is not None else None,
        "openclaw_watch": str(openclaw_watch) if openclaw_watch is not None else None,
        "otel": otel,
        "otel_deliver_ratio": otel_deliver_ratio,
    }
    if flags["jwt_public_key"] and not jwt_algorithm:
        flags["jwt_algorithms"] = ("RS256", "ES256")
    try:
        settings = Settings(
            **{k: v for k, v in base.items() if k in Settings.__struct_fields__}
        ).with_overrides(**flags)
        if settings.bridge:
            from bridge.embed import check as check_bridge  # lazy: dash_stream never imports bridge eagerly

            check_bridge(settings.bridge)
        if settings.openclaw_watch:
            from dash_stream.openclaw.embed import check as check_watch

            check_watch(settings.openclaw_watch)
        app = create_app(settings)
    except (ValueError, TypeError) as e:
        typer.secho(f"error: {e}", err=True, fg="red")
        if "secret" in str(e).lower() or "auth" in str(e).lower():
            typer.secho(
                "hint: pass --jwt-secret / DASH_JWT_SECRET, or --dev for local use without auth", err=True
            )
        raise typer.Exit(2) from None
    if settings.dev:
        typer.secho(
            "WARNING: dev mode: AUTH IS OFF. Anyone who can reach "
            f"{settings.host}:{settings.port} may publish and subscribe to everything.",
            err=True,
            fg="yellow",
            bold=True,
        )
    config_ = uvicorn.Config(
        asgi_entry(app),
        host=settings.host,
        port=settings.port,
        http=http_protocol_class(settings, app.state.ctx.metrics),  # slowloris: header deadline and bounds
        ws=DashWebSocketProtocol,
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=settings.heartbeat_s,
        ws_ping_timeout=2 * settings.heartbeat_s,
        ws_per_message_deflate=False,
        log_config=setup_logging(settings.log_format, settings.log_level),
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
        access_log=False,
        server_header=False,
        lifespan="on",
    )
    # Long-lived connection state makes full collections slow (tens of ms at thousands of
    # connections) while the hot path allocates mostly acyclic, short-lived objects: collect the
    # old generations rarely, and keep start-up objects out of every collection.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    server = _draining_server(config_, app.state.ctx)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    server.run()
    if not server.started:
        sys.exit(1)


def _draining_server_class() -> type[Any]:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn's server that marks the app draining the moment a stop signal arrives, so
        /readyz fails and SSE streams end at once (WebSockets get 1001 from the protocol)."""

        def __init__(self, config: Any, ctx: Any) -> None:
            super().__init__(config)
            self.ctx = ctx

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.ctx.draining = True
            for conn in list(self.ctx.connections):
                end = getattr(conn, "drain", None)
                if end is not None:
                    end()
            super().handle_exit(sig, frame)

    return DrainingServer


def _draining_server(config: Any, ctx: Any) -> Any:
    return _draining_server_class()(config, ctx)


def register(app: typer.Typer) -> None:
    """Add `serve` to the CLI."""
    app.command(
        help=serve.__doc__,
        epilog="Every option also reads a DASH_* environment variable; see docs/operations.md.",
    )(serve)
