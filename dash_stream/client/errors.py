"""The SDK's exceptions: one root, `ClientError`, carrying a protocol error code.

The tree mirrors PROTOCOL.md: `code` is one of the wire error codes (section 5), or a client-side
code (`connect_failed`, `connection_lost`, `closed`, `timeout`, `protocol`); `close_code` is set when
the server ended the connection with a close code that forbids reconnecting (4500-4999 and
the like, section 3).
"""

from __future__ import annotations


class ClientError(Exception):
    """Anything the SDK reports on purpose; `code` says what kind of failure it is."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        close_code: int | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        """An error of `code`; `message` is a complete sentence a person can act on."""
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code
        self.retry_after_ms = retry_after_ms

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"

    def __str__(self) -> str:
        prefix = f"{self.code} (close {self.close_code})" if self.close_code is not None else self.code
        return f"{prefix}: {self.message}"


class ConnectError(ClientError):
    """The first connection could not be opened (refused, DNS, TLS, HTTP handshake, timeout)."""

    def __init__(self, url: str, reason: str) -> None:
        """`reason` says why, in a few words (e.g. "connection refused")."""
        super().__init__("connect_failed", f"cannot connect to {url}: {reason}")
        self.url = url
        self.reason = reason


class PublishError(ClientError):
    """The server refused a publish (an `error` frame answering it), or it could not be sent."""

    def __init__(self, code: str, message: str, retry_after_ms: int | None = None) -> None:
        """`code` is the wire error code, e.g. `forbidden` or `rate_limited`."""
        super().__init__(code, message, retry_after_ms=retry_after_ms)

    @property
    def retryable(self) -> bool:
        """Whether sending the same event again later may succeed."""
        return self.code in ("rate_limited", "unavailable", "internal", "timeout", "connection_lost")
