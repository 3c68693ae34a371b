"""`dash-stream bridge ...`: run the bridge, check a config, and work the dead-letter queue.

    dash-stream bridge run --config bridge.toml [--dry-run]
    dash-stream bridge check --config bridge.toml
    dash-stream bridge dlq list|show|replay|purge --config bridge.toml

Exit status: 0 done, 1 a runtime failure (source refused the credentials, state unusable, a
replay that failed), 2 a configuration error (the message names the key).

`run` and `dlq replay` trace as the standard `OTEL_*` variables say (service name `dash-bridge`
unless `OTEL_SERVICE_NAME` is set); tracing off, missing or failing never stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import msgspec
import typer

from bridge.config import BridgeConfig, load_config
from bridge.errors import BridgeError, ConfigError, SourceError, StateError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from bridge.runner import Bridge
    from dash_stream.telemetry import Tracing

log = logging.getLogger("bridge")

SERVICE_NAME = "dash-bridge"

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The bridge's TOML file.", envvar="DASH_BRIDGE_CONFIG")
]


def _fail(message: str, code: int) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg="red")
    return typer.Exit(code)


def _load(path: Path) -> BridgeConfig:
    try:
        return load_config(path)
    except ConfigError as e:
        raise _fail(f"{path}: {e.message}", 2) from None


def _setup_logging(fmt: str, level: str) -> None:
    from dash_stream.logs import setup_logging

    logging.config.dictConfig(setup_logging(fmt, level))


def _start_tracing(registry: CollectorRegistry) -> Tracing | None:
    """A tracer provider from `OTEL_*` (None when tracing is off or cannot start); ConfigError for a
    value that cannot be honoured. Its span counters go to `registry`."""
    from dash_stream.telemetry import SpanCounters, start_tracing, tracing_config

    try:
        config = tracing_config(os.environ)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    running = start_tracing(config, SpanCounters(registry), service_name=SERVICE_NAME)
    if running is not None:
        log.info("tracing on: %s", running.describe())
    return running


async def _stop_tracing(running: Tracing | None) -> None:
    """Flush what can be flushed within the exporter's shutdown timeout (never hangs)."""
    if running is not None:
        await asyncio.to_thread(running.shutdown)


# ---------------------------------------------------------------- run / check


def run(
    config: ConfigOption,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be sent; send nothing, save no cursor.")
    ] = False,
    log_format: Annotated[str, typer.Option(help="json or text.", envvar="DASH_LOG_FORMAT")] = "text",
    log_level: Annotated[
        str, typer.Option(help="debug, info, warning, error.", envvar="DASH_LOG_LEVEL")
    ] = "info",
) -> None:
    """Run the event bridge until SIGTERM or Ctrl-C (resumes from its durable cursor)."""
    _setup_logging(log_format, log_level)
    cfg = _load(config)
    try:
        asyncio.run(_run(cfg, dry_run))
    except ConfigError as e:
        raise _fail(e.message, 2) from None
    except (SourceError, StateError, BridgeError) as e:
        raise _fail(e.message, 1) from None


async def _run(config: BridgeConfig, dry_run: bool) -> None:
    from prometheus_client import CollectorRegistry

    from bridge.runner import Bridge
    from dash_stream.telemetry import bridge_tracing

    registry = CollectorRegistry(auto_describe=True)
    running = None if dry_run else _start_tracing(registry)  # a dry run forwards nothing: no spans
    try:
        bridge = Bridge(config, dry_run=dry_run, registry=registry, tracing=bridge_tracing(running))
        await _run_bridge(bridge)
    finally:
        await _stop_tracing(running)  # after the bridge stopped: its last spans are flushed


async def _run_bridge(bridge: Bridge) -> None:
    config, dry_run = bridge.config, bridge.dry_run
    metrics_server = None
    if config.metrics.listen and not dry_run:
        from prometheus_client import start_http_server

        host, _, port = config.metrics.listen.rpartition(":")
        metrics_server, _thread = start_http_server(int(port), host, registry=bridge.metrics.registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await bridge.start()
    waiter = asyncio.create_task(bridge.wait())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        log.info("bridge stopping")
        await bridge.stop()
        if metrics_server is not None:
            metrics_server.shutdown()
    if waiter.done():
        waiter.result()  # re-raise the failure
    else:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter


def check(config: ConfigOption) -> None:
    """Validate a config and print the routing tree it describes."""
    from bridge.rules import Route, Router

    cfg = _load(config)
    typer.echo(f"{config}: OK")
    src = cfg.source
    typer.echo(f"source: {src.server or src.bus or '(embedded bus)'} topics={src.topics} start={src.start}")
    for r in cfg.receivers:
        token = ""
        if r.token_env:
            token = f" token_env={r.token_env} ({'set' if _env_set(r.token_env) else 'NOT SET'})"
        typer.echo(f"receiver {r.name}: {r.kind} {r.url or ''}{token}")

    def show(route: Route, depth: int) -> None:
        timing = (
            f"group_by={list(route.group_by) if route.grouped else '...'} wait={route.group_wait:g}s "
            f"interval={route.group_interval:g}s repeat={route.repeat_interval:g}s"
        )
        cont = " continue" if route.continue_ else ""
        typer.echo(f"{'  ' * depth}- {route.id} -> {route.receiver or '(drop)'}{cont} {timing}")
        for child in route.children:
            show(child, depth + 1)

    show(Router(cfg).root, 0)
    typer.echo(f"state: {cfg.state_path}  dlq: {cfg.dlq_path}")


def _env_set(name: str) -> bool:
    import os

    return bool(os.environ.get(name))


# ---------------------------------------------------------------- dlq


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dlq_list(
    config: ConfigOption,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List dead-lettered messages, oldest first."""
    from bridge.dlq import JsonlDeadLetterQueue

    cfg = _load(config)
    entries = JsonlDeadLetterQueue(cfg.dlq_path).entries()
    for e in entries:
        if as_json:
            summary = {
                "id": e.id,
                "receiver": e.receiver,
                "route": e.message.route,
                "reason": e.reason,
                "status": e.status,
                "events": len(e.message.sources),
                "attempts": e.attempts,
                "failed_at": _when(e.failed_at),
            }
            typer.echo(msgspec.json.encode(summary).decode())
        else:
            typer.echo(
                f"{e.id}  {_when(e.failed_at)}  {e.receiver}  route={e.message.route}  {e.reason}"
                f"  events={len(e.message.sources)}  attempts={e.attempts}"
            )
    if not as_json:
        typer.echo(f"{len(entries)} message(s) in {cfg.dlq_path}", err=True)


def dlq_show(
    config: ConfigOption,
    message_id: Annotated[str, typer.Argument(help="Message id (or a unique prefix).")],
) -> None:
    """Print one dead-lettered message and why it failed, as JSON."""
    from bridge.dlq import JsonlDeadLetterQueue

    cfg = _load(config)
    entry = JsonlDeadLetterQueue(cfg.dlq_path).get(message_id)
    if entry is None:
        raise _fail(f"no dead-lettered message {message_id!r} (or the prefix is ambiguous)", 1)
    doc = msgspec.to_builtins(entry)
    doc["text"] = entry.message.text
    typer.echo(msgspec.json.format(msgspec.json.encode(doc)).decode())


def _select(cfg: BridgeConfig, ids: list[str] | None, every: bool) -> list[str]:
    from bridge.dlq import JsonlDeadLetterQueue

    queue = JsonlDeadLetterQueue(cfg.dlq_path)
    if every:
        return [e.id for e in queue.entries()]
    if not ids:
        raise _fail("name message ids, or pass --all", 2)
    out = []
    for i in ids:
        entry = queue.get(i)
        if entry is None:
            raise _fail(f"no dead-lettered message {i!r} (or the prefix is ambiguous)", 1)
        out.append(entry.id)
    return out


def dlq_replay(
    config: ConfigOption,
    ids: Annotated[list[str] | None, typer.Argument(help="Message ids (or unique prefixes).")] = None,
    every: Annotated[bool, typer.Option("--all", help="Replay every message.")] = False,
) -> None:
    """Send dead-lettered messages again (same body, same idempotency key); remove the ones accepted."""
    cfg = _load(config)
    chosen = _select(cfg, ids, every)
    try:
        failed = asyncio.run(_replay(cfg, chosen))
    except ConfigError as e:
        raise _fail(e.message, 2) from None
    if failed:
        raise typer.Exit(1)


async def _replay(cfg: BridgeConfig, ids: list[str]) -> int:
    from prometheus_client import CollectorRegistry

    from bridge.clock import SystemClock
    from bridge.dispatch import RetryPolicy, send_with_retries
    from bridge.dlq import JsonlDeadLetterQueue
    from bridge.sinks import make_sinks
    from dash_stream.telemetry import bridge_tracing

    queue = JsonlDeadLetterQueue(cfg.dlq_path, max_entries=cfg.dlq.max_entries)
    running = _start_tracing(CollectorRegistry(auto_describe=True))
    tracing = bridge_tracing(running)
    try:
        sinks = make_sinks(cfg, tracing=tracing)
    except BaseException:
        await _stop_tracing(running)
        raise
    clock = SystemClock()
    failed = 0
    try:
        for entry in [e for e in queue.entries() if e.id in set(ids)]:
            sink = sinks.get(entry.receiver)
            if sink is None:
                typer.secho(f"{entry.id}: receiver {entry.receiver!r} is not in the config; kept", fg="red")
                failed += 1
                continue
            attempted = await send_with_retries(
                sink, entry.message, RetryPolicy.of(cfg.receiver(sink.name)), clock, tracing=tracing
            )
            if attempted.result.ok:
                queue.remove([entry.id])
                typer.secho(f"{entry.id}: delivered (HTTP {attempted.result.status}); removed", fg="green")
            else:
                failed += 1
                again = msgspec.structs.replace(
                    entry,
                    reason=attempted.reason,
                    status=attempted.result.status,
                    detail=attempted.result.detail,
                    attempts=entry.attempts + attempted.attempts,
                    failed_at=clock.time(),
                )
                queue.append(again)
                typer.secho(
                    f"{entry.id}: failed again ({attempted.reason} {attempted.result.detail[:80]}); kept",
                    fg="red",
                )
    finally:
        for sink in sinks.values():
            await sink.close()
        await _stop_tracing(running)
    return failed


def dlq_purge(
    config: ConfigOption,
    ids: Annotated[list[str] | None, typer.Argument(help="Message ids (or unique prefixes).")] = None,
    every: Annotated[bool, typer.Option("--all", help="Purge every message.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead-lettered messages for good."""
    from bridge.dlq import JsonlDeadLetterQueue

    cfg = _load(config)
    chosen = _select(cfg, ids, every)
    if not chosen:
        typer.echo("nothing to purge")
        return
    if not yes and sys.stdin.isatty():
        typer.confirm(f"delete {len(chosen)} message(s) from {cfg.dlq_path}?", abort=True)
    removed = JsonlDeadLetterQueue(cfg.dlq_path).remove(chosen)
    typer.echo(f"purged {removed} message(s)")


def register(app: typer.Typer) -> None:
    """Add the `bridge` command group (and its `dlq` subgroup) to the dash-stream CLI."""
    bridge_app = typer.Typer(
        name="bridge", help="The event bridge: events -> OpenClaw messages.", no_args_is_help=True
    )
    bridge_app.command("run")(run)
    bridge_app.command("check")(check)
    dlq_app = typer.Typer(name="dlq", help="The dead-letter queue of the bridge.", no_args_is_help=True)
    dlq_app.command("list")(dlq_list)
    dlq_app.command("show")(dlq_show)
    dlq_app.command("replay")(dlq_replay)
    dlq_app.command("purge")(dlq_purge)
    bridge_app.add_typer(dlq_app, name="dlq")
    app.add_typer(bridge_app, name="bridge")
