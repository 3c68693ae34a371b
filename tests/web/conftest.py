"""Fixtures of the dashboard and JavaScript client tests: Node >= 22, headless Chromium through
Playwright, and servers that can be restarted on the same port.

Nothing here is ever skipped: a missing Node or Chromium fails the tests, with what to install.
- Node: `node` on PATH when it is >= 22 (global WebSocket), else the pinned Node 24 that
  scripts/ensure-openclaw.sh installs into .cache/openclaw/ (`make test` runs it first).
- Chromium: /usr/bin/chromium, installed by scripts/ensure-chromium.sh (`make system-deps`).
  Playwright drives it through `executable_path`; `playwright install` is never run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest
from helpers import HOST
from playwright.async_api import Browser, async_playwright
from servers import DASH_STREAM, REPO, ServerProcess, ServerStartError, _wait_healthy, free_port, server_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _node_major(path: str) -> int:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return 0
    match = re.match(r"v(\d+)\.", out.strip())
    return int(match.group(1)) if match else 0


@pytest.fixture(scope="session")
def node() -> str:
    """A Node >= 22 binary (see the module docstring)."""
    on_path = shutil.which("node")
    if on_path and _node_major(on_path) >= 22:
        return on_path
    script = REPO / "scripts" / "ensure-openclaw.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith("NODE=") and _node_major(line[5:]) >= 22:
            return line[5:]
    pytest.fail(
        f"no Node >= 22 for the JavaScript client tests (node on PATH: {on_path or 'none'}); "
        f"scripts/ensure-openclaw.sh failed:\n{proc.stderr[-2000:]}",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The system Chromium (installed by scripts/ensure-chromium.sh when missing and possible)."""
    if not CHROMIUM.exists():
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / "ensure-chromium.sh")],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0 or not CHROMIUM.exists():
            pytest.fail(f"no Chromium at {CHROMIUM}: {proc.stderr.strip()}", pytrace=False)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    """A headless Chromium for one test."""
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


class Restartable:
    """`dash-stream serve` on a fixed port, so it can be killed and started again at the same URL."""

    def __init__(self, args: Sequence[str], log_dir: Path, port: int) -> None:
        self.args = tuple(args)
        self.log_dir = log_dir
        self.port = port
        self.base_url = f"http://{HOST}:{port}"
        self.current: ServerProcess | None = None
        self.generations: list[ServerProcess] = []

    def start(self) -> ServerProcess:
        """Start a new process on the port and wait until it is healthy."""
        log_path = self.log_dir / f"server-{self.port}-{uuid.uuid4().hex[:6]}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [str(DASH_STREAM), "serve", "--host", HOST, "--port", str(self.port), *self.args],
                cwd=REPO,
                env=server_env(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = ServerProcess(self.args, self.port, proc, log_path)
        self.generations.append(server)
        if not _wait_healthy(server, 30.0):
            server.stop()
            raise ServerStartError(
                f"dash-stream serve on {self.port} did not become healthy:\n{server.log_text()}"
            )
        self.current = server
        return server

    def kill(self) -> None:
        """SIGKILL the current process (a crash: no drain, no close frames) and reap it."""
        assert self.current is not None
        self.current.stopping = True
        self.current.proc.kill()
        self.current.proc.wait(timeout=30)
        self.current = None


RestartableFactory = Callable[[Sequence[str]], Restartable]


@pytest.fixture
def restartable(server_logs: Path) -> Iterator[RestartableFactory]:
    """`restartable(args)`: a server on a free port of its own that can be killed and started again
    there. Every process it started is stopped at teardown; a logged traceback fails the test."""
    made: list[Restartable] = []

    def make(args: Sequence[str]) -> Restartable:
        r = Restartable(args, server_logs, free_port())
        made.append(r)
        return r

    yield make
    problems = []
    for r in made:
        for generation in r.generations:
            generation.stop()
            text = generation.log_text()
            if "Traceback (most recent call last)" in text:
                problems.append(f"{generation} logged a traceback:\n{text}")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
