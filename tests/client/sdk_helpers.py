"""Small helpers shared by the SDK tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from client.dash_server import scaled
from dash_stream.client import Event, Stream


async def take(stream: Stream, n: int, within: float = 10.0) -> list[Event]:
    """The next `n` events of a stream, failing after a generous (scaled) timeout."""
    events: list[Event] = []
    async with asyncio.timeout(scaled(within)):
        async for event in stream:
            events.append(event)
            if len(events) == n:
                break
    return events


async def eventually(predicate: Callable[[], bool], what: str, within: float = 20.0) -> None:
    """Poll `predicate` until it holds, failing after a generous (scaled) timeout naming `what`."""
    deadline = asyncio.get_running_loop().time() + scaled(within)
    while True:
        if predicate():
            return
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
