"""Pipelined publishes: answered in order, one bus append per burst, errors only for the bad ones."""

from __future__ import annotations

import json

import pytest
import redis_servers
from helpers import WsClient


@pytest.fixture(params=["memory", "redis"])
def burst_server(request, server):
    if request.param == "memory":
        yield server("--dev", "--publish-rate", "0", "--conn-publish-rate", "0")
        return
    deployment = redis_servers.standalone()
    try:
        yield server("--dev", "--publish-rate", "0", "--conn-publish-rate", "0", "--bus", deployment.url)
    finally:
        deployment.stop()


async def test_a_burst_of_publishes_is_acked_in_order_with_errors_only_for_bad_frames(burst_server, topic):
    async with (
        await WsClient.connect(burst_server.ws_url) as sub,
        await WsClient.connect(burst_server.ws_url) as pub,
    ):
        await sub.subscribe("s", [f"{topic}.>"])
        frames = []
        for i in range(400):
            if i % 97 == 50:
                frames.append({"op": "publish", "id": f"p{i}", "event": {"topic": "bad..topic", "type": "t"}})
            elif i % 97 == 60:
                frames.append(json.dumps({"op": "publish", "id": f"p{i}"})[:-3])  # malformed JSON
            else:
                # i and i + 380 share an id and a topic: a retry (the Redis bus dedups per partition)
                ev = {
                    "topic": f"{topic}.a{i % 380 % 3}",
                    "type": "t",
                    "data": {"seq": i},
                    "id": f"e{i % 380}",
                }
                frames.append({"op": "publish", "id": f"p{i}", "event": ev})
        start = len(pub.frames)
        for frame in frames:  # all sent before any reply is read: the server sees bursts
            await pub.send_raw(frame if isinstance(frame, str) else json.dumps(frame))
        await pub.wait_for(lambda f: f.get("id") == "p399", within=30, start=start)
        replies = [f for f in pub.frames[start:] if f.get("op") in ("ack", "error")]
        ids = [f.get("id") for f in replies if f.get("id")]
        sent = [f"p{i}" for i in range(400) if i % 97 != 60]
        assert ids == sent, "acks and errors must come back in publish order"
        errors = {f["id"] for f in replies if f["op"] == "error" and f.get("id")}
        assert errors == {f"p{i}" for i in range(400) if i % 97 == 50}
        malformed = [f for f in replies if f["op"] == "error" and f.get("id") is None]
        assert len(malformed) == len([i for i in range(400) if i % 97 == 60])
        acks = {f["id"]: f for f in replies if f["op"] == "ack"}
        # ids e0..e19 were sent twice (i and i + 380): the second is a dedup repeat with the same offset
        for i in range(380, 400):
            if f"p{i}" in acks and f"p{i - 380}" in acks:
                assert acks[f"p{i}"]["duplicate"] is True
                assert acks[f"p{i}"]["offset"] == acks[f"p{i - 380}"]["offset"]
        expected = len({f"e{i % 380}" for i in range(400) if i % 97 not in (50, 60)})
        await sub.wait_events("s", expected, within=30)
        seqs = [e["data"]["seq"] for e in sub.events["s"]]
        assert len(seqs) == expected and len(set(seqs)) == expected
        for lane in range(3):  # one topic keeps publish order
            lane_seqs = [s for s in seqs if s % 380 % 3 == lane]
            assert lane_seqs == sorted(lane_seqs)
