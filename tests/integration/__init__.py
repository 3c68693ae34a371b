"""Integration tests that run the real thing: an OpenClaw gateway, a mock LLM, a fault proxy."""

from __future__ import annotations

import os


def scaled(seconds: float) -> float:
    """Return ``seconds`` multiplied by ``DASH_TEST_TIMEOUT_SCALE`` (default 1) for slow machines."""
    raw = os.environ.get("DASH_TEST_TIMEOUT_SCALE", "1")
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(f"DASH_TEST_TIMEOUT_SCALE must be a number, got {raw!r}") from None
    return seconds * max(factor, 0.1)
