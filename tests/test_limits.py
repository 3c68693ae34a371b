"""Token buckets and keyed rate limits, driven by a fake clock: no sleeps, fully deterministic."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dash_stream.protocol.errors import ErrorCode, RateLimited, TooLarge
from dash_stream.server.limits import FailureLockout, KeyedBuckets, TokenBucket, check


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_bucket_starts_full_and_allows_a_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=2.0, burst=5.0, clock=clock)
    assert [bucket.take() for _ in range(5)] == [0.0] * 5
    assert bucket.take() == pytest.approx(0.5)


def test_denied_take_consumes_nothing(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=10.0, burst=1.0, clock=clock)
    assert bucket.take() == 0.0
    first = bucket.take()
    second = bucket.take()
    assert first == pytest.approx(0.1)
    assert second == pytest.approx(first)
    clock.advance(0.1)
    assert bucket.take() == 0.0


def test_wait_accounts_for_partial_refill(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=4.0, burst=2.0, clock=clock)
    assert bucket.take(2) == 0.0
    clock.advance(0.125)  # half a token back
    assert bucket.take() == pytest.approx(0.125)
    assert bucket.take(2) == pytest.approx(0.375)


def test_refill_is_capped_at_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=100.0, burst=3.0, clock=clock)
    clock.advance(3600)
    assert [bucket.take() for _ in range(3)] == [0.0] * 3
    assert bucket.take() > 0


def test_fractional_takes(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=1.0, burst=1.0, clock=clock)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0) == 0.0


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_non_positive_rate_is_unlimited(clock: FakeClock, rate: float) -> None:
    bucket = TokenBucket(rate=rate, burst=0.0, clock=clock)
    assert bucket.unlimited
    assert all(bucket.take(1e9) == 0.0 for _ in range(1000))


def test_take_larger_than_burst_can_never_succeed(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=1.0, burst=10.0, clock=clock)
    assert bucket.take(11) == math.inf
    assert bucket.take(10) == 0.0  # the refused request consumed nothing


def test_clock_stepping_back_mints_no_tokens(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=1.0, burst=1.0, clock=clock)
    assert bucket.take() == 0.0
    clock.advance(-100)
    assert bucket.take() == pytest.approx(1.0)
    clock.advance(100.5)  # back to 0.5 s after the take
    assert bucket.take() == pytest.approx(0.5)


def test_invalid_arguments_are_rejected(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(rate=1.0, burst=0.0, clock=clock)
    with pytest.raises(ValueError, match="negative"):
        TokenBucket(rate=1.0, burst=1.0, clock=clock).take(-1)
    with pytest.raises(ValueError, match="max_keys"):
        KeyedBuckets(1.0, 1.0, max_keys=0, clock=clock)
    with pytest.raises(ValueError, match="burst"):
        KeyedBuckets(1.0, -1.0, clock=clock)


def test_full_reports_a_fresh_bucket(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=1.0, burst=2.0, clock=clock)
    assert bucket.full()
    bucket.take()
    assert not bucket.full()
    clock.advance(1.0)
    assert bucket.full()


# ---------------------------------------------------------------- keyed buckets


def test_keys_have_independent_buckets(clock: FakeClock) -> None:
    buckets = KeyedBuckets(rate=1.0, burst=1.0, clock=clock)
    assert buckets.take("alice") == 0.0
    assert buckets.take("alice") == pytest.approx(1.0)
    assert buckets.take("bob") == 0.0
    assert len(buckets) == 2


def test_least_recently_used_key_is_evicted(clock: FakeClock) -> None:
    buckets = KeyedBuckets(rate=1.0, burst=1.0, max_keys=2, clock=clock)
    buckets.take("a")
    buckets.take("b")
    buckets.take("a")  # a is now the most recently used
    buckets.take("c")
    assert len(buckets) == 2
    assert "a" in buckets
    assert "c" in buckets
    assert "b" not in buckets
    # a kept its (empty) bucket; b starts over from a full one
    assert buckets.take("a") > 0
    assert buckets.take("b") == 0.0


def test_key_count_stays_bounded(clock: FakeClock) -> None:
    buckets = KeyedBuckets(rate=1.0, burst=1.0, max_keys=100, clock=clock)
    for number in range(10_000):
        buckets.take(f"ip-{number}")
    assert len(buckets) == 100


def test_unlimited_keyed_buckets_keep_no_state(clock: FakeClock) -> None:
    buckets = KeyedBuckets(rate=0, burst=0, clock=clock)
    assert all(buckets.take(f"k{i}", 5) == 0.0 for i in range(100))
    assert len(buckets) == 0


def test_keyed_buckets_default_bound() -> None:
    buckets = KeyedBuckets(rate=1.0, burst=1.0)
    assert buckets._max_keys == 100_000


# ---------------------------------------------------------------- check


def test_check_passes_when_allowed() -> None:
    check(0.0, "publish")


def test_check_raises_rate_limited_with_retry_after() -> None:
    with pytest.raises(RateLimited) as info:
        check(0.0015, "publish")
    error = info.value
    assert error.retry_after_ms == 2
    assert error.message == "publish: rate limit exceeded, retry in 2 ms"
    assert error.code is ErrorCode.RATE_LIMITED
    assert error.retryable
    assert error.http_status == 429


def test_check_rounds_tiny_waits_up_to_one_ms() -> None:
    with pytest.raises(RateLimited) as info:
        check(1e-9, "connect")
    assert info.value.retry_after_ms == 1


def test_check_of_impossible_request_is_too_large() -> None:
    with pytest.raises(TooLarge, match="publish: request exceeds the rate limit burst"):
        check(math.inf, "publish")


# ---------------------------------------------------------------- properties

_steps = st.lists(
    st.one_of(
        st.tuples(st.just("take"), st.floats(min_value=0.0, max_value=12.0)),
        st.tuples(st.just("advance"), st.floats(min_value=0.0, max_value=5.0)),
    ),
    max_size=200,
)


@settings(database=None, max_examples=300)
@given(
    rate=st.floats(min_value=0.01, max_value=1000.0),
    burst=st.floats(min_value=0.5, max_value=100.0),
    steps=_steps,
)
def test_granted_never_exceeds_burst_plus_rate_times_elapsed(
    rate: float, burst: float, steps: list[tuple[str, float]]
) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, burst, clock)
    start = clock.now
    granted = 0.0
    for action, amount in steps:
        if action == "advance":
            clock.advance(amount)
        else:
            wait = bucket.take(amount)
            assert wait >= 0
            if wait == 0.0:
                granted += amount
            elif amount <= burst:
                assert math.isfinite(wait)
        elapsed = clock.now - start
        assert granted <= (burst + rate * elapsed) * (1 + 1e-9) + 1e-9


@settings(database=None, max_examples=200)
@given(
    rate=st.floats(min_value=0.01, max_value=1000.0),
    burst=st.floats(min_value=1.0, max_value=100.0),
    takes=st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=1, max_size=50),
)
def test_waiting_the_returned_time_is_enough(rate: float, burst: float, takes: list[float]) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, burst, clock)
    for amount in takes:
        wait = bucket.take(amount)
        if wait > 0:
            clock.advance(wait * (1 + 1e-9) + 1e-9)
            assert bucket.take(amount) == 0.0


# ---------------------------------------------------------------- failed-auth lockout


def test_lockout_tolerates_the_limit_then_locks_for_the_cooldown(clock: FakeClock) -> None:
    lockout = FailureLockout(3, 60.0, 10.0, clock=clock)
    assert [lockout.failed("ip") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lockout.locked("ip") == 0.0
    assert lockout.failed("ip") == pytest.approx(10.0)
    assert lockout.locked("other") == 0.0
    clock.advance(9.5)
    assert lockout.locked("ip") == pytest.approx(0.5)
    clock.advance(0.5)
    assert lockout.locked("ip") == 0.0 and len(lockout) == 0


def test_lockout_forgets_failures_spread_over_the_window(clock: FakeClock) -> None:
    lockout = FailureLockout(3, 60.0, 10.0, clock=clock)
    for _ in range(30):  # one failure every 20 s refills as fast as it drains
        assert lockout.failed("ip") == 0.0
        clock.advance(20.0)


def test_lockout_off_and_bounded(clock: FakeClock) -> None:
    off = FailureLockout(0, 60.0, 10.0, clock=clock)
    assert all(off.failed("ip") == 0.0 for _ in range(1000))
    bounded = FailureLockout(1, 60.0, 10.0, max_keys=5, clock=clock)
    for n in range(100):
        bounded.failed(f"ip{n}")
        bounded.failed(f"ip{n}")
    assert len(bounded) == 5
    with pytest.raises(ValueError):
        FailureLockout(3, 0.0, 10.0)
