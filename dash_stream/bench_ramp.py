"""The `max-rate` and `soak` scenarios: orchestrations of `fanout` runs from dash_stream/bench.py.

- `max-rate` runs `fanout` steps at a rising publish rate (times `ramp_factor` each step, at most
  `max_steps` steps, no step started after `max_run_s` seconds). A step is sustainable when every
  subscriber connected, nothing was lost or rejected and p99 publish→deliver ≤ `ramp_p99_ms`; the
  ramp stops at the first step that is not, and reports the last sustainable one. Every step is a
  fresh `fanout` run (new connections, new topics), so one step's backlog never leaks into the next.
- `soak` runs one steady `fanout` for `duration` seconds while a thread samples the server's RSS
  every `rss_interval` seconds from /proc/<pid>/status; after dropping the first `warmup` fraction of
  the publishing window it fits a least-squares line and reports the slope in MiB/hour, an SLO miss
  when it exceeds `max_rss_growth_mib_per_hour`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import msgspec

from dash_stream import bench
from dash_stream.bench import BenchConfig, BenchReport, RampStep

_NO_SLOS = {"slo_p99_ms": None, "slo_loss": None, "slo_dups": None, "slo_min_rate": None}


# ---------------------------------------------------------------- max-rate


def judge_step(cfg: BenchConfig, rate: float, report: BenchReport) -> RampStep:
    """One step's outcome: sustainable when all connected, nothing lost or rejected, p99 within bound."""
    p99 = report.latency_ms.get("p99", 0.0)
    why: list[str] = []
    if report.connected < cfg.subscribers:
        why.append(f"{report.connected}/{cfg.subscribers} connected")
    if report.lost or report.incomplete_subs:
        why.append(f"{report.lost} lost")
    if report.rejected or report.publish_errors:
        why.append(f"{report.rejected} rejected")
    if not report.published:
        why.append("nothing published")
    if p99 > cfg.ramp_p99_ms:
        why.append(f"p99 {p99:.1f} ms > {cfg.ramp_p99_ms:g} ms")
    return RampStep(
        rate=rate,
        published=report.published,
        publish_per_s=report.publish_per_s,
        deliveries_per_s=report.deliveries_per_s,
        p99_ms=p99,
        lost=report.lost,
        rejected=report.rejected,
        connected=report.connected,
        generator_saturated=report.generator.saturated,
        sustainable=not why,
        why_not="; ".join(why),
    )


def run_max_rate(cfg: BenchConfig, log: Callable[[str], None]) -> BenchReport:
    """Ramp the rate until a step is not sustainable; the report is the last sustainable step's."""
    if cfg.rate <= 0 or cfg.ramp_factor <= 1 or cfg.max_steps < 1 or cfg.subscribers < 1:
        raise ValueError("max-rate needs rate > 0, ramp_factor > 1, max_steps >= 1 and subscribers >= 1")
    started = time.monotonic()
    steps: list[RampStep] = []
    best: BenchReport | None = None
    last: BenchReport | None = None
    rate = cfg.rate
    for i in range(cfg.max_steps):
        if i and time.monotonic() - started > cfg.max_run_s:
            log(f"max-rate: {cfg.max_run_s:g}s spent, no further step")
            break
        log(f"max-rate step {i + 1}/{cfg.max_steps}: {rate:,.0f} events/s to {cfg.subscribers} subscribers")
        step_cfg = msgspec.structs.replace(cfg, scenario="fanout", rate=round(rate, 1), **_NO_SLOS)
        last = bench.run(step_cfg, log)
        step = judge_step(cfg, step_cfg.rate, last)
        steps.append(step)
        log(
            f"max-rate step {i + 1}: {step.deliveries_per_s:,.0f} deliveries/s, p99 {step.p99_ms:.1f} ms"
            + ("" if step.sustainable else f" — not sustainable ({step.why_not})")
        )
        if not step.sustainable:
            break
        best = last
        rate *= cfg.ramp_factor
    assert last is not None
    report = best or last
    report.scenario, report.config, report.steps = "max-rate", cfg, steps
    good = [s for s in steps if s.sustainable]
    if good:
        report.max_sustainable_rate = good[-1].publish_per_s
        report.max_sustainable_deliveries_per_s = good[-1].deliveries_per_s
    report.violations = bench.slo_violations(cfg, report)
    if not good:
        report.violations.append(f"no sustainable step (first step: {steps[0].why_not})")
    elif steps[-1].sustainable:
        report.violations.append("never found the limit: raise max_steps or max_run_s, or the first rate")
    return report


def markdown_rows(report: BenchReport) -> list[str]:
    """The max-rate step table, as Markdown table rows (appended to the report's metric table)."""
    rows = []
    for n, s in enumerate(report.steps, 1):
        verdict = "ok" if s.sustainable else f"**limit**: {s.why_not}"
        sat = ", generator SATURATED" if s.generator_saturated else ""
        rows.append(
            f"| step {n}: {s.rate:,.0f}/s paced | {s.publish_per_s:,.0f} published/s, "
            f"{s.deliveries_per_s:,.0f} deliveries/s, p99 {s.p99_ms:.1f} ms, lost {s.lost}{sat} — {verdict} |"
        )
    best = report.max_sustainable_deliveries_per_s
    rows.append(
        "| **max sustainable** | "
        + (
            "none"
            if best is None
            else f"{best:,.0f} deliveries/s ({report.max_sustainable_rate:,.0f} published/s)"
        )
        + " |"
    )
    return rows


# ---------------------------------------------------------------- soak


def rss_slope_mib_per_hour(samples: Sequence[tuple[float, float]], warmup: float) -> float | None:
    """Least-squares slope of (seconds, MiB) samples after the first `warmup` fraction of their span.

    None with fewer than 3 samples left (or no spread in time).
    """
    if not samples:
        return None
    t0, t1 = samples[0][0], samples[-1][0]
    cut = t0 + warmup * (t1 - t0)
    kept = [(t, m) for t, m in samples if t >= cut]
    if len(kept) < 3:
        return None
    n = len(kept)
    mean_t = sum(t for t, _ in kept) / n
    mean_m = sum(m for _, m in kept) / n
    var = sum((t - mean_t) ** 2 for t, _ in kept)
    if var <= 0:
        return None
    cov = sum((t - mean_t) * (m - mean_m) for t, m in kept)
    return cov / var * 3600


def run_soak(cfg: BenchConfig, log: Callable[[str], None]) -> BenchReport:
    """A steady fanout with the server's RSS sampled throughout; RSS growth is fitted after warm-up."""
    if cfg.rss_interval <= 0 or not 0 <= cfg.warmup < 1:
        raise ValueError("soak needs rss_interval > 0 and 0 <= warmup < 1")
    _, port = bench._check_loopback(cfg.url)
    pid = cfg.server_pid or bench.find_pid_by_port(port)
    if pid is None:
        raise ValueError(f"soak needs the server's pid (--server-pid): nothing local listens on {port}")
    with bench.ProcSampler(pid, cfg.rss_interval, keep_series=True) as series:
        report = bench.run(msgspec.structs.replace(cfg, scenario="fanout", server_pid=pid), log)
    start, end = report.publish_started_ns, report.publish_ended_ns
    window = [(ns, kib) for ns, kib in series.samples if start <= ns <= end] if end > start else []
    report.scenario, report.config = "soak", cfg
    report.rss_samples = [(round((ns - start) / 1e9, 3), round(kib / 1024, 3)) for ns, kib in window]
    slope = rss_slope_mib_per_hour(report.rss_samples, cfg.warmup)
    report.rss_growth_mib_per_hour = None if slope is None else round(slope, 2)
    report.violations = bench.slo_violations(cfg, report)
    bound = cfg.max_rss_growth_mib_per_hour
    if bound is not None:
        if slope is None:
            report.violations.append(
                f"only {len(window)} RSS samples while publishing: too few to fit RSS growth"
            )
        elif slope > bound:
            report.violations.append(f"server RSS grew {slope:.1f} MiB/hour > {bound:g} MiB/hour")
    return report
