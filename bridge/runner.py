"""`Bridge`: the async runtime that owns the source, the timers, the dispatcher and the checkpoints.

Tasks (each started by `start()`, cancelled and awaited by `stop()`):

- source: reads batches, feeds the pipeline, submits the messages that must go now (waiting when
  the dispatcher is full: backpressure all the way to the server);
- timers: flushes digest groups when their timers pass, expires dedup entries;
- checkpoints: writes the state (cursor, ledger, in-flight, dedup, inhibitions) when it changed,
  at most every `state.checkpoint_interval`; between checkpoints the dispatcher journals each
  message before its first attempt (see state.py).

`stop()` stops reading, lets sends in progress finish for a moment, and writes a final checkpoint:
what was not settled stays in flight or beyond the cursor and is handled by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from bridge.clock import Clock, SystemClock
from bridge.config import BridgeConfig
from bridge.dispatch import Dispatcher
from bridge.dlq import DeadLetterQueue, JsonlDeadLetterQueue, MemoryDeadLetterQueue
from bridge.errors import ConfigError, StateError
from bridge.metrics import BridgeMetrics
from bridge.model import Message
from bridge.pipeline import Pipeline
from bridge.rules import EventFilter
from bridge.sinks import Sink, make_sinks
from bridge.source import BusSource, EventSource, WsSource
from bridge.state import FileStateStore, MemoryStateStore, PersistedState, StateStore
from bridge.tracker import Tracker
from dash_stream.bus.base import Bus
from dash_stream.telemetry import NOOP_BRIDGE_TRACING, BridgeTracing

log = logging.getLogger("bridge")

_EXPIRE_EVERY_S = 60.0
_JOURNAL_RETRY_S = 2.0


def make_source(config: BridgeConfig, *, bus: Bus | None = None) -> EventSource:
    """The source the config names (`bus` given: read it in-process whatever the config says)."""
    src = config.source
    if bus is not None:
        return BusSource(bus, topics=src.topics, start=src.start)
    if src.server:
        from pathlib import Path

        from bridge.config import ReceiverConfig
        from bridge.sinks.openclaw import load_token

        token = None
        if src.token_env or src.token_file:
            holder = ReceiverConfig(name="source", token_env=src.token_env, token_file=src.token_file)
            token = load_token(holder, "source", Path(config.base_dir)).reveal()
        where = EventFilter(src.where, origin=config.origin, forward_own=src.forward_own).server_where(
            src.where
        )
        return WsSource(
            src.server,
            topics=src.topics,
            where=where,
            start=src.start,
            token=token,
            max_buffered_events=src.max_buffered_events,
        )
    if src.bus in (None, "", "memory", "memory://"):
        raise ConfigError(
            "source: the memory bus lives inside one server: set source.server to its ws:// URL, "
            "or run the bridge embedded with `dash-stream serve --bridge <config>`"
        )
    raise ConfigError(f"source.bus: {src.bus!r} is not supported by this build (use source.server)")


class Bridge:
    """One running bridge; see the module docstring."""

    def __init__(
        self,
        config: BridgeConfig,
        *,
        bus: Bus | None = None,
        source: EventSource | None = None,
        sinks: dict[str, Sink] | None = None,
        dlq: DeadLetterQueue | None = None,
        store: StateStore | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        dry_run: bool = False,
        tracing: BridgeTracing | None = None,
    ) -> None:
        """Wire the parts; nothing runs and no file is touched until `start()`.

        `tracing` (from `dash_stream.telemetry.bridge_tracing`): spans per forwarded event, per
        digest and per OpenClaw request; None is the no-op (the events' contexts still pass on).
        The caller owns the tracer provider behind it (and shuts it down after `stop()`).
        """
        self.config = config
        self.dry_run = dry_run
        self.tracing: BridgeTracing = tracing if tracing is not None else NOOP_BRIDGE_TRACING
        self.metrics = BridgeMetrics(registry)
        self.clock: Clock = clock or SystemClock()
        self.sinks = sinks if sinks is not None else make_sinks(config, dry_run=dry_run, tracing=self.tracing)
        self.source = source if source is not None else make_source(config, bus=bus)
        self.store: StateStore = store or (
            MemoryStateStore(FileStateStore(config.state_path).load())
            if dry_run
            else FileStateStore(config.state_path, fsync=config.state.fsync)
        )
        self.dlq: DeadLetterQueue = dlq or (
            MemoryDeadLetterQueue()
            if dry_run
            else JsonlDeadLetterQueue(
                config.dlq_path, max_entries=config.dlq.max_entries, fsync=config.state.fsync
            )
        )
        self.pipeline: Pipeline | None = None
        self.dispatcher: Dispatcher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._timer_wake = asyncio.Event()
        self._dirty = False
        self._save_lock = asyncio.Lock()
        self._settled_ids: list[str] = []
        self._stopped = asyncio.Event()
        self._failure: BaseException | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the state, re-send journaled messages, start the tasks."""
        saved = await asyncio.to_thread(self.store.open) or PersistedState()
        now = self.clock.time()
        restored = [(src.claim, src.offset) for m in saved.inflight for src in m.sources]
        tracker = Tracker(saved.cursor, [*saved.ledger, *restored], max_ledger=self.config.state.max_ledger)
        pipeline = self.pipeline = Pipeline(self.config, metrics=self.metrics, tracker=tracker)
        pipeline.deduper.restore(saved.dedup, now)
        pipeline.inhibitor.restore(saved.inhibitions, now)
        self.dispatcher = Dispatcher(
            self.sinks,
            {r.name: r for r in self.config.receivers},
            self.dlq,
            clock=self.clock,
            metrics=self.metrics,
            on_settled=self._settled,
            journal=self.journal,
            max_pending=self.config.limits.max_pending_messages,
            tracing=self.tracing,
        )
        if saved.inflight:
            log.info("re-sending %d message(s) in flight when the last run stopped", len(saved.inflight))
            self.dispatcher.resume(saved.inflight)
        log.info(
            "bridge started: %d route(s), %d receiver(s), resuming from %s%s",
            len(pipeline.router.routes) - 1,
            len(self.sinks),
            saved.cursor or f"the {self.config.source.start} event",
            " (dry run: nothing is sent, the cursor is not saved)" if self.dry_run else "",
        )
        for name, loop in (
            ("source", self._source_loop),
            ("timers", self._timer_loop),
            ("state", self._state_loop),
        ):
            self._tasks.append(asyncio.create_task(self._guard(loop), name=f"bridge-{name}"))

    async def _guard(self, loop: Any) -> None:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            log.error("bridge task failed: %s", e, exc_info=not isinstance(e, (ConfigError, StateError)))
            self._failure = e
            self._stopped.set()

    async def wait(self) -> None:
        """Until a task fails (re-raising its error) or `stop()` is called."""
        await self._stopped.wait()
        if self._failure is not None:
            raise self._failure

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop reading, let sends finish briefly, write the final checkpoint, release everything."""
        self._stopped.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.dispatcher is not None:
            await self.dispatcher.close(grace_s)
        if self.pipeline is not None:
            with contextlib.suppress(StateError):
                await self._save()
        for sink in self.sinks.values():
            await sink.close()
        await asyncio.to_thread(self.store.close)

    async def __aenter__(self) -> Bridge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ loops

    async def _source_loop(self) -> None:
        pipeline, dispatcher = self.pipeline, self.dispatcher
        assert pipeline is not None and dispatcher is not None
        m = self.metrics
        async with contextlib.aclosing(self.source.batches(pipeline.tracker.watermark)) as batches:
            async for batch in batches:
                m.source_connected.set(1)
                if batch.gap is not None:
                    m.source_gaps.labels(batch.gap).inc()
                    pipeline.gap()
                    continue
                messages = pipeline.ingest(batch.events, batch.cursor, self.clock.time())
                self._dirty = True
                if messages:
                    await dispatcher.submit(messages)
                self._timer_wake.set()
                m.lag.set(pipeline.tracker.held)
        m.source_connected.set(0)

    async def _timer_loop(self) -> None:
        pipeline, dispatcher = self.pipeline, self.dispatcher
        assert pipeline is not None and dispatcher is not None
        next_expiry = self.clock.time() + _EXPIRE_EVERY_S
        while True:
            now = self.clock.time()
            if now >= next_expiry:
                pipeline.expire(now)
                next_expiry = now + _EXPIRE_EVERY_S
            deadline = pipeline.next_deadline()
            if deadline is not None and deadline <= now:
                messages = pipeline.tick(now)
                if messages:
                    await dispatcher.submit(messages)
                continue
            until = min(deadline, next_expiry) if deadline is not None else next_expiry
            self._timer_wake.clear()
            await self._sleep_or_wake(until - now)

    async def _sleep_or_wake(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(self._timer_wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (sleeper, waker):
                f.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)

    async def _state_loop(self) -> None:
        assert self.pipeline is not None
        while True:
            await self.clock.sleep(float(self.config.state.checkpoint_interval))
            if self._dirty or self.pipeline.tracker.moved:
                try:
                    await self._save()
                except StateError as e:
                    log.error("checkpoint failed: %s", e)

    # ------------------------------------------------------------ state

    def _settled(self, message: Message) -> None:
        assert self.pipeline is not None
        self.pipeline.settle(message)
        self._settled_ids.append(message.id)
        self._dirty = True
        self.metrics.lag.set(self.pipeline.tracker.held)

    def snapshot(self) -> PersistedState:
        """The state to save now (built synchronously, so it is consistent)."""
        assert self.pipeline is not None and self.dispatcher is not None
        now = self.clock.time()
        pipeline = self.pipeline
        return PersistedState(
            cursor=pipeline.tracker.watermark,
            ledger=pipeline.tracker.ledger(),
            inflight=list(self.dispatcher.inflight.values()),
            dedup=pipeline.deduper.snapshot(now),
            inhibitions=pipeline.inhibitor.snapshot(now),
            saved_at=now,
        )

    async def _save(self) -> None:
        """Write a checkpoint (which also empties the journal)."""
        assert self.pipeline is not None
        async with self._save_lock:
            self._dirty = False
            self.pipeline.tracker.moved = False
            settled, self._settled_ids = self._settled_ids, []
            state = self.snapshot()
            try:
                await asyncio.to_thread(self.store.save, state)
            except StateError:
                self._dirty = True
                self._settled_ids[:0] = settled
                self.metrics.checkpoint_errors.inc()
                raise
            self.metrics.checkpoints.inc()

    async def journal(self, added: Sequence[Message], removed: Sequence[str] = ()) -> None:
        """Write-ahead before sending: retry until the journal holds `added` (unjournaled is unsafe)."""
        while True:
            async with self._save_lock:
                settled, self._settled_ids = [*self._settled_ids, *removed], []
                try:
                    await asyncio.to_thread(self.store.journal, added, settled)
                    return
                except StateError as e:
                    self._settled_ids[:0] = settled
                    self.metrics.checkpoint_errors.inc()
                    log.error(
                        "cannot journal messages before sending: %s; retrying in %.0fs", e, _JOURNAL_RETRY_S
                    )
            await self.clock.sleep(_JOURNAL_RETRY_S)

    # ------------------------------------------------------------ introspection

    @property
    def idle(self) -> bool:
        """No pending digest event and no unsettled message (tests wait for this)."""
        return (
            self.pipeline is not None
            and self.dispatcher is not None
            and self.pipeline.digester.pending_events == 0
            and not self.dispatcher.inflight
        )
