"""Running the watcher inside `dash-stream serve --openclaw-watch PATH`, on the server's own bus.

The server's lifespan imports this lazily. The watcher appends to the server's bus directly (no
network hop, `server`/`bus` in the file are ignored), registers its metrics in the server's
registry (they show at `/metrics`) and uses the server's tracer. A gateway that cannot be reached
does not stop the server: the watcher keeps retrying in the background.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client import CollectorRegistry

from dash_stream.bus.base import Bus
from dash_stream.events import DEFAULT_LIMITS, Limits
from dash_stream.openclaw.config import ConfigError, WatchConfig, load_config, read_token, validate
from dash_stream.openclaw.metrics import WatchMetrics
from dash_stream.openclaw.sinks import BusSink
from dash_stream.openclaw.watcher import Watcher
from dash_stream.telemetry import Tracing

log = logging.getLogger("dash_stream.openclaw")


def check(path: str | Path) -> tuple[WatchConfig, str]:
    """Load and validate the `[openclaw]` table and read its token now, so `serve` fails fast."""
    try:
        config = validate(load_config(path), need_target=False)
        token = read_token(config)
    except ConfigError as e:
        raise ConfigError(f"openclaw watch config {path}: {e.message}") from None
    return config, token


async def start_embedded(
    path: str | Path,
    bus: Bus,
    registry: CollectorRegistry | None = None,
    tracing: Tracing | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> Watcher:
    """Start a watcher publishing to `bus`; the caller must `await watcher.stop()` before closing it."""
    config, token = check(path)
    if config.server or config.bus:
        log.info("embedded openclaw watcher: publishing to the server's own bus (server / bus are ignored)")
    watcher = Watcher(
        config,
        token,
        BusSink(bus, limits=limits),
        metrics=WatchMetrics(registry),
        tracing=tracing.publish if tracing is not None else None,
    )
    await watcher.start()
    return watcher
