"""The Prometheus alert rules: valid (`promtool check rules`), unit-tested (`promtool test rules`),
and every alert has a severity and a runbook that exists.

promtool comes from Debian's `prometheus` package (scripts/ensure-promtool.sh, run by
`make system-deps`); a machine without it fails these tests rather than skipping them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "otel" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "otel" / "prometheus" / "alerts_test.yml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool is not None, (
        "promtool is not installed: run scripts/ensure-promtool.sh (make system-deps)"
    )
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False, cwd=REPO
    )


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def test_the_alert_rules_are_valid() -> None:
    done = _promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_alert_rules_fire_as_their_unit_tests_say() -> None:
    done = _promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_severity_and_an_existing_runbook() -> None:
    alerts = _alerts()
    assert len(alerts) >= 15
    for rule in alerts:
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        runbook = rule["annotations"]["runbook_url"]
        assert runbook.startswith("docs/runbooks/") and (REPO / runbook).is_file(), (rule["alert"], runbook)
        assert rule["annotations"]["summary"], rule["alert"]


def test_every_alert_is_unit_tested() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in _alerts()} - tested == set()


def test_the_runbooks_cover_the_alerting_areas() -> None:
    for name in (
        "OPENCLAW_INTEGRATION_FAIL",
        "AGENT_SPAWN_STORM",
        "DASH_API_DEGRADED",
        "SLOW_CONSUMERS",
        "BUS_UNAVAILABLE",
    ):
        text = (REPO / "docs" / "runbooks" / f"{name}.md").read_text()
        for section in (
            "## Symptoms",
            "## Dashboards and queries",
            "## The trace to open",
            "## Actions",
            "## Verify recovery",
        ):
            assert section in text, (name, section)
