"""`dash-stream bench SCENARIO`: load-test a running server (see dash_stream/bench.py, docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
import typer

_SLO_EXIT = 1
_ERROR_EXIT = 2


def bench(
    scenario: Annotated[
        str, typer.Argument(help="fanout, ingest, idle, reconnect-storm, max-rate, soak or ingest-10k.")
    ],
    url: Annotated[str, typer.Option(help="Server base URL (loopback only).")] = "ws://127.0.0.1:8080",
    subscribers: Annotated[int | None, typer.Option(help="Subscriber connections (idle: C).")] = None,
    rate: Annotated[
        float | None, typer.Option(help="Events/s over all publishers; 0 = as fast as accepted.")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds of publishing (idle: holding).")] = None,
    workers: Annotated[int | None, typer.Option(help="Subscriber worker processes.")] = None,
    publishers: Annotated[int | None, typer.Option(help="Publisher connections (ids).")] = None,
    pub_workers: Annotated[int | None, typer.Option(help="Publisher worker processes.")] = None,
    via: Annotated[str | None, typer.Option(help="Publish over ws or http (batches).")] = None,
    batch: Annotated[int | None, typer.Option(help="Most events per HTTP batch / publish tick.")] = None,
    payload_bytes: Annotated[int | None, typer.Option(help="Extra padding in each event's data.")] = None,
    client: Annotated[
        str | None, typer.Option(help="Subscriber client: sansio (lean) or asyncio (websockets client).")
    ] = None,
    server_pid: Annotated[
        int | None, typer.Option(help="Server pid for RSS/CPU (default: found by port).")
    ] = None,
    grace: Annotated[
        float | None, typer.Option(help="Seconds to wait for deliveries after publishing.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the Markdown report here.")] = None,
    slo_p99_ms: Annotated[
        float | None, typer.Option(help="Fail if publish→deliver p99 exceeds this.")
    ] = None,
    slo_loss: Annotated[int | None, typer.Option(help="Fail if more events than this are lost.")] = None,
    slo_dups: Annotated[int | None, typer.Option(help="Fail if more duplicates than this arrive.")] = None,
    slo_min_rate: Annotated[
        float | None, typer.Option(help="Fail below this many deliveries/s (ingest: events/s).")
    ] = None,
    ramp_factor: Annotated[
        float | None, typer.Option(help="max-rate: multiply the rate by this each step.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="max-rate: most steps.")] = None,
    max_run_s: Annotated[
        float | None, typer.Option(help="max-rate: start no step after this many seconds.")
    ] = None,
    ramp_p99_ms: Annotated[
        float | None, typer.Option(help="max-rate: a step with a higher p99 is not sustainable.")
    ] = None,
    rss_interval: Annotated[float | None, typer.Option(help="soak: seconds between RSS samples.")] = None,
    warmup: Annotated[
        float | None, typer.Option(help="soak: fraction of the run left out of the RSS fit.")
    ] = None,
    max_rss_growth_mib_per_hour: Annotated[
        float | None, typer.Option(help="soak: fail when server RSS grows faster than this.")
    ] = None,
) -> None:
    """Run a load scenario against a server and report throughput, latency, loss and memory.

    Exit status: 0 when every declared SLO is met, 1 when one is missed, 2 on errors.

    Examples:

      dash-stream bench fanout --subscribers 1000 --rate 100 --duration 10 --slo-p99-ms 250 --slo-loss 0

      dash-stream bench ingest --duration 10 --json ingest.json --report ingest.md

      dash-stream bench max-rate --subscribers 200 --rate 50 --ramp-factor 1.5 --max-steps 10

      dash-stream bench soak --duration 3600 --max-rss-growth-mib-per-hour 50
    """
    from dash_stream import bench as engine

    try:
        cfg = engine.make_config(
            scenario,
            url=url,
            subscribers=subscribers,
            rate=rate,
            duration=duration,
            workers=workers,
            publishers=publishers,
            pub_workers=pub_workers,
            via=via,
            batch=batch,
            payload_bytes=payload_bytes,
            client=client,
            server_pid=server_pid,
            grace=grace,
            slo_p99_ms=slo_p99_ms,
            slo_loss=slo_loss,
            slo_dups=slo_dups,
            slo_min_rate=slo_min_rate,
            ramp_factor=ramp_factor,
            max_steps=max_steps,
            max_run_s=max_run_s,
            ramp_p99_ms=ramp_p99_ms,
            rss_interval=rss_interval,
            warmup=warmup,
            max_rss_growth_mib_per_hour=max_rss_growth_mib_per_hour,
        )
        result = engine.run(cfg)
    except (ValueError, msgspec.ValidationError) as e:
        typer.secho(f"error: {e}", err=True, fg="red")
        raise typer.Exit(_ERROR_EXIT) from None
    except (RuntimeError, OSError) as e:
        typer.secho(f"bench failed: {e}", err=True, fg="red")
        raise typer.Exit(_ERROR_EXIT) from None
    text = engine.markdown(result)
    if json_out is not None:
        json_out.write_bytes(msgspec.json.format(msgspec.json.encode(result)) + b"\n")
    if report is not None:
        report.write_text(text)
    typer.echo(text)
    if result.violations:
        typer.secho("SLO missed: " + "; ".join(result.violations), err=True, fg="red")
        raise typer.Exit(_SLO_EXIT)


def register(app: typer.Typer) -> None:
    """Add `bench` to the CLI."""
    app.command(help=bench.__doc__)(bench)
