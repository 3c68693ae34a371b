"""A mock OpenAI-compatible LLM provider for a real OpenClaw gateway (see OPENCLAW.md §6).

It serves ``POST /v1/chat/completions`` (SSE when ``stream`` is true, else one
``chat.completion``) and ``GET /v1/models`` on 127.0.0.1, in a background thread of the test
process. Every chat request body is appended to a log file as one JSON line, flushed before the
answer is sent, so "the gateway delivered X to the model" is proven by finding X in that file.

By default each request gets the text reply ``OK``. Scripted replies (:meth:`MockLLM.fail_next`,
:meth:`MockLLM.tool_call_next`, :meth:`MockLLM.text_next`) are consumed in order by the next
matching chat requests; ``match`` restricts a script to requests whose raw body contains that
string, so background requests (heartbeats) cannot steal it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import scaled

MODEL_ID = "echo"


@dataclass(frozen=True, kw_only=True)
class _Script:
    """One scripted reply: an HTTP error, a tool call, or a text reply."""

    kind: str  # "error" | "tool_call" | "text"
    match: str | None = None
    status: int = 200
    error_body: dict[str, Any] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    tool_name: str = ""
    tool_arguments: str = "{}"
    text: str = ""


@dataclass(frozen=True, kw_only=True)
class LLMRequest:
    """A request the mock received (kept in memory, in arrival order)."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    raw: str
    received_at: float
    reply: str  # what the mock answered: "text", "tool_call", "error:<status>", "models"


class MockLLM:
    """OpenAI-compatible mock provider; use as a context manager or call :meth:`start`/:meth:`stop`."""

    def __init__(self, log_path: Path, *, reply_text: str = "OK") -> None:
        self.log_path = Path(log_path)
        self.reply_text = reply_text
        self._lock = threading.Lock()
        self._scripts: deque[_Script] = deque()
        self._requests: list[LLMRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._log_file: Any = None
        self._call_ids = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> MockLLM:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("mock LLM already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("a", encoding="utf-8")
        handler = type("_BoundHandler", (_Handler,), {"mock": self})
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="mock-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the log; safe to call twice."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def __enter__(self) -> MockLLM:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port the mock listens on."""
        if self._server is None:
            raise RuntimeError("mock LLM not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The provider ``baseUrl`` for the OpenClaw config (ends in ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- control API ----------------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 500,
        *,
        count: int = 1,
        match: str | None = None,
        message: str = "mock failure",
        retry_after: int | None = None,
    ) -> None:
        """Answer the next ``count`` matching chat requests with HTTP ``status`` (OpenAI error JSON)."""
        error_type = "invalid_request_error" if 400 <= status < 500 else "server_error"
        body = {"error": {"message": message, "type": error_type, "param": None, "code": None}}
        headers = (("Retry-After", str(retry_after)),) if retry_after is not None else ()
        self._push(count, _Script(kind="error", match=match, status=status, error_body=body, headers=headers))

    def tool_call_next(
        self, name: str, arguments: dict[str, Any] | None = None, *, count: int = 1, match: str | None = None
    ) -> None:
        """Answer the next ``count`` matching chat requests with a call of tool ``name``."""
        args = json.dumps(arguments or {}, separators=(",", ":"))
        self._push(count, _Script(kind="tool_call", match=match, tool_name=name, tool_arguments=args))

    def text_next(self, text: str, *, count: int = 1, match: str | None = None) -> None:
        """Answer the next ``count`` matching chat requests with ``text`` instead of the default."""
        self._push(count, _Script(kind="text", match=match, text=text))

    def clear_scripts(self) -> None:
        """Drop all scripted replies that were not consumed yet."""
        with self._lock:
            self._scripts.clear()

    def _push(self, count: int, script: _Script) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._scripts.extend([script] * count)

    def _take_script(self, raw: str) -> _Script | None:
        with self._lock:
            for script in self._scripts:
                if script.match is None or script.match in raw:
                    self._scripts.remove(script)
                    return script
        return None

    # -- observations -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[LLMRequest]:
        """A copy of every request received so far (chat and models), in arrival order."""
        with self._lock:
            return list(self._requests)

    def logged_bodies(self) -> list[str]:
        """The raw JSON lines of the request log (one per chat request)."""
        if not self.log_path.exists():
            return []
        return self.log_path.read_text(encoding="utf-8").splitlines()

    def count_marker(self, marker: str) -> int:
        """How many logged chat requests contain ``marker`` (a plain substring search)."""
        return sum(marker in line for line in self.logged_bodies())

    def wait_for_marker(self, marker: str, timeout: float = 60.0, *, count: int = 1) -> list[dict[str, Any]]:
        """Poll the log until ``count`` chat requests contain ``marker``; return their bodies.

        ``timeout`` is scaled by ``DASH_TEST_TIMEOUT_SCALE``. Raises ``AssertionError`` on timeout.
        The marker should be made of ``[A-Za-z0-9_-]`` so it needs no JSON escaping.
        """
        deadline = time.monotonic() + scaled(timeout)
        while True:
            lines = [line for line in self.logged_bodies() if marker in line]
            if len(lines) >= count:
                return [json.loads(line) for line in lines]
            if time.monotonic() >= deadline:
                total = len(self.logged_bodies())
                raise AssertionError(
                    f"marker {marker!r} reached the mock LLM {len(lines)} time(s), expected {count}, "
                    f"within {scaled(timeout):.0f} s ({total} chat requests logged in {self.log_path})"
                )
            time.sleep(0.1)

    def _record(self, request: LLMRequest, log_line: str | None) -> None:
        with self._lock:
            self._requests.append(request)
            if log_line is not None and self._log_file is not None:
                self._log_file.write(log_line + "\n")
                self._log_file.flush()

    def _next_call_id(self) -> str:
        with self._lock:
            self._call_ids += 1
            return f"call_{self._call_ids}"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hang up mid-answer (the gateway aborts streams on shutdown)."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    mock: MockLLM
    server_version = "MockLLM/1"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def do_GET(self) -> None:
        """Serve the model list (the gateway prewarms context windows with it)."""
        if self.path.rstrip("/") not in ("/v1/models", "/models"):
            self._send_json(HTTPStatus.NOT_FOUND, {"error": {"message": "not found"}})
            return
        self._remember(body=None, raw="", reply="models", log=False)
        self._send_json(
            HTTPStatus.OK,
            {
                "object": "list",
                "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "mock"}],
            },
        )

    def do_POST(self) -> None:
        """Record the chat request, then answer it as scripted (default: a text reply)."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", errors="replace")
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(HTTPStatus.NOT_FOUND, {"error": {"message": "not found"}})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        # One JSON line per request; compact re-encoding only if the raw body spans lines.
        line = raw if "\n" not in raw and body is not None else json.dumps(body if body is not None else raw)
        script = self.mock._take_script(raw)
        reply = "text" if script is None else script.kind
        if script is not None and script.kind == "error":
            reply = f"error:{script.status}"
        self._remember(body=body, raw=raw, reply=reply, log=True, log_line=line)

        if script is not None and script.kind == "error":
            self._send_json(script.status, script.error_body, extra_headers=script.headers)
            return
        stream = isinstance(body, dict) and bool(body.get("stream"))
        model = body.get("model", MODEL_ID) if isinstance(body, dict) else MODEL_ID
        if script is not None and script.kind == "tool_call":
            self._answer_tool_call(script, model=model, stream=stream)
        else:
            text = script.text if script is not None else self.mock.reply_text
            self._answer_text(text, model=model, stream=stream)

    def _remember(self, *, body: Any, raw: str, reply: str, log: bool, log_line: str | None = None) -> None:
        request = LLMRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body if isinstance(body, dict) else None,
            raw=raw,
            received_at=time.time(),
            reply=reply,
        )
        self.mock._record(request, log_line if log else None)

    def _answer_text(self, text: str, *, model: str, stream: bool) -> None:
        if not stream:
            message = {"role": "assistant", "content": text}
            self._send_json(HTTPStatus.OK, _completion(model, message, "stop"))
            return
        self._send_sse(
            [
                _chunk(model, {"role": "assistant", "content": ""}, None),
                _chunk(model, {"content": text}, None),
                _chunk(model, {}, "stop"),
                _usage_chunk(model),
            ]
        )

    def _answer_tool_call(self, script: _Script, *, model: str, stream: bool) -> None:
        call_id = self.mock._next_call_id()
        function = {"name": script.tool_name, "arguments": script.tool_arguments}
        if not stream:
            call = {"id": call_id, "type": "function", "function": function}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            self._send_json(HTTPStatus.OK, _completion(model, message, "tool_calls"))
            return
        first_call = {
            "index": 0,
            "id": call_id,
            "type": "function",
            "function": {**function, "arguments": ""},
        }
        rest_call = {"index": 0, "function": {"arguments": script.tool_arguments}}
        self._send_sse(
            [
                _chunk(model, {"role": "assistant", "content": None, "tool_calls": [first_call]}, None),
                _chunk(model, {"tool_calls": [rest_call]}, None),
                _chunk(model, {}, "tool_calls"),
                _usage_chunk(model),
            ]
        )

    def _send_json(
        self, status: int, payload: dict[str, Any], extra_headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_sse(self, events: list[dict[str, Any]]) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for event in events:
            self.wfile.write(b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


def _chunk(model: str, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def _usage_chunk(model: str) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }


def _completion(model: str, message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }
