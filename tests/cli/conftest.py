"""Fixtures of the CLI tests: real servers (see tests/client/dash_server.py) and a CLI runner."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest
from client.dash_server import DASH_STREAM, REPO, DashServer, clean_env, scaled

JWT_SECRET = "cli-tests-secret-of-at-least-32-bytes!!"
NO_RATE_LIMITS = ("--publish-rate", "0", "--conn-publish-rate", "0")

RunCli = Callable[..., "subprocess.CompletedProcess[str]"]


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
def unique_topic() -> str:
    """A topic prefix no other test uses."""
    return f"cli{uuid.uuid4().hex[:10]}"


@pytest.fixture
def run_cli() -> RunCli:
    """`run_cli("publish", "--topic", ..., input=None, env=None)`: run `dash-stream` to completion."""

    def run(
        *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DASH_STREAM, *args],
            input=input,
            capture_output=True,
            text=True,
            env=clean_env(**(env or {})),
            cwd=REPO,
            timeout=scaled(timeout),
            check=False,
        )

    return run
