"""Resource exhaustion: slowloris headers and bodies, idle connections past `max_connections`,
never-reading consumers, huge `where` filters and many subscriptions. Every resource is bounded:
the limit holds, the server's RSS (from /proc) stays within a generous bound, and the metrics and
logs show what was refused. Figures are printed."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import httpx
from helpers import RawWebSocket, WsClient, eventually, metric_value, scaled
from servers import ServerFactory

from .support import rss_mib, unique, welcomed, ws_from


async def test_slowloris_connections_are_closed_and_the_server_keeps_answering(server: ServerFactory) -> None:
    srv = server("--dev", "--header-timeout", "1", "--body-timeout", "1", "--keep-alive", "1")
    idle: list[socket.socket] = []
    trickle: list[socket.socket] = []
    try:
        for _ in range(150):  # connect and say nothing
            s = socket.create_connection(("127.0.0.1", srv.port))
            idle.append(s)
        for _ in range(50):  # a header line a byte at a time
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nX-A: ")
            trickle.append(s)
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=srv.base_url, trust_env=False, timeout=scaled(5)) as http:
            latencies = []
            while time.monotonic() - started < 2.5:
                for s in trickle:
                    with contextlib.suppress(OSError):
                        s.send(b"a")
                t0 = time.perf_counter()
                assert (await http.get("/healthz")).status_code == 200
                latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.1)
            for s in idle + trickle:
                s.setblocking(False)
            deadline = time.monotonic() + scaled(10)
            open_ = idle + trickle
            while open_ and time.monotonic() < deadline:
                still = []
                for s in open_:
                    try:
                        if s.recv(4096) == b"":
                            continue
                        still.append(s)  # a 408 arrived: the close follows
                    except BlockingIOError:
                        still.append(s)
                    except OSError:
                        continue
                open_ = still
                await asyncio.sleep(0.05)
            assert not open_, f"{len(open_)} slow connections still open"
            metrics = (await http.get("/metrics")).text
        closed_s = time.monotonic() - started
        idle_n = metric_value(metrics, "dash_http_refused_total", 'reason="idle"')
        slow_n = metric_value(metrics, "dash_http_refused_total", 'reason="header_timeout"')
        print(
            f"\nslowloris: 200 connections closed within {closed_s:.1f}s (idle {idle_n:.0f}, slow headers "
            f"{slow_n:.0f}); /healthz max {max(latencies) * 1000:.1f} ms meanwhile"
        )
        assert idle_n >= 150 and slow_n >= 50
        assert "request headers not received within 1 s" in srv.log_text()
    finally:
        for s in idle + trickle:
            s.close()


async def test_idle_websockets_beyond_max_connections_get_the_documented_close(server: ServerFactory) -> None:
    srv = server("--dev", "--max-connections", "20", "--connect-rate", "1000")
    clients: list[WsClient] = []
    try:
        for _ in range(25):
            clients.append(await ws_from(srv))
        await eventually(lambda: sum(c.done.is_set() for c in clients) >= 5, what="five refused connections")
        await asyncio.sleep(0.3)  # and no more
        closed = [c for c in clients if c.done.is_set()]
        assert len(closed) == 5, [c.close_code for c in clients]
        for c in closed:
            assert c.close_code == 4000 and "server full" in (c.close_reason or ""), c.close_reason
        async with httpx.AsyncClient(base_url=srv.base_url, trust_env=False, timeout=scaled(5)) as http:
            metrics = (await http.get("/metrics")).text
        assert metric_value(metrics, "dash_connections", 'transport="ws"') == 20
        assert metric_value(metrics, "dash_ws_closes_total", 'code="4000"') == 5
        # a slot frees up when a client leaves
        await clients[0].close()
        await asyncio.sleep(0.2)
        late = await ws_from(srv)
        clients.append(late)
        await welcomed(late)
        await late.ping()
    finally:
        for c in clients:
            await c.close()


async def test_a_consumer_that_never_reads_is_closed_4008_and_memory_stays_bounded(
    server: ServerFactory,
) -> None:
    srv = server("--dev", "--publish-rate", "0", "--conn-publish-rate", "0", "--outbox-max-bytes", "2000000")
    topic = unique("slow")
    payload = "x" * 4000
    async with httpx.AsyncClient(base_url=srv.base_url, trust_env=False, timeout=scaled(30)) as http:
        for start in range(0, 4000, 500):
            events = [
                {"topic": topic, "type": "t", "data": {"p": payload, "seq": i}}
                for i in range(start, start + 500)
            ]
            assert (await http.post("/v1/events", json={"events": events})).status_code == 202
        before = rss_mib(srv)
        stalled = [await RawWebSocket.connect(srv.port, rcvbuf=4096, buffer_limit=4096) for _ in range(10)]
        try:
            for raw in stalled:
                await raw.send_json(
                    {"op": "subscribe", "id": "1", "sub": "s", "topics": [topic], "from": "earliest"}
                )
            await asyncio.sleep(1.0)
            peak = rss_mib(srv)
            metrics = (await http.get("/metrics")).text
        finally:
            for raw in stalled:
                await raw.abort()
    closes = metric_value(metrics, "dash_slow_consumer_closes_total")
    print(
        f"\nnever-reading consumers: 10 x 16 MB of replay, RSS {before:.0f} -> {peak:.0f} MiB, "
        f"{closes:.0f} closed 4008"
    )
    assert closes == 10, metrics
    assert peak - before < 150, "each outbox is bounded by --outbox-max-bytes"


async def test_huge_filters_and_many_subscriptions_are_bounded(server: ServerFactory) -> None:
    srv = server("--dev", "--connect-rate", "1000")
    before = rss_mib(srv)
    clients: list[WsClient] = []
    refused = 0
    try:
        # attack: 100 subscriptions per connection, each with a where filter of ~900 KB
        huge = {"data.x": {"in": [f"{k}" + "y" * 3500 for k in range(256)]}}
        for _ in range(3):
            client = await ws_from(srv)
            clients.append(client)
            await welcomed(client)
            for i in range(100):
                await client.send(
                    {"op": "subscribe", "id": f"h{i}", "sub": f"h{i}", "topics": [f"a{i}.>"], "where": huge}
                )
            await client.wait_for(lambda f: f.get("id") == "h99", within=60)
            refused += sum(1 for f in client.frames if f.get("op") == "error" and f["code"] == "bad_request")
        after_huge = rss_mib(srv)
        # the most a connection may hold: max_subscriptions x the largest filter allowed (16 KiB)
        largest = {"data.x": {"in": [f"{k}" + "y" * 50 for k in range(256)]}}
        for client in clients:
            for i in range(100):
                await client.send(
                    {
                        "op": "subscribe",
                        "id": f"m{i}",
                        "sub": f"m{i}",
                        "topics": [f"b{i}.>"],
                        "where": largest,
                    }
                )
            await client.wait_for(lambda f: f.get("id") == "m99", within=60)
            assert sum(1 for f in client.frames if f.get("op") == "subscribed") == 100
            extra = await client.request("subscribe", sub="one-more", topics=["c.>"])
            assert extra["op"] == "error" and extra["code"] == "too_large", extra
        after_max = rss_mib(srv)
        await clients[0].ping()
    finally:
        for client in clients:
            await client.close()
    print(
        f"\nfilters: RSS {before:.0f} MiB -> {after_huge:.0f} after 300 x 900 KB filters "
        f"({refused} refused) -> "
        f"{after_max:.0f} after 300 subscriptions with the largest filter allowed"
    )
    assert refused == 300, "a where filter over 16 KiB is bad_request"
    assert after_huge - before < 60, "refused filters are not kept"
    assert after_max - before < 200, "3 connections at max_subscriptions stay within a generous bound"
