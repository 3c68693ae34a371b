"""Opening one verified WebSocket connection, and reading how a connection ended.

`open_connection` connects with the subprotocol and bearer token, reads `welcome`, then
round-trips a ping: the server closes with 4501 right after `welcome` when the token is bad, so
the `pong` proves the credentials were accepted before the client relies on the connection.
"""

from __future__ import annotations

import asyncio

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from dash_stream.client import policy
from dash_stream.client.errors import ClientError
from dash_stream.client.wire import Codec, Ping, Pong, Welcome

MAX_FRAME_BYTES = 16 * 1024 * 1024


class Transient(Exception):
    """A failed connection attempt worth retrying; `retry_after_ms` when the server suggested one."""

    def __init__(self, reason: str, retry_after_ms: int | None = None) -> None:
        """`reason` is a few words, e.g. "connection refused"."""
        super().__init__(reason)
        self.reason = reason
        self.retry_after_ms = retry_after_ms


async def open_connection(
    url: str, codec: Codec, token: str | None, open_timeout: float
) -> tuple[ClientConnection, Welcome]:
    """A connection whose welcome and credentials were checked.

    Raises Transient when trying again may help, ClientError when it cannot (e.g. 4501).
    """
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        ws = await connect(
            url,
            subprotocols=[Subprotocol(codec.name)],
            additional_headers=headers,
            open_timeout=open_timeout,
            max_size=MAX_FRAME_BYTES,
            compression=None,
            close_timeout=2,
        )
    except InvalidStatus as e:
        raise Transient(f"HTTP {e.response.status_code} from the server") from None
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as e:
        raise Transient(describe_exception(e)) from None
    try:
        async with asyncio.timeout(open_timeout):
            welcome = codec.decode(await ws.recv())
            if not isinstance(welcome, Welcome):
                raise msgspec.ValidationError(f"expected a welcome frame, got {type(welcome).__name__}")
            await ws.send(codec.encode(Ping(id="hello")))
            while not isinstance(codec.decode(await ws.recv()), Pong):
                pass
    except ConnectionClosed as e:
        code, reason = close_of(e)
        if policy.should_reconnect(code):
            raise Transient(f"closed with {code}", policy.parse_close_reason(reason)[1]) from None
        raise closed_error(code, reason) from None
    except (TimeoutError, msgspec.MsgspecError) as e:
        await ws.close()
        raise Transient(f"no welcome from the server ({describe_exception(e)})") from None
    return ws, welcome


def close_of(e: ConnectionClosed) -> tuple[int, str]:
    """The close code and reason the server sent; 1006 when the connection just dropped."""
    if e.rcvd is not None:
        return e.rcvd.code, e.rcvd.reason
    return 1006, ""


def closed_error(code: int, reason: str) -> ClientError:
    """The ClientError for a close that ends the client."""
    return ClientError(policy.error_code(code, reason), policy.describe_close(code, reason), close_code=code)


def describe_exception(e: BaseException) -> str:
    """A few words about a network failure, for messages."""
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__
