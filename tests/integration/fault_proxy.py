"""A small HTTP/1.1 reverse proxy that injects faults in front of a real server (e.g. the gateway).

It listens on 127.0.0.1:<free port> and runs its own asyncio loop in a background thread, so sync
and async tests can both use it. Each request gets one connection (``Connection: close``). By
default a request is forwarded verbatim (method, target, every header including Authorization,
Idempotency-Key and traceparent, and the body) and the upstream answer is relayed byte for byte.
Scripted faults are consumed in order by the next matching requests:

- :meth:`FaultProxy.fail_next` answers with a status (429 gets ``Retry-After``, default 1 s);
- :meth:`FaultProxy.drop_next` closes the connection without answering;
- :meth:`FaultProxy.delay_next` waits, then forwards.

Every request seen is recorded (:attr:`FaultProxy.requests`) for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import urlsplit

from . import scaled

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"}
_STREAM_LIMIT = 4 * 1024 * 1024


class FaultProxyFactory(Protocol):
    """The ``fault_proxy`` fixture: ``fault_proxy()`` fronts the session gateway, or pass an upstream."""

    def __call__(self, upstream: str | None = None, *, upstream_timeout: float = 120.0) -> FaultProxy: ...


@dataclass(frozen=True, kw_only=True)
class ProxiedRequest:
    """One request the proxy received, and what it did with it."""

    method: str
    path: str  # the request target, with query string
    headers: tuple[tuple[str, str], ...]  # as received, names in their original case
    body: bytes
    outcome: str  # "forwarded:<upstream status>", "fault:<status>", "dropped", "upstream-error:<reason>"

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True, kw_only=True)
class _Fault:
    kind: str  # "status" | "drop" | "delay"
    match: str | None
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    delay: float = 0.0


class FaultProxy:
    """Reverse proxy to ``upstream`` (``http://host:port``) with scripted faults."""

    def __init__(self, upstream: str, *, upstream_timeout: float = 120.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must look like http://host:port, got {upstream!r}")
        self.upstream = upstream
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port
        self._upstream_timeout = upstream_timeout
        self._lock = threading.Lock()
        self._faults: deque[_Fault] = deque()
        self._requests: list[ProxiedRequest] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Bind a free port on 127.0.0.1 and serve from a background thread."""
        if self._thread is not None:
            raise RuntimeError("fault proxy already started")
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", 0, limit=_STREAM_LIMIT)
                )
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        started.wait(timeout=scaled(10))
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close the listener and every open connection; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=scaled(10))
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=scaled(10))
        self._loop = self._thread = self._server = None

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        if self._server is None:
            raise RuntimeError("fault proxy not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """Base URL to send requests to instead of the upstream's, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    # -- control API -------------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        count: int = 1,
        retry_after: float | None = None,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        match: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests (whose target contains ``match``, if given) with ``status``.

        A 429 carries ``Retry-After`` (``retry_after`` seconds, default 1); other statuses carry it
        only when ``retry_after`` is given. The body defaults to a JSON error like the gateway's.
        """
        if retry_after is None and status == 429:
            retry_after = 1
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = f"{retry_after:g}"
        if body is None:
            body = json.dumps({"ok": False, "error": f"injected by fault proxy: {status}"})
        data = body.encode() if isinstance(body, str) else body
        self._push(
            count, _Fault(kind="status", match=match, status=status, headers=tuple(extra.items()), body=data)
        )

    def drop_next(self, *, count: int = 1, match: str | None = None) -> None:
        """Close the next ``count`` matching connections after reading the request, answering nothing."""
        self._push(count, _Fault(kind="drop", match=match))

    def delay_next(self, seconds: float, *, count: int = 1, match: str | None = None) -> None:
        """Hold the next ``count`` matching requests for ``seconds`` (not scaled), then forward them."""
        self._push(count, _Fault(kind="delay", match=match, delay=seconds))

    def clear(self) -> None:
        """Forget pending faults and recorded requests."""
        with self._lock:
            self._faults.clear()
            self._requests.clear()

    @property
    def requests(self) -> list[ProxiedRequest]:
        """A copy of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def _push(self, count: int, fault: _Fault) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._faults.extend([fault] * count)

    def _take_fault(self, target: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.match is None or fault.match in target:
                    self._faults.remove(fault)
                    return fault
        return None

    def _record(self, request: _Incoming, outcome: str) -> None:
        with self._lock:
            self._requests.append(
                ProxiedRequest(
                    method=request.method,
                    path=request.target,
                    headers=request.headers,
                    body=request.body,
                    outcome=outcome,
                )
            )

    # -- connection handling -----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            request = await _read_request(reader)
            if request is None:
                return
            fault = self._take_fault(request.target)
            if fault is not None and fault.kind == "drop":
                self._record(request, "dropped")
                writer.transport.abort()
                return
            if fault is not None and fault.kind == "status":
                self._record(request, f"fault:{fault.status}")
                writer.write(_response(fault.status, fault.headers, fault.body))
                await writer.drain()
                return
            if fault is not None and fault.kind == "delay":
                await asyncio.sleep(fault.delay)
            try:
                answer = await asyncio.wait_for(
                    self._forward(request), timeout=scaled(self._upstream_timeout)
                )
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                self._record(request, f"upstream-error:{type(exc).__name__}")
                writer.write(_response(502, (), f"fault proxy: upstream failed: {exc!r}".encode()))
                await writer.drain()
                return
            self._record(request, f"forwarded:{_status_of(answer)}")
            writer.write(_closing(answer))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # a client that hangs up or speaks garbage just loses its connection
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _forward(self, request: _Incoming) -> bytes:
        reader, writer = await asyncio.open_connection(self._upstream_host, self._upstream_port)
        try:
            lines = [f"{request.method} {request.target} HTTP/1.1"]
            lines += [f"{k}: {v}" for k, v in request.headers if k.lower() not in _HOP_BY_HOP]
            lines.append("Connection: close")
            if request.chunked:  # we de-chunked the body, so say how long it is
                lines = [line for line in lines if not line.lower().startswith("content-length:")]
                lines.append(f"Content-Length: {len(request.body)}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body)
            await writer.drain()
            return await reader.read()  # upstream closes after the answer (Connection: close)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@dataclass(frozen=True, kw_only=True)
class _Incoming:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    chunked: bool


async def _read_request(reader: asyncio.StreamReader) -> _Incoming | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None  # connected and left without a request
        raise
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _version = request_line.split(" ", 2)
    headers = tuple(
        (name.strip(), value.strip())
        for name, _, value in (line.partition(":") for line in header_lines if line)
    )
    lowered = {name.lower(): value for name, value in headers}
    chunked = "chunked" in lowered.get("transfer-encoding", "").lower()
    if chunked:
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(lowered.get("content-length", "0") or 0))
    return _Incoming(method=method, target=target, headers=headers, body=body, chunked=chunked)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # skip trailers
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def _response(status: int, headers: tuple[tuple[str, str], ...], body: bytes) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Injected"
    lines = [f"HTTP/1.1 {status} {reason}"]
    names = {name.lower() for name, _ in headers}
    if "content-type" not in names:
        lines.append("Content-Type: " + ("application/json" if body[:1] in (b"{", b"[") else "text/plain"))
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _closing(answer: bytes) -> bytes:
    """The upstream answer, with its body and framing untouched, but announcing ``Connection: close``.

    We close the client connection after each answer, so a client must not try to reuse it.
    """
    head, separator, body = answer.partition(b"\r\n\r\n")
    if not separator:
        return answer
    status_line, *header_lines = head.split(b"\r\n")
    kept = [
        line
        for line in header_lines
        if line.split(b":", 1)[0].strip().lower() not in (b"connection", b"keep-alive")
    ]
    return b"\r\n".join([status_line, *kept, b"Connection: close"]) + b"\r\n\r\n" + body


def _status_of(answer: bytes) -> str:
    first_line = answer.split(b"\r\n", 1)[0].split(b" ")
    return first_line[1].decode("latin-1") if len(first_line) > 1 else "?"
