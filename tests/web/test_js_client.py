"""The JavaScript client's own tests (tests/web/js/*.test.mjs, Node's test runner) against real
dash-stream servers that the Node tests start themselves; they must pass, never be skipped."""

from __future__ import annotations

import re
import subprocess

from helpers import scaled
from servers import DASH_STREAM, REPO, server_env

JS_TESTS = REPO / "tests" / "web" / "js"


def test_the_javascript_client_tests_pass_under_node_test(node: str) -> None:
    files = sorted(str(p.relative_to(REPO)) for p in JS_TESTS.glob("*.test.mjs"))
    assert files, f"no JavaScript tests in {JS_TESTS}"
    proc = subprocess.run(
        [node, "--test", "--test-reporter=spec", *files],
        cwd=REPO,
        env=server_env({"DASH_STREAM_BIN": str(DASH_STREAM)}),
        capture_output=True,
        text=True,
        timeout=scaled(180),
    )
    report = proc.stdout + proc.stderr
    print(report)
    assert proc.returncode == 0, f"node --test failed (exit {proc.returncode}):\n{report}"
    assert re.search(r"\bfail 0\b", report) and re.search(r"\bpass [1-9]", report), report
