"""`dash-stream serve` child processes for tests (the fixtures in conftest.py start and stop them).

Every server listens on 127.0.0.1 on a free port, runs with the repository as its working directory,
without proxy variables or DASH_* settings inherited from the shell, and writes its output to a log
file. Import these names from here (`from servers import ServerProcess`), not from conftest.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import httpx
from helpers import HOST, scaled


class ServerStartError(AssertionError):
    """A test server that did not become healthy (the test fails, it is never skipped)."""


REPO = Path(__file__).resolve().parent.parent
_VENV_SCRIPT = REPO / ".venv" / "bin" / "dash-stream"
DASH_STREAM = _VENV_SCRIPT if _VENV_SCRIPT.exists() else Path(sys.executable).parent / "dash-stream"

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy", "socks_proxy")


def free_port() -> int:
    """A port on 127.0.0.1 that nobody listened on a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a test server: no proxies, no DASH_* settings leaking in from the shell."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS and not k.startswith("DASH_")}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    if extra:
        env.update(extra)
    return env


class ServerProcess:
    """One `dash-stream serve` child process; see the module docstring."""

    def __init__(self, args: Sequence[str], port: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.args = tuple(args)
        self.port = port
        self.proc = proc
        self.log_path = log_path
        self.base_url = f"http://{HOST}:{port}"
        self.ws_url = f"ws://{HOST}:{port}/v1/ws"
        self.stopping = False

    def log_text(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown) without waiting."""
        self.stopping = True
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit (scaled timeout); its return code."""
        return self.proc.wait(timeout=scaled(timeout))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within a (scaled) grace period."""
        self.terminate()
        try:
            self.proc.wait(timeout=scaled(15))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=scaled(15))

    def __repr__(self) -> str:
        return f"ServerProcess(port={self.port}, args={self.args!r}, pid={self.proc.pid})"


def start_server(
    args: Sequence[str], log_dir: Path, *, env: dict[str, str] | None = None, ready_timeout: float = 30.0
) -> ServerProcess:
    """Start `dash-stream serve` and wait until /healthz answers 200; retried on a port clash."""
    last_log = ""
    for attempt in range(3):
        port = free_port()
        log_path = log_dir / f"server-{port}-{uuid.uuid4().hex[:6]}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [str(DASH_STREAM), "serve", "--host", HOST, "--port", str(port), *args],
                cwd=REPO,
                env=server_env(env),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = ServerProcess(args, port, proc, log_path)
        if _wait_healthy(server, ready_timeout):
            return server
        server.stop()
        last_log = server.log_text()
        if "address already in use" not in last_log.lower() or attempt == 2:
            break
    raise ServerStartError(f"dash-stream serve {' '.join(args)} did not become healthy:\n{last_log}")


def _wait_healthy(server: ServerProcess, timeout: float) -> bool:
    deadline = time.monotonic() + scaled(timeout)
    with httpx.Client(trust_env=False, timeout=scaled(2)) as client:
        while time.monotonic() < deadline:
            if not server.alive():
                return False
            try:
                if client.get(f"{server.base_url}/healthz").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    return False


class ServerFactory(Protocol):
    """`server(*args, env=None, ready_timeout=30.0, allow_tracebacks=False) -> ServerProcess`."""

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
        allow_tracebacks: bool = False,
    ) -> ServerProcess: ...
