"""Checks that need more than types: compiles every filter, template and regex of a decoded config
and checks the references between its parts. Errors are ConfigError naming the key."""

from __future__ import annotations

from urllib.parse import urlsplit

from bridge.config import BridgeConfig, ReceiverConfig
from bridge.dedup import InhibitRule
from bridge.errors import ConfigError
from bridge.rules import EventFilter, Router
from dash_stream.filters import TopicSet
from dash_stream.protocol.errors import BadRequest


def _positive(path: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{path}: must be {'0 or more' if allow_zero else 'more than 0'}")


def _check_receiver(r: ReceiverConfig, path: str) -> None:
    if not r.name.strip():
        raise ConfigError(f"{path}.name: must not be empty")
    if r.kind == "openclaw":
        if not r.url:
            raise ConfigError(f'{path}.url: required for kind "openclaw" (e.g. "http://127.0.0.1:18789")')
        parts = urlsplit(r.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{path}.url: expected an http(s):// URL, got {r.url!r}")
        if parts.query:
            raise ConfigError(f"{path}.url: must not carry a query (OpenClaw refuses tokens in URLs)")
        if not r.token_env and not r.token_file:
            raise ConfigError(f"{path}: set token_env or token_file (the OpenClaw hooks token)")
    if r.token_env and r.token_file:
        raise ConfigError(f"{path}: set token_env or token_file, not both")
    if not r.hooks_path.startswith("/"):
        raise ConfigError(f"{path}.hooks_path: must start with /")
    for key in ("max_in_flight", "max_attempts"):
        if getattr(r, key) < 1:
            raise ConfigError(f"{path}.{key}: must be at least 1")
    for key in ("timeout", "backoff_initial", "backoff_max", "retry_for"):
        _positive(f"{path}.{key}", getattr(r, key))
    if r.backoff_max < r.backoff_initial:
        raise ConfigError(f"{path}.backoff_max: must not be less than backoff_initial")
    if r.max_body_bytes < 4096:
        raise ConfigError(f"{path}.max_body_bytes: must be at least 4096")


def validate(config: BridgeConfig) -> None:
    """Raise ConfigError unless the config can run as written."""
    src = config.source
    if src.server and src.bus:
        raise ConfigError("source: set server or bus, not both")
    if src.server:
        scheme = urlsplit(src.server).scheme
        if scheme not in ("ws", "wss", "http", "https"):
            raise ConfigError(f"source.server: expected a ws(s):// URL, got {src.server!r}")
    if src.token_env and src.token_file:
        raise ConfigError("source: set token_env or token_file, not both")
    try:
        TopicSet(src.topics, path="source.topics")
    except BadRequest as e:
        raise ConfigError(e.message) from None
    if src.max_buffered_events < 1:
        raise ConfigError("source.max_buffered_events: must be at least 1")
    if not config.origin.strip():
        raise ConfigError("origin: must not be empty")
    EventFilter(src.where, origin=config.origin, forward_own=src.forward_own)
    names: set[str] = set()
    for i, r in enumerate(config.receivers):
        _check_receiver(r, f"receivers[{i}]")
        if r.name in names:
            raise ConfigError(f"receivers[{i}].name: {r.name!r} is used twice")
        names.add(r.name)
    if not config.routes and config.defaults.receiver is None:
        raise ConfigError("routes: no route and no [defaults] receiver: nothing would ever be forwarded")
    Router(config)
    for i, rule in enumerate(config.inhibit_rules):
        InhibitRule(rule, i)
    _positive("state.checkpoint_interval", config.state.checkpoint_interval)
    for section, keys in (
        ("state", ("max_ledger",)),
        ("dlq", ("max_entries",)),
        ("limits", ("max_groups", "max_group_events", "max_pending_messages", "max_dedup_keys")),
    ):
        for key in keys:
            if getattr(getattr(config, section), key) < 1:
                raise ConfigError(f"{section}.{key}: must be at least 1")
    if config.metrics.listen is not None:
        host, sep, port = config.metrics.listen.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ConfigError(f'metrics.listen: expected "host:port", got {config.metrics.listen!r}')
