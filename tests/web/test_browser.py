"""The dashboard in a real headless Chromium against real servers: the state of a swarm opened
late, events in order, agent tiles changing live, priority highlighting, pause/resume, filters,
the login field, and a resume without gaps across a server crash (Redis bus)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis_servers
from helpers import scaled
from playwright.async_api import Browser, Page, expect
from servers import ServerFactory

from dash_stream.server.auth import mint_token

from .conftest import RestartableFactory

SECRET = "browser-tests-secret-0123456789abcdef0123"
WAIT_MS = scaled(15) * 1000
ROWS = "#rows tr.event"


def ev(swarm: str, agent: str, type_: str, seq: int, **extra: Any) -> dict[str, Any]:
    """A lifecycle event of `agent`, on one topic per swarm so that the whole stream has one order."""
    doc: dict[str, Any] = {
        "topic": f"swarm.{swarm}.lifecycle",
        "type": type_,
        "data": {"agent_id": agent, "seq": seq},
    }
    doc.update(extra)
    return doc


async def post(
    http: httpx.AsyncClient, base_url: str, events: list[dict[str, Any]], token: str = ""
) -> list[str]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    resp = await http.post(f"{base_url}/v1/events", json={"events": events}, headers=headers)
    assert resp.status_code == 202, resp.text
    offsets: list[str] = resp.json()["offsets"]
    return offsets


async def open_page(browser: Browser, url: str, errors: list[str]) -> Page:
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    response = await page.goto(url)
    assert response is not None and response.ok
    assert "script-src 'self'" in response.headers["content-security-policy"]
    return page


async def rows(page: Page) -> list[str]:
    """The offsets of the event rows, top to bottom."""
    offsets: list[str] = await page.eval_on_selector_all(ROWS, "rs => rs.map(r => r.dataset.offset)")
    return offsets


async def wait_rows(page: Page, n: int) -> list[str]:
    """The row offsets once there are `n` rows (polled from here: the page's CSP forbids eval)."""
    await expect(page.locator(ROWS)).to_have_count(n, timeout=WAIT_MS)
    return await rows(page)


async def tile(page: Page, swarm: str, agent: str, status: str) -> None:
    selector = f'.swarm[data-swarm="{swarm}"] .tile[data-agent="{agent}"][data-status="{status}"]'
    await page.wait_for_selector(selector, timeout=WAIT_MS)


async def state(page: Page) -> str:
    value: str = await page.get_attribute("#conn", "data-state") or ""
    return value


async def test_the_dashboard_shows_state_and_live_events(
    server: ServerFactory, browser: Browser, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    srv = server("--dev", "--publish-rate", "0")
    swarm = f"e{uuid.uuid4().hex[:6]}"
    # published before the page opens: the tiles come from the snapshot, not from a replay
    await post(
        http,
        srv.base_url,
        [
            ev(swarm, "a1", "agent.spawned", 0),
            ev(swarm, "a2", "agent.spawned", 1),
            ev(swarm, "a3", "agent.spawned", 2),
        ],
    )
    errors: list[str] = []
    page = await open_page(browser, f"{srv.base_url}/?topics=swarm.{swarm}.>", errors)
    await page.wait_for_selector("#conn[data-state=open]", timeout=WAIT_MS)
    for agent in ("a1", "a2", "a3"):
        await tile(page, swarm, agent, "spawned")
    assert await rows(page) == [], "the event stream starts live"

    live = [
        ev(swarm, "a1", "agent.started", 3),
        ev(swarm, "a2", "agent.started", 4),
        ev(swarm, "a3", "agent.failed", 5, priority="high"),
        {
            "topic": f"swarm.{swarm}.errors",
            "type": "error",
            "priority": "critical",
            "data": {"message": "db down"},
        },
        ev(swarm, "a1", "agent.heartbeat", 6, priority="low"),
    ]
    offsets = await post(http, srv.base_url, live)
    assert await wait_rows(page, len(live)) == offsets, "every event once, in order"
    await tile(page, swarm, "a1", "running")
    await tile(page, swarm, "a3", "failed")
    card = page.locator(f'.swarm[data-swarm="{swarm}"]')
    assert "db down" in (await card.locator(".last-error").inner_text())
    assert await card.locator('.count[data-status="running"]').get_attribute("data-count") == "2"

    colours = await page.eval_on_selector_all(
        ROWS, "rs => rs.map(r => [r.dataset.priority, getComputedStyle(r).backgroundColor])"
    )
    by_priority = dict(colours)
    assert by_priority["critical"] != by_priority["low"] and by_priority["high"] != by_priority["low"]
    assert by_priority["critical"] != by_priority["high"], "critical stands out from high"

    # pause: events arrive (the note counts them) but are not shown until resume
    await page.click("#pause")
    paused = await post(
        http, srv.base_url, [ev(swarm, "a1", "agent.completed", 7), ev(swarm, "a2", "agent.killed", 8)]
    )
    await expect(page.locator("#paused-note")).to_have_text(re.compile(r"^2 new"), timeout=WAIT_MS)
    assert len(await rows(page)) == len(live)
    await tile(page, swarm, "a1", "completed")  # the tiles do not pause
    await page.click("#pause")
    assert await wait_rows(page, len(live) + 2) == offsets + paused

    # a where filter: only high and critical from now on
    await page.fill("#f-where", '{"priority":{"gte":"high"}}')
    await page.click("#filters button[type=submit]")
    await page.wait_for_selector("#rows tr.note", timeout=WAIT_MS)
    filtered = await post(
        http,
        srv.base_url,
        [ev(swarm, "a2", "agent.started", 9), ev(swarm, "a2", "agent.failed", 10, priority="critical")],
    )
    after_filter = await wait_rows(page, len(live) + 3)
    assert after_filter == [*offsets, *paused, filtered[1]]

    shot = tmp_path / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert errors == [], errors


async def test_the_page_asks_for_a_token_and_accepts_one_in_the_url(
    server: ServerFactory, browser: Browser, http: httpx.AsyncClient
) -> None:
    srv = server("--jwt-secret", SECRET)
    reader = mint_token(SECRET, sub="viewer", subscribe=["swarm.s1.>"], publish=[])
    writer = mint_token(SECRET, sub="writer", subscribe=[], publish=[">"])
    await post(
        http, srv.base_url, [ev("s1", "a1", "agent.started", 0), ev("s2", "b1", "agent.started", 1)], writer
    )
    errors: list[str] = []

    page = await open_page(browser, f"{srv.base_url}/", errors)
    await page.wait_for_selector("#login:not([hidden])", timeout=WAIT_MS)
    assert await state(page) == "unauthorized"
    await page.fill("#token", reader)
    await page.click("#login button[type=submit]")
    await page.wait_for_selector("#conn[data-state=open]", timeout=WAIT_MS)
    await tile(page, "s1", "a1", "running")
    assert await page.locator('.swarm[data-swarm="s2"]').count() == 0, "only the swarms the token may read"

    url_page = await open_page(browser, f"{srv.base_url}/?token={reader}", errors)
    await url_page.wait_for_selector("#conn[data-state=open]", timeout=WAIT_MS)
    assert "token=" not in url_page.url, "the token leaves the address bar"
    await tile(url_page, "s1", "a1", "running")
    await post(http, srv.base_url, [ev("s1", "a1", "agent.completed", 2)], writer)
    await tile(url_page, "s1", "a1", "completed")
    assert "token" not in srv.log_text()
    assert errors == [], errors


async def test_the_page_resumes_without_gaps_after_a_server_crash(
    restartable: RestartableFactory,
    server: ServerFactory,
    browser: Browser,
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    redis = redis_servers.standalone()
    try:
        args = ("--dev", "--publish-rate", "0", "--bus", redis.url, "--redis-partitions", "4")
        node = restartable(args)
        node.start()
        other = server(*args)  # a second node on the same log keeps taking events while the first is down
        swarm = f"r{uuid.uuid4().hex[:6]}"
        errors: list[str] = []
        page = await open_page(browser, f"{node.base_url}/?topics=swarm.{swarm}.>", errors)
        await page.wait_for_selector("#conn[data-state=open]", timeout=WAIT_MS)

        before = await post(
            http,
            node.base_url,
            [ev(swarm, f"a{i}", "agent.spawned", i) for i in range(4)]
            + [ev(swarm, "a0", "agent.started", 4)],
        )
        assert await wait_rows(page, 5) == before
        await tile(page, swarm, "a0", "running")

        node.kill()
        await page.wait_for_selector("#conn[data-state=reconnecting]", timeout=WAIT_MS)
        during = await post(
            http,
            other.base_url,
            [
                ev(swarm, "a0", "agent.completed", 5),
                ev(swarm, "a1", "agent.started", 6),
                ev(swarm, "a2", "agent.failed", 7, priority="critical"),
                ev(swarm, "a3", "agent.killed", 8),
            ],
        )
        node.start()
        await page.wait_for_selector("#conn[data-state=open]", timeout=WAIT_MS)
        after = await post(http, node.base_url, [ev(swarm, "a1", "agent.completed", 9)])
        shown = await wait_rows(page, 10)
        assert shown == before + during + after, "no missing and no duplicated rows"
        for agent, status in (("a0", "completed"), ("a1", "completed"), ("a2", "failed"), ("a3", "killed")):
            await tile(page, swarm, agent, status)
        assert await page.locator("#rows tr.gap").count() == 0

        shot = tmp_path / "dashboard-after-restart.png"
        await page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
        # the browser logs each refused reconnect attempt while the node is down; nothing else
        assert [e for e in errors if "ERR_CONNECTION_REFUSED" not in e] == [], errors
    finally:
        redis.stop()
