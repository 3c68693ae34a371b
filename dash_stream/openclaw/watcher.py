"""The watcher: keeps one operator connection to a gateway and turns what it sees into events.

    watcher = Watcher(config, token, ServerSink("http://127.0.0.1:8080"))
    await watcher.start()              # raises when the dash-stream side cannot be reached
    await watcher.wait_connected(30)   # GatewayError when the gateway refuses the token
    ...
    await watcher.stop()

- Connection: `gateway.GatewayConnection` (client `cli`, role operator, `operator.read`); after
  the hello it calls `sessions.subscribe` (wake/heartbeat runs, transcripts, `session.tool`) and
  takes the start-up snapshot (`agents.list`, `sessions.list`) as events.
- Reconnects: exponential backoff with equal jitter (`backoff_initial` .. `backoff_max`), reset
  after each successful hello. A `shutdown` event and close 1012 (the gateway restarts) are
  expected: the next attempt follows after the first backoff step. A connection that shows no
  frame for 2.5 tick intervals is closed and reopened. No connection for `down_after` publishes
  `openclaw.gateway.status` `unreachable` (high), once per outage.
- Processing: `pipeline.Pipeline` (frames -> events, no I/O), then `sinks.Outbox` (bounded,
  batches, retries, spans) -> the sink.

Every task here is started by `start()` and cancelled and awaited by `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from dash_stream.client.policy import Backoff
from dash_stream.openclaw import status as st
from dash_stream.openclaw import translate as tr
from dash_stream.openclaw.config import WatchConfig
from dash_stream.openclaw.gateway import GatewayConnection, GatewayError
from dash_stream.openclaw.metrics import WatchMetrics
from dash_stream.openclaw.pipeline import Pipeline, Step
from dash_stream.openclaw.sinks import Outbox, Sink
from dash_stream.telemetry import PublishTracing

log = logging.getLogger("dash_stream.openclaw")

_TIMER_S = 0.1


class Watcher:
    """One gateway, one sink; see the module docstring."""

    def __init__(
        self,
        config: WatchConfig,
        token: str,
        sink: Sink,
        *,
        metrics: WatchMetrics | None = None,
        tracing: PublishTracing | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`config` must have passed `config.validate`; `tracing` is the publish tracing or None."""
        assert config.gateway is not None
        self.config = config
        self.url = config.gateway
        self._token = token
        self.sink = sink
        self.metrics = metrics if metrics is not None else WatchMetrics()
        self.clock = clock
        self.gateway = config.gateway_name
        self.pipeline = Pipeline(config, self.metrics)
        self.outbox = Outbox(
            sink, self.metrics, tracing=tracing, max_events=config.queue_max, batch_max=config.batch_max
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._history: dict[str, asyncio.Task[None]] = {}
        self._first: asyncio.Future[None] | None = None
        self._conn: GatewayConnection | None = None
        self._last_frame = 0.0
        self._lost_at: float | None = None
        self._last_boot = "never"
        self._last_error = "not connected yet"
        self._reported_down = False
        self.reconnects = 0
        self.failure: GatewayError | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        """Whether a gateway connection is open right now."""
        return self._conn is not None

    async def start(self) -> None:
        """Open the sink (may raise), then start connecting and publishing in the background."""
        await self.sink.start()
        self._first = asyncio.get_running_loop().create_future()
        self._lost_at = self.clock()
        self.outbox.start()
        self._tasks = [
            asyncio.create_task(self._connection_loop(), name="openclaw-connection"),
            asyncio.create_task(self._timer_loop(), name="openclaw-timers"),
        ]

    async def wait_connected(self, within: float | None = None) -> None:
        """Wait for the first hello; GatewayError when it was refused for good, TimeoutError."""
        assert self._first is not None, "start() first"
        async with asyncio.timeout(within):
            await asyncio.shield(self._first)

    async def wait(self) -> None:
        """Return when the watcher gave up (a fatal refusal before any connection succeeded)."""
        if self._tasks:
            await asyncio.shield(self._tasks[0])

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop reading, give queued events `grace_s` to go out, close the sink (idempotent).

        Runs still waiting for their origin are dropped, not published unlabelled: a bridge run's
        events without `origin` could be forwarded again.
        """
        tasks, self._tasks = self._tasks, []
        for task in [*tasks, *self._history.values()]:
            task.cancel()
        for task in [*tasks, *self._history.values()]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._history.clear()
        held = self.pipeline.tracker.held_runs
        if held:
            log.info("dropping the events of %d runs whose origin is not known yet", held)
        await self.outbox.stop(grace_s)
        await self.sink.close()
        self.metrics.connected.set(0)

    # ------------------------------------------------------------ the connection

    async def _connection_loop(self) -> None:
        backoff = Backoff(self.config.backoff_initial, self.config.backoff_max)
        ever = False
        while True:
            try:
                conn = await GatewayConnection.open(self.url, self._token)
            except GatewayError as e:
                self.metrics.connect_failures.labels(e.code).inc()
                self._last_error = e.message
                if e.fatal and not ever:
                    self.failure = e
                    self._settle_first(e)
                    log.error("gateway %s refused the connection: %s", self.url, e)
                    return
                delay = backoff.next_delay(e.retry_after_ms)
                log.warning("gateway %s: %s; retrying in %.1fs", self.url, e, delay)
                await asyncio.sleep(delay)
                continue
            if ever:
                self.reconnects += 1
                self.metrics.reconnects.inc()
            ever = True
            backoff.reset()
            log.info("connected to gateway %s (boot %s)", self.url, conn.boot_id)
            self._settle_first(None)
            await self._serve(conn)
            delay = backoff.next_delay()
            log.info(
                "gateway connection closed (%s %s); reconnecting in %.1fs",
                conn.close_code,
                conn.close_reason or "",
                delay,
            )
            await asyncio.sleep(delay)

    def _settle_first(self, error: GatewayError | None) -> None:
        if self._first is not None and not self._first.done():
            if error is None:
                self._first.set_result(None)
            else:
                self._first.set_exception(error)
                self._first.exception()  # retrieved here: wait_connected() re-raises it if asked

    async def _serve(self, conn: GatewayConnection) -> None:
        self._conn = conn
        self._lost_at = None
        self._reported_down = False
        self._last_frame = time.monotonic()
        self.metrics.connected.set(1)
        helpers = [
            asyncio.create_task(self._setup(conn), name="openclaw-setup"),
            asyncio.create_task(self._watchdog(conn), name="openclaw-watchdog"),
        ]
        try:
            async for frame in conn.events():
                self._last_frame = time.monotonic()
                step = self.pipeline.frame(
                    str(frame.get("event")), frame.get("payload"), boot_id=conn.boot_id, now=self.clock()
                )
                await self._publish(step, conn)
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    try:
                        await task
                    except Exception:  # a bug in the snapshot must not end the connection loop
                        log.exception("%s failed", task.get_name())
            await conn.close()
            self._conn = None
            self.metrics.connected.set(0)
            self._lost_at = self.clock()
            self._last_boot = conn.boot_id
            self._last_error = f"connection closed ({conn.close_code} {conn.close_reason})".strip()

    async def _setup(self, conn: GatewayConnection) -> None:
        """Subscribe to session events and publish the start-up snapshot."""
        try:
            await conn.request("sessions.subscribe", {})
        except GatewayError as e:
            log.warning("sessions.subscribe refused (%s): wake/heartbeat runs and origins will be missed", e)
        agents = await self._read(conn, "agents.list", {})
        sessions: dict[str, Any] = {}
        if self.config.snapshot_limit:
            sessions = await self._read(conn, "sessions.list", {"limit": self.config.snapshot_limit})
        drafts = [st.gateway_up(conn.hello, agents, sessions, int(self.clock() * 1000))]
        drafts.extend(st.snapshot(sessions, self.config.snapshot_limit))
        await self._publish(self.pipeline.offer(drafts, self.clock()), conn)
        for draft in drafts:  # runs already going: their prompts went by before we connected
            if draft.run_id and draft.session_key and self.pipeline.is_held(draft.run_id):
                self._fetch_history(conn, draft.session_key)

    @staticmethod
    async def _read(conn: GatewayConnection, method: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = await conn.request(method, params)
        except GatewayError as e:
            log.warning("%s failed: %s", method, e)
            return {}
        return answer if isinstance(answer, dict) else {}

    async def _watchdog(self, conn: GatewayConnection) -> None:
        limit = 2.5 * conn.tick_interval_s
        while True:
            await asyncio.sleep(min(limit / 4, 5.0))
            if time.monotonic() - self._last_frame > limit:
                log.warning("no frame from the gateway for %.0fs; reconnecting", limit)
                await conn.close(4000, "no tick")
                return

    # ------------------------------------------------------------ frames -> events

    async def _publish(self, step: Step, conn: GatewayConnection | None = None) -> None:
        target = conn if conn is not None else self._conn
        if target is not None:
            for session_key in step.history:
                self._fetch_history(target, session_key)
        for out in step.events:
            await self.outbox.put(out.event, out.attributes, out.ts_ms)

    def _fetch_history(self, conn: GatewayConnection, session_key: str) -> None:
        """Read the prompt of a run first seen mid-way, to learn its origin (in the background)."""
        if session_key in self._history:
            return
        task = asyncio.create_task(self._history_of(conn, session_key), name="openclaw-history")
        self._history[session_key] = task
        task.add_done_callback(lambda _t: self._history.pop(session_key, None))

    async def _history_of(self, conn: GatewayConnection, session_key: str) -> None:
        keys = [session_key]
        if ":run:" in session_key:  # a hook run's transcript is also under its job's key
            keys.append(session_key.split(":run:", 1)[0])
        for key in keys:
            try:
                answer = await conn.request("chat.history", {"sessionKey": key, "limit": 20})
            except GatewayError as e:
                log.debug("chat.history %s: %s", key, e)
                continue
            prompt = tr.history_user_text(answer) if isinstance(answer, dict) else None
            if prompt is not None:
                await self._publish(self.pipeline.transcript(session_key, prompt, self.clock()))
                return

    # ------------------------------------------------------------ timers

    async def _timer_loop(self) -> None:
        while True:
            await asyncio.sleep(_TIMER_S)
            try:
                await self._tick(self.clock())
            except Exception:  # held runs must keep expiring whatever went wrong once
                log.exception("watcher timers failed")

    async def _tick(self, now: float) -> None:
        await self._publish(self.pipeline.expire(now))
        lost = self._lost_at
        if lost is not None and not self._reported_down and now - lost >= self.config.down_after:
            self._reported_down = True
            down = st.gateway_unreachable(self._last_boot, int(now * 1000), self._last_error, now - lost)
            await self._publish(self.pipeline.offer([down], now))
