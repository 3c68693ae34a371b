"""The client's credentials: which token to use now, and when to fetch a fresh one.

A JWT's `iat`/`exp` are read without verification, only to schedule refreshes: the server is the
one that verifies tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import jwt

TokenProvider = Callable[[], Awaitable[str]]

log = logging.getLogger("dash_stream.client")


def token_times(token: str) -> tuple[float | None, float | None]:
    """(`iat`, `exp`) of a JWT as unix seconds, read without verification; None where absent."""
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None, None

    def number(name: str) -> float | None:
        value = claims.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    return number("iat"), number("exp")


def refresh_at(token: str, obtained_at: float) -> float | None:
    """When to refresh `token` (unix seconds), or None when it never expires.

    The lead before `exp` is a quarter of the token's lifetime, between 0.5 s and 60 s, so that a
    one-hour token is refreshed a minute early and a short test token still in time.
    """
    iat, exp = token_times(token)
    if exp is None:
        return None
    issued = iat if iat is not None and iat <= obtained_at else obtained_at
    lead = min(60.0, max(0.5, (exp - issued) / 4))
    return exp - lead


class Credentials:
    """The current token: a fixed one, or the latest from a provider, refreshed before `exp`."""

    def __init__(self, token: str | None, provider: TokenProvider | None, clock: Callable[[], float]) -> None:
        """Give a fixed `token` or a `provider` (or neither, for servers with auth off)."""
        if token is not None and provider is not None:
            raise ValueError("give either token or token_provider, not both")
        self.token = token
        self.provider = provider
        self._clock = clock
        self._obtained = clock()
        self._changed = asyncio.Event()

    async def for_connection(self) -> str | None:
        """The token for a new connection: a fresh one when there is a provider."""
        if self.provider is not None:
            self.set(await self.provider())
        return self.token

    def set(self, token: str) -> None:
        """Adopt `token` (obtained now) and reschedule the refresh."""
        self.token = token
        self._obtained = self._clock()
        self._changed.set()

    def wake(self) -> None:
        """Make a waiting refresh loop look again (e.g. the client ended)."""
        self._changed.set()

    async def refresh_forever(
        self, send: Callable[[str], Awaitable[None]], connected: Callable[[], bool]
    ) -> None:
        """Before each token's refresh time, get a fresh one and `send` it (a `refresh` op).

        Runs until cancelled; a failed refresh is retried every second until `exp`, after which
        the server closes with 4501 and the reconnect fetches a fresh token anyway.
        """
        assert self.provider is not None
        while True:
            self._changed.clear()
            when = refresh_at(self.token, self._obtained) if self.token else None
            delay = None if when is None else when - self._clock()
            if delay is None or delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._changed.wait()
                    continue  # a new token arrived (a reconnect): schedule anew
            if not connected():
                await self._changed.wait()  # the reconnect fetches a fresh token
                continue
            try:
                token = await self.provider()
                await send(token)
                self.set(token)
                log.debug("token refreshed")
            except Exception as e:
                log.warning("token refresh failed: %s; retrying", e)
                await asyncio.sleep(1.0)
