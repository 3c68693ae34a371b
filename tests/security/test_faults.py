"""Faults: kill -9 and restart (memory bus and Redis bus), a network partition between a node and Redis
(a TCP proxy in front of Redis that stops forwarding, then resumes), and a full disk under the bridge
(RLIMIT_FSIZE = 0 set on the running bridge process with prlimit).

Each test counts events acknowledged, delivered, lost and duplicated, and the time to recover, prints
them (docs/SECURITY.md quotes them), and fails on a lost acknowledged event or a duplicate delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis_servers
from helpers import WsClient, scaled
from servers import REPO, ServerFactory, server_env

from .support import unique

pytestmark = pytest.mark.timeout(180)


def _events(topic: str, start: int, n: int) -> list[dict[str, Any]]:
    return [
        {
            "topic": f"{topic}.p{i % 4}",
            "type": "t",
            "id": f"{topic}-{i}",
            "source": "faults",
            "data": {"seq": i},
        }
        for i in range(start, start + n)
    ]


def _seqs(client: WsClient, sub: str = "s") -> list[int]:
    return [int(e["data"]["seq"]) for e in client.events.get(sub, [])]


def _figures(name: str, acked: set[int], delivered: list[int], recover_s: float, **extra: Any) -> None:
    lost = sorted(acked - set(delivered))
    dups = len(delivered) - len(set(delivered))
    print(
        f"\n{name}: acked {len(acked)}, delivered {len(set(delivered))}, lost {len(lost)}, "
        f"duplicated {dups}, recovered in {recover_s:.2f}s"
        + "".join(f", {k.replace('_', ' ')} {v}" for k, v in extra.items())
    )


# ---------------------------------------------------------------- kill -9: memory bus


async def test_memory_bus_kill_9_and_restart_reports_epoch_changed(server: ServerFactory) -> None:
    topic = unique("mem")
    first = server("--dev")
    client = await WsClient.connect(first.ws_url)
    async with httpx.AsyncClient(trust_env=False, timeout=scaled(10)) as http:
        await client.subscribe("s", [f"{topic}.>"])
        resp = await http.post(f"{first.base_url}/v1/events", json={"events": _events(topic, 0, 20)})
        assert resp.status_code == 202
        await client.wait_events("s", 20)
        cursor = client.cursors["s"]
        first.stopping = True  # killed on purpose: not a crash for the fixture's teardown check
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        killed = time.monotonic()
        await client.wait_closed()
        await client.close()
        second = server("--dev")
        fresh = await WsClient.connect(second.ws_url)
        try:
            reply = await fresh.subscribe("s", [f"{topic}.>"], cursor=cursor)
            recovered_s = time.monotonic() - killed
            assert reply["recovered"] is False and reply["reason"] == "epoch_changed", reply
            resp = await http.post(f"{second.base_url}/v1/events", json={"events": _events(topic, 20, 5)})
            assert resp.status_code == 202
            await fresh.wait_events("s", 5)
            assert _seqs(fresh) == list(range(20, 25)), "live after the restart, no silent partial replay"
        finally:
            await fresh.close()
    _figures(
        "memory bus kill -9",
        set(range(20)),
        list(range(20)),
        recovered_s,
        history_after_restart="none (documented)",
    )


# ---------------------------------------------------------------- kill -9: Redis bus


async def _publish_retrying(base: str, events: list[dict[str, Any]], outcomes: list[int]) -> float:
    """POST until accepted (same ids: dedup makes retries safe); the time it took."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=scaled(15)) as http:
        for _ in range(400):
            try:
                resp = await http.post("/v1/events", json={"events": events})
            except httpx.TransportError:
                outcomes.append(0)
                await asyncio.sleep(0.05)
                continue
            outcomes.append(resp.status_code)
            if resp.status_code == 202:
                return time.monotonic() - started
            assert resp.status_code in (503, 429), resp.text
            await asyncio.sleep(0.05)
    raise AssertionError("publish never accepted")


async def test_redis_bus_node_kill_9_and_restart_loses_nothing(server: ServerFactory) -> None:
    deployment = redis_servers.standalone()
    try:
        args = ("--dev", "--bus", deployment.url, "--redis-partitions", "4")
        node = server(*args)
        other = server(*args)
        topic = unique("rk")
        client = await WsClient.connect(node.ws_url)
        await client.subscribe("s", [f"{topic}.>"])
        acked: set[int] = set()
        outcomes: list[int] = []

        async def publisher() -> None:
            for start in range(0, 200, 10):
                await _publish_retrying(other.base_url, _events(topic, start, 10), outcomes)
                acked.update(range(start, start + 10))
                await asyncio.sleep(0.02)

        task = asyncio.create_task(publisher())
        await client.wait_events("s", 40, within=20)
        node.stopping = True
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)
        killed = time.monotonic()
        await client.wait_closed()
        delivered = _seqs(client)
        cursor = client.cursors["s"]
        await client.close()
        restarted = server(*args)
        fresh = await WsClient.connect(restarted.ws_url)
        reply = await fresh.subscribe("s", [f"{topic}.>"], cursor=cursor)
        recover_s = time.monotonic() - killed
        assert reply["recovered"] is True, reply
        await task
        await fresh._until(
            lambda: len(delivered) + len(fresh.events.get("s", [])) >= 200, 30, lambda: "every event"
        )
        await asyncio.sleep(0.2)
        delivered += _seqs(fresh)
        await fresh.close()
        _figures("redis node kill -9 + restart", acked, delivered, recover_s)
        assert acked <= set(delivered), sorted(acked - set(delivered))[:10]
        assert len(delivered) == len(set(delivered)), "duplicates after resume"
    finally:
        deployment.stop()


# ---------------------------------------------------------------- partition


class PausableProxy:
    """A TCP proxy in its own thread; `pause()` stops forwarding (bytes wait in the socket buffers,
    as on a partitioned link), `resume()` lets them through."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, name="pausable-proxy", daemon=True)

    def start(self) -> PausableProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        await self._flowing.wait()  # a partition also stalls new connections
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await src.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()

    def pause(self) -> None:
        assert self._flowing is not None
        self.loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        assert self._flowing is not None
        self.loop.call_soon_threadsafe(self._flowing.set)

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()  # its self-pipe sockets, else closed by the GC in some later test


async def test_a_partition_from_redis_gives_503_keeps_clients_and_loses_nothing(
    server: ServerFactory,
) -> None:
    deployment = redis_servers.standalone()
    assert deployment.master is not None
    proxy = PausableProxy(deployment.master.port).start()
    try:
        node = server("--dev", "--bus", f"redis://127.0.0.1:{proxy.port}/0", "--redis-partitions", "4")
        topic = unique("part")
        client = await WsClient.connect(node.ws_url)
        await client.subscribe("s", [f"{topic}.>"])
        acked: set[int] = set()
        outcomes: list[int] = []
        recover: list[float] = []

        async def publisher() -> None:
            for start in range(0, 120, 5):
                took = await _publish_retrying(node.base_url, _events(topic, start, 5), outcomes)
                acked.update(range(start, start + 5))
                if took > 1:
                    recover.append(took)
                await asyncio.sleep(0.02)

        task = asyncio.create_task(publisher())
        await client.wait_events("s", 30, within=20)
        proxy.pause()
        paused = time.monotonic()
        async with httpx.AsyncClient(base_url=node.base_url, trust_env=False, timeout=scaled(15)) as http:
            while 503 not in outcomes and time.monotonic() - paused < scaled(30):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            assert 503 in outcomes, f"no 503 during the partition: {outcomes[-10:]}"
            ready = await http.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert client.close_code is None and not client.done.is_set(), (
                "WebSocket clients keep their connection"
            )
            await client.ping()
            partition_s = time.monotonic() - paused
            proxy.resume()
            resumed = time.monotonic()
            await task
            await client.wait_events("s", 120, within=60)
            await asyncio.sleep(0.3)
            assert (await http.get("/readyz")).status_code == 200
        delivered = _seqs(client)
        await client.close()
        _figures(
            "redis partition",
            acked,
            delivered,
            time.monotonic() - resumed,
            partition=f"{partition_s:.1f}s",
            publish_503s=outcomes.count(503),
            slowest_accepted_publish=f"{max(recover, default=0):.1f}s",
        )
        assert acked <= set(delivered), sorted(acked - set(delivered))[:10]
        assert len(delivered) == len(set(delivered)), "a retried publish was delivered twice"
    finally:
        proxy.stop()
        deployment.stop()


# ---------------------------------------------------------------- disk full under the bridge


class HookStub:
    """OpenClaw's hooks API as the bridge sees it: records every request, answers 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []  # (Idempotency-Key, body)
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                with stub.lock:
                    stub.requests.append((self.headers.get("idempotency-key") or "", body))
                out = json.dumps({"ok": True, "runId": uuid.uuid4().hex}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def markers(self, prefix: str) -> dict[str, int]:
        with self.lock:
            bodies = [b for _, b in self.requests]
        found: dict[str, int] = {}
        for body in bodies:
            for word in body.replace('"', " ").replace("\\n", " ").split():
                if word.startswith(prefix):
                    found[word] = found.get(word, 0) + 1
        return found


@pytest.fixture
def hooks() -> Iterator[HookStub]:
    stub = HookStub()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


def _bridge(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "dash-stream"), "bridge", "run", "--config", str(config)],
        cwd=REPO,
        env=server_env({"DASH_SEC_HOOKS_TOKEN": "hooks-token-for-tests"}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,  # a pipe, not a file: RLIMIT_FSIZE must not stop the logging
        stderr=subprocess.STDOUT,
    )


def _drain(proc: subprocess.Popen[bytes], log: Path) -> threading.Thread:
    def copy() -> None:
        assert proc.stdout is not None
        with proc.stdout, log.open("ab") as out:
            for line in proc.stdout:
                out.write(line)
                out.flush()

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    return thread


def _wait(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + scaled(seconds)
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_full_disk_stalls_the_bridge_without_losing_or_advancing_past_events(
    tmp_path: Path, server: ServerFactory, hooks: HookStub
) -> None:
    srv = server("--dev")
    run = f"df{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state.json"
    config = tmp_path / "bridge.toml"
    config.write_text(
        f"""
[source]
server = "{srv.ws_url}"
topics = ["swarm.>"]
start = "earliest"

[[receivers]]
name = "gw"
kind = "openclaw"
url = "{hooks.url}"
token_env = "DASH_SEC_HOOKS_TOKEN"
agent_id = "main"
backoff_initial = "100ms"
backoff_max = "1s"

[[routes]]
name = "all"
receiver = "gw"
group_by = ["..."]

[state]
path = "{state}"
checkpoint_interval = "200ms"

[dlq]
path = "{tmp_path / "dlq.jsonl"}"
"""
    )

    def publish(start: int, n: int) -> None:
        events = [
            {
                "topic": f"swarm.{run}.agent.a{i}",
                "type": "agent.failed",
                "priority": "critical",
                "data": {"reason": f"{run}-m{i}"},
            }
            for i in range(start, start + n)
        ]
        resp = httpx.post(f"{srv.base_url}/v1/events", json={"events": events}, trust_env=False, timeout=30)
        assert resp.status_code == 202, resp.text

    def saved_cursor() -> str | None:
        try:
            return json.loads(state.read_text()).get("cursor")
        except (OSError, ValueError):
            return None

    log = tmp_path / "bridge.log"
    proc = _bridge(config)
    _drain(proc, log)
    try:
        publish(0, 5)
        _wait(lambda: len(hooks.markers(f"{run}-m")) == 5, 30, f"the first five messages\n{log.read_text()}")
        _wait(lambda: saved_cursor() is not None, 10, "a checkpoint")
        time.sleep(0.5)
        cursor_before = saved_cursor()
        # the disk fills up: every write of the bridge process now fails with EFBIG
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        full_at = time.monotonic()
        publish(5, 5)
        _wait(lambda: "cannot journal messages before sending" in log.read_text(), 20, "the journal error")
        time.sleep(1.0)
        text = log.read_text()
        assert "File too large" in text, text[-2000:]
        assert len(hooks.markers(f"{run}-m")) == 5, "nothing is sent before it is journaled"
        assert saved_cursor() == cursor_before, "the durable cursor must not move past undelivered events"
        # crash while the disk is full, then restart with room again
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert saved_cursor() == cursor_before
        proc = _bridge(config)
        _drain(proc, log)
        _wait(lambda: len(hooks.markers(f"{run}-m")) == 10, 30, f"all ten messages\n{log.read_text()}")
        recover_s = time.monotonic() - full_at
        time.sleep(1.0)
        counts = hooks.markers(f"{run}-m")
        keys = [k for k, body in hooks.requests if run in body]
        assert counts == {f"{run}-m{i}": 1 for i in range(10)}, counts
        assert len(keys) == len(set(keys)) == 10
        _wait(lambda: saved_cursor() != cursor_before, 10, "the cursor to advance once the disk has room")
        print(
            f"\nbridge disk full: 10 events published, 10 delivered once, 0 lost, 0 duplicated, "
            f"cursor held at {cursor_before} while full, recovered in {recover_s:.1f}s (incl. kill -9)"
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(scaled(20))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
