"""Coverage-guided fuzzing (atheris / libFuzzer) of the WebSocket frame decoder.

Run by tests/security/test_atheris.py with a bounded number of runs; by hand for longer:

    .venv/bin/python tests/security/fuzzers/fuzz_frames.py -runs=1000000 -max_len=4096

Any exception but BadRequest from `Codec.decode` / `Codec.correlation_id` is a crash.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from dash_stream.protocol.codec import CODECS
    from dash_stream.protocol.errors import BadRequest


def fuzz_one(data: bytes) -> None:
    """Decode `data` as a binary frame and (when it is UTF-8) as a text frame, with both codecs."""
    inputs: list[bytes | str] = [data]
    with contextlib.suppress(UnicodeDecodeError):
        inputs.append(data.decode())
    for codec in CODECS.values():
        for item in inputs:
            with contextlib.suppress(BadRequest):
                codec.decode(item)
            codec.correlation_id(item)


if __name__ == "__main__":
    atheris.Setup(sys.argv, fuzz_one)
    atheris.Fuzz()
