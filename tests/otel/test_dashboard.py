"""The Grafana dashboard and the alert rules query only metrics that exist.

Server metrics are checked against a live `/metrics` scrape of a real server; bridge metrics
(prefix `dash_bridge_`) against the documented allow-list otel/grafana/bridge-metrics.txt, which
in turn must match what bridge/metrics.py registers and what docs/operations.md lists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from .promql import names_in, scraped_names

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "otel" / "grafana" / "dash-stream.json"
ALERTS = REPO / "otel" / "prometheus" / "alerts.yml"
BRIDGE_METRICS = REPO / "otel" / "grafana" / "bridge-metrics.txt"
OPERATIONS = REPO / "docs" / "operations.md"


def _panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in doc["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in _panels(doc) for t in p.get("targets", []) if t.get("expr")]


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _bridge_allow_list() -> set[str]:
    lines = (line.strip() for line in BRIDGE_METRICS.read_text().splitlines())
    return {line for line in lines if line and not line.startswith("#")}


@pytest.fixture(scope="module")
def exported(module_server: Any) -> set[str]:
    """Every sample name a real server's /metrics offers."""
    srv = module_server("--dev")
    text = httpx.get(f"{srv.base_url}/metrics", trust_env=False, timeout=30).text
    return scraped_names(text)


def _unknown(
    used: dict[str, set[str]], exported: set[str], extra: frozenset[str] = frozenset()
) -> dict[str, set[str]]:
    allowed = exported | _bridge_allow_list() | extra
    return {name: exprs for name, exprs in used.items() if name not in allowed}


def test_the_dashboard_is_provisioning_ready() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "dash-stream" and doc["title"] == "dash-stream"
    assert doc["id"] is None  # provisioning assigns ids
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    panels = _panels(doc)
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]


def test_the_dashboard_covers_the_swarm_the_fan_out_the_bus_and_the_bridge() -> None:
    doc = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows[:5] == ["Swarm overview", "Fan-out health", "API", "Bus health", "OpenClaw bridge"]
    heatmaps = [p for p in _panels(doc) if p["type"] == "heatmap"]
    assert any("dash_publish_to_deliver_seconds_bucket" in t["expr"] for p in heatmaps for t in p["targets"])
    used = names_in(_dashboard_exprs())
    for needed in (
        "dash_connections",
        "dash_outbox_frames",
        "dash_slow_consumer_closes_total",
        "dash_recoveries_total",
        "dash_bus_publish_seconds_bucket",
        "dash_bus_unavailable_total",
        "dash_events_by_type_total",
        "dash_bridge_forwarded_total",
        "dash_bridge_deduped_total",
        "dash_bridge_throttled_total",
        "dash_bridge_digested_total",
        "dash_bridge_retried_total",
        "dash_bridge_dead_lettered_total",
        "dash_bridge_sink_latency_seconds_bucket",
    ):
        assert needed in used, needed


def test_every_dashboard_query_names_an_exported_metric(exported: set[str]) -> None:
    used = names_in(_dashboard_exprs())
    assert used, "no PromQL found in the dashboard"
    assert _unknown(used, exported) == {}


def test_every_alert_rule_names_an_exported_metric(exported: set[str]) -> None:
    rules = _rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    used = names_in(rule["expr"] for rule in rules)
    assert _unknown(used, exported, frozenset(recorded | {"up"})) == {}


def test_the_bridge_allow_list_is_what_the_bridge_exports_and_what_the_docs_list() -> None:
    from bridge.metrics import BridgeMetrics

    registry = CollectorRegistry()
    BridgeMetrics(registry)
    registered = scraped_names(generate_latest(registry).decode())
    allow = _bridge_allow_list()
    assert allow <= registered, allow - registered
    assert all(name.startswith("dash_bridge_") for name in allow)
    docs = OPERATIONS.read_text()
    assert [name for name in sorted(allow) if f"`{name}`" not in docs] == []
