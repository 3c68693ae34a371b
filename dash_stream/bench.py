"""The load generator behind `dash-stream bench` and loadtest/run.py.

The generator runs outside the server: `workers` processes each hold a share of the subscriber
connections (a minimal asyncio client on the `websockets` sans-I/O protocol, or the `websockets`
asyncio client; uvloop when installed), and publisher processes publish over WebSocket or HTTP
batches. Every event carries `{"p": publisher, "s": sequence, "t": time.time_ns() at send}` in its
`data`, so each subscriber measures publish→deliver latency (same machine clock) and counts lost,
duplicated and reordered events per publisher. The parent samples the server's RSS and CPU from
/proc and turns everything into a JSON report, a Markdown report and SLO verdicts.

Every loop here is bounded in count and in time; the generator connects to loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

import msgspec
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import WebSocketURI, parse_uri

from dash_stream import bench_agents

Client = Literal["sansio", "asyncio"]
PublishVia = Literal["ws", "http"]

_MAX_SEQ: Final = 50_000_000  # a sequence number past this is counted as unexpected, not stored
_MAX_ATTEMPTS: Final = 200  # connection attempts per subscriber per run
_TICK_S: Final = 0.005


# ---------------------------------------------------------------- accounting (pure)


class Histogram:
    """Log-linear histogram of microseconds: exact below 256 µs, < 1 % relative error above."""

    __slots__ = ("counts", "max_us", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.max_us = 0

    def add(self, us: int) -> None:
        """Count one value (negative values, from clock steps, count as 0)."""
        if us > self.max_us:
            self.max_us = us
        if us < 256:
            idx = us if us > 0 else 0
        else:
            e = us.bit_length() - 8
            idx = (e << 7) + (us >> e)
        self.counts[idx] = self.counts.get(idx, 0) + 1
        self.total += 1

    def merge(self, counts: dict[int, int], max_us: int) -> None:
        """Add another histogram's counts."""
        for idx, n in counts.items():
            self.counts[idx] = self.counts.get(idx, 0) + n
            self.total += n
        self.max_us = max(self.max_us, max_us)

    def percentile_ms(self, q: float) -> float:
        """The q-quantile (0..1) in milliseconds; 0.0 when empty."""
        if not self.total:
            return 0.0
        rank = q * self.total
        seen = 0
        for idx in sorted(self.counts):
            seen += self.counts[idx]
            if seen >= rank:
                return min(_bucket_mid(idx), float(self.max_us)) / 1000
        return self.max_us / 1000

    def max_ms(self) -> float:
        """The largest value counted, in milliseconds."""
        return self.max_us / 1000


def _bucket_mid(idx: int) -> float:
    if idx < 256:
        return float(idx)
    e = (idx >> 7) - 1
    return ((idx - (e << 7)) << e) + ((1 << e) - 1) / 2


class SeqAccount:
    """Loss, duplicate and reorder accounting of one subscriber over (publisher, sequence) pairs."""

    __slots__ = ("duplicates", "last", "received", "reordered", "seen", "unexpected", "unique")

    def __init__(self) -> None:
        self.seen: dict[int, bytearray] = {}
        self.last: dict[int, int] = {}
        self.received = 0
        self.unique = 0
        self.duplicates = 0
        self.reordered = 0
        self.unexpected = 0

    def record(self, pub: int, seq: int) -> None:
        """Account one received event."""
        self.received += 1
        if not 0 <= seq < _MAX_SEQ:
            self.unexpected += 1
            return
        bits = self.seen.get(pub)
        if bits is None:
            bits = self.seen[pub] = bytearray(max(1024, seq + 1))
        elif seq >= len(bits):
            bits.extend(bytes(max(seq + 1, 2 * len(bits)) - len(bits)))
        if bits[seq]:
            self.duplicates += 1
            return
        bits[seq] = 1
        self.unique += 1
        if seq < self.last.get(pub, -1):
            self.reordered += 1
        else:
            self.last[pub] = seq

    def missing(self, expected: Iterable[PubCount]) -> int:
        """Events the publishers got accepted that this subscriber never received."""
        lost = 0
        for pc in expected:
            bits = self.seen.get(pc.pub, bytearray())
            window = bits[: pc.sent]
            lost += pc.sent - (len(window) - window.count(0))
            lost -= sum(1 for s in pc.rejected if s >= len(bits) or not bits[s])
        return lost


class PubCount(msgspec.Struct, frozen=True):
    """What one publisher sent: sequences 0..sent-1, of which `rejected` were refused by the server."""

    pub: int
    sent: int
    rejected: list[int] = []


def accepted_total(counts: Iterable[PubCount]) -> int:
    """Events accepted by the server over all publishers."""
    return sum(pc.sent - len(pc.rejected) for pc in counts)


# ---------------------------------------------------------------- wire formats


class _Data(msgspec.Struct):
    p: int
    s: int
    t: int


class _Event(msgspec.Struct):
    data: _Data


class _ServerFrame(msgspec.Struct):
    op: str
    id: str | None = None
    events: list[_Event] = []
    cursor: str | None = None
    recovered: bool = True
    reason: str | None = None
    replayed: int = 0
    code: str | None = None


_FRAME: Final = msgspec.json.Decoder(_ServerFrame)
_JSON: Final = msgspec.json.Encoder()


def event_json(topic: str, pub: int, seq: int, pad: bytes = b"") -> bytes:
    """One bench event, stamped with the send time."""
    return b'{"topic":"%s","type":"bench.tick","source":"bench/p%d","data":{"p":%d,"s":%d,"t":%d%s}}' % (
        topic.encode(),
        pub,
        pub,
        seq,
        time.time_ns(),
        pad,
    )


def _padding(size: int) -> bytes:
    return b',"pad":"%s"' % (b"x" * size) if size > 0 else b""


def _retry_after_s(reason: str) -> float | None:
    try:
        doc = msgspec.json.decode(reason)
    except msgspec.MsgspecError:
        return None
    ms = doc.get("retry_after_ms") if isinstance(doc, dict) else None
    return ms / 1000 if isinstance(ms, int | float) and ms >= 0 else None


# ---------------------------------------------------------------- subscriber side


class SubSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One subscriber worker's share of the run."""

    url: str
    first: int
    count: int
    topics: list[str]
    client: Client = "sansio"
    connect_concurrency: int = 200
    connect_timeout: float = 60.0
    lifetime: float = 600.0
    views: str | None = None  # agents-1000: the run prefix; each subscriber takes a bench_agents view


class SubResult(msgspec.Struct, kw_only=True):
    """What one subscriber worker observed."""

    subscribers: int
    connected: int
    connect_s: float
    events: int = 0
    frames: int = 0
    lost: int = 0
    duplicates: int = 0
    reordered: int = 0
    unexpected: int = 0
    subs_with_loss: int = 0
    subs_with_dups: int = 0
    complete: int = 0
    reconnects: int = 0
    unrecovered: int = 0
    replayed: int = 0
    resubscribe_s: list[float] = []
    caught_up_s: list[float] = []
    closes: dict[int, int] = {}
    errors: dict[str, int] = {}
    bad_frames: int = 0
    hist: dict[int, int] = {}
    max_us: int = 0
    first_recv_ns: int = 0
    last_recv_ns: int = 0
    expected_events: int | None = None  # agents-1000: what the filtered subscribers should have got


class _SubWorker:
    def __init__(self, spec: SubSpec) -> None:
        self.spec = spec
        self.uri: WebSocketURI = parse_uri(spec.url.rstrip("/") + "/v1/ws")
        self.hist = Histogram()
        self.events = 0
        self.frames = 0
        self.bad_frames = 0
        self.closes: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.first_recv_ns = 0
        self.last_recv_ns = 0


class Subscriber:
    """One subscriber connection with its reconnect loop; the accounting runs on every frame."""

    def __init__(self, w: _SubWorker, sid: int) -> None:
        self.w = w
        self.sid = sid
        self.account = SeqAccount()
        self.cursor: str | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._attempt: asyncio.Future[None] | None = None
        self.abort: Callable[[], None] | None = None
        self.stopping = False
        self.reconnects = 0
        self.unrecovered = 0
        self.replayed = 0
        self.dropped_ns: int | None = None
        self.live_after_ns: int | None = None
        self.resubscribe_s: list[float] = []
        self.caught_up_s: list[float] = []
        self.view = bench_agents.view_of(sid) if w.spec.views is not None else None

    def expected_count(self, expected: list[PubCount]) -> int:
        """Accepted events this subscriber should receive."""
        if self.view is None:
            return accepted_total(expected)
        return bench_agents.expected_count(expected, self.view.mask)

    def missing(self, expected: list[PubCount]) -> int:
        """Accepted events this subscriber should have received and did not."""
        if self.view is None:
            return self.account.missing(expected)
        return bench_agents.missing(self.account, expected, self.view.mask)

    def on_message(self, data: bytes | bytearray | memoryview) -> bytes | None:
        """Handle one server frame; returns a frame to send back, if any."""
        w = self.w
        try:
            frame = _FRAME.decode(data)
        except msgspec.MsgspecError:
            w.bad_frames += 1
            return None
        op = frame.op
        if op == "events":
            events = frame.events
            if events:
                now = time.time_ns()
                record, add = self.account.record, w.hist.add
                for ev in events:
                    d = ev.data
                    record(d.p, d.s)
                    add((now - d.t) // 1000)
                w.events += len(events)
                if not w.first_recv_ns:
                    w.first_recv_ns = now
                w.last_recv_ns = now
                if self.live_after_ns is not None and events[-1].data.t > self.live_after_ns:
                    self.caught_up_s.append((now - self.live_after_ns) / 1e9)
                    self.live_after_ns = None
            w.frames += 1
            if frame.cursor:
                self.cursor = frame.cursor
            return None
        if op == "welcome":
            doc: dict[str, Any] = {"op": "subscribe", "id": "s", "sub": "b", "topics": self.w.spec.topics}
            if self.view is not None and self.w.spec.views is not None:
                doc["topics"] = bench_agents.subscribe_topics(self.w.spec.views, self.view)
                if self.view.where is not None:
                    doc["where"] = self.view.where
            if self.cursor is not None:
                doc["cursor"] = self.cursor
            return _JSON.encode(doc)
        if op == "subscribed":
            if self.cursor is not None and not frame.recovered:
                self.unrecovered += 1
                w.errors[f"unrecovered:{frame.reason}"] += 1
            self.replayed += frame.replayed
            if frame.cursor:
                self.cursor = frame.cursor
            if self.dropped_ns is not None:
                self.resubscribe_s.append((time.time_ns() - self.dropped_ns) / 1e9)
                self.live_after_ns, self.dropped_ns = self.dropped_ns, None
            if not self.ready.done():
                self.ready.set_result(None)
            if self._attempt is not None and not self._attempt.done():
                self._attempt.set_result(None)
        elif op == "error":
            w.errors[frame.code or "?"] += 1
        return None

    def drop(self) -> None:
        """Cut the connection as a network failure would; the loop reconnects at once with the cursor."""
        self.dropped_ns = time.time_ns()
        if self.abort is not None:
            self.abort()

    def stop(self) -> None:
        """End the reconnect loop and the connection."""
        self.stopping = True
        if self.abort is not None:
            self.abort()

    async def run(self, deadline: float, gate: asyncio.Semaphore) -> None:
        """Connect, subscribe and reconnect (honouring `retry_after_ms`) until stopped or `deadline`."""
        backoff = 0.05
        for attempt in range(_MAX_ATTEMPTS):
            if self.stopping or time.monotonic() >= deadline:
                return
            self._attempt = asyncio.get_running_loop().create_future()
            first = not self.ready.done()
            if first:
                await gate.acquire()
            task = asyncio.create_task(self._connect())
            try:
                if first:
                    waits: set[asyncio.Future[Any]] = {task, self._attempt}
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if first:
                    gate.release()
            code, reason = await task
            if self.stopping:
                return
            self.w.closes[code] += 1
            if self.ready.done():
                self.reconnects += 1
            delay = _retry_after_s(reason)
            if delay is None:
                delay = 0.0 if self.dropped_ns is not None else backoff * (0.5 + random.random())
                backoff = min(2.0, backoff * 2) if attempt else backoff
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))

    async def _connect(self) -> tuple[int, str]:
        try:
            if self.w.spec.client == "asyncio":
                return await self._connect_asyncio()
            return await self._connect_sansio()
        except (OSError, TimeoutError) as e:
            return 0, type(e).__name__
        finally:
            self.abort = None

    async def _connect_sansio(self) -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[tuple[int, str]] = loop.create_future()
        uri = self.w.uri
        proto = _WsClient(uri, self, closed)
        async with asyncio.timeout(self.w.spec.connect_timeout):
            transport, _ = await loop.create_connection(lambda: proto, uri.host, uri.port)
        self.abort = transport.abort
        timer = loop.call_later(self.w.spec.connect_timeout, proto.handshake_deadline)
        try:
            return await closed
        finally:
            timer.cancel()
            transport.abort()

    async def _connect_asyncio(self) -> tuple[int, str]:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        try:
            async with connect(
                self.w.spec.url.rstrip("/") + "/v1/ws",
                subprotocols=[Subprotocol("dash.v1.json")],
                compression=None,
                max_size=None,
                ping_interval=None,
                open_timeout=self.w.spec.connect_timeout,
                close_timeout=1,
            ) as ws:
                self.abort = ws.transport.abort
                while True:
                    reply = self.on_message(await ws.recv(decode=False))
                    if reply is not None:
                        await ws.send(reply, text=True)
        except ConnectionClosed as e:
            return (e.rcvd.code, e.rcvd.reason) if e.rcvd is not None else (1006, "")
        except InvalidHandshake as e:
            return 0, type(e).__name__


class _WsClient(asyncio.Protocol):
    """A WebSocket client connection: asyncio transport + the `websockets` sans-I/O protocol."""

    def __init__(self, uri: WebSocketURI, sub: Subscriber, closed: asyncio.Future[tuple[int, str]]) -> None:
        self.ws = ClientProtocol(uri, subprotocols=[Subprotocol("dash.v1.json")], max_size=None)
        self.sub = sub
        self.closed = closed
        self.transport: asyncio.Transport | None = None
        self.fragments: list[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.ws.send_request(self.ws.connect())
        self._flush()

    def handshake_deadline(self) -> None:
        if self.ws.state is State.CONNECTING and self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                opcode = event.opcode
                if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                    if event.fin:
                        self._message(event.data)
                    else:
                        self.fragments = [bytes(event.data)]
                elif opcode is Opcode.CONT and self.fragments is not None:
                    self.fragments.append(bytes(event.data))
                    if event.fin:
                        payload, self.fragments = b"".join(self.fragments), None
                        self._message(payload)
            elif isinstance(event, Response) and (event.status_code != 101 or ws.handshake_exc is not None):
                assert self.transport is not None
                self.transport.abort()
        self._flush()

    def _message(self, payload: bytes | bytearray | memoryview) -> None:
        reply = self.sub.on_message(payload)
        if reply is not None:
            self.ws.send_text(reply)

    def _flush(self) -> None:
        transport = self.transport
        assert transport is not None
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()
        if self.ws.state is State.CLOSED:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ws.receive_eof()
        if not self.closed.done():
            self.closed.set_result((self.ws.close_code or 1006, self.ws.close_reason or ""))


def _sub_worker(spec: SubSpec, pipe: Pipe) -> None:
    _prepare_process()
    _run_loop(_sub_main(spec, pipe))


async def _sub_main(spec: SubSpec, pipe: Pipe) -> None:
    w = _SubWorker(spec)
    started = time.monotonic()
    deadline = started + spec.lifetime
    gate = asyncio.Semaphore(spec.connect_concurrency)
    subs = [Subscriber(w, spec.first + i) for i in range(spec.count)]
    tasks = [asyncio.create_task(s.run(deadline, gate)) for s in subs]
    commands = _command_queue(pipe)
    if subs:
        await asyncio.wait([s.ready for s in subs], timeout=spec.connect_timeout)
    connected = sum(1 for s in subs if s.ready.done())
    connect_s = time.monotonic() - started
    pipe.send(("ready", connected, connect_s))
    expected: list[PubCount] | None = None
    while time.monotonic() < deadline:
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                cmd = await commands.get()
        except TimeoutError:
            break
        if cmd[0] == "drop":
            for s in subs:
                s.drop()
        elif cmd[0] == "expect":
            expected = cmd[1]
            await _wait_complete(subs, [s.expected_count(expected) for s in subs], cmd[2])
            break
        else:
            break
    for s in subs:
        s.stop()
    result = _sub_result(w, subs, expected, connected, connect_s)
    await asyncio.wait(tasks, timeout=5)
    for t in tasks:
        t.cancel()
    pipe.send(("result", result))


async def _wait_complete(subs: Sequence[Subscriber], targets: list[int], wait_s: float) -> None:
    end = time.monotonic() + wait_s
    pairs = list(zip(subs, targets, strict=True))
    # polling a few thousand counters every 20 ms is cheaper than signalling on every event
    while time.monotonic() < end and any(s.account.unique < n for s, n in pairs):  # noqa: ASYNC110
        await asyncio.sleep(0.02)


def _sub_result(
    w: _SubWorker,
    subs: Sequence[Subscriber],
    expected: list[PubCount] | None,
    connected: int,
    connect_s: float,
) -> SubResult:
    r = SubResult(subscribers=len(subs), connected=connected, connect_s=connect_s)
    if expected is not None and w.spec.views is not None:
        r.expected_events = 0
    for s in subs:
        a = s.account
        each = s.expected_count(expected) if expected is not None else 0
        if r.expected_events is not None:
            r.expected_events += each
        lost = s.missing(expected) if expected is not None else 0
        r.lost += lost
        r.subs_with_loss += lost > 0
        r.duplicates += a.duplicates
        r.subs_with_dups += a.duplicates > 0
        r.reordered += a.reordered
        r.unexpected += a.unexpected
        r.complete += a.unique >= each
        r.reconnects += s.reconnects
        r.unrecovered += s.unrecovered
        r.replayed += s.replayed
        r.resubscribe_s.extend(s.resubscribe_s)
        r.caught_up_s.extend(s.caught_up_s)
    r.events, r.frames, r.bad_frames = w.events, w.frames, w.bad_frames
    r.closes, r.errors = dict(w.closes), dict(w.errors)
    r.hist, r.max_us = w.hist.counts, w.hist.max_us
    r.first_recv_ns, r.last_recv_ns = w.first_recv_ns, w.last_recv_ns
    return r


# ---------------------------------------------------------------- publisher side


class PubSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One publisher worker: `ids` publishers, each at `rate_each` events/s (0: as fast as it can)."""

    url: str
    ids: list[int]
    topic_prefix: str
    via: PublishVia = "ws"
    rate_each: float = 100.0
    duration: float = 10.0
    batch: int = 100
    payload_bytes: int = 0
    mix: bool = False  # agents-1000: the bench_agents event mix, publishers' phases spread over a period


class PubResult(msgspec.Struct, kw_only=True):
    """What one publisher worker sent and how the server answered."""

    counts: list[PubCount] = []
    requests: int = 0
    errors: dict[str, int] = {}
    hist: dict[int, int] = {}
    max_us: int = 0
    started_ns: int = 0
    ended_ns: int = 0


def _pub_worker(spec: PubSpec, pipe: Pipe) -> None:
    _prepare_process()
    _run_loop(_pub_main(spec, pipe))


async def _pub_main(spec: PubSpec, pipe: Pipe) -> None:
    commands = _command_queue(pipe)
    pipe.send(("ready", len(spec.ids), 0.0))
    cmd = await commands.get()
    result = PubResult()
    if cmd[0] == "go":
        hist = Histogram()
        errors: Counter[str] = Counter()
        await _sleep_until_wall(cmd[1])
        result.started_ns = time.time_ns()
        if spec.via == "ws":
            runs = [_publish_ws(spec, p, hist, errors) for p in spec.ids]
        else:
            runs = [_publish_http(spec, p, hist, errors) for p in spec.ids]
        outcomes = await asyncio.gather(*runs)
        result.ended_ns = time.time_ns()
        result.counts = [pc for pc, _ in outcomes]
        result.requests = sum(n for _, n in outcomes)
        result.errors, result.hist, result.max_us = dict(errors), hist.counts, hist.max_us
    pipe.send(("result", result))


def _due(started: float, now: float, rate: float, sent: int, batch: int) -> int:
    return batch if rate <= 0 else min(batch, int((now - started) * rate) - sent)


async def _publish_ws(spec: PubSpec, pub: int, hist: Histogram, errors: Counter[str]) -> tuple[PubCount, int]:
    """Publish frames without waiting for acks; acks and errors are matched by frame id."""
    from websockets.asyncio.client import connect

    topic, pad = f"{spec.topic_prefix}.p{pub}", _padding(spec.payload_bytes)
    pending: dict[int, int] = {}
    rejected: list[int] = []
    sent = 0
    url = spec.url.rstrip("/") + "/v1/ws"
    async with connect(url, compression=None, max_size=None, open_timeout=30, close_timeout=2) as ws:

        async def read_acks() -> None:
            async for message in ws:
                frame = _FRAME.decode(message)
                if frame.id is None or not frame.id.isdigit():
                    continue
                sent_ns = pending.pop(int(frame.id), None)
                if frame.op == "error":
                    rejected.append(int(frame.id))
                    errors[frame.code or "?"] += 1
                elif sent_ns is not None:
                    hist.add((time.time_ns() - sent_ns) // 1000)

        reader = asyncio.create_task(read_acks())
        started = time.monotonic()
        end = started + spec.duration
        if spec.mix and spec.rate_each > 0:  # agents do not all publish in the same tick
            started -= (pub * 0.618034 % 1) / spec.rate_each
        while (now := time.monotonic()) < end and not reader.done():
            for _ in range(_due(started, now, spec.rate_each, sent, spec.batch)):
                pending[sent] = t_ns = time.time_ns()
                if spec.mix:
                    event = bench_agents.event_json(spec.topic_prefix, pub, sent, t_ns, pad)
                else:
                    event = event_json(topic, pub, sent, pad)
                await ws.send(b'{"op":"publish","id":"%d","event":%s}' % (sent, event))
                sent += 1
            await asyncio.sleep(_TICK_S)
        settle = time.monotonic() + 10
        while pending and time.monotonic() < settle and not reader.done():  # noqa: ASYNC110 - bounded
            await asyncio.sleep(0.01)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
    if pending:
        errors["unacked"] += len(pending)
    return PubCount(pub, sent, sorted(rejected)), sent


async def _publish_http(
    spec: PubSpec, pub: int, hist: Histogram, errors: Counter[str]
) -> tuple[PubCount, int]:
    """POST batches of `spec.batch` events (fewer when paced); one request in flight per publisher."""
    import httpx

    topic, pad = f"{spec.topic_prefix}.p{pub}", _padding(spec.payload_bytes)
    rejected: list[int] = []
    sent = requests = 0
    base = spec.url.replace("ws://", "http://", 1).rstrip("/")
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        started = time.monotonic()
        end = started + spec.duration
        while (now := time.monotonic()) < end:
            n = _due(started, now, spec.rate_each, sent, spec.batch)
            if n <= 0:
                await asyncio.sleep(_TICK_S)
                continue
            body = b'{"events":[%s]}' % b",".join(event_json(topic, pub, sent + i, pad) for i in range(n))
            t0 = time.perf_counter_ns()
            try:
                response = await client.post("/v1/events", content=body, headers=headers)
                status = str(response.status_code)
            except httpx.HTTPError as e:
                status = type(e).__name__
            hist.add((time.perf_counter_ns() - t0) // 1000)
            requests += 1
            if status != "202":
                rejected.extend(range(sent, sent + n))
                errors[status] += 1
                if status == "429":
                    await asyncio.sleep(0.05)
            sent += n
    return PubCount(pub, sent, rejected), requests


# ---------------------------------------------------------------- process plumbing


def _prepare_process() -> None:
    """Raise the open-files limit as far as allowed; ignore ^C (the parent ends the run)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_loop(main: Any) -> None:
    try:
        import uvloop

        uvloop.run(main)
    except ImportError:
        asyncio.run(main)


def _command_queue(pipe: Pipe) -> asyncio.Queue[Any]:
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def readable() -> None:
        try:
            while pipe.poll():
                queue.put_nowait(pipe.recv())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(pipe.fileno())
            queue.put_nowait(("stop",))

    asyncio.get_running_loop().add_reader(pipe.fileno(), readable)
    return queue


async def _sleep_until_wall(when: float) -> None:
    await asyncio.sleep(max(0.0, min(30.0, when - time.time())))


class _Worker:
    """A child process and the parent's end of its pipe."""

    def __init__(self, target: Callable[[Any, Pipe], None], spec: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.process = ctx.Process(target=target, args=(spec, child), daemon=True)
        self.process.start()
        child.close()

    def expect(self, kind: str, timeout: float) -> tuple[Any, ...]:
        """The next message, which must be of `kind`, within `timeout` seconds."""
        try:
            if not self.pipe.poll(timeout):
                raise RuntimeError(f"bench worker sent no {kind!r} within {timeout:.0f}s")
            msg: tuple[Any, ...] = self.pipe.recv()
        except (EOFError, OSError):
            self.process.join(1)
            raise RuntimeError(
                f"bench worker exited (code {self.process.exitcode}) before sending {kind!r}"
                " (a script calling bench.run must guard it with `if __name__ == '__main__':`)"
            ) from None
        if msg[0] != kind:
            raise RuntimeError(f"bench worker sent {msg[0]!r}, expected {kind!r}")
        return msg

    def send(self, *msg: Any) -> None:
        """Send a command (ignored if the worker is gone)."""
        with contextlib.suppress(OSError):
            self.pipe.send(msg)

    def end(self) -> None:
        """Wait briefly for the process, then terminate it."""
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.pipe.close()


def split(total: int, parts: int) -> list[int]:
    """`total` spread as evenly as possible over `parts` (no zero parts unless total < parts)."""
    parts = max(1, min(parts, total)) if total else 1
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ---------------------------------------------------------------- server probes (/proc)

_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (0.0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all CPUs, from /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def find_pid_by_port(port: int) -> int | None:
    """The pid of the process listening on TCP `port` (IPv4 or IPv6), found through /proc."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(entry.name)
    return None


class ProcSampler:
    """Samples a process's RSS every `interval` seconds in a thread: the peak, and with
    `keep_series` every (time.time_ns(), KiB) sample (the soak fits a slope to them)."""

    def __init__(self, pid: int | None, interval: float = 0.2, *, keep_series: bool = False) -> None:
        self.pid = pid
        self.interval = interval
        self.keep_series = keep_series
        self.samples: list[tuple[int, int]] = []
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)

    def __enter__(self) -> ProcSampler:
        if self.pid:
            self._sample()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)

    def _sample(self) -> None:
        assert self.pid is not None
        kib = rss_kib(self.pid)
        if kib:
            self.peak_kib = max(self.peak_kib, kib)
            if self.keep_series:
                self.samples.append((time.time_ns(), kib))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval) and self.pid:
            self._sample()


# ---------------------------------------------------------------- scenarios and the run


class BenchConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One bench run; `make_config` fills a scenario's defaults."""

    scenario: str
    url: str = "ws://127.0.0.1:8080"
    subscribers: int = 1000
    rate: float = 100.0  # events/s over all publishers; 0 = as fast as the server accepts
    duration: float = 10.0
    workers: int = 2
    publishers: int = 1
    pub_workers: int = 1
    via: PublishVia = "ws"
    batch: int = 100
    payload_bytes: int = 0
    client: Client = "sansio"
    server_pid: int | None = None
    drop_at: float | None = None  # reconnect-storm: drop every subscriber at this fraction of the run
    settle: float = 2.0
    grace: float = 15.0
    connect_timeout: float = 60.0
    slo_p99_ms: float | None = None
    slo_loss: int | None = None
    slo_dups: int | None = None
    slo_min_rate: float | None = None
    # max-rate (dash_stream/bench_ramp.py): `rate` is the first step's, `duration` each step's length
    ramp_factor: float = 1.5
    max_steps: int = 10
    max_run_s: float = 600.0  # no new step starts after this many seconds
    ramp_p99_ms: float = 250.0  # a step is sustainable with p99 at most this, no loss, no rejects
    # soak (dash_stream/bench_ramp.py)
    rss_interval: float = 1.0
    warmup: float = 0.2  # fraction of the publishing window left out of the RSS slope fit
    max_rss_growth_mib_per_hour: float | None = None
    # agents-1000: the bench_agents event mix and dashboard views (publishing over WebSocket only)
    agents: bool = False


class Scenario(msgspec.Struct, frozen=True):
    """A named set of defaults."""

    summary: str
    defaults: dict[str, Any]


SCENARIOS: Final[dict[str, Scenario]] = {
    "fanout": Scenario(
        "S subscribers of one topic pattern, R events/s published over WebSocket, for D seconds",
        {"subscribers": 1000, "rate": 100.0, "duration": 10.0, "via": "ws"},
    ),
    "ingest": Scenario(
        "HTTP batch publish (POST /v1/events) as fast as the server accepts, or at R events/s",
        {"subscribers": 0, "rate": 0.0, "duration": 10.0, "via": "http", "publishers": 8, "pub_workers": 2},
    ),
    "idle": Scenario(
        "C idle subscribed connections held for D seconds: server RSS per connection",
        {"subscribers": 1000, "rate": 0.0, "duration": 5.0},
    ),
    "reconnect-storm": Scenario(
        "fanout, and halfway through every subscriber drops and resumes from its cursor",
        {"subscribers": 1000, "rate": 100.0, "duration": 10.0, "via": "ws", "drop_at": 0.5},
    ),
    "max-rate": Scenario(
        "fanout in steps of rising rate (times ramp_factor each step) until p99 publish→deliver exceeds"
        " ramp_p99_ms or an event is lost: the last sustainable rate",
        {"subscribers": 200, "rate": 50.0, "duration": 4.0, "via": "ws", "grace": 5.0},
    ),
    "soak": Scenario(
        "steady fanout for D seconds, server RSS sampled every second, least-squares RSS growth after"
        " the warm-up",
        {
            "subscribers": 200,
            "rate": 100.0,
            "duration": 600.0,
            "via": "ws",
            "max_rss_growth_mib_per_hour": 50.0,
        },
    ),
    "agents-1000": Scenario(
        "1000 agents publishing a lifecycle/task/metrics/error mix over WebSocket at R events/s in all;"
        " 200 dashboards with topic patterns and `where` filters (4 views)",
        {
            "subscribers": 200,
            "publishers": 1000,
            "pub_workers": 2,
            "rate": 200.0,
            "duration": 30.0,
            "via": "ws",
            "agents": True,
        },
    ),
    "ingest-10k": Scenario(
        "HTTP batch publish paced at 10,000 events/s for D seconds, 2 subscribers counting loss",
        {
            "subscribers": 2,
            "workers": 1,
            "rate": 10_000.0,
            "duration": 10.0,
            "via": "http",
            "publishers": 8,
            "pub_workers": 2,
            "batch": 100,
        },
    ),
}


def make_config(scenario: str, **overrides: Any) -> BenchConfig:
    """The scenario's defaults with `overrides` (None values ignored) on top; ValueError if unknown."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: expected one of {', '.join(SCENARIOS)}")
    values = {**SCENARIOS[scenario].defaults, **{k: v for k, v in overrides.items() if v is not None}}
    cfg = msgspec.convert({"scenario": scenario, **values}, BenchConfig)
    if cfg.agents and cfg.via != "ws":
        raise ValueError("agents-1000 publishes over WebSocket only (via ws)")
    return cfg


class ServerStats(msgspec.Struct, kw_only=True):
    """The server process as /proc saw it during the run."""

    pid: int | None = None
    rss_before_mib: float = 0.0
    rss_loaded_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_per_connection_kib: float | None = None
    cpu_percent: float = 0.0
    cpu_us_per_delivery: float | None = None
    metrics: dict[str, float] = {}


class GeneratorStats(msgspec.Struct, kw_only=True):
    """The generator's own CPU use: a saturated generator makes every other number suspect."""

    processes: int = 0
    cpu_percent: float = 0.0
    busiest_process_percent: float = 0.0
    saturated: bool = False
    background_cpu_percent: float = 0.0  # busy CPU on the machine that was neither server nor generator


class RampStep(msgspec.Struct, kw_only=True):
    """One step of a max-rate run."""

    rate: float
    published: int
    publish_per_s: float
    deliveries_per_s: float
    p99_ms: float
    lost: int
    rejected: int
    connected: int
    generator_saturated: bool
    sustainable: bool
    why_not: str = ""


class BenchReport(msgspec.Struct, kw_only=True):
    """Everything one run measured; `violations` lists the SLOs it missed."""

    scenario: str
    config: BenchConfig
    machine: dict[str, Any]
    started: str
    subscribers: int = 0
    connected: int = 0
    connect_s: float = 0.0
    published: int = 0
    rejected: int = 0
    publish_per_s: float = 0.0
    publish_requests: int = 0
    publish_errors: dict[str, int] = {}
    publish_latency_ms: dict[str, float] = {}
    deliveries: int = 0
    expected_deliveries: int = 0
    deliveries_per_s: float = 0.0
    frames: int = 0
    latency_ms: dict[str, float] = {}
    lost: int = 0
    duplicates: int = 0
    reordered: int = 0
    unexpected: int = 0
    subs_with_loss: int = 0
    subs_with_dups: int = 0
    incomplete_subs: int = 0
    reconnects: int = 0
    unrecovered: int = 0
    replayed: int = 0
    resubscribe_s: dict[str, float] = {}
    caught_up_s: dict[str, float] = {}
    closes: dict[str, int] = {}
    errors: dict[str, int] = {}
    server: ServerStats = msgspec.field(default_factory=ServerStats)
    generator: GeneratorStats = msgspec.field(default_factory=GeneratorStats)
    publish_started_ns: int = 0
    publish_ended_ns: int = 0
    steps: list[RampStep] = []  # max-rate
    max_sustainable_rate: float | None = None  # max-rate: published events/s of the last good step
    max_sustainable_deliveries_per_s: float | None = None
    rss_samples: list[tuple[float, float]] = []  # soak: (seconds since publishing began, MiB)
    rss_growth_mib_per_hour: float | None = None  # soak: least-squares slope after the warm-up
    violations: list[str] = []


def _quantiles(hist: Histogram) -> dict[str, float]:
    return {
        "p50": round(hist.percentile_ms(0.50), 3),
        "p90": round(hist.percentile_ms(0.90), 3),
        "p99": round(hist.percentile_ms(0.99), 3),
        "max": round(hist.max_ms(), 3),
    }


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(ordered[len(ordered) // 2], 3),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "max": round(ordered[-1], 3),
    }


def machine_info() -> dict[str, Any]:
    """nproc, the CPUs this process may use, the CPU model, Python and kernel versions."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
    }


def _check_loopback(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    if parts.scheme not in ("ws", "http") or host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"url: the bench talks to a loopback ws:// server only, not {url!r}")
    return host, port


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(cfg: BenchConfig, log: Callable[[str], None] = _log) -> BenchReport:
    """Run one scenario against the server at `cfg.url` and report what was measured."""
    host, port = _check_loopback(cfg.url)
    if cfg.scenario in ("max-rate", "soak"):
        from dash_stream import bench_ramp

        return (
            bench_ramp.run_max_rate(cfg, log) if cfg.scenario == "max-rate" else bench_ramp.run_soak(cfg, log)
        )
    pid = cfg.server_pid or find_pid_by_port(port)
    if pid is None:
        log(f"no local process listens on port {port}: server RSS/CPU will not be reported")
    report = BenchReport(
        scenario=cfg.scenario,
        config=cfg,
        machine=machine_info(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        subscribers=cfg.subscribers,
    )
    report.server.pid = pid
    prefix = f"bench.{secrets.token_hex(4)}"
    lifetime = cfg.connect_timeout + cfg.duration + cfg.grace + 60
    workers: list[_Worker] = []
    with ProcSampler(pid) as sampler:
        report.server.rss_before_mib = rss_kib(pid) / 1024 if pid else 0.0
        try:
            _run_phases(cfg, report, prefix, lifetime, workers, pid, log)
        finally:
            for w in workers:
                w.end()
        report.server.rss_peak_mib = sampler.peak_kib / 1024
    report.server.metrics = scrape_metrics(f"http://{host}:{port}/metrics")
    report.violations = slo_violations(cfg, report)
    return report


def _run_phases(
    cfg: BenchConfig,
    report: BenchReport,
    prefix: str,
    lifetime: float,
    workers: list[_Worker],
    pid: int | None,
    log: Callable[[str], None],
) -> None:
    subs = _start_subscribers(cfg, prefix, lifetime)
    workers.extend(subs)
    for w in subs:
        _, connected, connect_s = w.expect("ready", cfg.connect_timeout + 60)
        report.connected += connected
        report.connect_s = round(max(report.connect_s, connect_s), 2)
    if subs:
        log(f"{report.connected}/{cfg.subscribers} subscribers ready in {report.connect_s:.1f}s")
    pub_results: list[PubResult] = []
    counts: list[PubCount] = []
    cpu0 = [0.0]
    if cfg.scenario == "idle":
        time.sleep(cfg.settle)
        loaded = rss_kib(pid) if pid else 0
        idle_cpu, t0 = _cpu(pid), time.monotonic()
        time.sleep(cfg.duration)
        report.server.cpu_percent = _percent(_cpu(pid) - idle_cpu, time.monotonic() - t0)
        report.server.rss_loaded_mib = round(max(loaded, rss_kib(pid) if pid else 0) / 1024, 2)
        if report.connected:
            delta = report.server.rss_loaded_mib - report.server.rss_before_mib
            report.server.rss_per_connection_kib = round(delta * 1024 / report.connected, 2)
        for w in subs:
            w.send("stop")
    else:
        pubs = _start_publishers(cfg, prefix)
        workers.extend(pubs)
        for w in pubs:
            w.expect("ready", 60)
        go = time.time() + 0.3
        for w in pubs:
            w.send("go", go)
        time.sleep(max(0.0, go - time.time()))
        everyone = [pid, *(w.process.pid for w in workers)]
        cpu0, t0, busy0 = [_cpu(p) for p in everyone], time.monotonic(), machine_busy_seconds()
        if cfg.drop_at is not None and subs:
            time.sleep(cfg.drop_at * cfg.duration)
            log(f"dropping all {report.connected} subscriber connections")
            for w in subs:
                w.send("drop")
        pub_results = [w.expect("result", cfg.duration + 60)[1] for w in pubs]
        wall = time.monotonic() - t0
        cpu = [_cpu(p) - c for p, c in zip(everyone, cpu0, strict=True)]
        report.server.cpu_percent = _percent(cpu[0], wall)
        report.server.rss_loaded_mib = round((rss_kib(pid) if pid else 0) / 1024, 2)
        _generator_stats(report.generator, cpu[1:], wall)
        background = machine_busy_seconds() - busy0 - sum(cpu)
        report.generator.background_cpu_percent = _percent(max(0.0, background), wall)
        counts = [pc for r in pub_results for pc in r.counts]
        log(f"published {accepted_total(counts)} events; waiting up to {cfg.grace:.0f}s for deliveries")
        for w in subs:
            w.send("expect", counts, cfg.grace)
    sub_results: list[SubResult] = [w.expect("result", cfg.grace + 60)[1] for w in subs]
    _summarise(report, pub_results, sub_results)
    if pub_results and report.deliveries:
        # publishing and delivering, up to the moment the last subscriber had everything
        cpu_s = _cpu(pid) - cpu0[0]
        report.server.cpu_us_per_delivery = round(cpu_s * 1e6 / report.deliveries, 2)


def _start_subscribers(cfg: BenchConfig, prefix: str, lifetime: float) -> list[_Worker]:
    subs: list[_Worker] = []
    first = 0
    for n in split(cfg.subscribers, cfg.workers) if cfg.subscribers > 0 else []:
        spec = SubSpec(
            url=cfg.url,
            first=first,
            count=n,
            topics=[f"{prefix}.>"],
            client=cfg.client,
            connect_timeout=cfg.connect_timeout,
            lifetime=lifetime,
            views=prefix if cfg.agents else None,
        )
        subs.append(_Worker(_sub_worker, spec))
        first += n
    return subs


def _start_publishers(cfg: BenchConfig, prefix: str) -> list[_Worker]:
    pubs: list[_Worker] = []
    first = 0
    for n in split(cfg.publishers, cfg.pub_workers):
        spec = PubSpec(
            url=cfg.url,
            ids=list(range(first, first + n)),
            topic_prefix=prefix,
            via=cfg.via,
            rate_each=cfg.rate / max(1, cfg.publishers),
            duration=cfg.duration,
            batch=cfg.batch,
            payload_bytes=cfg.payload_bytes,
            mix=cfg.agents,
        )
        pubs.append(_Worker(_pub_worker, spec))
        first += n
    return pubs


def _cpu(pid: int | None) -> float:
    return cpu_seconds(pid) if pid else 0.0


def _percent(cpu_s: float, wall_s: float) -> float:
    return round(100 * cpu_s / wall_s, 1) if wall_s > 0 else 0.0


def _generator_stats(stats: GeneratorStats, cpu: list[float], wall: float) -> None:
    stats.processes = len(cpu)
    stats.cpu_percent = _percent(sum(cpu), wall)
    stats.busiest_process_percent = _percent(max(cpu, default=0.0), wall)
    allowed = len(os.sched_getaffinity(0))
    stats.saturated = stats.busiest_process_percent > 90 or stats.cpu_percent > 90 * allowed


def _summarise(report: BenchReport, pubs: list[PubResult], subs: list[SubResult]) -> None:
    counts = [pc for r in pubs for pc in r.counts]
    accepted = accepted_total(counts)
    pub_hist, hist = Histogram(), Histogram()
    pub_errors: Counter[str] = Counter()
    closes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    resubscribe: list[float] = []
    caught_up: list[float] = []
    for p in pubs:
        pub_hist.merge(p.hist, p.max_us)
        pub_errors.update(p.errors)
        report.publish_requests += p.requests
    for r in subs:
        hist.merge(r.hist, r.max_us)
        report.deliveries += r.events
        report.frames += r.frames
        report.lost += r.lost
        report.duplicates += r.duplicates
        report.reordered += r.reordered
        report.unexpected += r.unexpected
        report.subs_with_loss += r.subs_with_loss
        report.subs_with_dups += r.subs_with_dups
        report.incomplete_subs += r.subscribers - r.complete if pubs else 0
        report.reconnects += r.reconnects
        report.unrecovered += r.unrecovered
        report.replayed += r.replayed
        resubscribe.extend(r.resubscribe_s)
        caught_up.extend(r.caught_up_s)
        closes.update({str(code): n for code, n in r.closes.items()})
        errors.update(r.errors)
        if r.bad_frames:
            errors["bad_frames"] += r.bad_frames
    report.published = accepted
    report.rejected = sum(len(pc.rejected) for pc in counts)
    report.publish_errors = dict(pub_errors)
    report.publish_latency_ms = _quantiles(pub_hist)
    report.latency_ms = _quantiles(hist)
    report.resubscribe_s = _spread(resubscribe)
    report.caught_up_s = _spread(caught_up)
    report.closes, report.errors = dict(closes), dict(errors)
    report.expected_deliveries = accepted * report.connected
    if any(r.expected_events is not None for r in subs):
        report.expected_deliveries = sum(r.expected_events or 0 for r in subs)
    start = min((p.started_ns for p in pubs if p.started_ns), default=0)
    end = max((p.ended_ns for p in pubs), default=0)
    report.publish_started_ns, report.publish_ended_ns = start, end
    if end > start:
        report.publish_per_s = round(accepted / ((end - start) / 1e9), 1)
    last = max((r.last_recv_ns for r in subs), default=0)
    if last > start > 0:
        report.deliveries_per_s = round(report.deliveries / ((last - start) / 1e9), 1)


def scrape_metrics(url: str) -> dict[str, float]:
    """A few server counters from /metrics (closes by code, slow consumers, hub lag); {} if unreachable."""
    import urllib.request

    wanted = ("dash_ws_closes_total", "dash_slow_consumer_closes_total", "dash_hub_lagged_total")
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def slo_violations(cfg: BenchConfig, report: BenchReport) -> list[str]:
    """The declared SLOs this run missed, plus runs that did not measure what they claim."""
    out: list[str] = []
    if report.connected < cfg.subscribers:
        out.append(f"only {report.connected} of {cfg.subscribers} subscribers connected")
    p99 = report.latency_ms.get("p99", 0.0)
    if cfg.slo_p99_ms is not None and p99 > cfg.slo_p99_ms:
        out.append(f"p99 latency {p99:.1f} ms > {cfg.slo_p99_ms:g} ms")
    if cfg.slo_loss is not None:
        if report.lost > cfg.slo_loss:
            out.append(f"{report.lost} events lost > {cfg.slo_loss}")
        if report.unrecovered:
            out.append(f"{report.unrecovered} resumes were not recovered (recovered: false)")
    if cfg.slo_dups is not None and report.duplicates > cfg.slo_dups:
        out.append(f"{report.duplicates} duplicates > {cfg.slo_dups}")
    if cfg.slo_min_rate is not None:
        rate = report.deliveries_per_s if cfg.subscribers else report.publish_per_s
        if rate < cfg.slo_min_rate:
            out.append(f"rate {rate:.0f}/s < {cfg.slo_min_rate:g}/s")
    return out


# ---------------------------------------------------------------- the Markdown report


def markdown(report: BenchReport) -> str:
    """A human-readable report of one run."""
    cfg, m, srv, gen = report.config, report.machine, report.server, report.generator
    lines = [
        f"# dash-stream bench: {report.scenario}",
        "",
        f"{SCENARIOS[report.scenario].summary}. Started {report.started}.",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), generator on CPUs {m['affinity']}, "
        f"Python {m['python']}, Linux {m['kernel']}.",
        f"Run: {cfg.subscribers} subscribers in {cfg.workers} worker processes ({cfg.client} client), "
        f"{cfg.publishers} publishers via {cfg.via}, rate {cfg.rate:g}/s "
        f"({'unpaced' if cfg.rate <= 0 else 'paced'}), batch {cfg.batch}, {cfg.duration:g} s.",
        "",
        "| metric | value |",
        "|---|---|",
    ]

    def row(name: str, value: object) -> None:
        lines.append(f"| {name} | {value} |")

    if cfg.subscribers:
        row("subscribers connected", f"{report.connected} / {cfg.subscribers} in {report.connect_s:.1f} s")
    if report.published or report.publish_requests:
        row("events published (accepted)", f"{report.published} ({report.publish_per_s:,.0f}/s)")
        row("publish rejected", f"{report.rejected} {report.publish_errors or ''}".strip())
        pl = report.publish_latency_ms
        what = "ack" if cfg.via == "ws" else "request"
        row(f"publish {what} latency p50 / p99 / max", f"{pl['p50']} / {pl['p99']} / {pl['max']} ms")
    if cfg.subscribers and report.published:
        row("deliveries", f"{report.deliveries:,} of {report.expected_deliveries:,} expected")
        row("deliveries/s", f"{report.deliveries_per_s:,.0f}")
        row(
            "events frames",
            f"{report.frames:,} ({report.deliveries / max(1, report.frames):.2f} events/frame)",
        )
        lat = report.latency_ms
        row(
            "publish→deliver latency p50 / p90 / p99 / max",
            f"{lat['p50']} / {lat['p90']} / {lat['p99']} / {lat['max']} ms",
        )
        row("lost / duplicates / reordered", f"{report.lost} / {report.duplicates} / {report.reordered}")
        row(
            "subscribers with loss / dups / incomplete",
            f"{report.subs_with_loss} / {report.subs_with_dups} / {report.incomplete_subs}",
        )
    if report.reconnects or cfg.drop_at is not None:
        row(
            "reconnects / unrecovered / replayed",
            f"{report.reconnects} / {report.unrecovered} / {report.replayed}",
        )
        row("drop → resubscribed (s) p50 / p99 / max", _fmt_spread(report.resubscribe_s))
        row("drop → first event published after it (s) p50 / p99 / max", _fmt_spread(report.caught_up_s))
    if report.steps:
        from dash_stream import bench_ramp

        lines.extend(bench_ramp.markdown_rows(report))
    if report.rss_samples or cfg.max_rss_growth_mib_per_hour is not None:
        growth = report.rss_growth_mib_per_hour
        row(
            f"server RSS growth after {cfg.warmup:.0%} warm-up"
            f" (least squares, {len(report.rss_samples)} samples)",
            "-" if growth is None else f"{growth:+.1f} MiB/hour",
        )
    if report.closes:
        row("connection ends by close code", report.closes)
    if report.errors:
        row("errors", report.errors)
    row(
        "server RSS before / loaded / peak",
        f"{srv.rss_before_mib:.1f} / {srv.rss_loaded_mib:.1f} / {srv.rss_peak_mib:.1f} MiB",
    )
    if srv.rss_per_connection_kib is not None:
        row("server RSS per idle subscribed connection", f"{srv.rss_per_connection_kib:.1f} KiB")
    row("server CPU during the run", f"{srv.cpu_percent:.0f} % of one core")
    if srv.cpu_us_per_delivery is not None:
        row("server CPU per delivery", f"{srv.cpu_us_per_delivery:.1f} µs")
    if gen.processes:
        row("other load on the machine during the run", f"{gen.background_cpu_percent:.0f} % of one core")
        row(
            "generator CPU (all / busiest process)",
            f"{gen.cpu_percent:.0f} % / {gen.busiest_process_percent:.0f} %"
            + (" — SATURATED, numbers are a generator limit" if gen.saturated else ""),
        )
    lines.append("")
    lines.append(
        "SLOs: " + ("; ".join(report.violations) if report.violations else "all met (or none declared)")
    )
    return "\n".join(lines) + "\n"


def _fmt_spread(values: dict[str, float]) -> str:
    if not values:
        return "-"
    return f"{values['p50']} / {values['p99']} / {values['max']} (n={int(values['n'])})"


# ---------------------------------------------------------------- a real server to bench


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """`dash-stream serve --dev` as a real subprocess on a free loopback port, limits opened for load.

    `cpus` pins it (`taskset -c`, or sched_setaffinity when taskset is missing).
    """

    def __init__(
        self, *, args: Sequence[str] = (), cpus: str | None = None, ready_timeout: float = 30
    ) -> None:
        self.port = free_port()
        self.args = list(args)
        self.cpus = cpus
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        fd, self.log_path = tempfile.mkstemp(prefix="dash-bench-server-", suffix=".log")
        os.close(fd)

    @property
    def url(self) -> str:
        """The server's ws:// base URL."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's pid."""
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        """The command line that starts the server."""
        exe = Path(sys.executable).with_name("dash-stream")
        base = (
            [str(exe)] if exe.exists() else [sys.executable, "-c", "from dash_stream.cli import main; main()"]
        )
        cmd = [
            *base,
            "serve", "--dev", "--host", "127.0.0.1", "--port", str(self.port),
            "--publish-rate", "0", "--conn-publish-rate", "0", "--connect-rate", "0",
            "--max-connections", "100000", "--log-level", "warning",
            *self.args,
        ]  # fmt: skip
        if self.cpus is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", self.cpus, *cmd]
        return cmd

    def __enter__(self) -> ServerProcess:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        if self.cpus is not None and not shutil.which("taskset"):
            with contextlib.suppress(OSError, ValueError):
                os.sched_setaffinity(self.proc.pid, {int(c) for c in self.cpus.split(",")})
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"server not listening after {self.ready_timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's output."""
        with contextlib.suppress(OSError):
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)
