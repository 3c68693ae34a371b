"""Bus makers for the conformance suite: the Redis bus on real standalone, Sentinel and Cluster
deployments (one deployment per session, a fresh key namespace per bus, so every bus starts empty)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis_servers

from dash_stream.bus.base import Bus
from dash_stream.bus.redis import RedisBus

BusMaker = Callable[..., Awaitable[Bus]]


@pytest.fixture(scope="session")
def redis_standalone_deployment() -> Iterator[redis_servers.Deployment]:
    """One redis-server for the whole session."""
    d = redis_servers.standalone()
    yield d
    d.stop()


@pytest.fixture(scope="session")
def redis_sentinel_deployment() -> Iterator[redis_servers.Deployment]:
    """A master, a replica and three sentinels for the whole session."""
    d = redis_servers.sentinel()
    yield d
    d.stop()


@pytest.fixture(scope="session")
def redis_cluster_deployment() -> Iterator[redis_servers.Deployment]:
    """A three-master cluster for the whole session."""
    d = redis_servers.cluster()
    yield d
    d.stop()


def _maker(url: str) -> BusMaker:
    async def make(
        *,
        retention_events: int = 100_000,
        retention_age_s: float = 24 * 3600.0,
        dedup_window_s: float = 600.0,
        clock: Callable[[], float] | None = None,
    ) -> Bus:
        return RedisBus(
            url,
            partitions=4,
            max_events=retention_events,
            max_age_s=retention_age_s,
            dedup_window_s=dedup_window_s,
            namespace=f"t{uuid.uuid4().hex[:10]}",
            clock=None if clock is time.time else clock,
        )

    return make


@pytest.fixture
def redis_bus_maker(redis_standalone_deployment: redis_servers.Deployment) -> BusMaker:
    """Makes RedisBus instances on a standalone Redis."""
    return _maker(redis_standalone_deployment.url)


@pytest.fixture
def redis_sentinel_bus_maker(redis_sentinel_deployment: redis_servers.Deployment) -> BusMaker:
    """Makes RedisBus instances on a Sentinel deployment."""
    return _maker(redis_sentinel_deployment.url)


@pytest.fixture
def redis_cluster_bus_maker(redis_cluster_deployment: redis_servers.Deployment) -> BusMaker:
    """Makes RedisBus instances on a Redis Cluster."""
    return _maker(redis_cluster_deployment.url)
