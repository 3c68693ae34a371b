"""Fixtures of the watcher tests: the real OpenClaw gateway fixtures of tests/integration.

They are imported by name (not `*`, which would also re-export that conftest's collection hooks),
as tests/bridge does. Tests that use the gateway get a generous timeout: the session gateway starts
inside whichever test asks for it first (~15-25 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from integration import scaled
from integration.conftest import (  # noqa: F401 - fixtures, re-exported for the tests here
    _forget_unused_llm_scripts,
    mock_llm,
    openclaw_gateway,
)

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    """Register the `integration` marker here too (tests/integration's conftest may not be loaded)."""
    config.addinivalue_line("markers", "integration: runs real processes (OpenClaw gateway, mock LLM)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests here that use the gateway are `integration` tests with room for the gateway's start."""
    for item in items:
        if HERE not in item.path.parents or "openclaw_gateway" not in getattr(item, "fixturenames", ()):
            continue
        item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(scaled(240)))
