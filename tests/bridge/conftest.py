"""Fixtures of the bridge tests: configs, a manual clock, and the real OpenClaw gateway fixtures.

`tests/` is on sys.path (pytest's rootdir insertion for tests/conftest.py), and this directory is
called `bridge` like the package under test: a plain `import bridge` could resolve to this folder
as a namespace package. Putting the repository root first makes it find the real package.
The gateway fixtures (`openclaw_gateway`, `mock_llm`, `fault_proxy`) are the ones of
tests/integration, imported by name (not `*`, which would also re-export their collection hooks).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))
if "bridge" in sys.modules and getattr(sys.modules["bridge"], "__file__", None) is None:
    del sys.modules["bridge"]  # a namespace package made of this folder: drop it

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from integration.conftest import (  # noqa: E402, F401 - fixtures, re-exported for the tests here
    _forget_unused_llm_scripts,
    fault_proxy,
    mock_llm,
    openclaw_gateway,
)

import bridge  # noqa: E402
from bridge.clock import ManualClock  # noqa: E402

assert bridge.__file__ is not None and Path(bridge.__file__).parent == REPO / "bridge", bridge.__file__


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock()


@pytest.fixture
def hooks_token_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """OPENCLAW_HOOKS_TOKEN set to a dummy value (for configs of unit tests)."""
    monkeypatch.setenv("OPENCLAW_HOOKS_TOKEN", "unit-test-token")
    yield "OPENCLAW_HOOKS_TOKEN"


def pytest_configure(config: pytest.Config) -> None:
    """Register the `integration` marker here too (tests/integration's conftest may not be loaded)."""
    config.addinivalue_line(
        "markers", "integration: runs real processes (OpenClaw gateway, mock LLM, proxies)"
    )
