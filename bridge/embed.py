"""Running the bridge inside `dash-stream serve --bridge PATH`, on the server's own bus.

The server imports this module lazily, in its lifespan, so that `dash_stream` never depends on
`bridge`. The bridge then reads the in-process bus directly (whatever `source.server` says) and
registers its metrics in the server's registry, so they show at the server's `/metrics`, and
its spans on the server's tracer provider (`bridge_tracing(ctx.tracing)`, shut down by the server).
"""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client import CollectorRegistry

from bridge.config import BridgeConfig, load_config
from bridge.errors import ConfigError
from bridge.runner import Bridge
from bridge.sinks import make_sinks
from dash_stream.bus.base import Bus
from dash_stream.telemetry import BridgeTracing

log = logging.getLogger("bridge")


def check(path: str | Path) -> BridgeConfig:
    """Load the config and its credentials now, so `serve` fails fast (ConfigError, a ValueError)."""
    try:
        config = load_config(path)
        make_sinks(config)  # reads the tokens; opens nothing
    except ConfigError as e:
        raise ConfigError(f"bridge config {path}: {e.message}") from None
    return config


async def start_embedded(
    path: str | Path,
    bus: Bus,
    registry: CollectorRegistry | None = None,
    tracing: BridgeTracing | None = None,
) -> Bridge:
    """Start a bridge on `bus`; the caller owns it and must `await bridge.stop()` before closing the
    bus (and before shutting down the tracer provider behind `tracing`, None: no spans)."""
    config = load_config(path)
    if config.source.server or config.source.bus:
        log.info("embedded bridge: reading the server's own bus (source.server / source.bus are ignored)")
    bridge = Bridge(config, bus=bus, registry=registry, tracing=tracing)
    await bridge.start()
    return bridge
