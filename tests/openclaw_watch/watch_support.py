"""Helpers of the watcher tests: recorded frames, pure replays, watcher processes, a dashboard subscriber.

- `RECORDED`: frames recorded from a real `openclaw@2026.9.6` gateway (one operator connection
  with `sessions.subscribe`, shapes as in OPENCLAW.md §9), one JSON line each, tagged with the
  scenario that produced them: `plain` (hook run, text reply), `tool` (one `ls` call), `fail400`
  (provider HTTP 400), `fail500` (two HTTP 500s, then success), `bridge` (a message as the event
  bridge sends it), `wake` (a `/hooks/wake` heartbeat), `restart` (`shutdown`, close 1012).
  Big transcript fields were trimmed; nothing else was changed.
- `replay(frames)`: the frames through `Pipeline` exactly as the watcher runs it, no I/O.
- `WatcherProcess`: `dash-stream openclaw watch` as a child process (SIGTERM, SIGKILL, metrics).
- `Dashboard`: a subscriber on a real server (the SDK), recording when each event arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
from helpers import scaled
from servers import DASH_STREAM, REPO, free_port, server_env

from dash_stream.client import Client
from dash_stream.events import EventIn
from dash_stream.openclaw.config import WatchConfig, parse_table, validate
from dash_stream.openclaw.pipeline import Pipeline

RECORDED = Path(__file__).resolve().with_name("recorded_frames.jsonl")
TOKEN_ENV = "DASH_TEST_OPENCLAW_GATEWAY_TOKEN"

Frame = tuple[str, dict[str, Any]]


def frames(*scenarios: str) -> list[Frame]:
    """The recorded (event name, payload) frames of `scenarios`, in the order they arrived."""
    out: list[Frame] = []
    for line in RECORDED.read_text().splitlines():
        doc = json.loads(line)
        if doc["scenario"] in scenarios and "event" in doc:
            out.append((doc["event"], doc["payload"]))
    return out


def config(**table: Any) -> WatchConfig:
    """A validated config for gateway `ws://127.0.0.1:41701` named `gw1` (no sink needed)."""
    doc: dict[str, Any] = {"gateway": "ws://127.0.0.1:41701", "name": "gw1", **table}
    return validate(parse_table(doc), need_target=False)


def replay(
    recorded: list[Frame],
    cfg: WatchConfig | None = None,
    *,
    pipeline: Pipeline | None = None,
    start: float = 1e9,
) -> list[EventIn]:
    """Every event the watcher would publish for `recorded` (held runs expire at the end)."""
    p = pipeline if pipeline is not None else Pipeline(cfg or config())
    out: list[EventIn] = []
    now = start
    for name, payload in recorded:
        out.extend(o.event for o in p.frame(name, payload, boot_id="boot-1", now=now).events)
        now += 0.01
    out.extend(o.event for o in p.expire(now + 3600).events)
    return out


def of_type(events: list[Any], type_: str) -> list[Any]:
    """The events (EventIn or dicts) of one type."""
    return [e for e in events if (e["type"] if isinstance(e, dict) else e.type) == type_]


class WatcherProcess:
    """`dash-stream openclaw watch` in a child process, publishing to a real server."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, metrics_port: int) -> None:
        self.args = args
        self.log_path = log_path
        self.metrics_port = metrics_port
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(DASH_STREAM),
                    "openclaw",
                    "watch",
                    *args,
                    "--metrics-listen",
                    f"127.0.0.1:{metrics_port}",
                ],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log_text(self) -> str:
        """Everything the watcher wrote so far."""
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str) -> float:
        """The sum of every sample of `name` at the watcher's /metrics (0 when absent)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", trust_env=False, timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_connected(self, within: float = 30.0) -> None:
        """Until the watcher logs its gateway connection (AssertionError with the log otherwise)."""
        deadline = time.monotonic() + scaled(within)
        while "connected to gateway" not in self.log_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"watcher did not connect (exit {self.proc.poll()}):\n{self.log_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no goodbye, whatever it had queued is lost."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(timeout=scaled(10))

    def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=scaled(15))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=scaled(10))


@contextlib.contextmanager
def watchers(log_dir: Path) -> Iterator[Any]:
    """`start(gateway, server_url, token, *extra_args, env=None)`; every watcher stopped at exit."""
    started: list[WatcherProcess] = []

    def start(
        gateway: str, server: str, token: str, *extra: str, env: dict[str, str] | None = None
    ) -> WatcherProcess:
        environment = server_env({TOKEN_ENV: token, **(env or {})})
        args = ["--gateway", gateway, "--token-env", TOKEN_ENV, "--server", server, *extra]
        log_path = log_dir / f"watcher-{uuid.uuid4().hex[:6]}.log"
        w = WatcherProcess(args, environment, log_path, free_port())
        started.append(w)
        return w

    try:
        yield start
    finally:
        for w in started:
            w.stop()
        bad = [w.log_text() for w in started if "Traceback (most recent call last)" in w.log_text()]
        assert not bad, "a watcher logged a traceback:\n" + "\n\n".join(bad)


class Dashboard:
    """A dashboard's subscription: every event with the wall-clock time it arrived."""

    def __init__(
        self, url: str, topics: list[str], from_: Literal["latest", "earliest"] | None = None
    ) -> None:
        self.url = url
        self.topics = topics
        self.from_ = from_
        self.received: list[tuple[float, dict[str, Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Dashboard:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(scaled(15)):
            await self._ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async with Client(self.url) as client, client.subscribe(self.topics, from_=self.from_) as stream:
            self._ready.set()
            async for event in stream:
                doc = json.loads(json.dumps(event, default=_builtins))
                self.received.append((time.time(), doc))

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events received so far, in order."""
        return [e for _, e in self.received]

    async def wait_for(self, predicate: Any, within: float = 60.0, what: str = "an event") -> dict[str, Any]:
        """The first event satisfying `predicate`; AssertionError listing what came after `within`."""
        deadline = time.monotonic() + scaled(within)
        while True:
            for event in self.events:
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                seen = [(e["type"], e.get("data", {}).get("run_id")) for e in self.events]
                raise AssertionError(f"no {what} within {scaled(within):.0f}s; received {seen}")
            await asyncio.sleep(0.02)

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        """The events of one run, in arrival order."""
        return [e for e in self.events if e.get("data", {}).get("run_id") == run_id]


def otel_env(endpoint: str) -> dict[str, str]:
    """The environment of a process exporting spans over OTLP/HTTP to `endpoint` every 100 ms."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }


def spans_named(spans: list[Any], name: str, **attributes: object) -> list[Any]:
    """The received spans called `name` whose attributes include `attributes`."""
    return [
        s for s in spans if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())
    ]


def _builtins(obj: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(obj)
