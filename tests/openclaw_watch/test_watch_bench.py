"""How many events/s the watcher sustains: recorded frames replayed through the very code the watcher
runs (`Pipeline` -> `Outbox` -> `ServerSink`, i.e. translate, origin hold, ids, SDK publish with
acks) against a real `dash-stream serve`. Bounded: a few hundred copies of the recorded runs, each
copy with its own run ids and session keys, so that nothing is deduplicated.
"""

from __future__ import annotations

import json
import re
import time

import httpx
from helpers import scaled
from servers import ServerFactory

from dash_stream.openclaw.metrics import WatchMetrics
from dash_stream.openclaw.pipeline import Pipeline
from dash_stream.openclaw.sinks import Outbox, ServerSink

from .watch_support import Frame, config, frames

COPIES = 300
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def copies(n: int) -> list[Frame]:
    """`n` copies of the recorded runs; every uuid (run ids, job and session ids) made unique per copy."""
    base = json.dumps(
        [[name, payload] for name, payload in frames("plain", "tool", "fail400", "fail500", "bridge")]
    )
    out: list[Frame] = []
    for i in range(n):
        suffix = f"{i:06d}"
        text = _UUID.sub(lambda m: m.group(0)[:-6] + suffix, base)  # noqa: B023 - used at once
        out.extend((name, payload) for name, payload in json.loads(text))
    return out


async def test_the_watcher_pipeline_sustains_thousands_of_events_per_second(server: ServerFactory) -> None:
    srv = server("--dev", "--publish-rate", "0", "--conn-publish-rate", "0")
    recorded = copies(COPIES)
    pipeline = Pipeline(config(name="bench"))
    sink = ServerSink(srv.base_url)
    outbox = Outbox(sink, WatchMetrics(), max_events=10_000, batch_max=500)
    await sink.start()
    outbox.start()
    try:
        started = time.perf_counter()
        now = time.time()
        for name, payload in recorded:
            for out in pipeline.frame(name, payload, boot_id="bench", now=now).events:
                await outbox.put(out.event, out.attributes, None)
        for out in pipeline.expire(now + 3600).events:
            await outbox.put(out.event, out.attributes, None)
        assert await outbox.drain(scaled(120))
        elapsed = time.perf_counter() - started
    finally:
        await outbox.stop()
        await sink.close()

    async with httpx.AsyncClient(trust_env=False, timeout=scaled(10)) as http:
        metrics = (await http.get(f"{srv.base_url}/metrics")).text
    accepted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("dash_events_in_total{")
    )
    rate = outbox.published / elapsed
    print(
        f"\nwatcher replay: {len(recorded)} frames -> {outbox.published} events in {elapsed:.2f}s "
        f"= {rate:,.0f} events/s ({len(recorded) / elapsed:,.0f} frames/s); server accepted {accepted:.0f}"
    )
    assert accepted == outbox.published
    assert accepted >= COPIES * 15
    assert rate > 500  # a floor far below what it does, so that a slow machine does not flake
