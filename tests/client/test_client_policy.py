"""Pure pieces of the SDK: close-code policy, backoff, cursor arithmetic, token scheduling."""

from __future__ import annotations

import jwt
import pytest

from dash_stream.client import cursors
from dash_stream.client.policy import (
    Backoff,
    describe_close,
    error_code,
    parse_close_reason,
    should_reconnect,
)
from dash_stream.client.tokens import refresh_at, token_times
from dash_stream.client.wire import event_payload, websocket_url
from dash_stream.events import EventIn


@pytest.mark.parametrize("code", [1000, 1001, 1006, 1011, 1012, 4000, 4002, 4008, 4029, 4499])
def test_reconnect_codes(code: int) -> None:
    assert should_reconnect(code)


@pytest.mark.parametrize("code", [1002, 1007, 1008, 1009, 4500, 4501, 4503, 4504, 4999])
def test_codes_that_stop_the_client(code: int) -> None:
    assert not should_reconnect(code)


def test_close_reason_is_read_leniently() -> None:
    assert parse_close_reason('{"code":"slow_consumer","retry_after_ms":1200}') == (
        "slow_consumer",
        1200,
        None,
    )
    assert parse_close_reason('{"code":"unauthorized","message":"token expired"}')[2] == "token expired"
    assert parse_close_reason("not json") == (None, None, "not json")
    assert parse_close_reason('{"retry_after_ms":-5}')[1] is None
    assert parse_close_reason("") == (None, None, None)


def test_a_fatal_close_is_described_with_the_servers_words_and_a_hint() -> None:
    reason = '{"code":"unauthorized","message":"token expired"}'
    assert error_code(4501, reason) == "unauthorized"
    assert error_code(4503, "") == "forbidden"
    text = describe_close(4501, reason)
    assert "4501" in text and "token expired" in text and "credentials" in text


def test_backoff_grows_with_jitter_up_to_the_cap_and_honours_the_servers_delay() -> None:
    backoff = Backoff(initial_s=0.5, cap_s=4.0, rng=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    low = Backoff(initial_s=0.5, cap_s=4.0, rng=lambda: 0.0)
    assert [low.next_delay() for _ in range(3)] == [0.25, 0.5, 1.0]
    assert backoff.next_delay(suggested_ms=1200) == 1.2
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_cursor_arithmetic_per_partition() -> None:
    assert cursors.covers("ep.0-5", "ep.0-5")
    assert cursors.covers("ep.0-5.1-9", "ep.1-3")
    assert not cursors.covers("ep.0-5", "ep.0-6")
    assert not cursors.covers("ep.0-5", "ep.1-1")  # a partition the cursor has not seen
    assert not cursors.covers("old.0-9", "new.0-1")  # another epoch is new, not seen
    assert not cursors.covers("!!", "ep.0-1")  # unreadable: nothing counts as seen
    assert cursors.advance("ep.0-5.1-9", "ep.0-6") == "ep.0-6.1-9"
    assert cursors.advance("ep.0-5", "ep.0-3") == "ep.0-5"  # never backwards
    assert cursors.advance("old.0-5", "new.0-1") == "new.0-1"
    assert cursors.advance(None, "ep.0-1") == "ep.0-1"
    assert cursors.later("ep.0-5.1-1", "ep.1-4") == "ep.0-5.1-4"
    assert cursors.later("ep.0-5", None) == "ep.0-5"


def test_refresh_is_scheduled_a_quarter_lifetime_before_exp_within_bounds() -> None:
    key = "k" * 32
    hour = jwt.encode({"sub": "a", "iat": 1000, "exp": 4600}, key, algorithm="HS256")
    assert token_times(hour) == (1000.0, 4600.0)
    assert refresh_at(hour, obtained_at=1000) == 4540.0  # capped at one minute
    short = jwt.encode({"sub": "a", "iat": 1000, "exp": 1004}, key, algorithm="HS256")
    assert refresh_at(short, obtained_at=1000) == 1003.0
    forever = jwt.encode({"sub": "a"}, key, algorithm="HS256")
    assert refresh_at(forever, obtained_at=1000) is None
    assert token_times("not-a-jwt") == (None, None)


def test_urls_and_payloads() -> None:
    assert websocket_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/v1/ws"
    assert websocket_url("https://dash.example/") == "wss://dash.example/v1/ws"
    assert websocket_url("ws://h:1/custom/ws?x=1") == "ws://h:1/custom/ws?x=1"
    assert websocket_url("localhost:8080") == "ws://localhost:8080/v1/ws"
    with pytest.raises(ValueError):
        websocket_url("ftp://h")
    payload = event_payload(EventIn(topic="a.b", type="t"))
    assert payload == {"topic": "a.b", "type": "t", "priority": "normal"}
