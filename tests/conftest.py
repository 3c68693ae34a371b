"""Shared fixtures: real `dash-stream serve` processes on 127.0.0.1, and clients for them.

Servers
- `free_port()`: a TCP port on 127.0.0.1 that was free a moment ago.
- `server`: a factory, `server("--dev", "--heartbeat", "1")`, that starts
  `.venv/bin/dash-stream serve --host 127.0.0.1 --port <free> <args>` (cwd = the repository, no
  proxy variables, no inherited DASH_* settings), waits for `GET /healthz` to answer 200, and
  returns a `ServerProcess` (`.port`, `.base_url`, `.ws_url`, `.proc`, `.log_text()`,
  `.terminate()`, `.stop()`). Every server it started is stopped by PID at teardown (SIGTERM, then
  SIGKILL). A server that died on its own, or whose log shows a Python traceback, fails the test
  at teardown (pass `allow_tracebacks=True` when a test provokes one on purpose).
- `module_server`: the same factory, but its servers live for the whole test module.
- `dev_server`: a fresh `--dev` server (auth off) for one test.
- `shared_dev_server`: one `--dev` server per test module, with publish rate limits off; tests
  sharing it use unique topics (the `topic` fixture) so that they cannot see each other's events.

Clients
- `ws_client`: an async factory, `await ws_client(url, subprotocols=[...])`, returning a
  `helpers.WsClient`; every client it opened is closed at teardown.
- `http`: an `httpx.AsyncClient` that ignores proxy settings (`trust_env=False`).

Timeouts are generous and multiplied by `DASH_TEST_TIMEOUT_SCALE` (see `helpers.scaled`).
Tests import names from tests/servers.py (`ServerProcess`, `ServerFactory`, `free_port`) and
tests/helpers.py (`WsClient`, `WsClientFactory`, `RawWebSocket`, ...), never from this conftest:
another directory's conftest.py may shadow the module name `conftest`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import JSON, WsClient, WsClientFactory, scaled
from servers import ServerFactory, ServerProcess, ServerStartError, free_port, start_server

__all__ = ["free_port"]  # a helper of this module, kept in servers.py so that tests can import it


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where server logs go."""
    return tmp_path_factory.mktemp("server-logs")


def _server_factory(log_dir: Path) -> Iterator[ServerFactory]:
    started: list[tuple[ServerProcess, bool]] = []

    def make(
        *args: str,
        env: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
        allow_tracebacks: bool = False,
    ) -> ServerProcess:
        try:
            srv = start_server(args, log_dir, env=env, ready_timeout=ready_timeout)
        except ServerStartError as e:
            pytest.fail(str(e), pytrace=False)
        started.append((srv, allow_tracebacks))
        return srv

    yield make
    problems = []
    for srv, allow_tracebacks in started:
        died = not srv.alive() and not srv.stopping
        srv.stop()
        text = srv.log_text()
        if died:
            problems.append(f"{srv} exited on its own with {srv.proc.returncode}:\n{text}")
        elif not allow_tracebacks and "Traceback (most recent call last)" in text:
            problems.append(f"{srv} logged a traceback:\n{text}")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def server(server_logs: Path) -> Iterator[ServerFactory]:
    """Start servers for one test: `server("--dev", ...)`; see the module docstring."""
    yield from _server_factory(server_logs)


@pytest.fixture(scope="module")
def module_server(server_logs: Path) -> Iterator[ServerFactory]:
    """Start servers that live for the whole test module."""
    yield from _server_factory(server_logs)


@pytest.fixture
def dev_server(server: ServerFactory) -> ServerProcess:
    """A fresh server with auth off (`--dev`) for one test."""
    return server("--dev")


@pytest.fixture(scope="module")
def shared_dev_server(module_server: ServerFactory) -> ServerProcess:
    """One `--dev` server for a whole module, publish rate limits off; use unique topics."""
    return module_server("--dev", "--publish-rate", "0", "--conn-publish-rate", "0")


@pytest.fixture
def topic() -> str:
    """A topic prefix no other test uses, e.g. `t3f9a1c2`; build topics as f"{topic}.a.b"."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def ws_client() -> AsyncIterator[WsClientFactory]:
    """`await ws_client(url, subprotocols=(JSON,), headers=None)`; closed at teardown."""
    opened: list[WsClient] = []

    async def make(url: str, **kwargs: Any) -> WsClient:
        kwargs.setdefault("subprotocols", (JSON,))
        client = await WsClient.connect(url, **kwargs)
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the test servers (ignores proxy settings)."""
    async with httpx.AsyncClient(trust_env=False, timeout=scaled(30)) as client:
        yield client
