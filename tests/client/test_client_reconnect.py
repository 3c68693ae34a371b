"""Auto-reconnect, exact resume, close codes and token refresh, against real servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from client.conftest import JWT_SECRET
from client.dash_server import DashServer, free_port, scaled
from client.sdk_helpers import eventually, take
from dash_stream.client import Client, ClientError, ConnectError
from dash_stream.server.auth import mint_token


def drop_connection(client: Client) -> object:
    """Cut the client's TCP connection without a close frame, as a dead network would (1006)."""
    ws = client._link.ws
    assert ws is not None, "the client is not connected"
    ws.transport.abort()
    return ws


async def publish_sequence(url: str, topic: str, count: int, stop: asyncio.Event) -> None:
    """Publish data 0..count-1 on `topic` from a client of its own, pacing itself lightly."""
    async with Client(url) as publisher:
        for i in range(count):
            await publisher.publish({"topic": topic, "type": "seq", "data": i})
            if i % 10 == 9:
                await asyncio.sleep(0.005)  # let the consumer's reconnects interleave with publishing
            if stop.is_set():
                return


async def test_after_dropped_connections_the_stream_resumes_with_no_gap_and_no_duplicate(
    live_server: DashServer, unique_topic: str
) -> None:
    total = 600
    drop_after = [100, 250, 400]
    dropped: list[object] = []
    seen: list[int] = []
    stop = asyncio.Event()
    async with Client(live_server.url) as client, client.subscribe(f"{unique_topic}.>") as stream:
        publisher = asyncio.create_task(publish_sequence(live_server.url, f"{unique_topic}.seq", total, stop))
        try:
            async with asyncio.timeout(scaled(45)):
                async for event in stream:
                    assert isinstance(event.data, int)
                    seen.append(event.data)
                    # each drop hits a fresh connection (events may come from the buffer meanwhile)
                    fresh = client._link.ws is not None and client._link.ws not in dropped
                    if drop_after and len(seen) >= drop_after[0] and fresh:
                        dropped.append(drop_connection(client))
                        drop_after.pop(0)
                    if len(seen) == total:
                        break
        finally:
            stop.set()
            await publisher
        await client.publish({"topic": f"{unique_topic}.end", "type": "t"})  # waits out the last reconnect
        reconnects = client.reconnects
    assert seen == list(range(total))
    assert len(dropped) == 3
    assert reconnects >= 3


async def test_publishes_cut_off_by_a_dropped_connection_are_sent_again_exactly_once(
    live_server: DashServer, unique_topic: str
) -> None:
    topic = f"{unique_topic}.p"
    async with Client(live_server.url) as client:
        pending = [
            asyncio.create_task(client.publish({"topic": topic, "type": "t", "data": i})) for i in range(50)
        ]
        await asyncio.sleep(0)
        drop_connection(client)
        offsets = await asyncio.gather(*pending)
        async with client.subscribe(topic, from_="earliest") as stream:
            assert stream.replayed == 50
    assert len(set(offsets)) == 50


async def test_a_server_restart_closes_with_1001_and_the_stream_reports_epoch_changed(
    start_server: Callable[..., DashServer], unique_topic: str
) -> None:
    port = free_port()
    first = start_server("--dev", port=port)
    async with Client(first.url) as client, client.subscribe(f"{unique_topic}.>") as stream:
        await client.publish({"topic": f"{unique_topic}.a", "type": "t", "data": "before"})
        assert [e.data for e in await take(stream, 1)] == ["before"]
        first.stop()  # graceful: 1001 with a retry_after_ms
        start_server("--dev", port=port)
        # sent as soon as the client is back (publishes wait through a reconnect)
        await client.publish({"topic": f"{unique_topic}.a", "type": "t", "data": "after"})
        assert [e.data for e in await take(stream, 1)] == ["after"]
        assert stream.recovered is False
        assert stream.reason == "epoch_changed"
        assert client.reconnects >= 1


async def test_a_bad_token_raises_client_error_once_without_reconnecting(auth_server: DashServer) -> None:
    calls = 0

    async def bad_token() -> str:
        nonlocal calls
        calls += 1
        return "not-a-jwt"

    started = time.monotonic()
    with pytest.raises(ClientError) as caught:
        async with Client(auth_server.url, token_provider=bad_token):
            pass
    assert caught.value.close_code == 4501
    assert caught.value.code == "unauthorized"
    assert "4501" in str(caught.value)
    assert calls == 1
    assert time.monotonic() - started < scaled(5)

    with pytest.raises(ClientError) as caught:
        async with Client(auth_server.url, token="not-a-jwt"):
            pass
    assert caught.value.close_code == 4501


async def test_an_expired_token_without_a_provider_ends_the_stream_with_client_error(
    auth_server: DashServer, unique_topic: str
) -> None:
    token = mint_token(JWT_SECRET, sub="short", subscribe=[">"], publish=[], ttl_s=2)
    async with (
        Client(auth_server.url, token=token) as client,
        client.subscribe(f"{unique_topic}.>") as stream,
    ):
        with pytest.raises(ClientError) as caught:
            await take(stream, 1, within=15)
        assert caught.value.close_code == 4501
        assert client.reconnects == 0
        with pytest.raises(ClientError):
            await client.ping()


async def test_a_token_provider_refreshes_before_exp_so_the_connection_survives(
    auth_server: DashServer, unique_topic: str
) -> None:
    issued: list[float] = []

    async def provider() -> str:
        issued.append(time.time())
        return mint_token(JWT_SECRET, sub="refresher", subscribe=[">"], publish=[">"], ttl_s=4)

    async with Client(auth_server.url, token_provider=provider) as client:
        first_exp = int(issued[0] + 4)
        async with client.subscribe(f"{unique_topic}.>") as stream:
            await asyncio.sleep(first_exp + 1 - time.time())  # wall-clock: past the first token's exp
            await client.publish({"topic": f"{unique_topic}.a", "type": "t", "data": "still here"})
            assert [e.data for e in await take(stream, 1)] == ["still here"]
        assert client.reconnects == 0
        assert len(issued) >= 2


async def test_when_refresh_fails_the_4501_at_exp_is_answered_by_reconnecting_with_a_fresh_token(
    auth_server: DashServer, unique_topic: str
) -> None:
    calls = 0

    async def provider() -> str:
        # a new subject every time: the server refuses such a refresh, so the token runs out
        nonlocal calls
        calls += 1
        return mint_token(JWT_SECRET, sub=f"rotating-{calls}", subscribe=[">"], publish=[">"], ttl_s=3)

    async with (
        Client(auth_server.url, token_provider=provider) as client,
        client.subscribe(f"{unique_topic}.>") as stream,
    ):
        await client.publish({"topic": f"{unique_topic}.a", "type": "t", "data": 0})
        await eventually(lambda: client.reconnects > 0, "the 4501 at exp and a reconnect")
        await client.publish({"topic": f"{unique_topic}.a", "type": "t", "data": 1})
        assert [e.data for e in await take(stream, 2)] == [0, 1]
        assert stream.recovered


async def test_connection_refused_raises_connect_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectError) as caught:
        async with Client(url, open_timeout=scaled(5)):
            pass
    assert caught.value.reason == "connection refused"
    assert "cannot connect to ws://127.0.0.1" in str(caught.value)
