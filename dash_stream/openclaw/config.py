"""The watcher's configuration: the `[openclaw]` table of a TOML file, as a frozen msgspec Struct.

The table may live in a file of its own or in the event bridge's file (the bridge ignores it, the
watcher reads nothing else of it except the bridge's top-level `origin`, the default of ours). Every
error is a `ConfigError` whose message starts with the key at fault, e.g.
`openclaw.rules[0].topic: unknown placeholder {agnet}`. See docs/openclaw-watch.md for every key.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from dash_stream.durations import Duration, parse_duration

DEFAULT_ORIGIN: Final = "dash-bridge"
DEFAULT_TOKEN_ENV: Final = "OPENCLAW_GATEWAY_TOKEN"
RUN_TOPIC: Final = "openclaw.{agent}.{kind}"
GATEWAY_TOPIC: Final = "openclaw.gateway.{gateway}"
BASE_PLACEHOLDERS: Final = frozenset({"gateway", "agent", "session", "kind"})
_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ConfigError(ValueError):
    """A configuration the watcher cannot run with; the message names the key."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Duration:
        return parse_duration(obj)
    raise NotImplementedError


class _Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class RuleConfig(_Strict, frozen=True, kw_only=True):
    """One mapping rule: where the events of matching runs go and how they are labelled.

    `agent` and `session` are regular expressions that must match the whole agent id / session key
    (both, when both are given); their named groups become placeholders of the templates.
    """

    agent: str | None = None
    session: str | None = None
    topic: str | None = None
    swarm: str | None = None
    labels: dict[str, str] = {}


class WatchConfig(_Strict, frozen=True, kw_only=True):
    """The whole `[openclaw]` table (or the flags of `dash-stream openclaw watch`)."""

    gateway: str | None = None  # ws://host:port of the gateway
    name: str | None = None  # the gateway's name: source `openclaw/<name>`; default host-port
    token_env: str | None = None  # default OPENCLAW_GATEWAY_TOKEN, unless token_file is set
    token_file: str | None = None
    server: str | None = None  # a dash-stream server (http:// or ws://), standalone
    bus: str | None = None  # or a bus URL (redis://...), standalone
    server_token_env: str = "DASH_TOKEN"  # a JWT allowed to publish to the topics (not with --dev)
    topic: str = RUN_TOPIC
    gateway_topic: str = GATEWAY_TOPIC
    swarm: str = "{gateway}"
    origin: str | None = None  # the bridge's origin marker; default the file's top-level `origin`
    origin_wait: Duration = Duration(2.0)
    origin_inherit: Duration = Duration(30.0)
    snapshot_limit: int = 200
    health_events: bool = True
    down_after: Duration = Duration(30.0)
    backoff_initial: Duration = Duration(0.5)
    backoff_max: Duration = Duration(10.0)
    queue_max: int = 10_000
    batch_max: int = 500
    max_text: int = 2_000
    metrics_listen: str | None = None
    rules: list[RuleConfig] = []
    base_dir: str = "."  # the file's directory (set at load): token_file resolves against it

    @property
    def gateway_name(self) -> str:
        """`name`, or host-port of the gateway URL (so two watchers of one gateway agree)."""
        if self.name:
            return self.name
        parts = urlsplit(self.gateway or "")
        host = (parts.hostname or "gateway").replace(":", "-")
        return f"{host}-{parts.port}" if parts.port else host

    @property
    def source(self) -> str:
        """The `source` of every event: `openclaw/<name>`."""
        return f"openclaw/{self.gateway_name}"

    @property
    def origin_marker(self) -> str:
        """The bridge's origin marker that labels the runs it triggered."""
        return self.origin or DEFAULT_ORIGIN

    def with_overrides(self, **changes: Any) -> WatchConfig:
        """A copy with the given fields replaced (None values are ignored)."""
        return msgspec.structs.replace(self, **{k: v for k, v in changes.items() if v is not None})


def placeholders(template: str) -> set[str]:
    """The `{name}` placeholders of a template."""
    return set(_PLACEHOLDER.findall(template))


def _check_template(where: str, template: str, allowed: set[str]) -> None:
    unknown = sorted(placeholders(template) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown placeholder {{{unknown[0]}}} (known: {', '.join(sorted(allowed))})"
        )


def _regex(where: str, pattern: str | None) -> set[str]:
    if pattern is None:
        return set()
    try:
        return set(re.compile(pattern).groupindex)
    except re.error as e:
        raise ConfigError(f"{where}: not a regular expression: {e}") from None


def validate(config: WatchConfig, *, need_target: bool = True) -> WatchConfig:
    """Check what decoding cannot: URLs, names, templates, regexes, bounds; returns `config`."""
    if not config.gateway:
        raise ConfigError("openclaw.gateway: required (ws://host:port of the OpenClaw gateway)")
    if urlsplit(config.gateway).scheme not in ("ws", "wss"):
        raise ConfigError(f"openclaw.gateway: expected a ws:// or wss:// URL, got {config.gateway!r}")
    if not _NAME.match(config.gateway_name):
        raise ConfigError(f"openclaw.name: {config.gateway_name!r} is not 1-64 of [A-Za-z0-9_.-]")
    if config.server and config.bus:
        raise ConfigError("openclaw.server / openclaw.bus: give one, not both")
    if need_target and not (config.server or config.bus):
        raise ConfigError("openclaw.server: required (or openclaw.bus) to know where to publish")
    if config.token_env and config.token_file:
        raise ConfigError("openclaw.token_env / openclaw.token_file: give one, not both")
    if not config.origin_marker.strip():
        raise ConfigError("openclaw.origin: must not be empty")
    for key in ("snapshot_limit", "queue_max", "batch_max", "max_text"):
        if getattr(config, key) < (0 if key == "snapshot_limit" else 1):
            raise ConfigError(f"openclaw.{key}: must be positive")
    if config.backoff_initial <= 0 or config.backoff_max < config.backoff_initial:
        raise ConfigError("openclaw.backoff_initial / backoff_max: need 0 < backoff_initial <= backoff_max")
    base = set(BASE_PLACEHOLDERS)
    _check_template("openclaw.swarm", config.swarm, base)
    _check_template("openclaw.topic", config.topic, base | {"swarm"})
    _check_template("openclaw.gateway_topic", config.gateway_topic, {"gateway", "swarm"})
    for i, rule in enumerate(config.rules):
        where = f"openclaw.rules[{i}]"
        groups = _regex(f"{where}.agent", rule.agent) | _regex(f"{where}.session", rule.session)
        names = base | groups
        if rule.swarm is not None:
            _check_template(f"{where}.swarm", rule.swarm, names)
        if rule.topic is not None:
            _check_template(f"{where}.topic", rule.topic, names | {"swarm"})
        for key, value in rule.labels.items():
            _check_template(f"{where}.labels.{key}", value, names | {"swarm"})
    return config


def _error_from(e: msgspec.ValidationError) -> ConfigError:
    """`Expected int, got str - at $.rules[0].x` -> `openclaw.rules[0].x: expected int, got str`."""
    message, sep, where = str(e).rpartition(" - at `")
    if not sep:
        return ConfigError(f"openclaw: {e}")
    path = where.rstrip("`").removeprefix("$").lstrip(".")
    return ConfigError(f"openclaw.{path}: {message[:1].lower()}{message[1:]}")


def parse_table(
    table: dict[str, Any], *, base_dir: str | Path = ".", origin: str | None = None
) -> WatchConfig:
    """Decode an `[openclaw]` table; `origin` is the default of its `origin` (the bridge's)."""
    if "base_dir" in table:
        raise ConfigError("openclaw.base_dir: not a setting (paths resolve against the config file)")
    doc = {**table, "base_dir": str(base_dir)}
    if origin is not None and "origin" not in table:
        doc["origin"] = origin
    try:
        return msgspec.convert(doc, WatchConfig, dec_hook=_dec_hook)
    except msgspec.ValidationError as e:
        raise _error_from(e) from None


def load_config(path: str | Path) -> WatchConfig:
    """The `[openclaw]` table of a TOML file (the bridge's file, or one of its own), unvalidated."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    table = doc.get("openclaw")
    if not isinstance(table, dict):
        raise ConfigError(f"{p}: no [openclaw] table")
    origin = doc.get("origin")
    return parse_table(table, base_dir=p.resolve().parent, origin=origin if isinstance(origin, str) else None)


def read_token(config: WatchConfig) -> str:
    """The gateway token from `token_file` or `token_env` (default OPENCLAW_GATEWAY_TOKEN)."""
    if config.token_file:
        file = Path(config.token_file).expanduser()
        if not file.is_absolute():
            file = Path(config.base_dir) / file
        try:
            value = file.read_text().strip()
        except OSError as e:
            raise ConfigError(f"openclaw.token_file: cannot read {file}: {e.strerror}") from None
        if not value:
            raise ConfigError(f"openclaw.token_file: {file} is empty")
        return value
    name = config.token_env or DEFAULT_TOKEN_ENV
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"openclaw.token_env: environment variable {name} is not set or empty")
    return value
