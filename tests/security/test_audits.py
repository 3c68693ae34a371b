"""Audits in the test run: known-vulnerable dependencies (pip-audit), high-severity static findings
(bandit), and secrets committed to the repository (a small regex scan).

pip-audit asks PyPI's per-release JSON API for advisories. Where that API does not answer for a
release (a PyPI mirror that serves only the project pages, as on the project's build machines),
the test falls back to the project page, whose `vulnerabilities` are those of the newest release:
exact for pins that are the newest release, partial for older pins (an advisory fixed between the
pin and the newest release is not visible there; the test prints which pins those are). An
advisory database that cannot be reached at all fails the test: an audit that did not run must not
pass.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import scaled
from packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCK = REPO / "requirements.lock"

# ---------------------------------------------------------------- pip-audit


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip()] = version.strip()
    return pins


def _pip_audit() -> dict[str, dict[str, Any]]:
    """pip-audit's verdict per dependency of the lock file (name -> its JSON entry)."""
    proc = subprocess.run(
        [
            str(BIN / "pip-audit"),
            "-r",
            str(LOCK),
            "--no-deps",
            "--disable-pip",
            "--vulnerability-service",
            "pypi",
            "--format",
            "json",
            "--progress-spinner",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=scaled(300),
        check=False,
    )
    start = proc.stdout.find("{")
    if start < 0:
        raise AssertionError(f"pip-audit produced no report (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout[start:])
    return {_canonical(d["name"]): d for d in report.get("dependencies", [])}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _affected(version: str, advisory: dict[str, Any]) -> bool:
    """Whether an advisory of the newest release also applies to `version` (unless it is fixed at or
    below it)."""
    try:
        ours = Version(version)
        return not any(ours >= Version(fixed) for fixed in advisory.get("fixed_in") or [])
    except InvalidVersion:
        return True


def test_no_dependency_has_a_known_vulnerability() -> None:
    pins = _pins()
    audited = _pip_audit()
    found: list[str] = []
    by_pip_audit = by_project_page = 0
    partial: list[str] = []
    unreachable: list[str] = []
    with httpx.Client(timeout=scaled(20)) as client:
        for name, version in sorted(pins.items()):
            entry = audited.get(_canonical(name), {})
            if "vulns" in entry and "skip_reason" not in entry:
                by_pip_audit += 1
                found += [
                    f"{name}=={version}: {v['id']} (fixed in {v.get('fix_versions')})" for v in entry["vulns"]
                ]
                continue
            try:
                resp = client.get(f"https://pypi.org/pypi/{name}/json")
            except httpx.HTTPError as e:
                unreachable.append(f"{name} ({type(e).__name__})")
                continue
            if resp.status_code != 200:
                unreachable.append(f"{name} (HTTP {resp.status_code})")
                continue
            doc = resp.json()
            by_project_page += 1
            if doc["info"]["version"] != version:
                partial.append(f"{name}=={version} (newest {doc['info']['version']})")
            found += [
                f"{name}=={version}: {adv['id']} (fixed in {adv.get('fixed_in')})"
                for adv in doc.get("vulnerabilities") or []
                if _affected(version, adv)
            ]
    print(
        f"\npip-audit: {len(pins)} pins of requirements.lock; {by_pip_audit} audited by pip-audit, "
        f"{by_project_page} through PyPI's project pages ({len(partial)} partially: {', '.join(partial)})"
    )
    assert not unreachable, (
        "the vulnerability database could not be reached for: "
        + ", ".join(unreachable)
        + " — an audit that did not run must not pass; check access to pypi.org"
    )
    assert by_pip_audit + by_project_page == len(pins)
    assert not found, "known vulnerabilities:\n" + "\n".join(found)


# ---------------------------------------------------------------- bandit


def test_bandit_finds_no_high_severity_issue() -> None:
    proc = subprocess.run(
        [str(BIN / "bandit"), "-r", "dash_stream", "bridge", "-lll", "-f", "json", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=scaled(120),
        check=False,
    )
    report = json.loads(proc.stdout)
    assert not report.get("errors"), report["errors"]
    high = [
        f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}"
        for r in report["results"]
        if r["issue_severity"] == "HIGH"
    ]
    assert not high, "\n".join(high)
    assert report["metrics"]["_totals"]["loc"] > 1000, "bandit scanned nothing"


# ---------------------------------------------------------------- secrets

# A line that deliberately holds a fake secret (a test fixture) says so with this marker.
ALLOW_MARKER = "secret-scan: allow"
SECRET_PATTERNS = {
    "private key": re.compile(
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----"
    ),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{40}"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "Stripe live key": re.compile(r"\b[rs]k_live_[0-9a-zA-Z]{20,}"),
    "OpenAI key": re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{32,}"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
}


def scan_text(text: str) -> list[tuple[int, str]]:
    """(line number, kind) of every secret-looking string not on an allow-listed line."""
    hits = []
    for n, line in enumerate(text.splitlines(), 1):
        if ALLOW_MARKER in line:
            continue
        hits += [(n, kind) for kind, rx in SECRET_PATTERNS.items() if rx.search(line)]
    return hits


def _repository_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        cwd=REPO,
        timeout=scaled(60),
        check=True,
    ).stdout
    return [REPO / name for name in listed.decode().split("\0") if name]


def test_the_scanner_finds_planted_secrets() -> None:
    """Built at run time, so that this file itself holds none of them."""
    planted = [
        "-----BEGIN " + "RSA PRIVATE KEY-----",
        "AKIA" + "Z" * 16,
        "gh" + "p_" + "a" * 36,
        "xox" + "b-1234567890-abcdef",
        ".".join(["eyJ" + "h" * 12, "eyJ" + "p" * 12, "s" * 12]),
        "aws_secret_access_key = " + "A" * 40,
    ]
    for text in planted:
        assert scan_text(f"x = '{text}'"), text
        assert not scan_text(f"x = '{text}'  # {ALLOW_MARKER}: test fixture"), text


@pytest.mark.timeout(120)
def test_no_secret_is_committed() -> None:
    files = _repository_files()
    assert len(files) > 50, "git ls-files listed almost nothing"
    found = []
    for path in files:
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text(errors="ignore")
        except OSError:
            continue
        found += [f"{path.relative_to(REPO)}:{n}: {kind}" for n, kind in scan_text(text)]
    assert not found, (
        "secret-looking strings (a deliberate test fixture needs the marker "
        f"'{ALLOW_MARKER}' on its line):\n" + "\n".join(found)
    )
