"""RedisBus: the event log on Redis Streams, shared by many dash-stream nodes.

Layout (DESIGN.md "The bus"): `partitions` streams `{dash:p<N>}:s`, a topic maps to partition
`crc32(topic) % partitions` so one topic keeps its order; every partition stores the deployment's
epoch under its own hash tag (`{dash:p<N>}:epoch`) and its dedup keys (`{dash:p<N>}:d:<sha1>`),
so one Lua script appends, dedups and checks the epoch atomically, and a Cluster spreads the
partitions over masters. A flushed or replaced Redis loses the epoch keys: the next publish
notices, a new epoch is written, and old cursors get `epoch_changed` instead of wrong replays.

Positions are stream IDs `ms-seq` packed as `ms << 20 | seq`. Each node runs one blocking reader
per partition on a client of its own (never one per subscriber) and a pooled client for
publishing and history.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlparse

import msgspec

from dash_stream.bus.base import Incoming, Lagged, Page, Published, Record
from dash_stream.bus.cursor import BadCursor, Cursor
from dash_stream.events import Event, with_offset
from dash_stream.filters import ALL_TOPICS, TopicSet
from dash_stream.protocol.errors import Unavailable

log = logging.getLogger("dash_stream.bus.redis")

_SEQ_BITS = 20
_SEQ_MASK = (1 << _SEQ_BITS) - 1
_LUA = resources.files("dash_stream.bus").joinpath("lua/publish.lua").read_text()
_event_decoder = msgspec.json.Decoder(Event)
_CLOSED: Any = object()  # put into live queues by close()
_POOL_SIZE = 64
_LIVE_BATCH = 2_000  # records per live batch


def pack_id(stream_id: bytes | str) -> int:
    """A stream ID `ms-seq` as one comparable integer position."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return (int(ms) << _SEQ_BITS) | int(seq or 0)


def unpack_id(position: int) -> str:
    """The stream ID of a position."""
    return f"{position >> _SEQ_BITS}-{position & _SEQ_MASK}"


def partition_of(topic: str, partitions: int) -> int:
    """The partition of a topic: a stable hash, so one topic keeps its order."""
    return zlib.crc32(topic.encode()) % partitions


@dataclass(frozen=True)
class RedisTarget:
    """What a bus URL names."""

    kind: str  # standalone | sentinel | cluster
    hosts: tuple[tuple[str, int], ...]
    db: int = 0
    password: str | None = None
    username: str | None = None
    service: str | None = None  # sentinel master name
    tls: bool = False


def parse_url(url: str) -> RedisTarget:
    """Parse `redis://`, `rediss://`, `redis+sentinel://h:p,h:p/name`, `redis+cluster://h:p,h:p`."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"bus: {url!r} is not a URL")
    kinds = {
        "redis": "standalone",
        "rediss": "standalone",
        "redis+sentinel": "sentinel",
        "redis+cluster": "cluster",
        "rediss+cluster": "cluster",
        "rediss+sentinel": "sentinel",
    }
    if scheme not in kinds:
        raise ValueError(f"bus: unsupported scheme {scheme!r}")
    userinfo, _, hostpart = rest.rpartition("@")
    hostlist, _, path = hostpart.partition("/")
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        if not item:
            continue
        parsed = urlparse(f"//{item}")
        hosts.append(
            (parsed.hostname or "127.0.0.1", parsed.port or (26379 if "sentinel" in scheme else 6379))
        )
    if not hosts:
        raise ValueError("bus: no host in URL")
    username = password = None
    if userinfo:
        user, _, pw = userinfo.partition(":")
        username, password = (unquote(user) or None), (unquote(pw) or None)
    kind = kinds[scheme]
    service = path.strip("/") or None if kind == "sentinel" else None
    if kind == "sentinel" and not service:
        raise ValueError("bus: redis+sentinel:// needs the master name as its path (…/mymaster)")
    db = int(path.strip("/") or 0) if kind == "standalone" and path.strip("/").isdigit() else 0
    return RedisTarget(kind, tuple(hosts), db, password, username, service, scheme.startswith("rediss"))


class RedisBus:
    """The Bus on Redis Streams; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        partitions: int = 16,
        max_events: int = 100_000,
        max_age_s: float = 24 * 3600.0,
        dedup_window_s: float = 600.0,
        namespace: str = "dash",
        min_replicas: int = 0,
        replica_timeout_ms: int = 1000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.target = parse_url(url)
        if min_replicas and self.target.kind == "cluster":
            raise ValueError("bus: min_replicas (WAIT) is supported on standalone and Sentinel deployments")
        self.min_replicas = min_replicas
        self.replica_timeout_ms = replica_timeout_ms
        self.partitions = partitions
        self.max_events = max_events  # per partition
        self.max_age_s = max_age_s
        self.dedup_ms = int(dedup_window_s * 1000)
        self.ns = namespace
        # an injected clock also stamps stream IDs, so age retention follows it (tests of windows)
        self._clock = clock or time.time
        self._stamp_ids = clock is not None
        self._epoch: str | None = None
        self._client: Any = None
        self._reader: Any = None
        self._script: Any = None
        self._closed = False
        self._lock = asyncio.Lock()
        self._owned: list[Any] = []  # every client and sentinel connection made, closed by close()
        self._live_queues: set[asyncio.Queue[Any]] = set()
        # commands in flight at once: bounds the pool (redis-py refuses, not waits, past its limit)
        self._gate = asyncio.Semaphore(max(1, _POOL_SIZE - 8))

    # ------------------------------------------------------------ keys

    def stream_key(self, p: int) -> str:
        """The stream of partition `p`."""
        return f"{{{self.ns}:p{p}}}:s"

    def epoch_key(self, p: int) -> str:
        """Where partition `p` keeps the deployment's epoch."""
        return f"{{{self.ns}:p{p}}}:epoch"

    def trimmed_key(self, p: int) -> str:
        """The newest ID retention removed from partition `p`."""
        return f"{{{self.ns}:p{p}}}:tr"

    def dedup_key(self, p: int, source: str, event_id: str) -> str:
        """The dedup key of (source, id) in partition `p`."""
        digest = hashlib.sha1(f"{source}\x00{event_id}".encode(), usedforsecurity=False).hexdigest()
        return f"{{{self.ns}:p{p}}}:d:{digest}"

    # ------------------------------------------------------------ connections

    def _make_client(self, *, blocking: bool) -> Any:
        import redis.asyncio as aioredis
        from redis.asyncio.cluster import ClusterNode, RedisCluster
        from redis.asyncio.sentinel import Sentinel

        t = self.target
        common: dict[str, Any] = {
            "max_connections": _POOL_SIZE,
            "password": t.password,
            "username": t.username,
            "socket_connect_timeout": 2.0,
            "socket_timeout": None if blocking else 5.0,
            "health_check_interval": 0 if blocking else 15,
        }
        if t.tls:
            common["ssl"] = True
        if t.kind == "cluster":
            nodes = [ClusterNode(h, p) for h, p in t.hosts]
            cluster = RedisCluster(startup_nodes=nodes, **common)
            self._owned.append(cluster)
            return cluster
        if t.kind == "sentinel":
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                list(t.hosts), socket_connect_timeout=2.0, **({"ssl": True} if t.tls else {})
            )
            assert t.service is not None
            self._owned.extend(sentinel.sentinels)
            master = sentinel.master_for(t.service, **common)
            self._owned.append(master)
            return master
        host, port = t.hosts[0]
        client = aioredis.Redis(host=host, port=port, db=t.db, **common)
        self._owned.append(client)
        return client

    async def _ensure(self) -> Any:
        if self._client is None:
            self._client = self._make_client(blocking=False)
            self._script = self._client.register_script(_LUA)
        if self._epoch is None:
            async with self._lock:
                if self._epoch is None:
                    self._epoch = await self._init_epoch()
        return self._client

    async def _init_epoch(self, *, replace: str | None = None) -> str:
        """Adopt the deployment's epoch, creating it (or replacing a lost one) where needed."""
        client = self._client
        current = await client.get(self.epoch_key(0))
        if current is None or (replace is not None and current.decode() == replace):
            fresh = secrets.token_hex(5)
            if current is None:
                await client.set(self.epoch_key(0), fresh, nx=True)
            else:
                await client.set(self.epoch_key(0), fresh)
            current = await client.get(self.epoch_key(0))
        epoch = current.decode()
        for p in range(1, self.partitions):
            existing = await client.get(self.epoch_key(p))
            if existing is None or existing.decode() != epoch:
                await client.set(self.epoch_key(p), epoch)
        return str(epoch)

    def _offset(self, p: int, position: int) -> str:
        assert self._epoch is not None
        return f"{self._epoch}.{p}-{position}"

    # ------------------------------------------------------------ publish

    async def publish(self, events: Sequence[Incoming]) -> list[Published]:
        """Append events (one atomic script per partition, pipelined); dedup by (source, id)."""
        if self._closed:
            raise Unavailable("bus is closed")
        client = await self._ensure()
        by_partition: dict[int, list[int]] = {}
        for i, item in enumerate(events):
            by_partition.setdefault(partition_of(item.event.topic, self.partitions), []).append(i)
        out: list[Published | None] = [None] * len(events)
        for _attempt in range(3):
            assert self._epoch is not None
            epoch = self._epoch
            now_ms = int(self._clock() * 1000)
            minid = f"{now_ms - int(self.max_age_s * 1000)}-0" if self.max_age_s > 0 else "0"
            pending = {p: idx for p, idx in by_partition.items() if any(out[i] is None for i in idx)}
            results = await asyncio.gather(
                *(
                    self._append(client, p, [events[i] for i in idx], epoch, minid, now_ms)
                    for p, idx in pending.items()
                )
            )
            stale = False
            for (p, idx), reply in zip(pending.items(), results, strict=True):
                if reply and reply[0] == b"EPOCH":
                    stale = True
                    continue
                for k, i in enumerate(idx):
                    position = pack_id(reply[2 * k])
                    out[i] = Published(self._offset(p, position), duplicate=reply[2 * k + 1] == b"1")
            if not stale:
                break
            await self._reinit_epoch(epoch)
        if any(o is None for o in out):
            raise Unavailable("event bus epoch kept changing during publish")
        return [o for o in out if o is not None]

    async def _append(
        self, client: Any, p: int, items: list[Incoming], epoch: str, minid: str, now_ms: int
    ) -> list[bytes]:
        keys = [self.stream_key(p), self.epoch_key(p), self.trimmed_key(p)]
        stamp = now_ms if self._stamp_ids else ""
        args: list[Any] = [epoch, self.max_events, minid, self.dedup_ms, now_ms, stamp]
        for item in items:
            keys.append(
                self.dedup_key(p, item.event.source, item.event.id) if item.dedup else self.stream_key(p)
            )
            args += [b"1" if item.dedup else b"0", item.encoded]
        if not self.min_replicas:
            async with self._gate:
                result: list[bytes] = await self._script(keys=keys, args=args, client=client)
            return result
        # acknowledge only what reached the replicas: WAIT on the connection that appended
        pipe = client.pipeline(transaction=False)
        await self._script(keys=keys, args=args, client=pipe)
        pipe.execute_command("WAIT", self.min_replicas, self.replica_timeout_ms)
        async with self._gate:
            reply, replicas = await pipe.execute()
        if reply and reply[0] != b"EPOCH" and int(replicas) < self.min_replicas:
            raise Unavailable(
                f"event bus: appended but replicated to {replicas} of {self.min_replicas} replicas; retry "
                "with the same event ids (dedup keeps it once)",
                retry_after_ms=500,
            )
        out: list[bytes] = reply
        return out

    async def _reinit_epoch(self, seen: str) -> None:
        async with self._lock:
            if self._epoch == seen:
                old = self._epoch
                self._epoch = await self._init_epoch(replace=None)
                if self._epoch != old:
                    log.warning("redis bus epoch changed %s -> %s (Redis was reset)", old, self._epoch)

    # ------------------------------------------------------------ history

    def _spanned(self, topics: TopicSet) -> list[int]:
        literal = topics.literal_topics()
        if literal is None:
            return list(range(self.partitions))
        return sorted({partition_of(t, self.partitions) for t in literal})

    def _record(self, p: int, stream_id: bytes, payload: bytes) -> Record:
        position = pack_id(stream_id)
        offset = self._offset(p, position)
        event = _event_decoder.decode(payload)
        ms = position >> _SEQ_BITS
        return Record(event, p, position, offset, with_offset(payload, offset), ms / 1000.0)

    async def read(self, topics: TopicSet, after: Cursor | None, limit: int) -> Page:
        """History after `after` across the partitions the topics span, merged by time."""
        client = await self._ensure()
        assert self._epoch is not None
        spanned = self._spanned(topics)
        if after is not None and after.epoch != self._epoch:
            return Page([], await self.head(topics), epoch_changed=True)
        starts = {p: 0 for p in spanned}
        if after is not None:
            # a partition the cursor does not name (e.g. an event's own offset) starts at the
            # cursor's earliest time: events of that millisecond may repeat, none is lost
            known = [pos for pos in after.positions.values() if pos > 0]
            floor = ((min(known) >> _SEQ_BITS) << _SEQ_BITS) - 1 if known else 0
            starts = {p: after.positions.get(p, max(floor, 0)) for p in spanned}
        pipe = client.pipeline(transaction=False)
        for p in spanned:
            pipe.xinfo_stream(self.stream_key(p))
            pipe.get(self.trimmed_key(p))
        replies_ = await self._run_pipe(pipe)
        heads: dict[int, int] = {}
        trimmed = False
        for k, p in enumerate(spanned):
            info, trimmed_to = replies_[2 * k], replies_[2 * k + 1]
            heads[p] = 0 if isinstance(info, Exception) else pack_id(info["last-generated-id"])
            if after is None:
                continue
            if starts[p] > heads[p]:
                if p in after.positions:
                    raise BadCursor("cursor: position is beyond the end of the log")
                starts[p] = heads[p]  # an unnamed partition's time floor is ahead of its head
            if isinstance(trimmed_to, bytes) and starts[p] < pack_id(trimmed_to):
                trimmed = True
        if trimmed:
            return Page([], Cursor(self._epoch, heads), trimmed=True)
        pipe = client.pipeline(transaction=False)
        wanted = [p for p in spanned if starts[p] < heads[p]]
        for p in wanted:
            pipe.xrange(self.stream_key(p), min=f"({unpack_id(starts[p])}", max="+", count=limit)
        replies = await self._run_pipe(pipe) if wanted else []
        matches = None if topics is ALL_TOPICS else topics.matches
        cutoff = int((self._clock() - self.max_age_s) * 1000) << _SEQ_BITS if self.max_age_s > 0 else 0
        candidates: list[Record] = []
        more = False
        positions = dict(starts)
        for p, entries in zip(wanted, replies, strict=True):
            if isinstance(entries, Exception):
                raise entries
            if len(entries) >= limit:
                more = True
            for stream_id, fields in entries:
                position = pack_id(stream_id)
                if position < cutoff:  # past retention by age even if no publish trimmed it yet
                    if after is not None:
                        return Page([], Cursor(self._epoch, heads), trimmed=True)
                    positions[p] = max(positions[p], position)
                    continue
                candidates.append(self._record(p, stream_id, fields[b"e"]))
        candidates.sort(key=lambda r: (r.position >> _SEQ_BITS, r.partition, r.position))
        records: list[Record] = []
        for rec in candidates:
            if len(records) >= limit:
                more = True
                break
            positions[rec.partition] = rec.position
            if matches is None or matches(rec.event.topic):
                records.append(rec)
        else:
            # every fetched entry was examined: partitions read to their end advance to their head
            for p, entries in zip(wanted, replies, strict=True):
                if len(entries) < limit:
                    positions[p] = max(positions[p], heads[p])
        return Page(records, Cursor(self._epoch, positions), more=more)

    async def head(self, topics: TopicSet) -> Cursor:
        """The newest position of every partition the topics span."""
        client = await self._ensure()
        assert self._epoch is not None
        spanned = self._spanned(topics)
        pipe = client.pipeline(transaction=False)
        for p in spanned:
            pipe.xinfo_stream(self.stream_key(p))
        infos = await self._run_pipe(pipe)
        positions = {
            p: 0 if isinstance(info, Exception) else pack_id(info["last-generated-id"])
            for p, info in zip(spanned, infos, strict=True)
        }
        return Cursor(self._epoch, positions)

    # ------------------------------------------------------------ live

    async def live(self, topics: TopicSet) -> AsyncIterator[list[Record]]:
        """One blocking reader per partition on a client of its own, merged into batches."""
        await self._ensure()
        start = await self.head(ALL_TOPICS)
        epoch = self._epoch
        queue: asyncio.Queue[list[Record] | BaseException] = asyncio.Queue(maxsize=64)
        reader = self._make_client(blocking=True)
        tasks = [
            asyncio.create_task(
                self._follow(reader, p, start.positions.get(p, 0), queue), name=f"redis-live-p{p}"
            )
            for p in range(self.partitions)
        ]
        matches = None if topics is ALL_TOPICS else topics.matches
        self._live_queues.add(queue)
        deferred: Any = None
        try:
            while not self._closed:
                item = deferred if deferred is not None else await queue.get()
                deferred = None
                if item is _CLOSED:
                    return
                if isinstance(item, BaseException):
                    raise item
                if self._epoch != epoch:
                    raise Lagged("redis bus epoch changed: the log was reset")
                # whatever the other partitions' readers have queued meanwhile joins this batch, so
                # a busy hub dispatches (and frames) many events at once, as it does on the memory bus
                merged: list[Record] = list(item)
                while len(merged) < _LIVE_BATCH and not queue.empty():
                    more = queue.get_nowait()
                    if more is _CLOSED or isinstance(more, BaseException):
                        deferred = more  # handled on the next turn, after this batch
                        break
                    merged.extend(more)
                batch = merged if matches is None else [r for r in merged if matches(r.event.topic)]
                if batch:
                    yield batch
        finally:
            self._live_queues.discard(queue)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            with contextlib.suppress(Exception):
                await reader.aclose()

    async def _follow(self, reader: Any, p: int, position: int, queue: asyncio.Queue[Any]) -> None:
        key = self.stream_key(p)
        backoff = 0.05
        while not self._closed:
            try:
                reply = await reader.xread({key: unpack_id(position)}, count=1000, block=2000)
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("redis live reader p%d: %s; retrying in %.2fs", p, type(e).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                with contextlib.suppress(Exception):
                    await self._check_epoch()
                continue
            if not reply:
                continue
            records = [self._record(p, sid, fields[b"e"]) for _, entries in reply for sid, fields in entries]
            if records:
                position = records[-1].position
                await queue.put(records)

    async def _check_epoch(self) -> None:
        client = await self._ensure()
        current = await client.get(self.epoch_key(0))
        if current is None or current.decode() != self._epoch:
            assert self._epoch is not None
            await self._reinit_epoch(self._epoch)

    # ------------------------------------------------------------ misc

    async def _run_pipe(self, pipe: Any) -> list[Any]:
        async with self._gate:
            return await _gather_pipe(pipe)

    async def epoch(self) -> str:
        """The deployment's epoch."""
        await self._ensure()
        assert self._epoch is not None
        return self._epoch

    async def ready(self) -> bool:
        """Redis answers PING within a second."""
        try:
            client = await asyncio.wait_for(self._ensure(), 2.0)
            return bool(await asyncio.wait_for(client.ping(), 1.0))
        except Exception:
            return False

    async def close(self) -> None:
        """End every live iterator and close every client and sentinel connection."""
        self._closed = True
        for queue in list(self._live_queues):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(_CLOSED)
            if queue.full():  # make room: the consumer is ending anyway
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(_CLOSED)
        await asyncio.sleep(0)
        for client in self._owned:
            with contextlib.suppress(Exception):
                await client.aclose()
        self._owned.clear()


async def _gather_pipe(pipe: Any) -> list[Any]:
    result: list[Any] = await pipe.execute(raise_on_error=False)
    return result
