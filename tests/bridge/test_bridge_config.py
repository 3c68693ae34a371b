"""Config loading: the issue's example works as written, and every error names its key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from bridge.config import load_config, parse_config, parse_duration, parse_rate
from bridge.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bridge.toml"

ISSUE_EXAMPLE = """
[source]
server = "ws://127.0.0.1:8080/v1/ws"
topics = ["swarm.>"]

[[receivers]]
name = "ops"
kind = "openclaw"
url = "http://127.0.0.1:18789"
token_env = "OPENCLAW_HOOKS_TOKEN"
agent_id = "main"

[[routes]]
receiver = "ops"
where = { priority = { gte = "high" } }
session_key = "hook:dash:{labels.swarm}"
group_by = ["labels.swarm", "type"]
group_wait = "2s"
group_interval = "10s"
repeat_interval = "1h"
"""


def base() -> dict[str, Any]:
    return {
        "source": {"server": "ws://127.0.0.1:8080/v1/ws", "topics": ["swarm.>"]},
        "receivers": [
            {
                "name": "ops",
                "kind": "openclaw",
                "url": "http://127.0.0.1:18789",
                "token_env": "T",
                "agent_id": "main",
            }
        ],
        "routes": [{"receiver": "ops", "where": {"priority": {"gte": "high"}}, "group_by": ["labels.swarm"]}],
    }


def test_the_issue_example_loads_as_written(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(ISSUE_EXAMPLE)

    config = load_config(path)

    route = config.routes[0]
    assert route.group_wait == 2.0 and route.group_interval == 10.0 and route.repeat_interval == 3600.0
    assert route.session_key == "hook:dash:{labels.swarm}"
    assert config.receivers[0].agent_id == "main"
    assert config.state_path == tmp_path / "bridge-state.json"  # relative to the config file


def test_the_shipped_example_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.receivers and config.routes


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["routes"][0].update(group_wait=2),
            'routes[0].group_wait: expected a duration like "2s"',
        ),
        (
            lambda d: d["routes"][0].update(group_wait="2 sec"),
            'routes[0].group_wait: expected a duration like "2s"',
        ),
        (
            lambda d: d["routes"][0].update(receiver="nobody"),
            "routes[0].receiver: no receiver named 'nobody'",
        ),
        (
            lambda d: d["routes"][0].update(where={"priority": {"gte": "urgent"}}),
            "routes[0].where.priority.gte:",
        ),
        (
            lambda d: d["routes"][0].update(where={"labels.x": {"like": "a"}}),
            "routes[0].where.labels.x: unknown operator",
        ),
        (
            lambda d: d["routes"][0].update(session_key="hook:{swarm}"),
            "routes[0].session_key: unknown field 'swarm'",
        ),
        (lambda d: d["routes"][0].update(title="{type"), "routes[0].title: unmatched '{'"),
        (lambda d: d["routes"][0].update(bogus=1), "routes[0]: object contains unknown field `bogus`"),
        (
            lambda d: d["routes"][0].update(group_by=["...", "type"]),
            'routes[0].group_by: "..." (no grouping)',
        ),
        (lambda d: d["routes"][0].update(group_by=["nope"]), "routes[0].group_by[0]: unknown field 'nope'"),
        (
            lambda d: d["routes"][0].update(match_re={"agent": "a["}),
            "routes[0].match_re.agent: invalid regex",
        ),
        (
            lambda d: d["routes"][0].update(throttle={"rate": "fast"}),
            "routes[0].throttle.rate: expected a rate like",
        ),
        (lambda d: d["routes"][0].update(channel="slack"), "routes[0]: set both channel and to"),
        (lambda d: d["routes"][0].update({"continue": "yes"}), "routes[0].continue: expected `bool`"),
        (
            lambda d: d["routes"][0].update(routes=[{"group_wait": "x"}]),
            "routes[0].routes[0].group_wait: expected",
        ),
        (lambda d: d["receivers"][0].pop("token_env"), "receivers[0]: set token_env or token_file"),
        (lambda d: d["receivers"][0].update(url="ftp://x"), "receivers[0].url: expected an http(s):// URL"),
        (
            lambda d: d["receivers"][0].update(max_in_flight=0),
            "receivers[0].max_in_flight: must be at least 1",
        ),
        (lambda d: d["receivers"].append(dict(d["receivers"][0])), "receivers[1].name: 'ops' is used twice"),
        (lambda d: d["source"].update(topics=["a..b"]), "source.topics[0]: invalid pattern"),
        (lambda d: d["source"].update(bus="memory://"), "source: set server or bus, not both"),
        (lambda d: d["source"].update(start="middle"), "source.start: expected one of"),
        (lambda d: d.update(routes=[]), "routes: no route and no [defaults] receiver"),
        (lambda d: d.update(defaults={"where": {"type": "x"}}), "defaults.where: not allowed in [defaults]"),
        (
            lambda d: d.update(mentions=[{"name": "@a", "receiver": "x"}]),
            "mentions[0].receiver: no receiver named",
        ),
        (
            lambda d: d.update(mentions=[{"name": "@a"}, {"name": "a"}]),
            "mentions[1].name: @a is mapped twice",
        ),
        (
            lambda d: d.update(inhibit_rules=[{"source": {"type": "swarm.status"}, "target": {}}]),
            "inhibit_rules[0]: source and target need at least one condition",
        ),
        (
            lambda d: d.update(
                inhibit_rules=[{"source": {"type": "x"}, "target": {"type": "y"}, "equal": ["z"]}]
            ),
            "inhibit_rules[0].equal[0]: unknown field 'z'",
        ),
        (
            lambda d: (
                d["state"].update(checkpoint_interval="0s")
                if "state" in d
                else d.update(state={"checkpoint_interval": "0s"})
            ),
            "state.checkpoint_interval: must be more than 0",
        ),
        (lambda d: d.update(metrics={"listen": "9465"}), 'metrics.listen: expected "host:port"'),
    ],
)
def test_errors_name_the_key_and_the_problem(mutate: Any, message: str) -> None:
    doc = copy.deepcopy(base())
    mutate(doc)

    with pytest.raises(ConfigError) as info:
        parse_config(doc)

    assert str(info.value).startswith(message), str(info.value)


def test_a_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[source\n")

    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2.0), ("250ms", 0.25), ("1h30m", 5400.0), ("1d", 86400.0), ("0", 0.0), ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "s", "2x", "2 s", "-1s", "1s2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


def test_rates() -> None:
    assert parse_rate("10/m") == pytest.approx(10 / 60)
    assert parse_rate("2/s") == 2.0
    with pytest.raises(ValueError):
        parse_rate("0/s")


def test_the_openclaw_watchers_table_may_share_the_file() -> None:
    doc = {**base(), "openclaw": {"url": "ws://127.0.0.1:18789", "anything": 1}}
    assert parse_config(doc).openclaw == {"url": "ws://127.0.0.1:18789", "anything": 1}
