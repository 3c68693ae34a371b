"""The dispatcher: bounded, ordered, retried delivery of messages to sinks, and the DLQ.

- Write-ahead: a message is put in the in-flight set and the state is journaled *before* the
  first attempt, so a crash at any point leads to a re-send of the same bytes under the same
  idempotency key, never to a different message for the same events.
- Bounds: at most `max_pending` messages not yet settled (`submit` waits for room: this is the
  backpressure that stops the source from reading), and `max_in_flight` requests per receiver.
- Order: messages for one target (receiver, endpoint, agent, session, recipient) go one after
  another, in the order they were built.
- Retries: 408/425/429/5xx and network errors, with exponential backoff and equal jitter, never
  shorter than the server's `Retry-After` (capped by `max_retry_after`), up to `max_attempts`
  attempts within `retry_for`. A 413 splits the message in halves once more; other answers
  (400, 401, 403, 404, ...) are final. What still fails goes to the dead-letter queue.
- Tracing: each message's delivery (every attempt and backoff) runs inside a `forward <topic>`
  span (one event, a child of its `send` span) or a `digest <route>` span (linking every source);
  the sink's request spans (one per attempt) nest in it. A no-op when tracing is off.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import NamedTuple

from bridge.clock import Clock
from bridge.config import ReceiverConfig
from bridge.dlq import DeadLetter, DeadLetterQueue
from bridge.errors import StateError
from bridge.metrics import BridgeMetrics
from bridge.model import Message
from bridge.render import split_message
from bridge.sinks.base import SendResult, Sink, attempt_scope
from dash_stream.telemetry import NOOP_BRIDGE_TRACING, BridgeSpan, BridgeTracing
from dash_stream.telemetry import names as span_names

log = logging.getLogger("bridge.dispatch")


class RetryPolicy(NamedTuple):
    """How long and how often to try one message."""

    max_attempts: int = 8
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 300.0
    retry_for: float = 900.0

    @classmethod
    def of(cls, receiver: ReceiverConfig) -> RetryPolicy:
        """The policy configured on a receiver."""
        return cls(
            receiver.max_attempts,
            float(receiver.backoff_initial),
            float(receiver.backoff_max),
            float(receiver.max_retry_after),
            float(receiver.retry_for),
        )

    def delay(
        self, failures: int, retry_after: float | None, rng: Callable[[], float] = random.random
    ) -> float:
        """Seconds before the next attempt after `failures` failed ones."""
        ceiling = min(self.backoff_max, self.backoff_initial * 2 ** min(failures - 1, 30))
        delay = ceiling / 2 + rng() * ceiling / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return float(delay)


class Attempted(NamedTuple):
    """The last result of a delivery and how many attempts it took."""

    result: SendResult
    attempts: int
    reason: str  # "ok", "http_<status>", "retries_exhausted"


def trace_message(
    tracing: BridgeTracing, message: Message, receiver: str
) -> AbstractContextManager[BridgeSpan]:
    """The span of one message's delivery: `forward <topic>` for a single event, else `digest <route>`."""
    sources = message.sources
    if len(sources) == 1 and message.count == 1:
        src = sources[0]
        return tracing.forward(
            src.traceparent,
            src.tracestate,
            topic=src.topic or "unknown",  # unknown: journaled by a version that did not keep it
            event_id=src.event_id or src.offset,
            route=message.route,
            receiver=receiver,
        )
    return tracing.digest(
        (s.traceparent for s in sources),
        route=message.route,
        group=message.group,
        message_id=message.id,
        receiver=receiver,
    )


async def send_with_retries(
    sink: Sink,
    message: Message,
    policy: RetryPolicy,
    clock: Clock,
    *,
    metrics: BridgeMetrics | None = None,
    rng: Callable[[], float] = random.random,
    slots: asyncio.Semaphore | None = None,
    tracing: BridgeTracing = NOOP_BRIDGE_TRACING,
) -> Attempted:
    """Send until accepted, refused for good, or out of attempts/time (413 is returned as final).

    `slots` bounds concurrent requests: it is held during each request, not during backoff sleeps.
    The whole delivery is one `forward`/`digest` span (see `trace_message`), failed unless accepted.
    """
    with trace_message(tracing, message, sink.name) as span:
        if tracing.enabled:
            span.set_attribute(span_names.BRIDGE_MESSAGE_ID, message.id)
        attempted = await _attempts(sink, message, policy, clock, metrics, rng, slots)
        if not attempted.result.ok:
            span.record_error(attempted.reason)
        return attempted


async def _attempts(
    sink: Sink,
    message: Message,
    policy: RetryPolicy,
    clock: Clock,
    metrics: BridgeMetrics | None,
    rng: Callable[[], float],
    slots: asyncio.Semaphore | None,
) -> Attempted:
    started = clock.time()
    attempt = 0
    while True:
        attempt += 1
        with attempt_scope(attempt):
            if slots is not None:
                async with slots:
                    t0 = time.perf_counter()
                    result = await sink.send(message)
            else:
                t0 = time.perf_counter()
                result = await sink.send(message)
        if metrics is not None:
            metrics.sink_latency.labels(sink.name).observe(time.perf_counter() - t0)
            metrics.sink_requests.labels(sink.name, result.outcome).inc()
        if result.ok:
            return Attempted(result, attempt, "ok")
        if not result.retryable:
            return Attempted(result, attempt, f"http_{result.status}" if result.status else "refused")
        delay = policy.delay(attempt, result.retry_after, rng)
        if attempt >= policy.max_attempts or clock.time() - started + delay > policy.retry_for:
            return Attempted(result, attempt, "retries_exhausted")
        if metrics is not None:
            metrics.retried.labels(sink.name).inc()
        log.warning(
            "message %s to %s failed (%s %s); attempt %d, retrying in %.2fs",
            message.id,
            sink.name,
            result.status or "network",
            result.detail[:120],
            attempt,
            delay,
        )
        await clock.sleep(delay)


class Dispatcher:
    """See the module docstring; `on_settled` is called once per message accepted or dead-lettered."""

    def __init__(
        self,
        sinks: Mapping[str, Sink],
        receivers: Mapping[str, ReceiverConfig],
        dlq: DeadLetterQueue,
        *,
        clock: Clock,
        metrics: BridgeMetrics,
        on_settled: Callable[[Message], None],
        journal: Callable[[Sequence[Message], Sequence[str]], Awaitable[None]],
        max_pending: int = 1000,
        rng: Callable[[], float] = random.random,
        tracing: BridgeTracing = NOOP_BRIDGE_TRACING,
    ) -> None:
        """Nothing runs until messages are submitted."""
        self.sinks = sinks
        self.policies = {name: RetryPolicy.of(r) for name, r in receivers.items()}
        self.dlq = dlq
        self.clock = clock
        self.metrics = metrics
        self.inflight: dict[str, Message] = {}
        self._on_settled = on_settled
        self._journal = journal
        self._max_pending = max(1, max_pending)
        self._room = asyncio.Event()
        self._receiver_slots = {name: asyncio.Semaphore(r.max_in_flight) for name, r in receivers.items()}
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = rng
        self._tracing = tracing
        self._closing = False

    async def submit(self, messages: Sequence[Message]) -> None:
        """Journal and start delivering messages; waits while `max_pending` are unsettled."""
        parts: list[Message] = []
        for message in messages:
            sink = self.sinks[message.target.receiver]
            pieces = split_message(message, sink.max_body_bytes, sink.measure)
            if len(pieces) > 1:
                self.metrics.split.labels(sink.name).inc()
            parts.extend(pieces)
        if not parts:
            return
        while len(self.inflight) >= self._max_pending:
            self._room.clear()
            await self._room.wait()
        for part in parts:
            self.inflight[part.id] = part
        self.metrics.in_flight.set(len(self.inflight))
        await self._journal(parts, ())
        for part in parts:
            self._start(part)

    def resume(self, messages: Sequence[Message]) -> None:
        """Send again messages journaled by an earlier run (already in the state: no journaling)."""
        for message in messages:
            if message.target.receiver not in self.sinks:
                log.error(
                    "in-flight message %s names unknown receiver %s: dead-lettering it",
                    message.id,
                    message.target.receiver,
                )
            self.inflight[message.id] = message
            self._start(message)
        self.metrics.in_flight.set(len(self.inflight))

    def _start(self, message: Message) -> None:
        key = message.target.ordering_key()
        previous = self._tails.get(key)
        task = asyncio.create_task(self._run(message, previous), name=f"bridge-send-{message.id[:16]}")
        self._tails[key] = task
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if self._tails.get(key) is t:
                del self._tails[key]

        task.add_done_callback(done)

    async def _run(self, message: Message, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # order per target; its failure is its own business
        sink = self.sinks.get(message.target.receiver)
        if sink is None:
            await self._dead_letter(
                message, SendResult(ok=False, detail="unknown receiver"), 0, "unknown_receiver"
            )
            return
        await self._deliver(sink, message)

    async def _deliver(self, sink: Sink, message: Message) -> None:
        policy = self.policies[sink.name]
        attempted = await send_with_retries(
            sink,
            message,
            policy,
            self.clock,
            metrics=self.metrics,
            rng=self._rng,
            slots=self._receiver_slots[sink.name],
            tracing=self._tracing,
        )
        if attempted.result.ok:
            self.metrics.forwarded.labels(sink.name).inc()
            self.metrics.forwarded_events.labels(sink.name).inc(len(message.sources))
            self._settle(message)
            return
        if attempted.result.status == 413:
            smaller = split_message(message, max(4096, sink.measure(message) // 2), sink.measure)
            if smaller != [message]:
                log.warning(
                    "message %s too large for %s: split into %d parts", message.id, sink.name, len(smaller)
                )
                self.metrics.split.labels(sink.name).inc()
                for part in smaller:
                    self.inflight[part.id] = part
                self.inflight.pop(message.id, None)
                await self._journal(smaller, [message.id])
                for part in smaller:
                    await self._deliver(sink, part)
                return
        await self._dead_letter(message, attempted.result, attempted.attempts, attempted.reason)

    async def _dead_letter(self, message: Message, result: SendResult, attempts: int, reason: str) -> None:
        receiver = message.target.receiver
        log.error(
            "message %s (route %s, %d events) to %s failed for good: %s %s; dead-lettered",
            message.id,
            message.route,
            len(message.sources),
            receiver,
            reason,
            result.detail[:200],
        )
        entry = DeadLetter(
            id=message.id,
            receiver=receiver,
            message=message,
            reason=reason,
            status=result.status,
            detail=result.detail,
            attempts=attempts,
            failed_at=self.clock.time(),
        )
        while True:
            try:
                stored = await asyncio.to_thread(self.dlq.append, entry)
                break
            except StateError as e:
                if self._closing:
                    return  # stays in flight: the next run sends it again
                log.error("cannot store message %s in the DLQ: %s; retrying in 5s", message.id, e)
                await self.clock.sleep(5.0)
        if stored:
            self.metrics.dead_lettered.labels(receiver, reason).inc()
        else:
            self.metrics.dlq_dropped.inc()
            log.error(
                "DLQ full: message %s (route %s) is LOST; replay or purge the DLQ", message.id, message.route
            )
        self._settle(message)

    def _settle(self, message: Message) -> None:
        self.inflight.pop(message.id, None)
        self.metrics.in_flight.set(len(self.inflight))
        self._on_settled(message)
        self._room.set()

    @property
    def busy(self) -> int:
        """Delivery tasks running or waiting."""
        return len(self._tasks)

    async def close(self, grace_s: float = 5.0) -> None:
        """Let running sends finish for up to `grace_s`, then cancel the rest (they stay in flight)."""
        self._closing = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
