"""What tracing costs the fan-out, measured two ways in one run: tracing off, on with a 1% deliver
ratio, and on with 100%.

    .venv/bin/python loadtest/tracing_overhead.py hub --subscribers 1000 --batch 10
    .venv/bin/python loadtest/tracing_overhead.py fanout --subscribers 500 --rate 2000 --duration 6

`hub` drives a real `Hub.dispatch` in this process: N subscriptions whose subscriber builds the
real JSON `events` frame (no socket), batches of events that carry a sampled `traceparent` (as
the server's `send` spans leave them), and reports deliveries per CPU second of the process
(the exporter thread's CPU included), which a busy machine disturbs far less than wall time.
`fanout` runs the `dash-stream bench fanout` scenario against a real server per mode.

Tracing exports over OTLP/HTTP to a collector stand-in in this process that accepts and discards
every request, so the server pays its real export cost. Every trace is sampled
(`parentbased_always_on`): the worst case. Modes alternate round by round (off, 1%, 100%, off,
...) so that drift on a shared machine spreads evenly. Every loop is bounded; only loopback
addresses are used.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dash_stream import bench
from dash_stream.bus.base import Record
from dash_stream.bus.cursor import Cursor
from dash_stream.bus.memory import MemoryBus
from dash_stream.events import EventIn, complete, with_offset
from dash_stream.filters import TopicSet
from dash_stream.protocol.codec import CODECS, JSON
from dash_stream.server.hub import Hub, Subscription
from dash_stream.server.metrics import Metrics
from dash_stream.telemetry import start_tracing, tracing_config
from dash_stream.telemetry.w3c import format_traceparent

RATIOS: dict[str, float | None] = {"off": None, "on, deliver 1%": 0.01, "on, deliver 100%": 1.0}


class _Discard(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that reads each export and answers 200 with an empty response."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _collector() -> tuple[ThreadingHTTPServer, dict[str, str]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Discard)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_SDK_DISABLED": "false",
    }
    return server, env


# ---------------------------------------------------------------- hub: Hub.dispatch in-process

_CODEC = CODECS[JSON]


class _FrameBuilder:
    """A subscriber that does a WebSocket connection's work up to the socket: the events frame."""

    __slots__ = ("closed", "delivered", "session")

    def __init__(self) -> None:
        self.delivered = 0
        self.closed = False
        self.session = "bench"

    def deliver(self, sub: Subscription, records: list[Record]) -> None:
        sub.advance_through(records)
        assert sub.cursor is not None
        _CODEC.events_frame(sub.sub_id, records, sub.cursor.encode())
        self.delivered += len(records)

    def advance(self, sub: Subscription) -> None:
        pass

    def lost(self, reason: str) -> None:
        pass


def _batches(rounds: int, size: int) -> list[list[Record]]:
    out: list[list[Record]] = []
    position = 0
    for _ in range(rounds):
        batch = []
        for _ in range(size):
            traceparent = format_traceparent(random.getrandbits(128) | 1, random.getrandbits(64) | 1, 1)
            ev = EventIn(topic="swarm.s1.agent.a7", type="agent.started", data={"agent_id": "a7"})
            event, encoded = complete(ev, traceparent=traceparent)
            offset = f"bench.0-{position}"
            batch.append(Record(event, 0, position, offset, with_offset(encoded, offset), time.time()))
            position += 1
        out.append(batch)
    return out


def _hub_once(ratio: float | None, subscribers: int, batches: list[list[Record]]) -> float:
    metrics = Metrics()
    tracing = None
    if ratio is not None:
        tracing = start_tracing(tracing_config(os.environ, flag=True, deliver_ratio=ratio), metrics.otel)
        assert tracing is not None, "tracing did not start"
    hub = Hub(MemoryBus(), metrics, tracing=tracing.fan_out if tracing is not None else None)
    owners = []
    for i in range(subscribers):
        owner = _FrameBuilder()
        sub = Subscription(owner, f"s{i}", TopicSet(["swarm.>"]), None, 1 << 30)
        sub.buffer, sub.cursor = None, Cursor("bench", {0: -1})
        hub.add(sub)
        owners.append(owner)
    started = time.process_time()
    for batch in batches:
        hub.dispatch(batch)
    if tracing is not None:
        tracing.shutdown()  # the export of every span is part of the cost
    cpu = time.process_time() - started
    delivered = sum(o.delivered for o in owners)
    assert delivered == subscribers * sum(len(b) for b in batches), delivered
    return delivered / cpu


def hub_mode(a: argparse.Namespace, env: dict[str, str]) -> None:
    """Deliveries per CPU second of `Hub.dispatch`, per mode, median of `--rounds`."""
    os.environ.update(env | {"OTEL_BSP_MAX_QUEUE_SIZE": "1000000"})  # count export work, drop nothing
    batches = _batches(a.batches, a.batch)
    results: dict[str, list[float]] = {mode: [] for mode in RATIOS}
    for _ in range(a.rounds):
        for mode, ratio in RATIOS.items():
            results[mode].append(_hub_once(ratio, a.subscribers, batches))
    base = statistics.median(results["off"])
    print(
        f"\nHub.dispatch: {a.subscribers} subscriptions, {a.batches} batches of {a.batch} events, "
        f"median of {a.rounds} rounds (deliveries per CPU second)\n"
    )
    print("| tracing | deliveries/s | vs off | rounds |")
    print("|---|---|---|---|")
    for mode, values in results.items():
        median = statistics.median(values)
        print(
            f"| {mode} | {median:,.0f} | {median / base - 1:+.0%}"
            f" | {', '.join(f'{v:,.0f}' for v in values)} |"
        )


# ---------------------------------------------------------------- fanout: a real server per mode


def _span_counts(base_url: str) -> tuple[float, float]:
    """(spans exported, spans dropped) from the server's /metrics."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    exported = sum(float(v) for v in re.findall(r"^dash_otel_spans_exported_total (\S+)$", text, re.M))
    dropped = sum(float(v) for v in re.findall(r"^dash_otel_spans_dropped_total\{[^}]*\} (\S+)$", text, re.M))
    return exported, dropped


def _server_args(ratio: float | None) -> list[str]:
    return ["--no-otel"] if ratio is None else ["--otel", "--otel-deliver-ratio", str(ratio)]


def fanout_mode(a: argparse.Namespace, env: dict[str, str]) -> None:
    """The bench `fanout` scenario against a real server per mode (pinned to CPU 0)."""
    cpus = sorted(os.sched_getaffinity(0))
    rows: list[str] = []
    os.environ.update(env)
    for round_no in range(1, a.rounds + 1):
        for mode, ratio in RATIOS.items():
            server = bench.ServerProcess(
                args=_server_args(ratio), cpus=str(cpus[0]) if len(cpus) > 1 else None
            )
            try:
                with server:
                    if len(cpus) > 1:
                        os.sched_setaffinity(0, set(cpus[1:]))
                    cfg = bench.make_config(
                        "fanout",
                        url=server.url,
                        server_pid=server.pid,
                        subscribers=a.subscribers,
                        rate=a.rate,
                        duration=a.duration,
                    )
                    r = bench.run(cfg)
                    exported, dropped = _span_counts(server.url.replace("ws://", "http://"))
            finally:
                os.sched_setaffinity(0, set(cpus))
            lat = r.latency_ms
            rows.append(
                f"| {round_no} | {mode} | {r.deliveries_per_s:,.0f}"
                f" | {r.deliveries:,} / {r.expected_deliveries:,}"
                f" | {lat.get('p50', 0):.0f} / {lat.get('p99', 0):.0f} | {r.server.cpu_percent:.0f} %"
                f" | {r.server.cpu_us_per_delivery or 0:.2f} µs | {exported:,.0f} | {dropped:,.0f}"
                f" | {r.generator.background_cpu_percent:.0f} % |"
            )
            print(rows[-1], flush=True)
    print(
        "\n| round | tracing | deliveries/s | delivered / expected | latency p50 / p99 (ms) | server CPU"
        " | CPU / delivery | spans exported | spans dropped | other load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = p.add_subparsers(dest="mode", required=True)
    hub = modes.add_parser("hub", help="Hub.dispatch in this process")
    hub.add_argument("--subscribers", type=int, default=1000)
    hub.add_argument("--batch", type=int, default=10, help="events per bus batch")
    hub.add_argument("--batches", type=int, default=300)
    hub.add_argument("--rounds", type=int, default=5)
    fan = modes.add_parser("fanout", help="the bench fanout scenario against a real server")
    fan.add_argument("--subscribers", type=int, default=500)
    fan.add_argument("--rate", type=float, default=2000.0)
    fan.add_argument("--duration", type=float, default=6.0)
    fan.add_argument("--rounds", type=int, default=2)
    return p.parse_args()


def main() -> None:
    """Run the chosen measurement and print a Markdown table."""
    a = _args()
    collector, env = _collector()
    run: Callable[[argparse.Namespace, dict[str, str]], None] = hub_mode if a.mode == "hub" else fanout_mode
    try:
        run(a, env)
    finally:
        collector.shutdown()


if __name__ == "__main__":
    main()
