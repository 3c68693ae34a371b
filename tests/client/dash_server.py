"""A `dash-stream serve` child process for the SDK and CLI tests (shared by tests/client, tests/cli).

`DashServer.start("--dev")` picks a free port on 127.0.0.1, starts the server with a clean
environment (no proxies, no DASH_* settings), and waits for `GET /healthz`. `stop()` ends it by
PID: SIGTERM, then SIGKILL. Every wait is multiplied by DASH_TEST_TIMEOUT_SCALE.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
_SCRIPT = REPO / ".venv" / "bin" / "dash-stream"
DASH_STREAM = str(_SCRIPT if _SCRIPT.exists() else Path(sys.executable).parent / "dash-stream")
SCALE = float(os.environ.get("DASH_TEST_TIMEOUT_SCALE", "1") or "1")
_PROXIES = ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy", "socks_proxy")


def scaled(seconds: float) -> float:
    """A timeout multiplied by DASH_TEST_TIMEOUT_SCALE, for slow machines."""
    return seconds * SCALE


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no proxies, no DASH_* settings from the shell."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXIES and not k.startswith("DASH_")}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class DashServer:
    """One running server: `url` (http), `ws_url`, `port`, `log()`, `stop()`."""

    def __init__(self, args: tuple[str, ...], port: int) -> None:
        self.args = args
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.ws_url = f"ws://{HOST}:{port}/v1/ws"
        fd, name = tempfile.mkstemp(prefix=f"dash-serve-{port}-", suffix=".log")
        self.log_path = Path(name)
        with os.fdopen(fd, "wb") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [DASH_STREAM, "serve", "--host", HOST, "--port", str(port), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=clean_env(),
                cwd=REPO,
            )

    @classmethod
    def start(cls, *args: str, port: int | None = None) -> DashServer:
        """Start a server and wait until it answers /healthz."""
        server = cls(args, port if port is not None else free_port())
        try:
            server.wait_healthy()
        except BaseException:
            server.stop()
            raise
        return server

    def wait_healthy(self) -> None:
        """Poll /healthz until it answers 200; fail with the server's log if it dies or hangs."""
        deadline = time.monotonic() + scaled(30)
        with httpx.Client(trust_env=False, timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    if http.get(f"{self.url}/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"server on port {self.port} not healthy in time:\n{self.log()}")

    def log(self) -> str:
        """What the server wrote so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time, then remove the log; idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=scaled(15))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=scaled(10))
        self.log_path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"<DashServer {self.url} {' '.join(self.args)}>"
