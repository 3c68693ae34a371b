"""Shared pieces of the attack suite: tokens, clients bound to a chosen loopback address, the
server's RSS, and latency figures.

All traffic goes to 127.0.0.1; a client may *come from* another loopback address (127.0.0.2,
127.0.0.3, ...) so that per-IP limits can tell an abusive client from a well-behaved one.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
from helpers import JSON, Frame, WsClient, scaled
from servers import ServerProcess
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from dash_stream.server.auth import mint_token

# A test fixture, not a secret: the servers of this suite are started with it. (allowlist: test-fixture)
SECRET = "security-suite-hs256-secret-0123456789abcdef"


def token(
    *,
    sub: str = "sec",
    subscribe: Sequence[str] = (">",),
    publish: Sequence[str] = (">",),
    **kw: Any,
) -> str:
    """An HS256 token signed with the suite's secret."""
    return mint_token(SECRET, sub=sub, subscribe=subscribe, publish=publish, **kw)


def bearer(tok: str) -> dict[str, str]:
    """The Authorization header of a token."""
    return {"Authorization": f"Bearer {tok}"}


def unique(prefix: str = "t") -> str:
    """A topic segment no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def ws_from(
    srv: ServerProcess,
    *,
    source: str = "127.0.0.1",
    tok: str | None = None,
    query: str = "",
    subprotocols: Sequence[str] = (JSON,),
) -> WsClient:
    """A WsClient whose TCP connection comes from the loopback address `source`."""
    url = srv.ws_url + (f"?{query}" if query else "")
    conn = await connect(
        url,
        subprotocols=[Subprotocol(p) for p in subprotocols] if subprotocols else None,
        additional_headers=bearer(tok) if tok else None,
        proxy=None,
        open_timeout=scaled(10),
        ping_interval=None,
        close_timeout=scaled(5),
        max_size=64 * 1024 * 1024,
        max_queue=None,
        compression=None,
        local_addr=(source, 0),
    )
    return WsClient(conn)


def http_from(srv: ServerProcess, source: str = "127.0.0.1", **kw: Any) -> httpx.AsyncClient:
    """An HTTP client for `srv` whose connections come from the loopback address `source`."""
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(
        base_url=srv.base_url, transport=transport, trust_env=False, timeout=scaled(30), **kw
    )


async def welcomed(client: WsClient) -> Frame:
    """The welcome frame (the first frame of every connection)."""
    return await client.wait_for(lambda f: f.get("op") == "welcome")


def error_of(resp: httpx.Response) -> dict[str, Any]:
    """The `error` object of an HTTP error response, checking the one error shape."""
    doc = resp.json()
    assert set(doc) == {"error"}, doc
    err: dict[str, Any] = doc["error"]
    assert {"code", "message", "request_id"} <= set(err), err
    return err


def rss_mib(srv: ServerProcess) -> float:
    """The server process's resident set size in MiB (from /proc)."""
    with open(f"/proc/{srv.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc status")


def p99(samples: Sequence[float]) -> float:
    """The 99th percentile (nearest rank) of `samples`."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


async def ping_latencies(client: WsClient, stop: asyncio.Event, interval: float = 0.02) -> list[float]:
    """Ping `client` until `stop` is set; every round trip in seconds (a ping that never answers
    within 30 s fails the test)."""
    samples: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        await client.ping()
        samples.append(time.perf_counter() - started)
        await asyncio.sleep(interval)
    return samples


def close_doc(client: WsClient) -> dict[str, Any]:
    """The JSON close reason the server sent."""
    assert client.close_reason, f"no close reason (code {client.close_code})"
    doc: dict[str, Any] = json.loads(client.close_reason)
    return doc


def log_lines_with(srv: ServerProcess, needle: str) -> list[str]:
    """The server log lines that contain `needle`."""
    return [line for line in srv.log_text().splitlines() if needle in line]
