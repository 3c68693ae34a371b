"""Everything one running server shares: settings, bus, hub, auth, limits, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from dash_stream.bus.base import Bus
from dash_stream.events import Limits
from dash_stream.protocol.errors import RateLimited
from dash_stream.server.auth import Authenticator, Principal
from dash_stream.server.hub import Hub
from dash_stream.server.limits import KeyedBuckets, TokenBucket
from dash_stream.server.metrics import Metrics
from dash_stream.server.publishing import Publisher
from dash_stream.settings import Settings


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
