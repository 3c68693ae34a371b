"""A bounded coverage-guided run (atheris) over the frame decoder, seeded with real frames: any
exception but BadRequest is a crash, and the run fails (libFuzzer exits non-zero with the input)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
from helpers import scaled

FUZZER = Path(__file__).parent / "fuzzers" / "fuzz_frames.py"

SEEDS = [
    {"op": "auth", "id": "1", "token": "eyJhbGciOiJIUzI1NiJ9.e30.sig"},
    {
        "op": "subscribe",
        "id": "2",
        "sub": "s",
        "topics": ["swarm.s1.>"],
        "where": {"priority": {"gte": "high"}},
    },
    {"op": "subscribe", "id": "3", "sub": "s", "topics": ["a.*"], "cursor": "abc.0-1", "from": "earliest"},
    {
        "op": "publish",
        "id": "4",
        "event": {"topic": "a.b", "type": "t", "labels": {"k": "v"}, "data": [1, {"x": None}]},
    },
    {"op": "unsubscribe", "id": "5", "sub": "s"},
    {"op": "ping", "id": "6"},
]


def test_the_frame_decoder_survives_a_coverage_guided_run(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n, frame in enumerate(SEEDS):
        (corpus / f"json-{n}").write_bytes(json.dumps(frame).encode())
        (corpus / f"msgpack-{n}").write_bytes(msgspec.msgpack.encode(frame))
    proc = subprocess.run(
        [sys.executable, str(FUZZER), "-runs=100000", "-max_len=4096", "-seed=20261125", str(corpus)],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        cwd=tmp_path,  # crash-<sha1> files, if any, land here
    )
    tail = proc.stderr[-3000:]
    assert proc.returncode == 0, f"the fuzzer found a crash:\n{tail}"
    done = [line for line in proc.stderr.splitlines() if "DONE" in line or line.startswith("Done")]
    assert done, tail
    print(f"\natheris: {done[-1]}")
