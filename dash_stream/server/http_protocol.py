"""HTTP/1.1 framing limits that uvicorn does not have: slow and oversized request headers.

uvicorn's httptools protocol waits for a request's headers without a deadline and buffers them
without a bound, so a client that opens connections and sends nothing (or a byte now and then, or
megabytes of headers) holds a socket and memory for as long as it likes: slowloris.
`DashHttpProtocol` adds to it:

- a header deadline: the request line and headers must arrive within `header_timeout_s` of the
  connection opening or of the request's first byte; else `408` and the connection closes (an
  idle connection that sent nothing is just closed);
- a bound on the bytes (`max_header_bytes`) and the number (`max_headers`) of request headers;
  else `431` and the connection closes;
- a request httptools cannot parse (a bad header line, a `Content-Length` that does not fit the
  bytes, a bad chunk) gets `400` in the JSON error shape instead of uvicorn's plain text.

Idle keep-alive connections are uvicorn's `timeout_keep_alive`; slow bodies are bounded by the
app (`read_body`). Both refusals have the one JSON error shape and count in
`dash_http_refused_total{reason}`. `http_protocol_class(settings, metrics)` makes the class
uvicorn is given, with these limits bound (no module-level state).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dash_stream.server.metrics import Metrics
from dash_stream.settings import Settings

log = logging.getLogger("dash_stream.http")

_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a request that is being refused."""


class DashHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and header size limits (module doc)."""

    header_timeout_s: ClassVar[float] = 10.0
    max_header_bytes: ClassVar[int] = 64 * 1024
    max_headers: ClassVar[int] = 100
    metrics: ClassVar[Metrics | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_headers = True
        self._header_bytes = 0
        self._header_count = 0
        self._parsed_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str, str] | None = None

    # ---------------------------------------------------------------- the header deadline

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self._awaiting_headers or self.transport.is_closing():
            return
        if self._header_bytes == 0 and self.cycle is None:
            self._count("idle")
            self.transport.close()  # nothing was asked: nothing to answer
            return
        message = f"request headers not received within {self.header_timeout_s:g} s"
        self._refuse(408, "header_timeout", message)

    # ---------------------------------------------------------------- parser callbacks

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None or self.transport.is_closing():
            return
        if self._awaiting_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        # bytes that arrived while the headers are still incomplete are all header bytes
        if self._awaiting_headers and self._refusal is None and self._header_bytes > self.max_header_bytes:
            self._refuse(431, "headers_too_large", f"request headers exceed {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers = True
        self._header_count = 0
        self._parsed_bytes = 0
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._parsed_bytes += len(url)
        self._check_header_bytes()
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers:
            self._refusal = (431, "too_many_headers", f"more than {self.max_headers} request headers")
            raise _Refused  # httptools turns it into a parser error; send_400_response answers it
        self._parsed_bytes += len(name) + len(value) + 4
        self._check_header_bytes()
        super().on_header(name, value)

    def _check_header_bytes(self) -> None:
        # headers that arrive in one read are never "still incomplete": count what the parser saw
        if self._parsed_bytes > self.max_header_bytes:
            self._refusal = (
                431,
                "headers_too_large",
                f"request headers exceed {self.max_header_bytes} bytes",
            )
            raise _Refused

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # the next request on this connection (keep-alive) starts counting header bytes afresh
        self._awaiting_headers = True
        self._header_bytes = 0

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:  # a parser error we caused on purpose
            status, reason, message = self._refusal
            self._refusal = None
            self._refuse(status, reason, message)
            return
        self._refuse(400, "invalid_http", msg.rstrip("."))  # the one JSON error shape, not uvicorn's text

    # ---------------------------------------------------------------- refusing

    def _count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.http_refused.labels(reason).inc()

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answer with the JSON error shape and close; the app never sees this request."""
        self._cancel_header_timer()
        self._refusal = (status, reason, message)
        self._count(reason)
        client = f"{self.client[0]}" if self.client else "?"
        log.info("refused an HTTP request from %s: %s", client, message)
        if self.transport.is_closing():
            return
        rid = uuid.uuid4().hex
        code = "too_large" if status == 431 else "bad_request"
        body = orjson.dumps({"error": {"code": code, "message": message, "request_id": rid}})
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nx-request-id: {rid}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode("latin-1") + body)
        self.transport.close()


def http_protocol_class(settings: Settings, metrics: Metrics | None) -> type[DashHttpProtocol]:
    """A `DashHttpProtocol` subclass with the limits of `settings` and the server's metrics."""
    return type(
        "BoundDashHttpProtocol",
        (DashHttpProtocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "max_header_bytes": settings.max_header_bytes,
            "max_headers": settings.max_headers,
            "metrics": metrics,
        },
    )
