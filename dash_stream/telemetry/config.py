"""When tracing is on, and how it exports: read from the standard `OTEL_*` variables and the flags.

Tracing is on when `serve --otel` is given, or `OTEL_TRACES_EXPORTER` names an exporter, or an
OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
`OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none` and `--no-otel` switch it off whatever else
is set. Everything else the OpenTelemetry SDK reads itself (service name and resource attributes,
sampler, headers, timeouts, batch sizes), so operators use the variables they know.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

import msgspec

Protocol = Literal["http/protobuf", "grpc"]
Exporter = Literal["otlp", "console"]

_PROTOCOLS: Final = ("http/protobuf", "grpc")
_EXPORTERS: Final = ("otlp", "console")
_DEFAULT_SHUTDOWN_S: Final = 5.0


class TracingConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of reading the environment and flags; `reason` says why tracing is on or off."""

    enabled: bool
    reason: str
    exporter: Exporter = "otlp"
    protocol: Protocol = "http/protobuf"
    deliver_ratio: float = 0.01
    max_links: int = 128  # links per `process` span
    max_deliver_spans: int = 64  # `deliver` spans per batch, high/critical included: bounds its cost
    shutdown_timeout_s: float = _DEFAULT_SHUTDOWN_S


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def tracing_config(
    env: Mapping[str, str], *, flag: bool | None = None, deliver_ratio: float = 0.01
) -> TracingConfig:
    """Read the `OTEL_*` variables in `env` and the `--otel/--no-otel` flag (None: not given).

    Raises ValueError for values the server cannot honour (an exporter or protocol it does not
    ship, a sampling ratio outside 0..1), naming the variable.
    """
    if not 0.0 <= deliver_ratio <= 1.0:
        raise ValueError(f"otel_deliver_ratio: {deliver_ratio} is not between 0 and 1")
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return TracingConfig(enabled=False, reason="OTEL_SDK_DISABLED=true", deliver_ratio=deliver_ratio)
    if flag is False:
        return TracingConfig(enabled=False, reason="--no-otel", deliver_ratio=deliver_ratio)
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if "none" in names:
        return TracingConfig(enabled=False, reason="OTEL_TRACES_EXPORTER=none", deliver_ratio=deliver_ratio)
    for name in names:
        if name not in _EXPORTERS:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER: {name!r} is not supported (otlp, console or none; Jaeger "
                "takes OTLP natively, so use otlp with Jaeger's OTLP endpoint)"
            )
    exporter: Exporter = "console" if names == ["console"] else "otlp"
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol not in _PROTOCOLS:
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported (http/protobuf or grpc)"
        )
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if flag:
        reason = "--otel"
    elif names:
        reason = f"OTEL_TRACES_EXPORTER={','.join(names)}"
    elif endpoint:
        reason = "an OTLP endpoint is set"
    else:
        return TracingConfig(
            enabled=False, reason="no --otel and no OTEL_* exporter settings", deliver_ratio=deliver_ratio
        )
    return TracingConfig(
        enabled=True,
        reason=reason,
        exporter=exporter,
        protocol="grpc" if protocol == "grpc" else "http/protobuf",
        deliver_ratio=deliver_ratio,
    )
