"""Smoke runs of the max-rate, soak and ingest-10k scenarios: the accounting, never the speed."""

from __future__ import annotations

import msgspec
import pytest
from servers import ServerFactory, ServerProcess

from dash_stream import bench, bench_ramp

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
        workers=1,
        grace=10.0,
        connect_timeout=30.0,
        **overrides,
    )
    return bench.run(cfg, log=lambda message: None)


# ---------------------------------------------------------------- pure parts


def test_rss_slope_fits_a_line_after_the_warm_up() -> None:
    # flat for the first 10 s (the warm-up), then +1 MiB every 10 s = 360 MiB/hour
    samples = [(float(t), 100.0 if t < 10 else 100.0 + (t - 10) / 10) for t in range(0, 41)]
    assert bench_ramp.rss_slope_mib_per_hour(samples, warmup=0.25) == pytest.approx(360.0)
    flat = [(float(t), 50.0) for t in range(10)]
    assert bench_ramp.rss_slope_mib_per_hour(flat, warmup=0.2) == 0.0
    assert bench_ramp.rss_slope_mib_per_hour(flat[:3], warmup=0.5) is None  # 2 samples left
    assert bench_ramp.rss_slope_mib_per_hour([], warmup=0.0) is None


def test_a_step_with_loss_or_slow_p99_is_not_sustainable() -> None:
    cfg = bench.make_config("max-rate", subscribers=3, ramp_p99_ms=100)
    report = bench.BenchReport(scenario="fanout", config=cfg, machine={}, started="", connected=3)
    report.published, report.latency_ms = 10, {"p99": 50.0}
    assert bench_ramp.judge_step(cfg, 10.0, report).sustainable
    report.lost = 1
    assert bench_ramp.judge_step(cfg, 10.0, report).why_not == "1 lost"
    report.lost, report.latency_ms = 0, {"p99": 150.0}
    assert bench_ramp.judge_step(cfg, 10.0, report).why_not == "p99 150.0 ms > 100 ms"


# ---------------------------------------------------------------- against a real server


def test_max_rate_ramps_until_the_step_budget(bench_server: ServerProcess) -> None:
    report = _run(
        bench_server,
        "max-rate",
        subscribers=5,
        rate=40.0,
        duration=1.0,
        ramp_factor=2.0,
        max_steps=2,
        ramp_p99_ms=60_000.0,
    )
    assert [s.rate for s in report.steps] == [40.0, 80.0]
    assert all(s.sustainable and s.lost == 0 and s.connected == 5 for s in report.steps)
    assert report.scenario == "max-rate" and report.config.scenario == "max-rate"
    # the report is the last sustainable step's run, with its full accounting
    assert report.published == report.steps[-1].published > 0
    assert report.deliveries == report.expected_deliveries == report.published * 5
    assert report.max_sustainable_deliveries_per_s == report.steps[-1].deliveries_per_s > 0
    assert report.violations == ["never found the limit: raise max_steps or max_run_s, or the first rate"]
    assert "**max sustainable**" in bench.markdown(report)


def test_max_rate_stops_at_the_first_unsustainable_step(bench_server: ServerProcess) -> None:
    report = _run(
        bench_server, "max-rate", subscribers=3, rate=40.0, duration=1.0, max_steps=3, ramp_p99_ms=0.0
    )
    assert len(report.steps) == 1 and not report.steps[0].sustainable
    assert report.steps[0].why_not.startswith("p99 ")
    assert report.max_sustainable_deliveries_per_s is None
    assert report.deliveries == report.published * 3 and report.lost == 0
    assert report.violations[-1].startswith("no sustainable step")


def test_soak_samples_rss_and_fits_its_growth(bench_server: ServerProcess) -> None:
    report = _run(
        bench_server,
        "soak",
        subscribers=5,
        rate=50.0,
        duration=3.0,
        rss_interval=0.2,
        warmup=0.25,
        max_rss_growth_mib_per_hour=-1e9,  # any slope misses this bound
    )
    assert report.scenario == "soak"
    assert report.published >= 100
    assert report.deliveries == report.expected_deliveries == report.published * 5
    assert (report.lost, report.duplicates) == (0, 0)
    assert len(report.rss_samples) >= 8
    assert all(0 <= t <= 3.5 and mib > 0 for t, mib in report.rss_samples)
    assert report.rss_growth_mib_per_hour is not None
    assert len(report.violations) == 1 and report.violations[0].startswith("server RSS grew")
    assert "server RSS growth after 25% warm-up" in bench.markdown(report)


def test_ingest_10k_preset_counts_loss_with_its_subscribers(bench_server: ServerProcess) -> None:
    report = _run(bench_server, "ingest-10k", rate=1000.0, duration=1.0, publishers=2, pub_workers=1)
    assert report.config.via == "http" and report.connected == 2
    assert report.published > 0 and report.rejected == 0 and not report.publish_errors
    assert report.deliveries == report.published * 2 and report.lost == 0
    assert report.publish_per_s > 0


# ---------------------------------------------------------------- agents-1000


def test_agent_views_match_the_mix() -> None:
    from dash_stream import bench_agents as agents

    account = bench.SeqAccount()
    counts = [bench.PubCount(0, 40), bench.PubCount(1, 40, rejected=[0, 1])]
    tasks = agents.view_of(0)
    assert tasks.name == "tasks" and agents.subscribe_topics("x", tasks) == ["x.*.task"]
    want = [
        (pc.pub, s) for pc in counts for s in range(pc.sent) if tasks.mask[(pc.pub + s) % len(agents.MIX)]
    ]
    assert len(want) == 2 * 40 * 8 // 20  # 8 task slots in 20
    for pub, seq in want[:-1]:
        account.record(pub, seq)
    rejected_tasks = sum(1 for s in (0, 1) if tasks.mask[(1 + s) % len(agents.MIX)])
    assert agents.expected_count(counts, tasks.mask) == len(want) - rejected_tasks
    assert agents.missing(account, counts, tasks.mask) == 1
    doc = msgspec.json.decode(agents.event_json("x", 3, 6, 123))  # slot 9: agent.error, critical
    assert doc["topic"] == "x.p3.error" and doc["priority"] == "critical" and doc["data"]["s"] == 6


def test_agents_preset_delivers_what_each_view_asks_for(bench_server: ServerProcess) -> None:
    report = _run(
        bench_server,
        "agents-1000",
        subscribers=8,
        publishers=40,
        pub_workers=1,
        rate=200.0,
        duration=2.0,
    )
    assert report.connected == 8 and report.published >= 200
    assert report.rejected == 0 and not report.errors
    # 2 views of each kind: all views filter, so fewer deliveries than published * subscribers
    assert 0 < report.expected_deliveries < report.published * 8
    assert report.deliveries == report.expected_deliveries
    assert (report.lost, report.duplicates, report.unexpected, report.incomplete_subs) == (0, 0, 0, 0)
