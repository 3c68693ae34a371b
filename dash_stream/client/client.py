"""`Client`: the asyncio SDK for `/v1/ws`, with auto-reconnect, exact resume and token refresh.

    async with Client("http://127.0.0.1:8080", token=jwt) as client:
        async with client.subscribe(["swarm.>"], from_="earliest") as stream:
            async for event in stream:
                ...

The connection, reconnects and the bookkeeping of requests and streams live in `Link`; this
module is the public surface: `subscribe`, `publish`, `ping`, and the lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Literal

import msgspec

from dash_stream.client.errors import ClientError, ConnectError, PublishError
from dash_stream.client.link import Link
from dash_stream.client.stream import Stream
from dash_stream.client.tokens import Credentials, TokenProvider
from dash_stream.client.transport import Transient
from dash_stream.client.wire import (
    Ack,
    Codec,
    Ping,
    Publish,
    Refresh,
    Subprotocol,
    event_payload,
    websocket_url,
)
from dash_stream.events import EventIn, uuid7


class Client:
    """A dash-stream WebSocket client; use as `async with Client(url) as client:`.

    `url` may be ws(s):// or http(s):// (the path defaults to /v1/ws). Give a static `token`, or a
    `token_provider` (an async callable returning a JWT): it is called for every connection and
    before the current token's `exp`, when the client sends a `refresh` op. A 4501 close is then
    answered by reconnecting with a fresh token; without a provider it ends the client.

    Reconnects are automatic (close codes 1001, 1006, 4000-4499); `reconnects` counts them.
    4500-4999 end the client: every stream and call raises `ClientError` from then on.
    The first connection fails fast with `ConnectError`.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        token_provider: TokenProvider | None = None,
        subprotocol: Subprotocol = "json",
        open_timeout: float = 10.0,
        request_timeout: float = 30.0,
        max_backoff_s: float = 30.0,
        max_buffered_events: int = 10_000,
        max_in_flight: int = 1_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Configure the client; nothing connects until `connect()` or `async with`.

        `request_timeout` bounds each publish/ping/subscribe (reconnects included);
        `max_buffered_events` bounds each stream's buffer (see `Stream`); `max_in_flight`
        bounds publishes awaiting their ack (more wait for a slot).
        """
        self.url = websocket_url(url)
        self._credentials = Credentials(token, token_provider, clock)
        self._link = Link(
            self.url,
            Codec(subprotocol),
            self._credentials,
            open_timeout=open_timeout,
            request_timeout=request_timeout,
            max_backoff_s=max_backoff_s,
        )
        self._request_timeout = request_timeout
        self._max_buffered_events = max_buffered_events
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._refresher: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Client:
        """Connect; raises ConnectError or ClientError when the first connection fails."""
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the connection and end every stream."""
        await self.close()

    async def connect(self) -> None:
        """Open the first connection (failing fast) and start the background tasks."""
        if self._started:
            raise RuntimeError("this client is already connected")
        try:
            await self._link.start()
        except Transient as e:
            raise ConnectError(self.url, e.reason) from None
        self._started = True
        if self._credentials.provider is not None:
            self._refresher = asyncio.create_task(
                self._credentials.refresh_forever(self._send_refresh, lambda: self.connected),
                name="dash-client-refresh",
            )

    async def close(self) -> None:
        """Close the connection, stop the background tasks and end every stream (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self._link.stop()

    @property
    def connected(self) -> bool:
        """Whether a connection is open right now (False while reconnecting)."""
        return self._link.ws is not None

    @property
    def reconnects(self) -> int:
        """How many times the client connected again after losing its connection."""
        return self._link.reconnects

    @property
    def session(self) -> str | None:
        """The server's id of the current connection (from `welcome`)."""
        return self._link.session

    # ------------------------------------------------------------ operations

    def subscribe(
        self,
        topics: list[str] | str,
        where: Mapping[str, Any] | None = None,
        cursor: str | None = None,
        from_: Literal["latest", "earliest"] | None = None,
        sub: str | None = None,
    ) -> contextlib.AbstractAsyncContextManager[Stream]:
        """Subscribe: `async with client.subscribe(["swarm.>"]) as stream: async for ev in stream`.

        Resume with `cursor` (from `stream.cursor` of an earlier run) or start at `from_`
        ("latest", the default, or "earliest"); `where` is the structured filter. Raises
        ClientError when the server refuses the subscription (e.g. `forbidden`).
        """
        if cursor is not None and from_ is not None:
            raise ValueError("give either cursor or from_, not both")
        return self._subscription(
            [topics] if isinstance(topics, str) else list(topics),
            dict(where) if where is not None else None,
            cursor,
            from_,
            sub,
        )

    @contextlib.asynccontextmanager
    async def _subscription(
        self,
        topics: list[str],
        where: dict[str, Any] | None,
        cursor: str | None,
        from_: Literal["latest", "earliest"] | None,
        sub: str | None,
    ) -> AsyncIterator[Stream]:
        self._check_usable()
        sub_id = sub if sub is not None else f"s{self._link.next_id()}"
        stream = Stream(
            sub=sub_id,
            topics=topics,
            where=where,
            cursor=cursor,
            from_=from_,
            max_buffered_events=self._max_buffered_events,
            on_drained=self._link.send_subscribe,
        )
        try:
            await self._link.attach(stream)
            async with asyncio.timeout(self._request_timeout):
                await stream.ready()
        except TimeoutError:
            await self._link.detach(stream)  # in case the answer is only late
            raise ClientError(
                "timeout", f"no answer to subscribe {sub_id!r} within {self._request_timeout}s"
            ) from None
        except BaseException:
            self._link.streams.pop(sub_id, None)
            raise
        try:
            yield stream
        finally:
            await self._link.detach(stream)

    async def publish(self, event: EventIn | Mapping[str, Any]) -> str:
        """Publish one event and return its offset (from the server's `ack`).

        An event without an `id` gets a UUIDv7, so that a publish cut off by a reconnect can be
        sent again without creating a duplicate. Raises PublishError with the server's code
        (`forbidden`, `rate_limited` with `retry_after_ms`, ...), or `timeout` when no answer came
        within the client's `request_timeout` (reconnects included).
        """
        self._check_usable()
        if isinstance(event, EventIn):
            checked = event
        else:
            try:
                checked = msgspec.convert(dict(event), EventIn)
            except msgspec.ValidationError as e:
                raise PublishError("bad_request", str(e).replace("`$.", "`event.")) from None
        payload = event_payload(checked)
        payload.setdefault("id", uuid7())
        async with self._in_flight:
            result = await self._link.request(
                Publish(id=self._link.next_id(), event=payload), True, "publish"
            )
        assert isinstance(result, Ack)
        return result.offset

    async def ping(self) -> float:
        """Round-trip an application ping; returns the seconds it took."""
        self._check_usable()
        started = time.monotonic()
        await self._link.request(Ping(id=self._link.next_id()), False, "ping")
        return time.monotonic() - started

    # ------------------------------------------------------------ helpers

    def _check_usable(self) -> None:
        if self._link.failure is not None:
            raise self._link.failure
        if self._closed or not self._started:
            raise ClientError("closed", "the client is not connected: use `async with Client(...)`")

    async def _send_refresh(self, token: str) -> None:
        await self._link.request(Refresh(id=self._link.next_id(), token=token), False, "refresh")
