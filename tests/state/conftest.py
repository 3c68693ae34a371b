"""Fixtures of the live swarm state tests: a real Redis for the two-node Redis bus tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis_servers


@pytest.fixture
def redis_deployment() -> Iterator[redis_servers.Deployment]:
    """A redis-server of its own for one test."""
    deployment = redis_servers.standalone()
    yield deployment
    deployment.stop()
