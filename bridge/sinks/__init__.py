"""Sinks: OpenClaw's hooks API, memory (tests) and stdout / `--dry-run`."""

from __future__ import annotations

from pathlib import Path

from bridge.config import BridgeConfig
from bridge.sinks.base import SendResult, Sink
from bridge.sinks.memory import MemorySink, PrintSink
from bridge.sinks.openclaw import OpenClawSink, Secret, load_token
from dash_stream.telemetry import NOOP_BRIDGE_TRACING, BridgeTracing

__all__ = ["MemorySink", "OpenClawSink", "PrintSink", "Secret", "SendResult", "Sink", "make_sinks"]


def make_sinks(
    config: BridgeConfig, *, dry_run: bool = False, tracing: BridgeTracing = NOOP_BRIDGE_TRACING
) -> dict[str, Sink]:
    """One sink per receiver. With `dry_run`, OpenClaw receivers print their requests instead
    (tokens are still checked, so a dry run proves the config would start). OpenClaw sinks trace
    their requests on `tracing`."""
    sinks: dict[str, Sink] = {}
    for i, r in enumerate(config.receivers):
        sink: Sink
        if r.kind == "memory":
            sink = MemorySink(r.name, max_body_bytes=r.max_body_bytes)
        elif r.kind == "stdout":
            sink = PrintSink(r.name, max_body_bytes=r.max_body_bytes)
        else:
            token = load_token(r, f"receivers[{i}]", Path(config.base_dir))
            real = OpenClawSink(r, token, tracing=tracing)
            if dry_run:
                sink = PrintSink(
                    r.name, describe=real.describe, measure=real.measure, max_body_bytes=r.max_body_bytes
                )
            else:
                sink = real
        sinks[r.name] = sink
    return sinks
