"""Rate limits under attack: an abusive client (from 127.0.0.1) is limited while a well-behaved one
(from 127.0.0.2) keeps its latency. Its ping round trips are measured and printed; the assertion is
only a generous bound (every ping answered, p99 under 5 s), never a tight timing.

The auth-failure lockout: more than `--auth-fail-limit` failed authentications from one address
within the window lock that address out (WebSocket 4029, HTTP 429 with Retry-After) for
`--auth-lockout` seconds, even with a valid token; other addresses are not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx
import pytest
from helpers import metric_value, scaled
from servers import ServerFactory, ServerProcess
from websockets.exceptions import InvalidStatus

from .support import (
    SECRET,
    bearer,
    close_doc,
    error_of,
    http_from,
    p99,
    ping_latencies,
    token,
    unique,
    welcomed,
    ws_from,
)

GOOD = "127.0.0.2"
ABUSER = "127.0.0.1"


async def test_failed_authentications_lock_the_address_out_and_only_that_address(
    server: ServerFactory,
) -> None:
    srv = server(
        "--jwt-secret", SECRET, "--auth-fail-limit", "5", "--auth-fail-window", "60", "--auth-lockout", "3"
    )
    valid = token(sub="legit", subscribe=("x.>",))
    forged = token(sub="legit", subscribe=("x.>",))[:-4] + "AAAA"
    # five failures are tolerated (a mistyped key now and then)
    async with http_from(srv, ABUSER) as http:
        for _ in range(5):
            resp = await http.get("/v1/events", params={"topics": "x.>"}, headers=bearer(forged))
            assert resp.status_code == 401
        assert (
            await http.get("/v1/events", params={"topics": "x.>"}, headers=bearer(valid))
        ).status_code == 200
    # the sixth (a WebSocket token) locks the address out
    client = await ws_from(srv, source=ABUSER, tok=forged)
    await client.wait_closed()
    assert client.close_code == 4501
    locked_at = time.monotonic()
    async with http_from(srv, ABUSER) as http:
        resp = await http.get("/v1/events", params={"topics": "x.>"}, headers=bearer(valid))
        assert resp.status_code == 429, resp.text
        err = error_of(resp)
        assert err["code"] == "rate_limited" and 0 < err["retry_after_ms"] <= 3000
        assert 1 <= int(resp.headers["retry-after"]) <= 3
        assert (await http.get("/healthz")).status_code == 200, "unauthenticated routes are not locked"
    client = await ws_from(srv, source=ABUSER, tok=valid)
    await client.wait_closed()
    assert client.close_code == 4029, (client.close_code, client.close_reason)
    assert 0 < close_doc(client)["retry_after_ms"] <= 3000
    assert not any(f.get("op") == "welcome" for f in client.frames), "refused before any work"
    # another address is unaffected, also over SSE and the auth op
    good = await ws_from(srv, source=GOOD)
    try:
        await welcomed(good)
        assert (await good.request("auth", token=valid))["op"] == "authed"
        await good.subscribe("s", ["x.>"])
    finally:
        await good.close()
    async with http_from(srv, GOOD) as http:
        assert (
            await http.get("/v1/events", params={"topics": "x.>"}, headers=bearer(valid))
        ).status_code == 200
    # after the cooldown the address may authenticate again
    await asyncio.sleep(max(0.0, 3.2 - (time.monotonic() - locked_at)))
    async with http_from(srv, ABUSER) as http:
        resp = await http.get("/v1/events", params={"topics": "x.>"}, headers=bearer(valid))
        assert resp.status_code == 200, resp.text
        metrics = (await http.get("/metrics")).text
    assert metric_value(metrics, "dash_auth_failures_total", 'transport="http"') == 5
    assert metric_value(metrics, "dash_auth_failures_total", 'transport="ws"') == 1
    assert metric_value(metrics, "dash_rate_limited_total", 'what="auth"') >= 2


async def test_auth_op_guessing_on_an_open_connection_is_locked_out_too(server: ServerFactory) -> None:
    srv = server("--jwt-secret", SECRET, "--auth-fail-limit", "3", "--auth-lockout", "30")
    client = await ws_from(srv, source=ABUSER)
    try:
        await welcomed(client)
        codes = []
        for n in range(6):
            reply = await client.request("auth", token=f"eyJhbGciOiJIUzI1NiJ9.eyJ9.guess{n}")
            codes.append(reply["code"])
        assert codes[:4] == ["unauthorized"] * 4 and codes[4:] == ["rate_limited"] * 2, codes
        # even the right token is refused while locked out: guessing gains nothing
        reply = await client.request("auth", token=token(sub="x"))
        assert reply["code"] == "rate_limited" and reply["retry_after_ms"] > 0, reply
        await client.ping()
    finally:
        await client.close()


@pytest.fixture
def limited(server: ServerFactory) -> ServerProcess:
    return server(
        "--jwt-secret",
        SECRET,
        "--publish-rate",
        "200",
        "--conn-publish-rate",
        "100",
        "--connect-rate",
        "20",
        "--auth-fail-limit",
        "20",
    )


async def test_floods_are_limited_while_a_well_behaved_client_stays_responsive(
    limited: ServerProcess,
) -> None:
    topic = unique("flood")
    abusive_tok = token(sub="abuser")
    good = await ws_from(limited, source=GOOD, tok=token(sub="good"))
    await welcomed(good)
    await good.subscribe("mine", [f"{topic}.good"])
    stop = asyncio.Event()
    pinger = asyncio.create_task(ping_latencies(good, stop))
    outcome: dict[str, int] = {}
    try:
        flood_started = time.monotonic()
        # 1. publish flood over one connection: 3000 pipelined publishes
        abuser = await ws_from(limited, source=ABUSER, tok=abusive_tok)
        await welcomed(abuser)
        publish_started = time.monotonic()
        for n in range(3000):
            await abuser.send(
                {"op": "publish", "id": f"p{n}", "event": {"topic": f"{topic}.bad", "type": "t"}}
            )
        await abuser.wait_for(lambda f: f.get("id") == "p2999", within=60)
        publish_s = time.monotonic() - publish_started
        replies = [f for f in abuser.frames if str(f.get("id", "")).startswith("p")]
        outcome["publish_acked"] = sum(1 for f in replies if f["op"] == "ack")
        outcome["publish_limited"] = sum(1 for f in replies if f.get("code") == "rate_limited")
        # 2. subscribe flood: subscribe/unsubscribe churn, each replaying the retained history
        for n in range(300):
            await abuser.send(
                {
                    "op": "subscribe",
                    "id": f"s{n}",
                    "sub": "churn",
                    "topics": [f"{topic}.>"],
                    "from": "earliest",
                }
            )
            await abuser.send({"op": "unsubscribe", "id": f"u{n}", "sub": "churn"})
        await abuser.wait_for(lambda f: f.get("id") == "u299", within=60)
        await abuser.close()
        # 3. HTTP publish flood
        async with http_from(limited, ABUSER, headers=bearer(abusive_tok)) as http:
            statuses = [
                (
                    await http.post(
                        "/v1/events", json={"events": [{"topic": f"{topic}.bad", "type": "t"}] * 50}
                    )
                ).status_code
                for _ in range(100)  # 5000 events against 200/s: limited whatever the machine's speed
            ]
        outcome["http_429"] = statuses.count(429)
        # 4. connection flood from one address
        refused = accepted = 0
        connect_started = time.monotonic()
        for _ in range(150):
            try:
                c = await ws_from(limited, source=ABUSER, tok=abusive_tok)
            except (InvalidStatus, OSError):
                refused += 1
                continue
            try:
                frame = await c.wait_for(lambda f: True, within=5)
                accepted += frame.get("op") == "welcome"
            except AssertionError:
                refused += c.close_code == 4029
            finally:
                await c.close()
        outcome["connect_accepted"], outcome["connect_refused"] = accepted, refused
        connect_s = time.monotonic() - connect_started
        flood_s = time.monotonic() - flood_started
        # the well-behaved client still publishes and receives
        for seq in range(5):
            await good.publish({"topic": f"{topic}.good", "type": "t", "data": {"seq": seq}})
        await good.wait_events("mine", 5)
    finally:
        stop.set()
        samples = await pinger
        with contextlib.suppress(Exception):
            await good.close()
    async with httpx.AsyncClient(base_url=limited.base_url, trust_env=False, timeout=scaled(10)) as http:
        metrics = (await http.get("/metrics")).text
    limited_publish = metric_value(metrics, "dash_rate_limited_total", 'what="publish"')
    limited_connect = metric_value(metrics, "dash_rate_limited_total", 'what="connect"')
    print(
        f"\nflood {flood_s:.1f}s: {json.dumps(outcome)}; well-behaved ping: {len(samples)} samples, "
        f"p50 {sorted(samples)[len(samples) // 2] * 1000:.1f} ms, p99 {p99(samples) * 1000:.1f} ms, "
        f"max {max(samples) * 1000:.1f} ms; dash_rate_limited_total publish={limited_publish:.0f} "
        f"connect={limited_connect:.0f}"
    )
    # what a token bucket may let through: its burst plus its rate over the time the flood took
    assert outcome["publish_acked"] <= 200 + 100 * publish_s + 10, (outcome, publish_s)  # per connection
    assert outcome["publish_limited"] > 0, outcome
    assert outcome["http_429"] > 0, outcome
    assert outcome["connect_refused"] > 0, outcome
    assert outcome["connect_accepted"] <= 40 + 20 * connect_s + 5, (outcome, connect_s)
    assert samples and p99(samples) < scaled(5.0), "the well-behaved client must stay responsive"
