"""The SDK against a real server: publish, subscribe, resume, filters, buffers, sync helpers."""

from __future__ import annotations

import asyncio
import logging

import pytest

from client.dash_server import DashServer, scaled
from client.sdk_helpers import take
from dash_stream.client import Client, ClientError, Event, EventIn, PublishError
from dash_stream.client.sync import publish_many, tail


@pytest.mark.parametrize("subprotocol", ["json", "msgpack"])
async def test_published_events_arrive_typed_in_order_with_their_offsets(
    live_server: DashServer, unique_topic: str, subprotocol: str
) -> None:
    async with (
        Client(live_server.url, subprotocol=subprotocol) as client,  # type: ignore[arg-type]
        client.subscribe([f"{unique_topic}.>"]) as stream,
    ):
        assert stream.recovered and stream.cursor is not None
        offsets = []
        for i in range(5):
            event = {
                "topic": f"{unique_topic}.a",
                "type": "task.step",
                "labels": {"n": str(i)},
                "data": {"i": i},
            }
            offsets.append(await client.publish(event))
        events = await take(stream, 5)
    assert all(isinstance(e, Event) for e in events)
    assert [e.data for e in events] == [{"i": i} for i in range(5)]
    assert [e.labels for e in events] == [{"n": str(i)} for i in range(5)]
    assert [e.offset for e in events] == offsets
    assert stream.cursor == offsets[-1]


async def test_publish_accepts_an_eventin_and_a_repeat_of_its_id_gets_the_same_offset(
    live_server: DashServer, unique_topic: str
) -> None:
    event = EventIn(topic=f"{unique_topic}.a", type="agent.failed", id="e-1", source="test", priority="high")
    async with Client(live_server.url) as client:
        first = await client.publish(event)
        again = await client.publish(event)
    assert first == again


async def test_subscribe_from_earliest_replays_history_then_continues_live(
    live_server: DashServer, unique_topic: str
) -> None:
    async with Client(live_server.url) as client:
        for i in range(3):
            await client.publish({"topic": f"{unique_topic}.h", "type": "t", "data": i})
        async with client.subscribe(f"{unique_topic}.>", from_="earliest") as stream:
            assert stream.replayed == 3
            await client.publish({"topic": f"{unique_topic}.h", "type": "t", "data": 3})
            assert [e.data for e in await take(stream, 4)] == [0, 1, 2, 3]


async def test_resuming_from_a_saved_cursor_yields_only_what_came_after_it(
    live_server: DashServer, unique_topic: str
) -> None:
    async with Client(live_server.url) as client:
        async with client.subscribe(f"{unique_topic}.>", from_="earliest") as stream:
            for i in range(4):
                await client.publish({"topic": f"{unique_topic}.r", "type": "t", "data": i})
            await take(stream, 2)
            saved = stream.cursor  # moves per event, even inside one frame
        async with client.subscribe(f"{unique_topic}.>", cursor=saved) as resumed:
            assert resumed.recovered
            assert [e.data for e in await take(resumed, 2)] == [2, 3]


async def test_a_filtered_subscription_sees_only_matches_and_its_cursor_advances_past_the_rest(
    live_server: DashServer, unique_topic: str
) -> None:
    where = {"priority": {"gte": "high"}}
    async with (
        Client(live_server.url) as client,
        client.subscribe(f"{unique_topic}.>", where=where) as stream,
    ):
        start = stream.cursor
        last = ""
        for i in range(3):
            last = await client.publish(
                {"topic": f"{unique_topic}.f", "type": "t", "priority": "low", "data": i}
            )
        async with asyncio.timeout(scaled(10)):
            async for batch in stream.batches():  # the advance arrives as an empty batch
                assert batch.events == ()
                if batch.cursor == last:
                    break
        assert stream.cursor == last != start
        await client.publish({"topic": f"{unique_topic}.f", "type": "t", "priority": "critical", "data": "x"})
        assert [e.data for e in await take(stream, 1)] == ["x"]


async def test_a_consumer_slower_than_its_buffer_still_gets_every_event_once(
    live_server: DashServer, unique_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dash_stream.client")
    async with (
        Client(live_server.url, max_buffered_events=10) as client,
        client.subscribe(f"{unique_topic}.>") as stream,
    ):
        for i in range(200):
            await client.publish({"topic": f"{unique_topic}.s", "type": "t", "data": i})
        events = await take(stream, 200, within=30)
    assert [e.data for e in events] == list(range(200))
    assert "pausing it" in caplog.text  # the buffer overflowed and the stream resubscribed


async def test_invalid_events_raise_publish_error_with_the_code_and_the_path(
    live_server: DashServer, unique_topic: str
) -> None:
    async with Client(live_server.url) as client:
        with pytest.raises(PublishError) as caught:
            await client.publish({"topic": f"{unique_topic}.a", "type": "t", "labels": {"n": 1}})
        assert caught.value.code == "bad_request"
        assert "labels" in caught.value.message
        with pytest.raises(PublishError) as caught:
            await client.publish({"topic": f"{unique_topic}.a", "type": "t", "time": "yesterday"})
        assert caught.value.code == "bad_request" and "time" in caught.value.message
        assert await client.ping() >= 0  # the connection is still usable


async def test_a_refused_subscription_raises_client_error_and_the_client_stays_usable(
    live_server: DashServer,
) -> None:
    async with Client(live_server.url) as client:
        with pytest.raises(ClientError) as caught:
            async with client.subscribe(["a.>.b"]):
                pass
        assert caught.value.code == "bad_request"
        assert await client.ping() >= 0


def test_sync_publish_many_and_tail_round_trip(live_server: DashServer, unique_topic: str) -> None:
    events = [{"topic": f"{unique_topic}.sync", "type": "t", "data": i} for i in range(20)]
    offsets = publish_many(live_server.url, events)
    assert len(offsets) == len(set(offsets)) == 20
    got = list(tail(live_server.url, [f"{unique_topic}.>"], from_="earliest", limit=20))
    assert [e.data for e in got] == list(range(20))
    assert [e.offset for e in got] == offsets
