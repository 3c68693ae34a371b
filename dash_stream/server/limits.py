"""Rate limits (PROTOCOL.md sections 3 and 5): token buckets, one per key, on an injectable clock.

`take` never sleeps and never raises: it answers "allowed" (0.0) or "how long until it would be", so
the caller decides what to do; `check` turns a wait into the `rate_limited` error the wire carries.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Protocol

from dash_stream.protocol.errors import RateLimited, TooLarge


class Clock(Protocol):
    """Monotonic seconds; tests plug in a fake so windows run instantly and deterministically."""

    def __call__(self) -> float:
        """The current monotonic time in seconds."""
        ...


class TokenBucket:
    """Allows `rate` units per second on average and bursts of up to `burst` units; starts full.

    A `rate` of 0 or less means unlimited. Asking for more than `burst` at once can never succeed, so
    `take` answers `math.inf` rather than a wait that would be a lie.
    """

    __slots__ = ("_burst", "_clock", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        """Create a full bucket; `burst` must be positive unless the bucket is unlimited."""
        if rate > 0 and not burst > 0:
            raise ValueError("a rate limit's burst must be > 0")
        self._rate = float(rate)
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    @property
    def unlimited(self) -> bool:
        """Whether this bucket allows everything."""
        return self._rate <= 0

    @property
    def burst(self) -> float:
        """The most units one take may ask for."""
        return self._burst

    def take(self, n: float = 1.0) -> float:
        """Consume `n` units and return 0.0, or consume nothing and return seconds until `n` fit."""
        if n < 0:
            raise ValueError("cannot take a negative amount from a rate limit")
        if self._rate <= 0 or n == 0:
            return 0.0
        if n > self._burst:
            return math.inf
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return 0.0
        return (n - self._tokens) / self._rate

    def full(self) -> bool:
        """Whether the bucket is full, i.e. indistinguishable from a fresh one."""
        self._refill()
        return self._tokens >= self._burst

    def _refill(self) -> None:
        now = self._clock()
        # A clock that steps back (only a fake one should) must not mint or destroy tokens.
        if now > self._updated:
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
            self._updated = now


class KeyedBuckets:
    """One `TokenBucket` per key (token subject, API key, client IP), at most `max_keys` of them.

    When full, the least recently used key is evicted: that key's next request starts from a full
    bucket, which errs on the side of allowing traffic rather than growing without bound.
    """

    def __init__(
        self, rate: float, burst: float, *, max_keys: int = 100_000, clock: Clock = time.monotonic
    ) -> None:
        """Create an empty set of buckets sharing one rate, burst and clock."""
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        if rate > 0 and not burst > 0:
            raise ValueError("a rate limit's burst must be > 0")
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, n: float = 1.0) -> float:
        """Take `n` units from `key`'s bucket; same answer as `TokenBucket.take`."""
        if self._rate <= 0:
            if n < 0:
                raise ValueError("cannot take a negative amount from a rate limit")
            return 0.0  # unlimited: keep no per-key state at all
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self._rate, self._burst, self._clock)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(n)

    def __len__(self) -> int:
        """The number of keys currently tracked."""
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        """Whether `key` currently has a bucket."""
        return key in self._buckets


def check(wait_s: float, what: str) -> None:
    """Raise `rate_limited` (with `retry_after_ms`) when `wait_s` from a `take` is positive.

    An infinite wait means the request alone is larger than the burst and can never pass, which is
    `too_large` rather than something to retry.
    """
    if wait_s <= 0:
        return
    if math.isinf(wait_s):
        raise TooLarge(f"{what}: request exceeds the rate limit burst")
    retry_ms = math.ceil(wait_s * 1000)
    raise RateLimited(f"{what}: rate limit exceeded, retry in {retry_ms} ms", retry_after_ms=retry_ms)


class FailureLockout:
    """Locks a key (a client IP) out for `cooldown_s` once it fails more than `limit` times in `window_s`.

    Failures drain a token bucket per key (`KeyedBuckets`: `limit` failures, refilled at
    `limit / window_s` per second), so a client that fails now and then is never locked out, while
    one that guesses credentials is. Both the buckets and the lockouts are bounded by `max_keys`
    (least recently used evicted first). A `limit` of 0 or less turns the lockout off.
    """

    def __init__(
        self,
        limit: int,
        window_s: float,
        cooldown_s: float,
        *,
        max_keys: int = 100_000,
        clock: Clock = time.monotonic,
    ) -> None:
        """Create an empty lockout table; ValueError for a window or cooldown that cannot work."""
        self.enabled = limit > 0
        if self.enabled and not (window_s > 0 and cooldown_s > 0):
            raise ValueError("an auth failure lockout needs a window and a cooldown > 0 seconds")
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._max_keys = max_keys
        rate = limit / window_s if self.enabled else 0.0
        self._failures = KeyedBuckets(rate, max(1.0, float(limit)), max_keys=max_keys, clock=clock)
        self._locked: OrderedDict[str, float] = OrderedDict()

    def failed(self, key: str) -> float:
        """Count one failure of `key`; the seconds it is now locked out for (0.0: not locked)."""
        if not self.enabled:
            return 0.0
        if self._failures.take(key) > 0:
            self._locked[key] = self._clock() + self._cooldown_s
            self._locked.move_to_end(key)
            while len(self._locked) > self._max_keys:
                self._locked.popitem(last=False)
        return self.locked(key)

    def locked(self, key: str) -> float:
        """Seconds until `key` may authenticate again (0.0 when it is not locked out)."""
        until = self._locked.get(key)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._locked[key]
            return 0.0
        return left

    def __len__(self) -> int:
        """Keys currently locked out (expired entries may linger until looked up)."""
        return len(self._locked)
