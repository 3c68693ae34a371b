"""Start and stop a real OpenClaw gateway for integration tests (facts in /work/shared/OPENCLAW.md).

``Gateway`` runs ``node openclaw.mjs gateway run`` from the pinned install that
``scripts/ensure-openclaw.sh`` keeps in ``.cache/openclaw/``, with an empty environment except the
variables listed in OPENCLAW.md §2, its own state directory, config file and port under ``workdir``,
hooks enabled with random tokens, the mock LLM as its only model provider, and a preloaded egress
guard (``node_guard.cjs``) that fails every non-loopback DNS lookup or connect.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from . import scaled

ROOT = Path(__file__).resolve().parents[2]
ENSURE_SCRIPT = ROOT / "scripts" / "ensure-openclaw.sh"
GUARD = Path(__file__).resolve().with_name("node_guard.cjs")
PORT_ATTEMPTS = 3
LOG_TAIL_LINES = 40


class OpenClawError(RuntimeError):
    """Installing, starting or stopping the gateway failed; the message says why and shows logs."""


@dataclass(frozen=True, kw_only=True)
class OpenClawInstall:
    """Paths of the pinned Node 24 binary and the openclaw CLI entry point."""

    node: Path
    entry: Path


def ensure_openclaw(timeout: float = 900.0) -> OpenClawInstall:
    """Run ``scripts/ensure-openclaw.sh`` (instant when cached) and return the installed paths."""
    try:
        proc = subprocess.run(
            ["bash", str(ENSURE_SCRIPT)], capture_output=True, text=True, timeout=scaled(timeout), check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise OpenClawError(f"{ENSURE_SCRIPT} did not finish within {exc.timeout:.0f} s") from None
    if proc.returncode != 0:
        details = _tail(proc.stderr, LOG_TAIL_LINES)
        raise OpenClawError(f"{ENSURE_SCRIPT} failed with exit status {proc.returncode}:\n{details}")
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    try:
        install = OpenClawInstall(node=Path(paths["NODE"]).resolve(), entry=Path(paths["ENTRY"]).resolve())
    except KeyError:
        raise OpenClawError(f"{ENSURE_SCRIPT} printed no NODE=/ENTRY= lines: {proc.stdout!r}") from None
    if not (install.node.is_file() and install.entry.is_file()):
        raise OpenClawError(f"{ENSURE_SCRIPT} reported missing files: {install}")
    return install


class Gateway:
    """One real OpenClaw gateway process on 127.0.0.1, restartable on the same port and state."""

    def __init__(
        self,
        workdir: Path,
        *,
        llm_base_url: str,
        install: OpenClawInstall | None = None,
        port: int | None = None,
        config_overrides: Mapping[str, Any] | None = None,
        ready_timeout: float = 120.0,
        stop_timeout: float = 15.0,
    ) -> None:
        """Prepare (but do not start) a gateway whose files all live under ``workdir``.

        ``config_overrides`` is deep-merged into the generated config (e.g. ``{"hooks": {"mappings":
        [...]}}``). Timeouts are in seconds and scaled by ``DASH_TEST_TIMEOUT_SCALE``.
        """
        self.workdir = Path(workdir).resolve()
        self.state_dir = self.workdir / "state"
        self.home_dir = self.workdir / "home"
        self.tmp_dir = self.workdir / "tmp"
        self.config_path = self.workdir / "openclaw.json5"
        self.log_path = self.workdir / "openclaw.log"  # the gateway's own log (logging.file)
        self.output_path = self.workdir / "gateway.out"  # stdout + stderr, incl. egress guard reports
        self.llm_base_url = llm_base_url
        self.hooks_token = secrets.token_urlsafe(24)
        self.gateway_token = secrets.token_urlsafe(24)
        self._install = install
        self._port = port
        self._overrides = dict(config_overrides or {})
        self._ready_timeout = ready_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._helpers: set[int] = set()
        self._output_offset = 0

    # -- addresses -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The gateway's TCP port (HTTP, hooks and WebSocket share it)."""
        if self._port is None:
            raise OpenClawError("gateway has no port yet; call start() first")
        return self._port

    @property
    def url(self) -> str:
        """Base HTTP URL, e.g. ``http://127.0.0.1:41701``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def hooks_url(self) -> str:
        """Base URL of the hooks API, e.g. ``http://127.0.0.1:41701/hooks``."""
        return f"{self.url}/hooks"

    @property
    def ws_url(self) -> str:
        """Gateway WebSocket URL (OPENCLAW.md §9), e.g. ``ws://127.0.0.1:41701``."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the gateway process itself (not a launcher), or None when stopped."""
        return self._proc.pid if self._proc is not None else None

    @property
    def helper_pids(self) -> frozenset[int]:
        """PIDs of the helper processes recorded when the gateway became ready."""
        return frozenset(self._helpers)

    def processes(self) -> set[int]:
        """PIDs of every live process (gateway and helpers) started with this gateway's state dir."""
        found = self._find_helpers()
        if self.pid is not None and self._is_ours(self.pid):
            found.add(self.pid)
        return found

    @property
    def is_running(self) -> bool:
        """Whether the gateway process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Gateway:
        """Spawn the gateway and block until ``/readyz`` says ready; raise ``OpenClawError`` if not."""
        if self.is_running:
            raise OpenClawError("gateway already running")
        install = self._install or ensure_openclaw()
        self._install = install
        for directory in (self.state_dir, self.home_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + scaled(self._ready_timeout)
        for _attempt in range(PORT_ATTEMPTS):
            if self._port is None or not _port_is_free(self._port):
                self._port = _free_port()
            self._write_config()
            self._spawn(install)
            if self._wait_ready(deadline):
                self._helpers = self._find_helpers()
                atexit.register(self.stop)
                return self
            self._kill_everything()  # EADDRINUSE: someone took the port between check and bind
            self._port = None
        raise OpenClawError(
            f"gateway could not bind a free port in {PORT_ATTEMPTS} attempts\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM the gateway (SIGKILL after ``stop_timeout``), then kill helpers that outlive it."""
        proc = self._proc
        if proc is None:
            return
        atexit.unregister(self.stop)
        helpers = self._helpers | self._find_helpers()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=scaled(self._stop_timeout))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # After a clean SIGTERM the helpers exit by themselves within ~2 s; give them that chance.
        helpers |= self._find_helpers()
        deadline = time.monotonic() + scaled(5.0)
        while any(self._is_ours(pid) for pid in helpers) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in helpers:
            self._kill_if_ours(pid)
        self._proc = None
        self._helpers = set()

    def restart(self) -> Gateway:
        """Stop, then start again with the same state, tokens and (if still free) port."""
        self.stop()
        return self.start()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- hooks API -------------------------------------------------------------------------------

    def post_agent(
        self,
        message: str,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        base_url: str | None = None,
        timeout: float = 30.0,
        **fields: Any,
    ) -> httpx.Response:
        """POST ``/hooks/agent`` with ``message`` and returns the response (no status check).

        ``fields`` become body fields (``name``, ``sessionKey``, ``idempotencyKey``,
        ``waitForCompletion``...); the defaults are ``name="dash-test"`` and ``deliver=False``,
        which spares the extra main-session heartbeat run a delivered reply would cause.
        ``token`` replaces the hooks token (send a wrong one to test 401s); ``base_url`` sends the
        request elsewhere, e.g. through a ``FaultProxy``.
        """
        payload = {"name": "dash-test", "deliver": False, **fields, "message": message}
        return self.post_hook(
            "agent", payload, token=token, headers=headers, base_url=base_url, timeout=timeout
        )

    def post_hook(
        self,
        path: str,
        payload: Any,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        base_url: str | None = None,
        timeout: float = 30.0,
    ) -> httpx.Response:
        """POST JSON ``payload`` to ``/hooks/<path>`` (``agent``, ``wake`` or a mapping path)."""
        url, request_headers = self._hook_request(path, token, headers, base_url)
        with httpx.Client(timeout=scaled(timeout), trust_env=False) as client:
            return client.post(url, json=payload, headers=request_headers)

    def reset_hook_auth_throttle(self) -> None:
        """Reset the gateway's failed-hook-auth counter (20 failures a minute, then 429 for 60 s).

        Any request with the valid token resets it; this one is rejected as invalid (no
        ``message``) so it starts no run. Call it after tests that send wrong tokens on purpose.
        """
        response = self.post_hook("agent", {})
        if response.status_code != 400:
            raise OpenClawError(
                f"expected 400 for an empty hook, got {response.status_code}: {response.text}"
            )

    async def post_agent_async(
        self,
        message: str,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        base_url: str | None = None,
        timeout: float = 30.0,  # noqa: ASYNC109 - the HTTP client timeout, as in post_agent
        **fields: Any,
    ) -> httpx.Response:
        """The same as :meth:`post_agent`, for async tests."""
        payload = {"name": "dash-test", "deliver": False, **fields, "message": message}
        url, request_headers = self._hook_request("agent", token, headers, base_url)
        async with httpx.AsyncClient(timeout=scaled(timeout), trust_env=False) as client:
            return await client.post(url, json=payload, headers=request_headers)

    def _hook_request(
        self, path: str, token: str | None, headers: Mapping[str, str] | None, base_url: str | None
    ) -> tuple[str, dict[str, str]]:
        base = (base_url or self.url).rstrip("/")
        request_headers = {"Authorization": f"Bearer {self.hooks_token if token is None else token}"}
        request_headers.update(headers or {})
        return f"{base}/hooks/{path.lstrip('/')}", request_headers

    # -- diagnostics -----------------------------------------------------------------------------

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the gateway's output and log file, for failure messages."""
        parts = []
        for label, path in (("output", self.output_path), ("log", self.log_path)):
            text = path.read_text(errors="replace") if path.exists() else "(missing)"
            parts.append(f"--- gateway {label} {path} (last {lines} lines) ---\n{_tail(text, lines)}")
        return "\n".join(parts)

    # -- internals -------------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "gateway": {
                "mode": "local",
                "port": self.port,
                "bind": "loopback",
                "auth": {"mode": "token", "token": self.gateway_token},
            },
            "hooks": {
                "enabled": True,
                "token": self.hooks_token,
                "path": "/hooks",
                "allowedAgentIds": ["main"],
                "allowRequestSessionKey": True,
                "allowedSessionKeyPrefixes": ["hook:"],
            },
            "models": {
                "catalogRefresh": {"enabled": False},
                "providers": {
                    "mock": {
                        "baseUrl": self.llm_base_url,
                        "api": "openai-completions",
                        "apiKey": "mock-key",
                        "models": [{"id": "echo", "name": "echo"}],
                    }
                },
            },
            "agents": {"defaults": {"model": {"primary": "mock/echo"}}},
            "update": {"checkOnStart": False},
            "browser": {"enabled": False},
            "logging": {"file": str(self.log_path)},
        }
        return _deep_merge(config, self._overrides)

    def _write_config(self) -> None:
        self.config_path.write_text(json.dumps(self._config(), indent=2) + "\n")

    def _environment(self, install: OpenClawInstall) -> dict[str, str]:
        guard = f'"{GUARD}"' if " " in str(GUARD) else str(GUARD)
        return {
            "PATH": f"{install.node.parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home_dir),
            "TMPDIR": str(self.tmp_dir),
            "OPENCLAW_STATE_DIR": str(self.state_dir),
            "OPENCLAW_CONFIG_PATH": str(self.config_path),
            "OPENCLAW_DISABLE_BONJOUR": "1",
            "OPENCLAW_NO_AUTO_UPDATE": "1",
            "OPENCLAW_NO_RESPAWN": "1",
            "OPENCLAW_EXEC_SHELL_SNAPSHOT": "0",
            "NODE_OPTIONS": f"--require={guard}",
        }

    def _spawn(self, install: OpenClawInstall) -> None:
        with self.output_path.open("ab") as output:
            self._output_offset = output.tell()
            output.write(f"=== dash-stream tests: starting gateway on port {self.port} ===\n".encode())
            output.flush()
            # start_new_session is setsid(2) in the child before exec: the PID is the gateway's own,
            # and no terminal signal (Ctrl-C in pytest) reaches it before our orderly stop.
            self._proc = subprocess.Popen(
                [str(install.node), str(install.entry), "gateway", "run"],
                env=self._environment(install),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_ready(self, deadline: float) -> bool:
        """True once ready; False on EADDRINUSE (caller retries); raises on any other failure."""
        assert self._proc is not None
        last = "no answer yet"
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                if self._address_in_use():
                    return False
                status = self._proc.poll()
                if status is not None:
                    self._kill_everything()  # helpers it started may outlive it
                    raise OpenClawError(
                        f"gateway exited with status {status} before it was ready "
                        f"(78 = invalid config, see the log)\n{self.log_tail()}"
                    )
                try:
                    response = client.get(f"{self.url}/readyz")
                    if response.status_code == 200 and response.json().get("ready") is True:
                        return True
                    last = f"HTTP {response.status_code} {response.text[:300]}"
                except (httpx.TransportError, ValueError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    self._kill_everything()
                    raise OpenClawError(
                        f"gateway not ready within {scaled(self._ready_timeout):.0f} s "
                        f"(last /readyz: {last})\n{self.log_tail()}"
                    )
                time.sleep(0.25)

    def _address_in_use(self) -> bool:
        if not self.output_path.exists():
            return False
        with self.output_path.open("rb") as output:
            output.seek(self._output_offset)
            return b"EADDRINUSE" in output.read()

    def _kill_everything(self) -> None:
        helpers = self._find_helpers()
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None
        for pid in helpers | self._find_helpers():
            self._kill_if_ours(pid)

    def _find_helpers(self) -> set[int]:
        """PIDs (other than the gateway) whose environment holds our OPENCLAW_STATE_DIR."""
        gateway_pid = self.pid
        found = set()
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and int(entry.name) != gateway_pid and self._is_ours(int(entry.name)):
                found.add(int(entry.name))
        return found

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is a live (not zombie) process started with our state directory."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                return False
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except (OSError, IndexError):
            return False
        return f"OPENCLAW_STATE_DIR={self.state_dir}".encode() in environ.split(b"\0")

    def _kill_if_ours(self, pid: int) -> None:
        if self._is_ours(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _deep_merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _free_port() -> int:
    """A port that is free on 127.0.0.1 and [::1] right now (the gateway binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if _port_is_free(port):
            return port
    raise OpenClawError("no free TCP port found on 127.0.0.1")


def _port_is_free(port: int) -> bool:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                # Like libuv (Node), so TIME_WAIT leftovers from a stopped gateway do not count.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
        except OSError as exc:
            if family == socket.AF_INET6 and exc.errno == 99:  # EADDRNOTAVAIL: no IPv6 loopback here
                continue
            return False
    return True


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])
