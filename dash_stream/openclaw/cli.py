"""`dash-stream openclaw watch`: publish an OpenClaw gateway's agent runs as dash-stream events.

    OPENCLAW_GATEWAY_TOKEN=... dash-stream openclaw watch --gateway ws://127.0.0.1:18789 \\
        --server http://127.0.0.1:8080
    dash-stream openclaw watch --config bridge.toml          # the [openclaw] table
    dash-stream openclaw watch --gateway ws://... --dry-run  # print the events, publish nothing

Exit status: 0 stopped by SIGTERM or Ctrl-C; 1 a runtime failure; 2 a configuration error, a
gateway that refuses the token, or a dash-stream server that cannot be reached at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dash_stream.openclaw.config import ConfigError, WatchConfig, load_config, read_token, validate

if TYPE_CHECKING:
    from dash_stream.openclaw.sinks import Sink

log = logging.getLogger("dash_stream.openclaw")

openclaw_app = typer.Typer(
    name="openclaw",
    help="Watch an OpenClaw gateway and publish its agent runs as events.",
    no_args_is_help=True,
)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg="red")
    return typer.Exit(code)


@openclaw_app.command("watch")
def watch(
    gateway: Annotated[
        str | None, typer.Option(help="Gateway WebSocket URL, ws://host:port.", envvar="OPENCLAW_GATEWAY_URL")
    ] = None,
    token_env: Annotated[
        str | None,
        typer.Option(help="Environment variable holding the gateway token (OPENCLAW_GATEWAY_TOKEN)."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(help="dash-stream server to publish to (http:// or ws://).", envvar="DASH_URL"),
    ] = None,
    bus: Annotated[str | None, typer.Option(help="Or a bus URL to append to directly (redis://...).")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML file with an \\[openclaw] table (e.g. bridge.toml)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Gateway name: events get source openclaw/<name> (default host-port).")
    ] = None,
    metrics_listen: Annotated[
        str | None, typer.Option(help="Serve Prometheus /metrics on host:port.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print events as JSON lines; publish nothing.")
    ] = False,
    log_format: Annotated[str, typer.Option(help="json or text.", envvar="DASH_LOG_FORMAT")] = "text",
    log_level: Annotated[
        str, typer.Option(help="debug, info, warning, error.", envvar="DASH_LOG_LEVEL")
    ] = "info",
) -> None:
    """Watch a gateway as a read-only operator and publish its runs until SIGTERM or Ctrl-C.

    Runs become agent.started / agent.completed / agent.failed / agent.retrying / agent.tool /
    agent.message on openclaw.<agentId>.<kind> (see docs/openclaw-watch.md); runs the event bridge
    triggered are labelled origin=dash-bridge, which the bridge never forwards.
    """
    from dash_stream.logs import setup_logging

    logging.config.dictConfig(setup_logging(log_format, log_level))
    try:
        base = load_config(config) if config is not None else WatchConfig()
        cfg = validate(
            base.with_overrides(
                gateway=gateway,
                token_env=token_env,
                server=server,
                bus=bus,
                name=name,
                metrics_listen=metrics_listen,
            ),
            need_target=not dry_run,
        )
        token = read_token(cfg)
    except ConfigError as e:
        raise _fail(f"{config}: {e.message}" if config is not None else e.message) from None
    if cfg.bus is not None and cfg.bus.startswith("memory") and not dry_run:
        raise _fail("openclaw.bus: memory:// lives inside one process; use serve --openclaw-watch instead")
    code = asyncio.run(_run(cfg, token, dry_run))
    if code:
        raise typer.Exit(code)


async def _run(config: WatchConfig, token: str, dry_run: bool) -> int:
    from prometheus_client import CollectorRegistry, start_http_server

    from dash_stream.client import ClientError
    from dash_stream.openclaw.gateway import GatewayError
    from dash_stream.openclaw.metrics import WatchMetrics
    from dash_stream.openclaw.watcher import Watcher
    from dash_stream.telemetry import SpanCounters, start_tracing, tracing_config

    registry = CollectorRegistry(auto_describe=True)
    metrics = WatchMetrics(registry)
    try:
        tracing = start_tracing(
            tracing_config(os.environ), SpanCounters(registry), service_name="dash-openclaw-watch"
        )
    except ValueError as e:
        typer.secho(f"error: {e}", err=True, fg="red")
        return 2
    if config.metrics_listen:
        host, _, port = config.metrics_listen.rpartition(":")
        start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    try:
        watcher = Watcher(
            config,
            token,
            _make_sink(config, dry_run),
            metrics=metrics,
            tracing=tracing.publish if tracing is not None else None,
        )
        try:
            await watcher.start()
        except ClientError as e:
            typer.secho(f"error: {e.message} — is `dash-stream serve` running?", err=True, fg="red")
            return 2
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stopped = asyncio.create_task(stop.wait())
        gave_up = asyncio.create_task(watcher.wait())
        log.info("watching %s as %s", config.gateway, config.source)
        await asyncio.wait([stopped, gave_up], return_when=asyncio.FIRST_COMPLETED)
        for task in (stopped, gave_up):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await watcher.stop()
        if isinstance(watcher.failure, GatewayError):
            typer.secho(f"error: gateway {config.gateway}: {watcher.failure}", err=True, fg="red")
            return 2
        return 0
    finally:
        if tracing is not None:
            tracing.shutdown()


def _make_sink(config: WatchConfig, dry_run: bool) -> Sink:
    from dash_stream.openclaw.sinks import BusSink, ServerSink, StdoutSink

    if dry_run:
        return StdoutSink()
    if config.bus is not None:
        from dash_stream.server.app import make_bus
        from dash_stream.settings import Settings

        return BusSink(make_bus(Settings(bus=config.bus)), owned=True)
    assert config.server is not None
    token = os.environ.get(config.server_token_env, "").strip() or None
    return ServerSink(config.server, token)


def register(app: typer.Typer) -> None:
    """Add `openclaw watch` to the CLI."""
    app.add_typer(openclaw_app, name="openclaw")
