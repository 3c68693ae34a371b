"""Authorization escalation: reading or writing outside a token's topic patterns.

Wildcards at every position are checked against a brute-force reference (a pattern is safe only if
every topic it can match is allowed), over WebSocket subscribe and HTTP history; `where` filters,
cursors, SSE resume and the swarm state must not leak; two tenants exchanging random traffic never
see each other's events. Tests fail if an attack works.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterator, Sequence

import httpx
import pytest
from helpers import Frame, WsClient, eventually, scaled
from servers import ServerFactory, ServerProcess

from .support import SECRET, bearer, error_of, token, unique, welcomed, ws_from

# The narrow reader: one whole swarm, and the status topic of every swarm.
ACL = ("swarm.s1.>", "swarm.*.status")
SEGMENTS = ("swarm", "s1", "zz", "status", "*", ">")  # zz: a swarm the ACL does not name
UNIVERSE_SEGMENTS = ("swarm", "s1", "zz", "status")


def _matches(pattern: Sequence[str], topic: Sequence[str]) -> bool:
    for i, seg in enumerate(pattern):
        if seg == ">":
            return len(topic) > i
        if i >= len(topic) or (seg != "*" and seg != topic[i]):
            return False
    return len(topic) == len(pattern)


def _universe() -> list[tuple[str, ...]]:
    return [t for n in range(1, 6) for t in itertools.product(UNIVERSE_SEGMENTS, repeat=n)]


def _patterns() -> Iterator[str]:
    for n in range(1, 5):
        for combo in itertools.product(SEGMENTS, repeat=n):
            if ">" in combo[:-1]:
                continue  # not a valid pattern: the server says bad_request, tested elsewhere
            yield ".".join(combo)


def reference_safe(pattern: str) -> bool:
    """Whether every topic of the universe `pattern` matches is matched by some ACL pattern.

    The universe holds a swarm the ACL does not name (zz) and topics one level deeper than any
    pattern, so a `*` or `>` that could reach a forbidden topic does reach one here.
    """
    pat = pattern.split(".")
    acls = [a.split(".") for a in ACL]
    return all(any(_matches(a, t) for a in acls) for t in _universe() if _matches(pat, t))


@pytest.fixture(scope="module")
def srv(module_server: ServerFactory) -> ServerProcess:
    return module_server(
        "--jwt-secret",
        SECRET,
        "--publish-rate",
        "0",
        "--conn-publish-rate",
        "0",
        "--max-subscriptions",
        "2000",
        "--auth-fail-limit",
        "0",
    )


def narrow() -> str:
    return token(sub="narrow", subscribe=ACL, publish=("swarm.s1.>",))


def admin() -> str:
    return token(sub="admin")


async def test_wildcards_at_every_position_never_reach_a_forbidden_topic(srv: ServerProcess) -> None:
    patterns = list(_patterns())
    safe = {p: reference_safe(p) for p in patterns}
    client = await ws_from(srv, tok=narrow())
    try:
        await welcomed(client)
        ids = {}
        for i, pattern in enumerate(patterns):  # pipelined: one round trip for the lot
            ids[f"p{i}"] = pattern
            await client.send({"op": "subscribe", "id": f"p{i}", "sub": f"p{i}", "topics": [pattern]})
        last = f"p{len(patterns) - 1}"
        await client.wait_for(lambda f: f.get("id") == last and f.get("op") in ("subscribed", "error"), 60)
        replies = {f["id"]: f for f in client.frames if f.get("id") in ids}
    finally:
        await client.close()
    leaks = [ids[i] for i, r in replies.items() if r["op"] == "subscribed" and not safe[ids[i]]]
    assert not leaks, f"subscriptions that reach forbidden topics were allowed: {leaks[:20]}"
    for i, reply in replies.items():
        if reply["op"] == "error":
            assert reply["code"] == "forbidden", (ids[i], reply)
    over = [ids[i] for i, r in replies.items() if r["op"] == "error" and safe[ids[i]]]
    allowed = sum(1 for r in replies.values() if r["op"] == "subscribed")
    print(
        f"\nwildcard matrix: {len(patterns)} patterns, {allowed} allowed, {len(patterns) - allowed} refused, "
        f"0 leaks; {len(over)} safe patterns refused by the conservative cover check: {over[:8]}"
    )
    # HTTP history applies the same check (sampled: every unsafe pattern with a wildcard, some safe)
    async with httpx.AsyncClient(base_url=srv.base_url, trust_env=False, timeout=scaled(30)) as http:
        sample = [p for p in patterns if not safe[p] and ("*" in p or ">" in p)][:300]
        sample += [p for p in patterns if safe[p]][:50]
        for pattern in sample:
            resp = await http.get("/v1/events", params={"topics": pattern}, headers=bearer(narrow()))
            if not safe[pattern]:
                assert resp.status_code == 403, (pattern, resp.status_code, resp.text[:200])
            else:
                assert resp.status_code in (200, 403), (pattern, resp.text[:200])


async def test_publish_cannot_use_wildcards_or_lookalike_topics(srv: ServerProcess) -> None:
    client = await ws_from(srv, tok=narrow())
    try:
        await welcomed(client)
        for topic_ in (
            "swarm.s1.*",
            "swarm.s1.>",
            "swarm.*.x",
            ">",
            "swarm.s1.\u200bx",
            "swarm.s1 .x",
            "swarm.s1",
        ):
            reply = await client.request("publish", event={"topic": topic_, "type": "t"})
            assert reply["op"] == "error" and reply["code"] in ("bad_request", "forbidden"), (topic_, reply)
        for topic_ in ("swarm.zz.status", "swarm.zz.agent.a", "swarm.s1x.a", "swarms.s1.a"):
            reply = await client.request("publish", event={"topic": topic_, "type": "t"})
            assert reply["op"] == "error" and reply["code"] == "forbidden", (topic_, reply)
    finally:
        await client.close()


async def test_where_filters_and_cursors_cannot_reach_outside_the_subscribed_topics(
    srv: ServerProcess,
) -> None:
    secret = unique("secret")
    reader = await ws_from(srv, tok=narrow())
    writer = await ws_from(srv, tok=admin())
    try:
        await welcomed(reader)
        await welcomed(writer)
        head = (await writer.publish({"topic": "swarm.s1.mark", "type": "t", "data": {"seq": -1}}))["offset"]
        filters = [
            {"topic": {"prefix": "swarm.zz"}},
            {"any": [{"topic": "swarm.zz.agent.a"}, {"topic": {"ne": "x"}}]},
            {"not": {"topic": {"prefix": "swarm.s1"}}},
            {"data.secret": {"exists": True}},
            {"labels.tenant": "zz"},
        ]
        for n, where in enumerate(filters):
            await reader.subscribe(f"w{n}", ["swarm.s1.>"], where=where)
        await reader.subscribe("resume", ["swarm.s1.>"], cursor=head)
        forged = head.split(".")[0] + ".0-0"  # a cursor from the start of the log
        await reader.subscribe("forged", ["swarm.s1.>"], cursor=forged)
        for i in range(20):
            await writer.publish(
                {
                    "topic": f"swarm.zz.agent.a{i % 3}",
                    "type": "t",
                    "labels": {"tenant": "zz"},
                    "data": {"secret": secret, "seq": i},
                }
            )
        marker = await writer.publish({"topic": "swarm.s1.end", "type": "t", "data": {"seq": 99}})
        await reader.wait_events("resume", 1)
        await eventually(lambda: reader.cursors.get("w0") is not None, what="the filtered cursor advance")
        leaked = [
            e for events in reader.events.values() for e in events if not e["topic"].startswith("swarm.s1.")
        ]
        assert not leaked, leaked[:3]
        assert all(secret not in str(f) for f in reader.frames)
        assert marker["offset"]
    finally:
        await reader.close()
        await writer.close()
    async with httpx.AsyncClient(base_url=srv.base_url, trust_env=False, timeout=scaled(30)) as http:
        page = await http.get(
            "/v1/events",
            params={"topics": "swarm.s1.>", "where": '{"topic":{"prefix":"swarm.zz"}}', "limit": "1000"},
            headers=bearer(narrow()),
        )
        assert page.status_code == 200 and secret not in page.text
        for params in (
            {},
            {"topics": ""},
            {"topics": ","},
            {"topics": "swarm.>"},
            {"topics": "swarm.s1.>,>"},
        ):
            resp = await http.get("/v1/events", params=params, headers=bearer(narrow()))
            assert resp.status_code in (400, 403), (params, resp.text)
            assert secret not in resp.text
        # SSE: no topics is a bad request (never "everything"); a forbidden resume is refused
        resp = await http.get("/v1/sse", headers=bearer(narrow()))
        assert resp.status_code == 400 and error_of(resp)["code"] == "bad_request"
        resp = await http.get(
            "/v1/sse", params={"topics": "swarm.zz.>"}, headers={**bearer(narrow()), "Last-Event-ID": forged}
        )
        assert resp.status_code == 403
        async with http.stream(
            "GET",
            "/v1/sse",
            params={"topics": "swarm.s1.>"},
            headers={**bearer(narrow()), "Last-Event-ID": forged},
        ) as stream:
            assert stream.status_code == 200
            text = ""
            async for chunk in stream.aiter_text():
                text += chunk
                if '"seq":99' in text:
                    break
        assert secret not in text and "swarm.zz" not in text


async def test_swarm_state_shows_only_whole_swarms_the_token_may_read(srv: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=srv.base_url, trust_env=False, timeout=scaled(30)) as http:
        events = [
            {"topic": f"swarm.{s}.agent.a1", "type": "agent.started", "data": {"agent_id": "a1"}}
            for s in ("s1", "zz")
        ]
        assert (
            await http.post("/v1/events", json={"events": events}, headers=bearer(admin()))
        ).status_code == 202

        async def listing(tok: str) -> list[str]:
            resp = await http.get("/v1/swarms", headers=bearer(tok))
            assert resp.status_code == 200, resp.text
            return [v["swarm_id"] for v in resp.json()["swarms"]]

        for _ in range(200):
            if {"s1", "zz"} <= set(await listing(admin())):
                break
            await asyncio.sleep(0.02)
        assert await listing(narrow()) == ["s1"]
        status_only = token(sub="status", subscribe=("swarm.*.status",), publish=())
        assert await listing(status_only) == [], "a partial ACL (status topics) sees no swarm state"
        wildcard_id = await http.get("/v1/swarms/*", headers=bearer(narrow()))
        assert wildcard_id.status_code in (400, 404), wildcard_id.text
        assert (await http.get("/v1/swarms/zz", headers=bearer(narrow()))).status_code == 403
        assert (await http.get("/v1/swarms/zz", headers=bearer(status_only))).status_code == 403
    client = await ws_from(srv, tok=status_only)
    try:
        await welcomed(client)
        reply = await client.subscribe("snap", ["swarm.*.status"], snapshot=True)
        snap = await client.wait_for(lambda f: f.get("op") == "snapshot")
        assert reply["op"] == "subscribed" and snap["swarms"] == [], snap
        wider = await client.request("subscribe", sub="x", topics=["swarm.*.>"], snapshot=True)
        assert wider["op"] == "error" and wider["code"] == "forbidden"
    finally:
        await client.close()


async def test_two_tenants_with_random_traffic_never_see_each_other(srv: ServerProcess) -> None:
    rng = random.Random(20261125)
    tenants = {name: unique(name) for name in ("ta", "tb")}
    toks = {
        name: token(sub=name, subscribe=(f"swarm.{ns}.>",), publish=(f"swarm.{ns}.>",))
        for name, ns in tenants.items()
    }
    clients: dict[str, WsClient] = {}
    try:
        for name in tenants:
            clients[name] = await ws_from(srv, tok=toks[name])
            await welcomed(clients[name])
        for name, ns in tenants.items():
            c = clients[name]
            await c.subscribe("all", [f"swarm.{ns}.>"])
            await c.subscribe("star", [f"swarm.{ns}.*.*"])
            await c.subscribe("where", [f"swarm.{ns}.>"], where={"priority": {"gte": "high"}})
            other = next(v for k, v in tenants.items() if k != name)
            for pattern in (
                f"swarm.{other}.>",
                "swarm.*.>",
                "swarm.>",
                ">",
                f"*.{other}.>",
                f"swarm.{other}.*",
            ):
                refused = await c.request("subscribe", sub=f"x{rng.random()}", topics=[pattern])
                assert refused["op"] == "error" and refused["code"] == "forbidden", (pattern, refused)
        sent: dict[str, list[int]] = {name: [] for name in tenants}
        refused_publishes = 0
        async with httpx.AsyncClient(base_url=srv.base_url, trust_env=False, timeout=scaled(30)) as http:
            for seq in range(300):
                name = rng.choice(sorted(tenants))
                ns = tenants[name]
                target = ns if rng.random() < 0.8 else next(v for k, v in tenants.items() if k != name)
                ev: Frame = {
                    "topic": f"swarm.{target}.{rng.choice(['agent', 'task'])}.{rng.choice('abc')}",
                    "type": "t",
                    "priority": rng.choice(["low", "normal", "high", "critical"]),
                    "data": {"seq": seq, "from": name},
                }
                if rng.random() < 0.5:
                    reply = await clients[name].request("publish", event=ev)
                    ok = reply["op"] == "ack"
                else:
                    resp = await http.post("/v1/events", json=ev, headers=bearer(toks[name]))
                    ok = resp.status_code == 202
                if target == ns:
                    assert ok, ev
                    sent[name].append(seq)
                else:
                    assert not ok, f"{name} published into {target}"
                    refused_publishes += 1
        for name in tenants:
            await clients[name].wait_events("all", len(sent[name]), within=30)
        await asyncio.sleep(0.3)
        for name, ns in tenants.items():
            got = [e for events in clients[name].events.values() for e in events]
            foreign = [e for e in got if not e["topic"].startswith(f"swarm.{ns}.")]
            assert not foreign, f"{name} received another tenant's events: {foreign[:3]}"
            assert sorted(e["data"]["seq"] for e in clients[name].events["all"]) == sent[name]
        print(
            f"\ntenants: {sum(map(len, sent.values()))} events, {refused_publishes} cross-tenant publishes "
            "refused, 0 cross-deliveries"
        )
    finally:
        for c in clients.values():
            await c.close()
