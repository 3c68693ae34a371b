"""Blocking helpers for scripts: `publish_many` and the `tail` iterator.

Both run the asyncio `Client` on an event loop of their own, so they must not be called from
inside a running event loop (use `Client` there).

    from dash_stream.client.sync import publish_many, tail

    offsets = publish_many("http://127.0.0.1:8080", [{"topic": "jobs.j1", "type": "task.completed"}])
    for event in tail("http://127.0.0.1:8080", ["jobs.>"], from_="earliest", limit=10):
        print(event.type, event.data)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from typing import Any, Literal, TypeVar

from dash_stream.client.client import Client
from dash_stream.client.stream import Stream
from dash_stream.client.wire import Subprotocol
from dash_stream.events import Event, EventIn

_T = TypeVar("_T")
_WINDOW = 256  # publishes awaiting their ack at once: pipelined, in order per connection


def publish_many(
    url: str,
    events: Iterable[EventIn | Mapping[str, Any]],
    *,
    token: str | None = None,
    subprotocol: Subprotocol = "json",
) -> list[str]:
    """Publish events over one WebSocket connection; their offsets, in order.

    Raises PublishError on the first event the server refuses (those before it are published).
    """

    async def run() -> list[str]:
        async with Client(url, token=token, subprotocol=subprotocol) as client:
            offsets: list[str] = []
            window: list[asyncio.Task[str]] = []
            try:
                for event in events:
                    window.append(asyncio.create_task(client.publish(event)))
                    if len(window) >= _WINDOW:
                        offsets.extend(await asyncio.gather(*window))
                        window.clear()
                offsets.extend(await asyncio.gather(*window))
            finally:
                for task in window:
                    task.cancel()
                await asyncio.gather(*window, return_exceptions=True)
            return offsets

    return asyncio.run(run())


def tail(
    url: str,
    topics: list[str] | str,
    *,
    where: Mapping[str, Any] | None = None,
    cursor: str | None = None,
    from_: Literal["latest", "earliest"] | None = None,
    token: str | None = None,
    limit: int | None = None,
    subprotocol: Subprotocol = "json",
) -> Iterator[Event]:
    """Events of a subscription, forever or until `limit`; closing the iterator disconnects.

    The client runs on a private event loop in a background thread; each `next()` asks it for
    one event, so nothing piles up between the two sides beyond the stream's own bounded buffer.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="dash-stream-tail", daemon=True)
    thread.start()

    def call(coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    Context = contextlib.AbstractAsyncContextManager[Stream]

    async def open_stream() -> tuple[Client, Context, Stream]:
        client = Client(url, token=token, subprotocol=subprotocol)
        await client.connect()
        try:
            context = client.subscribe(topics, where=where, cursor=cursor, from_=from_)
            stream = await context.__aenter__()
        except BaseException:
            await client.close()
            raise
        return client, context, stream

    async def close_stream(client: Client, context: Context) -> None:
        try:
            await context.__aexit__(None, None, None)
        finally:
            await client.close()

    try:
        client, context, stream = call(open_stream())
        try:
            count = 0
            while limit is None or count < limit:
                try:
                    event = call(stream.__anext__())
                except StopAsyncIteration:
                    return
                count += 1
                yield event
        finally:
            call(close_stream(client, context))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
