"""Helpers for driving a real `dash-stream serve` subprocess: HTTP, WebSocket and SSE clients.

Everything talks to 127.0.0.1 only, with proxies ignored. Timeouts are generous and scaled by
`DASH_TEST_TIMEOUT_SCALE`; code waits for a condition, it never sleeps assuming a fast machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from dash_stream.server.auth import mint_token

REPO_ROOT = Path(__file__).resolve().parents[2]
DASH_STREAM = Path(sys.executable).parent / "dash-stream"
SCALE = float(os.environ.get("DASH_TEST_TIMEOUT_SCALE", "1"))
SECRET = "test-secret-for-dash-stream-0123456789abcdef"  # >= 32 bytes for HS256
API_KEY = "test-api-key-0123456789"


def timeout(seconds: float) -> float:
    """A test timeout scaled for slow machines."""
    return seconds * SCALE


def unique(prefix: str) -> str:
    """A topic prefix no other test uses (one server is shared by a module's tests)."""
    return f"{prefix}.t{uuid.uuid4().hex[:12]}"


def token(
    *, sub: str = "tester", subscribe: tuple[str, ...] = (">",), publish: tuple[str, ...] = (">",), **kw: Any
) -> str:
    """An HS256 token signed with the test servers' secret."""
    return mint_token(SECRET, sub=sub, subscribe=subscribe, publish=publish, **kw)


def bearer(tok: str) -> dict[str, str]:
    """The Authorization header for a token or API key."""
    return {"Authorization": f"Bearer {tok}"}


# ---------------------------------------------------------------- the server process


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    """A running `dash-stream serve` subprocess; its stderr and stdout go to `log_path`."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    args: tuple[str, ...] = field(default=())

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:<port>"""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """ws://127.0.0.1:<port>/v1/ws"""
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def log(self) -> str:
        """Everything the server has written so far."""
        return self.log_path.read_text(errors="replace")

    def client(self, **kw: Any) -> httpx.AsyncClient:
        """An async HTTP client bound to this server (no proxies from the environment)."""
        return httpx.AsyncClient(base_url=self.base_url, trust_env=False, timeout=timeout(10), **kw)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout(15))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout(15))


def start_server(*args: str, log_dir: Path, attempts: int = 3) -> Server:
    """Start `dash-stream serve --host 127.0.0.1 --port <free> *args` and wait for /healthz.

    Retries on another port only when the chosen one was taken meanwhile; any other failure to
    start raises with the server's output, so the test fails rather than skips.
    """
    for _ in range(attempts):
        port = free_port()
        log_path = log_dir / f"server-{port}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [str(DASH_STREAM), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"},
            )
        server = Server(proc, port, log_path, args)
        if _wait_healthy(server):
            return server
        server.stop()
        if "address already in use" not in server.log().lower():
            break
    raise RuntimeError(f"dash-stream serve {' '.join(args)} did not start:\n{server.log()[-4000:]}")


def _wait_healthy(server: Server) -> bool:
    deadline = time.monotonic() + timeout(30)
    with httpx.Client(trust_env=False, timeout=timeout(2)) as http:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.TransportError):
                if http.get(f"{server.base_url}/healthz").status_code == 200:
                    return True
            time.sleep(0.05)
    return False


# ---------------------------------------------------------------- HTTP


def event(topic: str, type_: str = "test.event", **fields: Any) -> dict[str, Any]:
    """A minimal publishable event."""
    return {"topic": topic, "type": type_, **fields}


async def publish(
    http: httpx.AsyncClient, *events: dict[str, Any], headers: dict[str, str] | None = None
) -> list[str]:
    """POST a batch and return its offsets; fails the test unless it was accepted."""
    resp = await http.post("/v1/events", json={"events": list(events)}, headers=headers)
    assert resp.status_code == 202, resp.text
    offsets: list[str] = resp.json()["offsets"]
    return offsets


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the one error shape with `status` and `code`; returns the error object."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    assert set(doc) == {"error"}, doc
    err: dict[str, Any] = doc["error"]
    # retry_after_ms may ride along on retryable errors (the Retry-After header carries the same)
    allowed = {"code", "message", "request_id"} | ({"retry_after_ms"} if status in (429, 503) else set())
    assert {"code", "message", "request_id"} <= set(err) <= allowed, err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    assert err["request_id"] and resp.headers["x-request-id"] == err["request_id"]
    return err


# ---------------------------------------------------------------- WebSocket


async def ws_connect(
    server: Server,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
) -> ClientConnection:
    """Open a dash.v1.json WebSocket to the server."""
    url = server.ws_url + (f"?{query}" if query else "")
    return await connect(
        url,
        proxy=None,
        subprotocols=["dash.v1.json"],  # type: ignore[list-item]
        additional_headers=headers,
        open_timeout=timeout(10),
        compression=None,
    )


async def recv(ws: ClientConnection, wait: float = 10) -> dict[str, Any]:
    """The next frame, decoded."""
    raw = await asyncio.wait_for(ws.recv(), timeout(wait))
    frame: dict[str, Any] = json.loads(raw)
    return frame


async def recv_until(
    ws: ClientConnection, accept: Callable[[dict[str, Any]], bool], wait: float = 10
) -> dict[str, Any]:
    """The first frame `accept` likes, skipping the others, within `wait` seconds."""
    deadline = time.monotonic() + timeout(wait)
    while True:
        raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        frame: dict[str, Any] = json.loads(raw)
        if accept(frame):
            return frame


async def request(ws: ClientConnection, frame: dict[str, Any], wait: float = 10) -> dict[str, Any]:
    """Send an op and return the reply with its id (events frames and others are skipped)."""
    await ws.send(json.dumps(frame))
    return await recv_until(ws, lambda f: f.get("id") == frame["id"] and f.get("op") != "events", wait)


async def wait_closed(ws: ClientConnection, wait: float = 10) -> tuple[int, dict[str, Any]]:
    """Read until the server closes; the close code and the decoded JSON reason."""
    deadline = time.monotonic() + timeout(wait)
    while True:
        try:
            await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        except ConnectionClosed as e:
            assert e.rcvd is not None, "the server did not send a close frame"
            reason = json.loads(e.rcvd.reason) if e.rcvd.reason else {}
            return e.rcvd.code, reason


async def collect_events(
    ws: ClientConnection, sub: str, count: int, wait: float = 10
) -> tuple[list[dict[str, Any]], str]:
    """`count` events of subscription `sub` and the cursor of the frame holding the last one."""
    got: list[dict[str, Any]] = []
    cursor = ""
    while len(got) < count:
        frame = await recv_until(ws, lambda f: f.get("op") == "events" and f.get("sub") == sub, wait)
        got.extend(frame["events"])
        cursor = frame["cursor"]
    return got, cursor


# ---------------------------------------------------------------- SSE


@dataclass
class SseMessage:
    """One SSE message (or a comment-only block)."""

    event: str | None = None
    id: str | None = None
    data: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        """`data` decoded."""
        assert self.data is not None, self
        doc: dict[str, Any] = json.loads(self.data)
        return doc


class SseStream:
    """Reads SSE messages from a streaming httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, wait: float = 10) -> SseMessage:
        """The next message or comment block, within `wait` seconds."""
        return await asyncio.wait_for(self._next(), timeout(wait))

    async def next_matching(self, accept: Callable[[SseMessage], bool], wait: float = 10) -> SseMessage:
        """The first message `accept` likes, skipping the others, within `wait` seconds."""
        deadline = time.monotonic() + timeout(wait)
        while True:
            msg = await asyncio.wait_for(self._next(), max(0.01, deadline - time.monotonic()))
            if accept(msg):
                return msg

    async def _next(self) -> SseMessage:
        msg = SseMessage()
        data: list[str] = []
        seen = False
        async for line in self._lines:
            if line == "":
                if seen:
                    if data:
                        msg.data = "\n".join(data)
                    return msg
                continue
            seen = True
            if line.startswith(":"):
                msg.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "id":
                msg.id = value
            elif name == "event":
                msg.event = value
        raise AssertionError("the SSE stream ended")

    async def next_event(self, wait: float = 10) -> SseMessage:
        """The next message carrying an event (skipping keepalives and cursor-only messages)."""
        return await self.next_matching(lambda m: m.data is not None and m.event is None, wait)

    async def events(self, count: int, wait: float = 10) -> list[SseMessage]:
        """The next `count` event messages."""
        return [await self.next_event(wait) for _ in range(count)]


@contextlib.asynccontextmanager
async def sse(
    http: httpx.AsyncClient, params: dict[str, str], headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[SseStream, SseMessage]]:
    """Open /v1/sse; yields the stream and its first (`subscribed`) message."""
    async with http.stream("GET", "/v1/sse", params=params, headers=headers) as resp:
        assert resp.status_code == 200, (await resp.aread()).decode()
        assert resp.headers["content-type"].startswith("text/event-stream")
        stream = SseStream(resp)
        first = await stream.next()
        assert first.event == "subscribed", first
        yield stream, first
