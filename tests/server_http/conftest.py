"""Fixtures: `dash-stream serve` subprocesses, started on a free port and stopped by PID."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .support import Server, start_server

ServerFactory = Callable[..., Server]


@pytest.fixture(scope="session")
def server_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the servers' output goes."""
    return tmp_path_factory.mktemp("dash-servers")


def _factory(log_dir: Path) -> Iterator[ServerFactory]:
    started: list[Server] = []

    def start(*args: str) -> Server:
        server = start_server(*args, log_dir=log_dir)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def serve(server_log_dir: Path) -> Iterator[ServerFactory]:
    """Start servers that live for one test: `serve("--dev", "--retention-events", "16")`."""
    yield from _factory(server_log_dir)


@pytest.fixture(scope="module")
def serve_module(server_log_dir: Path) -> Iterator[ServerFactory]:
    """Start servers shared by one test module's tests."""
    yield from _factory(server_log_dir)
