"""The bridge's exceptions, under the project's one root (`DashError`)."""

from __future__ import annotations

from dash_stream.protocol.errors import BadRequest, DashError, Unavailable


class BridgeError(DashError):
    """Something the bridge reports on purpose."""


class ConfigError(BadRequest, ValueError):
    """A configuration that cannot work; the message starts with the key (`routes[0].group_wait: ...`)."""


class StateError(BridgeError):
    """The durable state (cursor file, DLQ) cannot be read or written."""


class SourceError(Unavailable):
    """The event source failed in a way retrying cannot fix (bad credentials, forbidden topics)."""
