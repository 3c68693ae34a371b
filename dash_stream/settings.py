"""One typed settings object, filled from flags, `DASH_*` environment variables and a TOML file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec


class Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Everything `dash-stream serve` can be told; defaults are production-safe (auth on)."""

    host: str = "127.0.0.1"
    port: int = 8080
    bus: str = "memory://"
    redis_partitions: int = 16
    redis_min_replicas: int = 0
    log_format: Literal["json", "text"] = "text"
    log_level: str = "info"

    # auth (PROTOCOL.md section 7)
    dev: bool = False
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    api_keys: tuple[str, ...] = ()
    auth_timeout_s: float = 10.0
    # per client IP: more than auth_fail_limit failed authentications within auth_fail_window_s lock the
    # address out (WebSocket close 4029, HTTP 429) for auth_lockout_s; 0 turns the lockout off
    auth_fail_limit: int = 100
    auth_fail_window_s: float = 60.0
    auth_lockout_s: float = 60.0

    # retention and dedup (memory bus)
    retention_events: int = 100_000
    retention_age_s: float = 24 * 3600.0
    dedup_window_s: float = 600.0

    # limits
    max_event_bytes: int = 64 * 1024
    max_frame_bytes: int = 1024 * 1024
    max_batch: int = 1000
    max_body_bytes: int = 16 * 1024 * 1024
    max_subscriptions: int = 100
    max_connections: int = 10_000
    max_replay: int = 100_000
    outbox_max_bytes: int = 8 * 1024 * 1024
    outbox_max_frames: int = 20_000
    frame_max_events: int = 500
    publish_rate: float = 10_000.0
    publish_burst: float | None = None  # default: twice the rate
    conn_publish_rate: float = 5_000.0
    connect_rate_per_ip: float = 50.0
    connect_burst_per_ip: float = 200.0
    malformed_limit: int = 10
    publish_timeout_s: float = 5.0  # a bus append taking longer (e.g. Redis partitioned away) is a 503
    # HTTP/1.1 framing (slowloris): request line and headers must arrive within header_timeout_s and
    # fit max_header_bytes / max_headers; a body must arrive within body_timeout_s; idle keep-alive
    # connections close after keep_alive_s
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    keep_alive_s: float = 5.0

    # protocol timing
    heartbeat_s: float = 25.0
    sse_keepalive_s: float | None = None  # default: heartbeat_s
    drain_timeout_s: float = 10.0
    strict_types: bool = False

    # tracing (docs/operations.md): None = decided by the OTEL_* variables
    otel: bool | None = None
    otel_deliver_ratio: float = 0.01

    # the event bridge, run in this process on this server's bus (a TOML file; see docs/bridge.md)
    bridge: str | None = None
    # the OpenClaw watcher, run in this process on this server's bus (its [openclaw] table;
    # see docs/openclaw-watch.md)
    openclaw_watch: str | None = None

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given fields replaced (None values are ignored)."""
        return msgspec.structs.replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_file(path: Path) -> dict[str, Any]:
    """Read a TOML settings file (`[serve]` table or top-level keys); errors name the file and key."""
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: {e}") from None
    table = doc.get("serve", doc)
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [serve] must be a table")
    try:
        msgspec.convert(table, Settings, strict=False)
    except msgspec.ValidationError as e:
        raise ValueError(f"{path}: {e}") from None
    return {k.replace("-", "_"): v for k, v in table.items()}
