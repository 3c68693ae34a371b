"""A real OTLP/HTTP trace receiver for the tests: `POST /v1/traces` with protobuf bodies.

It decodes each `ExportTraceServiceRequest` with `opentelemetry-proto` and keeps the spans as
plain `ReceivedSpan` records (hex ids, kind names, attributes as Python values), so tests assert
on what a collector such as Jaeger would really receive. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from helpers import scaled
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

KINDS = {
    Span.SPAN_KIND_INTERNAL: "INTERNAL",
    Span.SPAN_KIND_SERVER: "SERVER",
    Span.SPAN_KIND_CLIENT: "CLIENT",
    Span.SPAN_KIND_PRODUCER: "PRODUCER",
    Span.SPAN_KIND_CONSUMER: "CONSUMER",
}


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


@dataclass(frozen=True)
class ReceivedLink:
    """A span link: the linked span's ids, in hex."""

    trace_id: str
    span_id: str


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the collector got it."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    links: tuple[ReceivedLink, ...]
    status_code: int
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def traceparent_id(self) -> tuple[str, str]:
        """(trace id, span id), as a `traceparent` names them."""
        return self.trace_id, self.span_id


class OtlpReceiver:
    """`with OtlpReceiver() as rx:` serves on `rx.endpoint` (`http://127.0.0.1:<port>`)."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                encoding = (self.headers.get("content-encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    def _add(self, request: ExportTraceServiceRequest) -> None:
        received: list[ReceivedSpan] = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    received.append(
                        ReceivedSpan(
                            name=sp.name,
                            kind=KINDS.get(sp.kind, str(sp.kind)),
                            trace_id=sp.trace_id.hex(),
                            span_id=sp.span_id.hex(),
                            parent_span_id=sp.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in sp.attributes},
                            links=tuple(ReceivedLink(lk.trace_id.hex(), lk.span_id.hex()) for lk in sp.links),
                            status_code=sp.status.code,
                            resource=resource,
                        )
                    )
        with self._lock:
            self.requests += 1
            self.spans.extend(received)

    def snapshot(self) -> list[ReceivedSpan]:
        """Every span received so far."""
        with self._lock:
            return list(self.spans)

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], Any], within: float = 20.0, what: str = "spans"
    ) -> Any:
        """Poll until `predicate(spans)` is truthy (scaled timeout); its value."""
        deadline = time.monotonic() + scaled(within)
        while True:
            value = predicate(self.snapshot())
            if value:
                return value
            if time.monotonic() > deadline:
                names = sorted({s.name for s in self.snapshot()})
                raise AssertionError(f"timed out waiting for {what}; received span names: {names}")
            time.sleep(0.05)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
