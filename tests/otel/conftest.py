"""Fixtures for the tracing tests: a real OTLP/HTTP receiver and the `OTEL_*` environment for a server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .otlp_receiver import OtlpReceiver, ReceivedSpan


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP receiver on 127.0.0.1 for one test."""
    with OtlpReceiver() as receiver:
        yield receiver


def otel_env(endpoint: str, **extra: str) -> dict[str, str]:
    """A server environment exporting spans over OTLP/HTTP to `endpoint` every 100 ms."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "dash-stream-test",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_SDK_DISABLED": "false",
    }
    env.update(extra)
    return env


def named(spans: list[ReceivedSpan], name: str, **attributes: object) -> list[ReceivedSpan]:
    """The spans called `name` whose attributes include `attributes`."""
    return [
        s for s in spans if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())
    ]


def traceparent(trace_id: str, span_id: str, flags: str = "01") -> str:
    """A version-00 traceparent."""
    return f"00-{trace_id}-{span_id}-{flags}"
