"""The dash-stream Python SDK: an asyncio WebSocket client with auto-reconnect and exact resume.

    async with Client("ws://127.0.0.1:8080", token=jwt) as client:
        offset = await client.publish({"topic": "swarm.s1.agent.a7", "type": "agent.failed"})
        async with client.subscribe(["swarm.s1.>"], from_="earliest") as stream:
            async for event in stream:
                print(event.type, event.offset, stream.cursor)

`dash_stream.client.sync` has blocking helpers for scripts (`publish_many`, `tail`).

The names below are loaded on first use, so that importing a light submodule (e.g.
`dash_stream.client.cursors`) does not pull in the WebSocket stack; CLI start-up stays quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dash_stream.client.client import Client
    from dash_stream.client.errors import ClientError, ConnectError, PublishError
    from dash_stream.client.stream import Batch, Stream
    from dash_stream.client.tokens import TokenProvider
    from dash_stream.events import Event, EventIn

_EXPORTS = {
    "Batch": "dash_stream.client.stream",
    "Client": "dash_stream.client.client",
    "ClientError": "dash_stream.client.errors",
    "ConnectError": "dash_stream.client.errors",
    "Event": "dash_stream.events",
    "EventIn": "dash_stream.events",
    "PublishError": "dash_stream.client.errors",
    "Stream": "dash_stream.client.stream",
    "TokenProvider": "dash_stream.client.tokens",
}

__all__ = [
    "Batch",
    "Client",
    "ClientError",
    "ConnectError",
    "Event",
    "EventIn",
    "PublishError",
    "Stream",
    "TokenProvider",
]


def __getattr__(name: str) -> Any:
    """Load an exported name from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
