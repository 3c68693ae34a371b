"""Live swarm state on a node: the one fold of the log (`SwarmTracker`), `GET /v1/swarms[/{id}]`,
and the snapshot a `subscribe` with `"snapshot": true` starts from.

The tracker is a hub batch observer, so it folds exactly the live batches the subscriptions see,
on either bus. It catches up by reading history with the buffer-then-merge pattern: while it
reads from its position to the end of the log, live batches are buffered; then the buffer is
folded, and `SwarmState.apply` skips what the reading already covered. It reads again

- at start-up (from the earliest retained event),
- when the hub's live reader (re)starts: whatever it missed is in the log after our position,
- on the first live batch after such a (re)start: the reader may have started after our last
  read (the Redis bus takes its start position asynchronously), and the read closes that gap,
- when the buffer overflows while reading.

A snapshot is the state at the fold position F. The subscription then attaches with cursor F, so
the hub replays whatever the fold has not seen yet and goes live: every event after F exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

import msgspec
from prometheus_client import Gauge
from starlette.requests import Request
from starlette.responses import Response

from dash_stream.bus.base import Bus, Record, is_outage
from dash_stream.bus.cursor import Cursor
from dash_stream.filters import ALL_TOPICS, TopicSet
from dash_stream.protocol.errors import BadRequest, DashError, Forbidden, NotFound, TooLarge, Unavailable
from dash_stream.server.auth import Principal
from dash_stream.server.context import ServerContext
from dash_stream.server.errors import from_dash_error
from dash_stream.server.http_api import principal_of
from dash_stream.state import StateLimits, SwarmState, SwarmView

log = logging.getLogger("dash_stream.swarms")

_PAGE: Final = 1000
_READY_WAIT_S: Final = 10.0
_encoder = msgspec.json.Encoder()
# a swarm id is a topic segment (dash_stream.events.TOPIC_SEGMENT)
_ID_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def valid_swarm_id(swarm_id: str) -> bool:
    """Whether `swarm_id` can be a topic segment (and so a swarm)."""
    return 0 < len(swarm_id) <= 64 and all(c in _ID_CHARS for c in swarm_id)


def swarm_acl_pattern(swarm_id: str) -> str:
    """The topic pattern a reader must be allowed to subscribe to in order to see a swarm's state."""
    return f"swarm.{swarm_id}.>"


def patterns_reach_swarm(patterns: Sequence[str], swarm_id: str) -> bool:
    """Whether some pattern matches a topic of the swarm, `swarm.<swarm_id>.<one or more>`."""
    for pattern in patterns:
        seg = pattern.split(".")
        if seg[0] == ">":
            return True
        if seg[0] not in ("swarm", "*") or len(seg) < 2:
            continue
        if seg[1] == ">" or (seg[1] in (swarm_id, "*") and len(seg) >= 3):
            return True
    return False


class SwarmTracker:
    """Owns the node's `SwarmState` and keeps it at the end of the log; see the module docstring."""

    def __init__(
        self,
        bus: Bus,
        state: SwarmState | None = None,
        *,
        max_buffer: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.state = state if state is not None else SwarmState()
        self.clock = clock
        self.max_buffer = max_buffer
        self.ready = asyncio.Event()
        self.syncs = 0
        self._armed = False  # a live batch arrived since the live reader last (re)started
        self._buffer: list[Record] | None = None  # live batches held while reading history
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ hub observer

    def observe(self, batch: list[Record]) -> None:
        """Fold a live batch now, or hold it while history is being read."""
        if not self._armed:
            self._armed = True
            self._request_sync()
        buffer = self._buffer
        if buffer is not None:
            if len(buffer) + len(batch) > self.max_buffer:
                buffer.clear()  # the next read from our position covers them
                self._request_sync()
            else:
                buffer.extend(batch)
            return
        apply = self.state.apply
        for rec in batch:
            apply(rec)

    def live_restarted(self) -> None:
        """The live reader (re)starts: read what it may have missed, and again after its first batch."""
        self._armed = False
        self._request_sync()

    def _request_sync(self) -> None:
        if self._buffer is None:
            self._buffer = []
        self._wake.set()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the catch-up task (it folds the retained history first)."""
        self._request_sync()
        self._task = asyncio.create_task(self._run(), name="swarm-state")

    async def stop(self) -> None:
        """Cancel and await the catch-up task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if is_outage(e):
                    log.warning(
                        "swarm state catch-up: bus unavailable (%s); retrying in %.2fs",
                        type(e).__name__,
                        backoff,
                    )
                else:
                    log.exception("swarm state catch-up failed; retrying in %.2fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                self._request_sync()

    async def sync(self) -> None:
        """Read the log from the fold position to its end, then fold the buffered live batches."""
        if self._buffer is None:
            self._buffer = []
        state = self.state
        after = state.position
        while True:
            page = await self.bus.read(ALL_TOPICS, after, _PAGE)
            if page.epoch_changed or page.trimmed:
                # our position is gone (log reset, or trimmed while we were behind): rebuild
                log.warning(
                    "swarm state rebuilt from the retained history (%s)",
                    "epoch changed" if page.epoch_changed else "trimmed",
                )
                state.reset()
                after = None
                continue
            for rec in page.records:
                state.apply(rec)
            state.seek(page.cursor)
            after = page.cursor
            if not page.more:
                break
            await asyncio.sleep(0)  # let the fan-out run between pages
        buffered, self._buffer = self._buffer, None
        for rec in buffered:
            state.apply(rec)
        self.syncs += 1
        self.ready.set()

    # ------------------------------------------------------------ reading

    async def wait_ready(self) -> None:
        """Wait for the first catch-up; Unavailable (retryable) when it takes longer than 10 s."""
        if self.ready.is_set():
            return
        try:
            async with asyncio.timeout(_READY_WAIT_S):
                await self.ready.wait()
        except TimeoutError:
            raise Unavailable("swarm state is still loading the event history", retry_after_ms=1000) from None

    def snapshot(
        self, include: Callable[[str], bool], *, agents: bool = True
    ) -> tuple[Cursor, list[SwarmView]]:
        """The fold position and the views of the swarms `include` accepts, taken together."""
        state = self.state
        position = state.position
        if position is None:
            raise Unavailable("swarm state is still loading the event history", retry_after_ms=1000)
        ids = [s for s in state.swarm_ids() if include(s)]
        return position, state.swarms(self.clock(), ids, agents=agents)


def make_tracker(ctx: ServerContext, limits: StateLimits | None = None) -> SwarmTracker:
    """The node's tracker, registered with the hub and exported as gauges on ctx.metrics."""
    tracker = SwarmTracker(ctx.bus, SwarmState(limits), max_buffer=ctx.settings.max_replay)
    ctx.hub.add_observer(tracker)
    registry = ctx.metrics.registry
    Gauge("dash_state_swarms", "Swarms held by the live swarm state", registry=registry).set_function(
        lambda: float(len(tracker.state))
    )
    Gauge(
        "dash_state_swarms_evicted", "Swarms evicted from the live swarm state (LRU)", registry=registry
    ).set_function(lambda: float(tracker.state.evicted_swarms))
    return tracker


def tracker_of(ctx: ServerContext) -> SwarmTracker:
    """The tracker `create_app` attached to the context."""
    tracker = ctx.swarms
    if tracker is None:
        raise Unavailable("swarm state is not enabled on this server")
    return tracker


# ---------------------------------------------------------------- WebSocket snapshot


class SwarmSnapshot(msgspec.Struct, frozen=True):
    """A snapshot for one subscription: the fold position and the swarms it may see."""

    cursor: Cursor
    swarms: list[SwarmView]


async def subscription_snapshot(
    ctx: ServerContext, principal: Principal, topics: TopicSet, max_bytes: int
) -> SwarmSnapshot:
    """The snapshot of the swarms the subscription's topics reach and the principal may read."""
    tracker = tracker_of(ctx)
    await tracker.wait_ready()
    patterns = topics.patterns

    def include(swarm_id: str) -> bool:
        return patterns_reach_swarm(patterns, swarm_id) and principal.can_subscribe(
            swarm_acl_pattern(swarm_id)
        )

    cursor, views = tracker.snapshot(include)
    size = len(_encoder.encode(views))
    if size > max_bytes:
        raise TooLarge(
            f"snapshot: {len(views)} swarms encode to {size} bytes, over {max_bytes}; "
            "subscribe to fewer swarms (swarm.<id>.>)"
        )
    return SwarmSnapshot(cursor, views)


# ---------------------------------------------------------------- HTTP


def _json(doc: object) -> Response:
    return Response(_encoder.encode(doc), media_type="application/json")


def _flag(request: Request, name: str, default: bool) -> bool:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise BadRequest(f"{name}: expected true or false")


async def list_swarms(request: Request) -> Response:
    """`GET /v1/swarms[?agents=false]`: every swarm the caller may read, with the fold cursor."""
    ctx: ServerContext = request.app.state.ctx
    try:
        principal = principal_of(ctx, request)
        agents = _flag(request, "agents", True)
        tracker = tracker_of(ctx)
        await tracker.wait_ready()
        cursor, views = tracker.snapshot(
            lambda s: principal.can_subscribe(swarm_acl_pattern(s)), agents=agents
        )
        return _json({"swarms": views, "cursor": cursor.encode(), "time": tracker.clock()})
    except DashError as e:
        return from_dash_error(e)


async def get_swarm(request: Request) -> Response:
    """`GET /v1/swarms/{swarm_id}[?agents=false]`: one swarm, 404 when it has no state."""
    ctx: ServerContext = request.app.state.ctx
    try:
        principal = principal_of(ctx, request)
        swarm_id = str(request.path_params["swarm_id"])
        if not valid_swarm_id(swarm_id):
            raise BadRequest("swarm_id: expected 1-64 characters of A-Z a-z 0-9 _ -")
        if not principal.can_subscribe(swarm_acl_pattern(swarm_id)):
            raise Forbidden(f"swarm {swarm_id}: subscribe to {swarm_acl_pattern(swarm_id)} not allowed")
        agents = _flag(request, "agents", True)
        tracker = tracker_of(ctx)
        await tracker.wait_ready()
        cursor, views = tracker.snapshot(lambda s: s == swarm_id, agents=agents)
        if not views:
            raise NotFound(f"swarm {swarm_id}: no events of this swarm are retained")
        return _json({**msgspec.to_builtins(views[0]), "cursor": cursor.encode()})
    except DashError as e:
        return from_dash_error(e)
