"""The bridge's configuration: a TOML file decoded into frozen msgspec Structs and checked at load.

Every error is a `ConfigError` whose message starts with the key at fault, e.g.
`routes[0].group_wait: expected a duration like "2s"`. Decoding checks types and unknown keys;
`validate()` then compiles every filter, template and regex once and checks cross references
(receivers named by routes, mentions and the root), so a config that loads can run.
See docs/bridge.md for every key.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from bridge.errors import ConfigError
from dash_stream.durations import Duration, parse_duration

_RATE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h|d|sec|min|hour|day)\s*$")
_RATE_UNITS: Final = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
NO_GROUPING: Final = "..."
ORIGIN: Final = "dash-bridge"


class Rate(float):
    """Events per second, written in the file as "10/m", "2/s", "100/h"."""


def parse_rate(text: object) -> Rate:
    """Events per second from "10/m"; ValueError with the expected shape otherwise."""
    m = _RATE.match(text) if isinstance(text, str) else None
    if m is None or float(m.group(1)) <= 0:
        raise ValueError('expected a rate like "10/m" (a positive number per s, m, h or d)')
    return Rate(float(m.group(1)) / _RATE_UNITS[m.group(2)])


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Duration:
        return parse_duration(obj)
    if type_ is Rate:
        return parse_rate(obj)
    raise NotImplementedError


class _Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


Endpoint = Literal["agent", "wake"]
WakeMode = Literal["now", "next-heartbeat"]


class TargetFields(_Strict, frozen=True, kw_only=True):
    """Where an OpenClaw message goes; set on a receiver, overridden by routes and mentions.

    `session_key` and the other strings are templates (`hook:dash:{labels.swarm}`).
    """

    endpoint: Endpoint | None = None
    agent_id: str | None = None
    session_key: str | None = None
    channel: str | None = None
    to: str | None = None
    wake_mode: WakeMode | None = None
    deliver: bool | None = None
    hook_name: str | None = None
    model: str | None = None
    thinking: str | None = None
    timeout_seconds: int | None = None


TARGET_KEYS: Final = TargetFields.__struct_fields__


class ReceiverConfig(TargetFields, frozen=True, kw_only=True):
    """A destination: an OpenClaw gateway's hooks API, or `memory` / `stdout` for tests and dry runs."""

    name: str
    kind: Literal["openclaw", "memory", "stdout"] = "openclaw"
    url: str | None = None
    hooks_path: str = "/hooks"
    token_env: str | None = None
    token_file: str | None = None
    max_in_flight: int = 4
    timeout: Duration = Duration(10.0)
    max_attempts: int = 8
    backoff_initial: Duration = Duration(0.5)
    backoff_max: Duration = Duration(30.0)
    max_retry_after: Duration = Duration(300.0)
    retry_for: Duration = Duration(900.0)
    max_body_bytes: int = 250_000


class ThrottleConfig(_Strict, frozen=True, kw_only=True):
    """A token bucket per route: `rate` refill, `burst` capacity (default: the rate's count)."""

    rate: Rate
    burst: int | None = None


class RouteConfig(TargetFields, frozen=True, kw_only=True):
    """A node of the routing tree; unset fields inherit from the parent (the root is `[defaults]`)."""

    name: str | None = None
    receiver: str | None = None
    match: dict[str, str | int | float | bool] = {}
    match_re: dict[str, str] = {}
    where: dict[str, Any] | None = None
    continue_: bool = msgspec.field(default=False, name="continue")
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    dedup_key: str | None = None
    dedup_window: Duration | None = None
    throttle: ThrottleConfig | None = None
    title: str | None = None
    text: str | None = None
    digest_title: str | None = None
    links: list[str] | None = None
    max_items: int | None = None
    mentions: bool | None = None
    routes: list[RouteConfig] = []


class InhibitRuleConfig(_Strict, frozen=True, kw_only=True):
    """While an event matching `source` lasts, events matching `target` with `equal` fields are muted."""

    name: str | None = None
    source: dict[str, Any]
    target: dict[str, Any]
    equal: list[str] = []
    clear: dict[str, Any] | None = None
    duration: Duration = Duration(3600.0)


class MentionConfig(TargetFields, frozen=True, kw_only=True):
    """Maps an @name in `labels.mentions` to a target (agent, session key, channel/to)."""

    name: str
    receiver: str | None = None


class SourceConfig(_Strict, frozen=True, kw_only=True):
    """Where events come from: a dash-stream server (`server`) or a bus URL (`bus`)."""

    server: str | None = None
    bus: str | None = None
    topics: list[str] = msgspec.field(default_factory=lambda: [">"])
    where: dict[str, Any] | None = None
    token_env: str | None = None
    token_file: str | None = None
    start: Literal["latest", "earliest"] = "latest"
    forward_own: bool = False
    max_buffered_events: int = 10_000


class StateConfig(_Strict, frozen=True, kw_only=True):
    """The durable cursor file."""

    path: str | None = None
    checkpoint_interval: Duration = Duration(1.0)
    fsync: bool = True
    max_ledger: int = 200_000


class DlqConfig(_Strict, frozen=True, kw_only=True):
    """The dead-letter queue (JSON lines)."""

    path: str | None = None
    max_entries: int = 10_000


class MetricsConfig(_Strict, frozen=True, kw_only=True):
    """Standalone only: serve Prometheus metrics on `listen` ("127.0.0.1:9465")."""

    listen: str | None = None


class LimitsConfig(_Strict, frozen=True, kw_only=True):
    """Bounds of the pipeline's buffers (what happens when full: see docs/bridge.md)."""

    max_groups: int = 10_000
    max_group_events: int = 5_000
    max_pending_messages: int = 1_000
    max_dedup_keys: int = 100_000


class Badges(_Strict, frozen=True, kw_only=True):
    """The priority badge shown in messages (`{badge}`)."""

    low: str = "[low]"
    normal: str = "[normal]"
    high: str = "[HIGH]"
    critical: str = "[CRITICAL]"


class BridgeConfig(_Strict, frozen=True, kw_only=True):
    """The whole file."""

    origin: str = ORIGIN
    source: SourceConfig = SourceConfig()
    receivers: list[ReceiverConfig] = []
    defaults: RouteConfig = RouteConfig()
    routes: list[RouteConfig] = []
    inhibit_rules: list[InhibitRuleConfig] = []
    mentions: list[MentionConfig] = []
    badges: Badges = Badges()
    state: StateConfig = StateConfig()
    dlq: DlqConfig = DlqConfig()
    metrics: MetricsConfig = MetricsConfig()
    limits: LimitsConfig = LimitsConfig()
    # the OpenClaw watcher's table (dash_stream.openclaw.config checks it); the bridge ignores it
    openclaw: dict[str, Any] | None = None
    base_dir: str = "."  # the config file's directory: relative paths resolve against it (set at load)

    def receiver(self, name: str) -> ReceiverConfig:
        """The receiver called `name` (KeyError if none)."""
        for r in self.receivers:
            if r.name == name:
                return r
        raise KeyError(name)

    def resolve(self, path: str) -> Path:
        """A path from the file, relative to the config file's directory."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def state_path(self) -> Path:
        """Where the durable cursor lives."""
        return self.resolve(self.state.path or "bridge-state.json")

    @property
    def dlq_path(self) -> Path:
        """Where the dead-letter queue lives."""
        return self.resolve(self.dlq.path or "bridge-dlq.jsonl")


def _choices(path: str) -> str | None:
    """The allowed values of the Literal field at `path` (`source.start`), if it is one."""
    info: Any = msgspec.inspect.type_info(BridgeConfig)
    for segment in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if isinstance(info, msgspec.inspect.UnionType):
            info = next((t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)), info)
        if segment.startswith("["):
            info = getattr(info, "item_type", None)
        else:
            fields = {f.encode_name: f.type for f in getattr(info, "fields", ())}
            info = fields.get(segment)
        if info is None:
            return None
    if isinstance(info, msgspec.inspect.UnionType):
        info = next((t for t in info.types if isinstance(t, msgspec.inspect.LiteralType)), info)
    if isinstance(info, msgspec.inspect.LiteralType):
        return ", ".join(repr(v) for v in info.values)
    return None


def _error_from(e: msgspec.ValidationError) -> ConfigError:
    """`Expected int, got str - at $.routes[0].x` -> `routes[0].x: expected int, got str`."""
    text = str(e)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        return ConfigError(text)
    path = where.rstrip("`").removeprefix("$").lstrip(".") or "(top level)"
    message = message[:1].lower() + message[1:]
    if message.startswith("invalid enum value"):
        choices = _choices(path)
        if choices:
            message = f"expected one of {choices}, got {message.removeprefix('invalid enum value ')}"
    return ConfigError(f"{path}: {message}")


def parse_config(doc: dict[str, Any], *, base_dir: str | Path = ".") -> BridgeConfig:
    """Decode and validate a config document; ConfigError names the key at fault."""
    try:
        config = msgspec.convert({**doc, "base_dir": str(base_dir)}, BridgeConfig, dec_hook=_dec_hook)
    except msgspec.ValidationError as e:
        raise _error_from(e) from None
    from bridge.validate import validate  # compiles filters/templates; imports rules, which import us

    validate(config)
    return config


def load_config(path: str | Path) -> BridgeConfig:
    """Read and validate a TOML config file; ConfigError (a ValueError) says what and where."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    if "base_dir" in doc:
        raise ConfigError("base_dir: not a setting (relative paths resolve against the config file)")
    return parse_config(doc, base_dir=p.resolve().parent)
