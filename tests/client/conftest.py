"""Fixtures of the SDK tests: real servers on free ports (see `dash_server.py`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from client.dash_server import DashServer

JWT_SECRET = "sdk-tests-secret-of-at-least-32-bytes!!"
NO_RATE_LIMITS = ("--publish-rate", "0", "--conn-publish-rate", "0")


@pytest.fixture(scope="session")
def live_server() -> Iterator[DashServer]:
    """One `--dev` server (auth off, no publish limits) per test session; use `unique_topic`."""
    server = DashServer.start("--dev", *NO_RATE_LIMITS)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def auth_server() -> Iterator[DashServer]:
    """One server with HS256 auth on (secret `JWT_SECRET`) per test session."""
    server = DashServer.start("--jwt-secret", JWT_SECRET, *NO_RATE_LIMITS)
    yield server
    server.stop()


@pytest.fixture
def start_server() -> Iterator[Callable[..., DashServer]]:
    """`start_server("--dev", port=...)` for tests that stop or restart servers; all stopped at the end."""
    started: list[DashServer] = []

    def start(*args: str, port: int | None = None) -> DashServer:
        server = DashServer.start(*args, port=port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def unique_topic() -> str:
    """A topic prefix no other test uses: build topics as f"{unique_topic}.a"."""
    return f"sdk{uuid.uuid4().hex[:10]}"
