"""The raw `websockets` broadcast peer (loadtest/peers/ws_broadcast.py) speaks enough for `fanout`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dash_stream import bench

PEER = Path(__file__).resolve().parents[2] / "loadtest" / "peers" / "ws_broadcast.py"


@pytest.fixture
def peer() -> Iterator[tuple[int, int]]:
    """The peer on a free port: (port, pid)."""
    port = bench.free_port()
    proc = subprocess.Popen(
        [sys.executable, str(PEER), "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        assert proc.stdout is not None
        assert b"listening" in proc.stdout.readline()
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def test_fanout_against_the_broadcast_peer_counts_every_delivery(peer: tuple[int, int]) -> None:
    port, pid = peer
    cfg = bench.make_config(
        "fanout",
        url=f"ws://127.0.0.1:{port}",
        server_pid=pid,
        subscribers=6,
        rate=50.0,
        duration=1.5,
        workers=1,
        grace=10.0,
        connect_timeout=30.0,
    )
    report = bench.run(cfg, log=lambda message: None)
    assert report.connected == 6 and report.published >= 50
    assert report.rejected == 0 and not report.publish_errors
    assert report.deliveries == report.expected_deliveries == report.published * 6
    assert (report.lost, report.duplicates, report.reordered) == (0, 0, 0)
    assert report.server.rss_peak_mib > 0
