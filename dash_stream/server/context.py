"""Everything one running server shares: settings, bus, hub, auth, limits, metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dash_stream.bus.base import Bus
from dash_stream.events import Limits
from dash_stream.protocol.errors import RateLimited, Unauthorized
from dash_stream.server.auth import Authenticator, Principal
from dash_stream.server.hub import Hub
from dash_stream.server.limits import FailureLockout, KeyedBuckets, TokenBucket
from dash_stream.server.metrics import Metrics
from dash_stream.server.publishing import Publisher
from dash_stream.settings import Settings
from dash_stream.telemetry import Tracing

if TYPE_CHECKING:
    from dash_stream.server.swarms import SwarmTracker


@dataclass
class ServerContext:
    """The state of one server instance, created by `create_app` and owned by its lifespan."""

    settings: Settings
    bus: Bus
    metrics: Metrics
    hub: Hub
    auth: Authenticator
    publisher: Publisher
    limits: Limits
    publish_buckets: KeyedBuckets
    connect_buckets: KeyedBuckets
    publish_burst: float = 1.0
    draining: bool = False
    connections: set[object] = field(default_factory=set)
    tracing: Tracing | None = None  # None when tracing is off; owned (shut down) by the lifespan
    swarms: SwarmTracker | None = None  # the live swarm state fold; started by the lifespan
    auth_lockout: FailureLockout = field(default_factory=lambda: FailureLockout(0, 1.0, 1.0))

    def check_auth_lockout(self, client: str) -> None:
        """RateLimited (with retry_after_ms) while `client` is locked out after failed authentications."""
        wait = self.auth_lockout.locked(client)
        if wait > 0:
            self.metrics.rate_limited.labels("auth").inc()
            ms = max(1, math.ceil(wait * 1000))
            raise RateLimited(
                f"too many failed authentications from this address, retry in {ms} ms", retry_after_ms=ms
            )

    def auth_failed(self, client: str, transport: str) -> None:
        """Count a presented credential that did not verify against `client`'s lockout."""
        self.metrics.auth_failures.labels(transport).inc()
        self.auth_lockout.failed(client)

    def verify_bearer(self, authorization: str | None, client: str) -> Principal:
        """The principal of an HTTP `Authorization` value, counting failures toward the IP lockout."""
        if not self.auth.enabled:
            return self.auth.dev_principal()
        self.check_auth_lockout(client)
        try:
            return self.auth.verify_bearer(authorization)
        except Unauthorized:
            if authorization is not None and authorization.strip():
                self.auth_failed(client, "http")
            raise

    def check_publish_rate(
        self, principal: Principal, n: int, client: str, conn_bucket: TokenBucket | None = None
    ) -> None:
        """Token buckets per subject/key (per client address in dev mode) and per connection.

        Raises RateLimited with retry_after_ms. A batch larger than a bucket's burst costs the
        whole burst rather than never passing.
        """
        key = f"ip:{client}" if principal.kind == "dev" else f"{principal.kind}:{principal.sub}"
        wait = self.publish_buckets.take(key, min(n, self.publish_burst))
        if wait <= 0 and conn_bucket is not None:
            wait = conn_bucket.take(min(n, conn_bucket.burst))
        if wait > 0:
            self.metrics.rate_limited.labels("publish").inc()
            ms = max(1, int(wait * 1000) + 1)
            raise RateLimited(f"publish rate limit exceeded, retry in {ms} ms", retry_after_ms=ms)
