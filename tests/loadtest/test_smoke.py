"""Smoke runs of every bench scenario against a real server, and the accounting they rest on.

These pin correctness (the generator counts what the server did), never speed: small N, a few
seconds each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from servers import ServerFactory, ServerProcess

from dash_stream import bench

SERVE_ARGS = (
    "--dev",
    "--publish-rate", "0",
    "--conn-publish-rate", "0",
    "--connect-rate", "0",
    "--max-connections", "10000",
)  # fmt: skip


@pytest.fixture(scope="module")
def bench_server(module_server: ServerFactory) -> ServerProcess:
    """One server for the module's scenarios; each run uses topics of its own."""
    return module_server(*SERVE_ARGS)


def _run(srv: ServerProcess, scenario: str, **overrides: object) -> bench.BenchReport:
    cfg = bench.make_config(
        scenario,
        url=f"ws://127.0.0.1:{srv.port}",
        server_pid=srv.proc.pid,
        workers=2,
        grace=10.0,
        connect_timeout=30.0,
        **overrides,
    )
    return bench.run(cfg, log=lambda message: None)


# ---------------------------------------------------------------- accounting


def test_accounting_counts_gaps_duplicates_and_reorders() -> None:
    account = bench.SeqAccount()
    for pub, seq in [(0, 0), (0, 1), (0, 1), (0, 3), (0, 4), (1, 0), (1, 2), (1, 1), (2, 0), (2, 2)]:
        account.record(pub, seq)
    expected = [bench.PubCount(0, 6), bench.PubCount(1, 3), bench.PubCount(2, 3, rejected=[1])]
    assert account.missing(expected) == 2  # publisher 0: seqs 2 and 5; publisher 2's seq 1 was refused
    assert account.duplicates == 1
    assert account.reordered == 1
    assert account.unique == 9
    assert account.received == 10


def test_accounting_of_a_clean_stream_is_zero() -> None:
    account = bench.SeqAccount()
    for seq in range(5000):
        account.record(7, seq)
    assert account.missing([bench.PubCount(7, 5000)]) == 0
    assert (account.duplicates, account.reordered, account.unexpected) == (0, 0, 0)


def _events_frame(pairs: list[tuple[int, int]], cursor: str) -> bytes:
    now = time.time_ns()
    events = [
        {"topic": "bench.x.p0", "type": "bench.tick", "data": {"p": p, "s": s, "t": now}} for p, s in pairs
    ]
    return json.dumps({"op": "events", "sub": "b", "events": events, "cursor": cursor}).encode()


async def test_lossy_subscriber_stream_shows_loss_and_duplicates() -> None:
    worker = bench._SubWorker(bench.SubSpec(url="ws://127.0.0.1:1", first=0, count=1, topics=["bench.x.>"]))
    sub = bench.Subscriber(worker, 0)
    frames = [
        _events_frame([(0, 0), (0, 1)], "e.0-2"),
        _events_frame([(0, 1), (0, 2)], "e.0-3"),  # 1 again
        _events_frame([(0, 5)], "e.0-6"),  # 3 and 4 never arrive
    ]
    for frame in frames:
        assert sub.on_message(frame) is None
    result = bench._sub_result(worker, [sub], [bench.PubCount(0, 6)], connected=1, connect_s=0.0)
    assert result.lost == 2
    assert result.duplicates == 1
    assert result.subs_with_loss == 1 and result.subs_with_dups == 1
    assert result.events == 5 and result.frames == 3
    assert sub.cursor == "e.0-6"
    assert sum(result.hist.values()) == 5


async def test_subscriber_resumes_with_its_cursor() -> None:
    worker = bench._SubWorker(bench.SubSpec(url="ws://127.0.0.1:1", first=0, count=1, topics=["t.>"]))
    sub = bench.Subscriber(worker, 0)
    first = msgspec.json.decode(sub.on_message(b'{"op":"welcome","session":"x"}') or b"{}")
    assert first == {"op": "subscribe", "id": "s", "sub": "b", "topics": ["t.>"]}
    sub.on_message(_events_frame([(0, 0)], "e.0-9"))
    again = msgspec.json.decode(sub.on_message(b'{"op":"welcome","session":"y"}') or b"{}")
    assert again["cursor"] == "e.0-9"
    sub.on_message(b'{"op":"subscribed","sub":"b","cursor":"e.0-1","recovered":false,"reason":"trimmed"}')
    assert sub.unrecovered == 1


def test_histogram_percentiles_are_within_one_percent() -> None:
    hist = bench.Histogram()
    for us in range(1, 100_001):
        hist.add(us)
    assert hist.percentile_ms(0.5) == pytest.approx(50.0, rel=0.01)
    assert hist.percentile_ms(0.99) == pytest.approx(99.0, rel=0.01)
    assert hist.max_ms() == 100.0


def test_split_spreads_evenly() -> None:
    assert bench.split(10, 3) == [4, 3, 3]
    assert bench.split(2, 4) == [1, 1]
    assert sum(bench.split(1001, 2)) == 1001


def test_slo_violations_name_what_was_missed() -> None:
    cfg = bench.make_config("fanout", subscribers=2, slo_p99_ms=10, slo_loss=0, slo_dups=0)
    report = bench.BenchReport(scenario="fanout", config=cfg, machine={}, started="", connected=2)
    report.latency_ms = {"p99": 25.0}
    report.lost, report.duplicates = 3, 1
    assert bench.slo_violations(cfg, report) == [
        "p99 latency 25.0 ms > 10 ms",
        "3 events lost > 0",
        "1 duplicates > 0",
    ]


# ---------------------------------------------------------------- scenarios against a real server


def test_fanout_delivers_every_event_to_every_subscriber(bench_server: ServerProcess) -> None:
    report = _run(bench_server, "fanout", subscribers=20, rate=50.0, duration=2.0)
    assert report.connected == 20
    assert report.published >= 50
    assert report.deliveries == report.expected_deliveries == report.published * 20
    assert (report.lost, report.duplicates, report.reordered, report.unexpected) == (0, 0, 0, 0)
    assert report.incomplete_subs == 0 and not report.errors
    assert 0 < report.latency_ms["p50"] <= report.latency_ms["p99"] <= report.latency_ms["max"]
    assert report.server.pid == bench_server.proc.pid and report.server.rss_peak_mib > 0
    assert report.violations == []


def test_fanout_over_http_batches_with_the_asyncio_client(bench_server: ServerProcess) -> None:
    report = _run(
        bench_server,
        "fanout",
        subscribers=6,
        rate=100.0,
        duration=1.5,
        via="http",
        batch=10,
        client="asyncio",
    )
    assert report.connected == 6 and report.published >= 100
    assert report.deliveries == report.published * 6
    assert (report.lost, report.duplicates) == (0, 0)


def test_ingest_counts_accepted_events(bench_server: ServerProcess) -> None:
    report = _run(bench_server, "ingest", duration=1.5, publishers=2, pub_workers=1, batch=50)
    assert report.published > 0 and report.rejected == 0 and not report.publish_errors
    assert report.published % 50 == 0 and report.publish_requests == report.published // 50
    assert report.publish_per_s > 0


def test_idle_reports_memory_per_connection(bench_server: ServerProcess) -> None:
    report = _run(bench_server, "idle", subscribers=40, duration=0.5, settle=0.5)
    assert report.connected == 40
    assert report.server.rss_per_connection_kib is not None
    assert report.server.rss_loaded_mib > 0
    assert report.deliveries == 0 and report.violations == []


def test_reconnect_storm_resumes_every_subscriber_without_loss(bench_server: ServerProcess) -> None:
    report = _run(bench_server, "reconnect-storm", subscribers=40, rate=100.0, duration=3.0)
    assert report.connected == 40
    assert report.reconnects == 40
    assert report.unrecovered == 0
    assert report.resubscribe_s["n"] == 40
    assert report.lost == 0 and report.incomplete_subs == 0
    assert report.duplicates == 0  # resumes that race the hub's live reader must not repeat events


def test_cli_exits_1_when_an_slo_is_missed(bench_server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "fanout.json"
    md = tmp_path / "fanout.md"
    exe = Path(sys.executable).with_name("dash-stream")
    done = subprocess.run(
        [str(exe), "bench", "fanout", "--url", f"ws://127.0.0.1:{bench_server.port}",
         "--subscribers", "4", "--rate", "20", "--duration", "1", "--workers", "1",
         "--slo-p99-ms", "0.000001", "--slo-loss", "0", "--json", str(out), "--report", str(md)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "SLO missed: p99 latency" in done.stderr
    doc = json.loads(out.read_text())
    assert doc["scenario"] == "fanout" and doc["lost"] == 0 and doc["violations"]
    assert "| deliveries/s |" in md.read_text()
