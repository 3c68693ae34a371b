"""Schemathesis against the server's own /openapi.json (a real `dash-stream serve` subprocess), CI-sized:
at most 30 examples per operation and a fixed seed. Checks: no 5xx, responses conform to the
documented schemas, status codes and content types. Run twice: authenticated (auth on, a broad
token) and anonymous against the same server (every route must answer 401 in the error shape, not
crash)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import scaled
from servers import ServerFactory, ServerProcess, server_env

from .support import SECRET, token

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


@pytest.fixture(scope="module")
def api(module_server: ServerFactory) -> ServerProcess:
    return module_server(
        "--jwt-secret", SECRET, "--publish-rate", "0", "--auth-fail-limit", "0", "--sse-keepalive", "1"
    )


def _run(
    srv: ServerProcess, tmp_path: Path, examples: int, *headers: str
) -> subprocess.CompletedProcess[str]:
    args = [
        str(SCHEMATHESIS),
        "run",
        f"{srv.base_url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(examples),
        "--seed",
        "20261125",
        "--workers",
        "2",
        "--request-timeout",
        "5",
        "--generation-database",
        "none",
        "--no-color",
        "--suppress-health-check",
        "all",
    ]
    for header in headers:
        args += ["--header", header]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=scaled(150), cwd=tmp_path, env=server_env(), check=False
    )


@pytest.mark.parametrize("who", ["authenticated", "anonymous"])
def test_the_openapi_contract_holds_under_generated_requests(
    api: ServerProcess, tmp_path: Path, who: str
) -> None:
    headers = [f"Authorization: Bearer {token(sub='schemathesis')}"] if who == "authenticated" else []
    proc = _run(api, tmp_path, 30 if who == "authenticated" else 10, *headers)
    out = proc.stdout + proc.stderr
    summary = [line for line in out.splitlines() if "generated" in line or "passed" in line][-3:]
    print(f"\nschemathesis ({who}): {' | '.join(s.strip() for s in summary)}")
    assert proc.returncode == 0, out[-6000:]
    assert "Traceback" not in api.log_text(), "a generated request made the server log a traceback"
