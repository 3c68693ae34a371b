"""Races at the replay/live boundary: an event published just before a subscribe must arrive once."""

from __future__ import annotations

import asyncio

from helpers import WsClient


async def test_event_published_just_before_a_cursor_subscribe_arrives_exactly_once(dev_server, topic):
    async with await WsClient.connect(dev_server.ws_url) as c:
        for round_ in range(30):
            t = f"{topic}.r{round_}"
            first = await c.publish({"topic": t, "type": "t", "data": {"n": 1}})
            # publish E2 and subscribe from E1's offset without waiting for the ack in between
            await c.send(
                {"op": "publish", "id": f"p{round_}", "event": {"topic": t, "type": "t", "data": {"n": 2}}}
            )
            reply = await c.subscribe(f"s{round_}", [t], cursor=first["offset"])
            assert reply["recovered"] is True
            await c.publish({"topic": t, "type": "t", "data": {"n": 3}})
            await c.wait_events(f"s{round_}", 2)
            await asyncio.sleep(0.05)
            ns = [e["data"]["n"] for e in c.events[f"s{round_}"]]
            assert ns == [2, 3], f"round {round_}: {ns}"


async def test_latest_subscribe_never_gets_the_event_at_its_own_start(dev_server, topic):
    async with await WsClient.connect(dev_server.ws_url) as c, await WsClient.connect(dev_server.ws_url) as p:
        for round_ in range(30):
            t = f"{topic}.l{round_}"
            await p.send(
                {"op": "publish", "id": f"q{round_}", "event": {"topic": t, "type": "t", "data": {"n": 1}}}
            )
            reply = await c.subscribe(f"s{round_}", [t])
            await p.publish({"topic": t, "type": "t", "data": {"n": 2}})
            await c.wait_events(f"s{round_}", 1)
            await asyncio.sleep(0.05)
            got = c.events[f"s{round_}"]
            offsets = [e["offset"] for e in got]
            assert reply["cursor"] not in offsets, (
                f"round {round_}: the event at the start cursor was delivered"
            )
            assert len(offsets) == len(set(offsets))
