"""Fixtures that run a real OpenClaw gateway, a mock LLM and a fault proxy (see openclaw.py).

- ``mock_llm`` (session): :class:`MockLLM`, the gateway's only model provider.
- ``openclaw_gateway`` (session): a started :class:`Gateway` wired to ``mock_llm``.
- ``fault_proxy`` (function): factory; ``fault_proxy()`` returns a started :class:`FaultProxy`
  in front of the session gateway (or ``fault_proxy(upstream_url)``), stopped after the test.

If OpenClaw cannot be installed or started, tests using it fail with the reason; they never skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import scaled
from .fault_proxy import FaultProxy, FaultProxyFactory
from .mock_llm import MockLLM
from .openclaw import Gateway, OpenClawError

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``integration`` marker (deselect with ``-m 'not integration'``)."""
    config.addinivalue_line(
        "markers", "integration: runs real processes (OpenClaw gateway, mock LLM, proxies); slower"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test here ``integration``; give gateway tests room for the gateway's start."""
    for item in items:
        if HERE not in item.path.parents:
            continue
        item.add_marker(pytest.mark.integration)
        # The session gateway starts inside whichever test first asks for it (~15 s, up to the
        # 120 s ready timeout), which the project-wide 120 s pytest-timeout would cut short.
        # fault_proxy() with no upstream starts the gateway too.
        uses_gateway = {"openclaw_gateway", "fault_proxy"} & set(getattr(item, "fixturenames", ()))
        if uses_gateway and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(scaled(300)))


@pytest.fixture(scope="session")
def mock_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockLLM]:
    """A mock OpenAI-compatible provider; its request log is ``mock_llm.log_path``."""
    llm = MockLLM(tmp_path_factory.mktemp("mock-llm") / "requests.jsonl").start()
    yield llm
    llm.stop()


@pytest.fixture(autouse=True)
def _forget_unused_llm_scripts(request: pytest.FixtureRequest) -> Iterator[None]:
    """Scripted mock replies a test left unconsumed must not leak into the next test."""
    llm = request.getfixturevalue("mock_llm") if "mock_llm" in request.fixturenames else None
    yield
    if llm is not None:
        llm.clear_scripts()


@pytest.fixture(scope="session")
def openclaw_gateway(mock_llm: MockLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One real gateway for the whole session (installs OpenClaw on first use)."""
    gateway = Gateway(tmp_path_factory.mktemp("openclaw"), llm_base_url=mock_llm.base_url)
    failure = None
    try:
        gateway.start()
    except OpenClawError as exc:
        failure = str(exc)
    if failure is not None:
        gateway.stop()
        pytest.fail(f"the OpenClaw gateway fixture could not start:\n{failure}", pytrace=False)
    yield gateway
    gateway.stop()


@pytest.fixture
def fault_proxy(request: pytest.FixtureRequest) -> Iterator[FaultProxyFactory]:
    """Factory of fault proxies; the default upstream is the session gateway's current URL."""
    proxies: list[FaultProxy] = []

    def make(upstream: str | None = None, *, upstream_timeout: float = 120.0) -> FaultProxy:
        if upstream is None:
            upstream = request.getfixturevalue("openclaw_gateway").url
        proxy = FaultProxy(upstream, upstream_timeout=upstream_timeout).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()
