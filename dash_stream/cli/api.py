"""Reading the HTTP API for the `swarm` and `events` commands: one GET, one answer, clear failures.

`--json` commands print machine-readable output for agents: the document on stdout, and on
failure an `{"error": {"code", "message"}}` document on stdout as well as a line on stderr.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import httpx
import msgspec
import typer

from dash_stream.cli.tools import EXIT_USAGE, cannot_connect, fail

EXIT_NOT_FOUND = 1
_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    """The server answered with its error shape (or something that is not a dash-stream server)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def http_base(url: str) -> str:
    """`ws(s)://host/…` or `http(s)://host/…` → `http(s)://host` (the API root)."""
    url = url.rstrip("/")
    if url.startswith("ws://"):
        url = "http://" + url[5:]
    elif url.startswith("wss://"):
        url = "https://" + url[6:]
    if url.endswith("/v1/ws"):
        url = url[: -len("/v1/ws")]
    return url


def get_json(url: str, token: str | None, path: str, params: dict[str, str] | None = None) -> Any:
    """GET `path` and return the JSON document; ApiError for an error answer, exit 2 when unreachable."""
    base = http_base(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=30.0) as client:
            response = client.get(path, params=params)
    except httpx.ConnectError as e:
        text = str(e).lower()
        fail(cannot_connect(base, "connection refused" if "refused" in text else str(e) or "connect failed"))
    except httpx.TransportError as e:
        fail(f"lost the connection to {base}: {type(e).__name__}")
    try:
        doc = response.json()
    except ValueError:
        raise ApiError(response.status_code, "internal", f"{base}{path} did not answer JSON") from None
    if response.status_code >= 400:
        error = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(error, dict):
            raise ApiError(response.status_code, str(error.get("code")), str(error.get("message")))
        raise ApiError(response.status_code, "internal", f"HTTP {response.status_code}")
    return doc


def print_json(doc: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(_encoder.encode(doc).decode() + "\n")
    sys.stdout.flush()


def api_failure(error: ApiError, as_json: bool) -> NoReturn:
    """Report an error answer and exit: 1 for not_found, 2 for everything else."""
    if as_json:
        print_json({"error": {"code": error.code, "message": error.message}})
    hint = " (pass --token or set DASH_TOKEN)" if error.code == "unauthorized" else ""
    typer.secho(f"error: {error.code}: {error.message}{hint}", err=True, fg="red")
    raise typer.Exit(EXIT_NOT_FOUND if error.code == "not_found" else EXIT_USAGE)
