"""Real Redis deployments (standalone, Sentinel, Cluster) for the Redis bus tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis_servers


@pytest.fixture(scope="module")
def redis_standalone() -> Iterator[redis_servers.Deployment]:
    """One redis-server for the module."""
    d = redis_servers.standalone()
    yield d
    d.stop()


@pytest.fixture
def fresh_redis() -> Iterator[redis_servers.Deployment]:
    """A redis-server of its own for one test (tests that kill or restart it)."""
    d = redis_servers.standalone()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def redis_sentinel() -> Iterator[redis_servers.Deployment]:
    """A master, one replica and three sentinels for the module."""
    d = redis_servers.sentinel()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[redis_servers.Deployment]:
    """A three-master cluster for the module."""
    d = redis_servers.cluster()
    yield d
    d.stop()
