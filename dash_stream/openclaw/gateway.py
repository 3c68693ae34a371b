"""One authenticated WebSocket to an OpenClaw gateway, as an operator with read scope (OPENCLAW.md §9).

    conn = await GatewayConnection.open("ws://127.0.0.1:18789", token)
    conn.hello                                   # the hello-ok payload (server.bootId, policy, ...)
    async for frame in conn.events():            # {"type":"event","event":"agent","payload":{...}}
        ...
    answer = await conn.request("sessions.list", {"limit": 50})   # from another task

The gateway speaks first (`connect.challenge`); the watcher answers with a `connect` request as
client `cli` in mode `cli`, role `operator`, scopes `["operator.read"]` and the gateway token (no
device identity: on loopback the gateway keeps the requested scopes for `cli`/`cli`). Answers to
requests are matched by id while `events()` is being iterated, so requests must come from a task
other than the one iterating.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any, Final

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

PROTOCOL_VERSION: Final = 4
CLIENT: Final = {"id": "cli", "version": "0.1.0", "platform": "linux", "mode": "cli"}
SCOPES: Final = ["operator.read"]
MAX_FRAME: Final = 32 * 1024 * 1024
# errors after which the same connect cannot succeed until someone fixes the token or the setup
FATAL_CODES: Final = frozenset({"INVALID_REQUEST", "NOT_PAIRED", "PROTOCOL_MISMATCH", "FORBIDDEN"})


class GatewayError(Exception):
    """A connect or request the gateway refused, or a connection that failed; `fatal` when retrying
    the same thing cannot help (wrong token, protocol mismatch)."""

    def __init__(
        self, code: str, message: str, *, fatal: bool = False, retry_after_ms: int | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fatal = fatal
        self.retry_after_ms = retry_after_ms  # the gateway's suggestion (e.g. while it restarts)


class GatewayConnection:
    """An open, authenticated gateway connection; see the module docstring."""

    def __init__(self, ws: ClientConnection, hello: dict[str, Any]) -> None:
        self.ws = ws
        self.hello = hello
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self.close_code: int | None = None
        self.close_reason: str = ""

    @property
    def boot_id(self) -> str:
        """The gateway process's boot id (new on every gateway start)."""
        server = self.hello.get("server") or {}
        return str(server.get("bootId") or server.get("connId") or "unknown")

    @property
    def tick_interval_s(self) -> float:
        """Seconds between the gateway's `tick` events (policy.tickIntervalMs, default 30 s)."""
        policy = self.hello.get("policy") or {}
        ms = policy.get("tickIntervalMs")
        return float(ms) / 1000 if isinstance(ms, int | float) and ms > 0 else 30.0

    @classmethod
    async def open(cls, url: str, token: str, *, within: float = 15.0) -> GatewayConnection:
        """Connect and authenticate; GatewayError (fatal for refused credentials) or OSError."""
        try:
            ws = await connect(url, max_size=MAX_FRAME, open_timeout=within, proxy=None, compression=None)
        except (OSError, TimeoutError) as e:
            raise GatewayError("connect_failed", f"cannot reach {url}: {e or type(e).__name__}") from None
        except Exception as e:  # handshake refused (HTTP status), invalid URI
            raise GatewayError("connect_failed", f"cannot open {url}: {e}") from None
        try:
            async with asyncio.timeout(within):
                hello = await cls._handshake(ws, token)
        except TimeoutError:
            await ws.close()
            raise GatewayError("timeout", f"no hello from {url} within {within:.0f}s") from None
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else None
            raise GatewayError(
                "closed", f"{url} closed the connection during connect (code {code})"
            ) from None
        except BaseException:
            await ws.close()
            raise
        return cls(ws, hello)

    @staticmethod
    async def _handshake(ws: ClientConnection, token: str) -> dict[str, Any]:
        first = orjson.loads(await ws.recv())
        if not (isinstance(first, dict) and first.get("event") == "connect.challenge"):
            raise GatewayError("protocol", f"expected connect.challenge, got {str(first)[:120]}", fatal=True)
        params = {
            "minProtocol": PROTOCOL_VERSION,
            "maxProtocol": PROTOCOL_VERSION,
            "client": CLIENT,
            "role": "operator",
            "scopes": SCOPES,
            "caps": [],
            "auth": {"token": token},
        }
        await ws.send(
            orjson.dumps({"type": "req", "id": "connect", "method": "connect", "params": params}).decode()
        )
        while True:
            frame = orjson.loads(await ws.recv())
            if isinstance(frame, dict) and frame.get("type") == "res" and frame.get("id") == "connect":
                break
        if frame.get("ok") is not True:
            error = frame.get("error") or {}
            code = str(error.get("code") or "REFUSED")
            retry = error.get("retryAfterMs")
            await ws.close()
            raise GatewayError(
                code,
                str(error.get("message") or "connect refused"),
                fatal=code in FATAL_CODES and error.get("retryable") is not True,
                retry_after_ms=int(retry) if isinstance(retry, int | float) and retry > 0 else None,
            )
        payload = frame.get("payload")
        hello = payload if isinstance(payload, dict) else {}
        granted = (hello.get("auth") or {}).get("scopes") or []
        if not set(SCOPES) <= set(granted):
            # seen right after a gateway restart: connected, but without the scopes (no agent events)
            await ws.close()
            raise GatewayError("SCOPES", f"connected with scopes {granted}, not {SCOPES}; retrying")
        return hello

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every `event` frame until the connection ends (then `close_code`/`close_reason` are set)."""
        try:
            async for raw in self.ws:
                try:
                    frame = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(frame, dict):
                    continue
                if frame.get("type") == "res":
                    self._answer(frame)
                elif frame.get("type") == "event":
                    yield frame
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code if self.ws.close_code is not None else 1006
            self.close_reason = self.ws.close_reason or ""
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(GatewayError("closed", "the connection ended"))
            self._pending.clear()

    def _answer(self, frame: dict[str, Any]) -> None:
        future = self._pending.pop(str(frame.get("id")), None)
        if future is None or future.done():
            return
        if frame.get("ok") is True:
            future.set_result(frame.get("payload"))
        else:
            error = frame.get("error") or {}
            future.set_exception(GatewayError(str(error.get("code") or "ERROR"), str(error.get("message"))))

    async def request(self, method: str, params: dict[str, Any], *, within: float = 15.0) -> Any:
        """Send a request and wait for its answer's payload; GatewayError when refused or lost."""
        request_id = f"r{next(self._ids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            frame = {"type": "req", "id": request_id, "method": method, "params": params}
            await self.ws.send(orjson.dumps(frame).decode())
            async with asyncio.timeout(within):
                return await future
        except TimeoutError:
            raise GatewayError("timeout", f"no answer to {method} within {within:.0f}s") from None
        except ConnectionClosed:
            raise GatewayError("closed", f"connection lost during {method}") from None
        finally:
            self._pending.pop(request_id, None)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (idempotent)."""
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)
