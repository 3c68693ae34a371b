"""The OpenClaw sink: `POST /hooks/agent` (or `/hooks/wake`) on a gateway, one message per request.

- Auth: `Authorization: Bearer <hooks token>`; the token comes from an environment variable or a
  file, is held in a `Secret` (its repr and str are `***`) and is never logged.
- `Idempotency-Key: <message id>`: a retry, a restart's re-send or a DLQ replay posts the same
  body under the same key, and the gateway answers with the original run instead of a new one.
- Tracing: each attempt is a CLIENT span `POST` (`tracing.client`, attempt number from the
  dispatcher) whose context goes out in the `traceparent`/`tracestate` headers, nested in the
  dispatcher's `forward`/`digest` span. With tracing off, a single event's own `traceparent` is
  passed on as it is (see `dash_stream.telemetry.bridge_api`).
- The body is built deterministically (sorted by field order, no timestamps), so `measure` is
  exact and a replay is byte-identical.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import orjson

from bridge.config import ReceiverConfig
from bridge.errors import ConfigError
from bridge.model import Message
from bridge.sinks.base import SendResult, current_attempt, parse_retry_after, result_for_status
from dash_stream.telemetry import NOOP_BRIDGE_TRACING, BridgeTracing

_DETAIL_CHARS = 300


class Secret:
    """A credential that does not show itself in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        """Wrap `value`."""
        self._value = value

    def reveal(self) -> str:
        """The actual value (for the Authorization header only)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def load_token(receiver: ReceiverConfig, path: str, base_dir: Path | None = None) -> Secret:
    """The hooks token from `token_env` or `token_file`; ConfigError names the key when missing."""
    if receiver.token_env:
        value = os.environ.get(receiver.token_env, "").strip()
        if not value:
            raise ConfigError(
                f"{path}.token_env: environment variable {receiver.token_env} is not set or empty"
            )
        return Secret(value)
    if receiver.token_file:
        file = Path(receiver.token_file).expanduser()
        if not file.is_absolute() and base_dir is not None:
            file = base_dir / file
        try:
            value = file.read_text().strip()
        except OSError as e:
            raise ConfigError(f"{path}.token_file: cannot read {file}: {e.strerror}") from None
        if not value:
            raise ConfigError(f"{path}.token_file: {file} is empty")
        return Secret(value)
    raise ConfigError(f"{path}: set token_env or token_file")


def payload(message: Message) -> dict[str, Any]:
    """The JSON body of the hooks request for a message."""
    t = message.target
    body: dict[str, Any]
    optional: dict[str, Any]
    if t.endpoint == "wake":
        body = {"text": message.text, "mode": t.wake_mode or "now"}
        optional = {"agentId": t.agent_id, "sessionKey": t.session_key}
    else:
        body = {"message": message.text, "name": t.hook_name or message.origin}
        optional = {
            "agentId": t.agent_id,
            "sessionKey": t.session_key,
            "wakeMode": t.wake_mode,
            "deliver": t.deliver,
            "channel": t.channel,
            "to": t.to,
            "model": t.model,
            "thinking": t.thinking,
            "timeoutSeconds": t.timeout_seconds,
        }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


class OpenClawSink:
    """Posts messages to one gateway's hooks API (see the module docstring)."""

    def __init__(
        self,
        receiver: ReceiverConfig,
        token: Secret,
        *,
        client: httpx.AsyncClient | None = None,
        tracing: BridgeTracing = NOOP_BRIDGE_TRACING,
    ) -> None:
        """One HTTP connection pool per receiver, sized to its `max_in_flight`; a CLIENT span per request."""
        if receiver.url is None:
            raise ConfigError(f"receiver {receiver.name}: url is required")
        self.name = receiver.name
        self.max_body_bytes = receiver.max_body_bytes
        base = receiver.url.rstrip("/") + "/" + receiver.hooks_path.strip("/")
        self.urls = {"agent": f"{base}/agent", "wake": f"{base}/wake"}
        self._token = token
        self._client = client
        self._timeout = float(receiver.timeout)
        self._pool = receiver.max_in_flight
        self._tracing = tracing

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:  # made on first use: a dry run never opens a connection pool
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                trust_env=False,
                limits=httpx.Limits(max_connections=self._pool, max_keepalive_connections=self._pool),
            )
        return self._client

    def url_for(self, message: Message) -> str:
        """The endpoint a message goes to."""
        return self.urls[message.target.endpoint]

    def body(self, message: Message) -> bytes:
        """The exact request body."""
        return orjson.dumps(payload(message))

    def measure(self, message: Message) -> int:
        """The body size in bytes."""
        return len(self.body(message))

    def describe(self, message: Message) -> dict[str, Any]:
        """The request without credentials, for `--dry-run`."""
        return {
            "method": "POST",
            "url": self.url_for(message),
            "headers": {"Idempotency-Key": message.id, "Authorization": "Bearer ***"},
            "body": payload(message),
        }

    async def send(self, message: Message) -> SendResult:
        """One POST; network errors and timeouts are retryable results, never exceptions."""
        headers = {
            "Authorization": f"Bearer {self._token.reveal()}",
            "Idempotency-Key": message.id,
            "Content-Type": "application/json",
        }
        url = self.url_for(message)
        with self._tracing.client("POST", url, headers, attempt=current_attempt()) as call:
            try:
                response = await self._http().post(url, content=self.body(message), headers=headers)
            except httpx.TimeoutException as e:
                call.record_error(e)
                return SendResult(ok=False, retryable=True, detail="timed out")
            except httpx.TransportError as e:
                call.record_error(e)
                return SendResult(ok=False, retryable=True, detail=f"{type(e).__name__}: {e}"[:_DETAIL_CHARS])
            call.response(response.status_code)
        retry_after = parse_retry_after(response.headers.get("retry-after"), _now())
        detail = response.text[:_DETAIL_CHARS] if response.status_code >= 300 else ""
        return result_for_status(response.status_code, retry_after, detail)

    async def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()

    def __repr__(self) -> str:
        return f"OpenClawSink({self.name!r}, {self.urls['agent']!r})"


def _now() -> float:
    import time

    return time.time()
