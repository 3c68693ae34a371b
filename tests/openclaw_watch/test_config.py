"""The `[openclaw]` table: loading (alone or in the bridge's file), errors naming the key, rules."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bridge.config import load_config as load_bridge_config
from dash_stream.openclaw.config import ConfigError, load_config, read_token, validate
from dash_stream.openclaw.mapping import Mapper, session_kind

from .watch_support import config, frames, replay

BRIDGE_AND_WATCH = """
origin = "my-bridge"

[source]
topics = [">"]

[[receivers]]
name = "gw"
kind = "memory"

[[routes]]
receiver = "gw"
where = { priority = { gte = "high" } }

[openclaw]
gateway = "ws://127.0.0.1:18789"
token_env = "MY_GATEWAY_TOKEN"
origin_wait = "1500ms"

[[openclaw.rules]]
agent = "ops-(?P<team>[a-z]+)"
topic = "swarm.{team}.agent.{agent}"
swarm = "{team}"
labels = { owner = "team-{team}" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_bridge_file_carries_the_watcher_table_and_both_load(tmp_path: Path) -> None:
    path = write(tmp_path, BRIDGE_AND_WATCH)

    bridge = load_bridge_config(path)  # the bridge accepts (and ignores) the [openclaw] table
    watch = validate(load_config(path), need_target=False)

    assert bridge.origin == "my-bridge"
    assert watch.origin_marker == "my-bridge"  # the bridge's marker is the default of ours
    assert watch.origin_wait == 1.5
    assert watch.gateway_name == "127.0.0.1-18789"
    assert watch.source == "openclaw/127.0.0.1-18789"


def test_rules_place_runs_on_their_own_topics_and_labels(tmp_path: Path) -> None:
    mapper = Mapper(validate(load_config(write(tmp_path, BRIDGE_AND_WATCH)), need_target=False))

    ops = mapper.place("ops-payments", "agent:ops-payments:cron:j1:run:s1")
    main = mapper.place("main", "agent:main:main")

    assert ops.topic == "swarm.payments.agent.ops-payments"
    assert ops.labels["swarm"] == "payments" and ops.labels["owner"] == "team-payments"
    assert main.topic == "openclaw.main.main"
    assert main.labels == {
        "gateway": "127.0.0.1-18789",
        "swarm": "127.0.0.1-18789",
        "agent": "main",
        "session": "agent:main:main",
    }


def test_values_are_made_topic_safe_and_a_bad_topic_falls_back() -> None:
    mapper = Mapper(config(rules=[{"session": ".*", "topic": "x.{session}"}]))
    placement = mapper.place("a.b c", "agent:a:cron:j:run:s")
    assert placement.topic == "x.agent_a_cron_j_run_s"

    broken = Mapper(config(rules=[{"agent": ".*", "topic": "{agent}..x"}])).place("main", "k")
    assert broken.fallback and broken.topic == "openclaw.main.session"
    assert session_kind("agent:main:cron:x") == "cron" and session_kind("hook:x") == "session"


def test_rules_route_the_recorded_runs() -> None:
    cfg = config(
        rules=[{"session": "agent:main:cron:.*", "topic": "swarm.hooks.agent.{agent}", "swarm": "hooks"}]
    )
    events = replay(frames("plain"), cfg)

    assert {e.topic for e in events if e.type.startswith("agent.")} == {"swarm.hooks.agent.main"}
    assert {e.labels["swarm"] for e in events if e.type.startswith("agent.")} == {"hooks"}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "openclaw.gateway: required"),
        ({"gateway": "http://x:1"}, "openclaw.gateway: expected a ws:// or wss:// URL"),
        ({"gateway": "ws://x:1", "bogus": 1}, "openclaw: Object contains unknown field `bogus`"),
        ({"gateway": "ws://x:1", "origin_wait": 2}, "openclaw.origin_wait: expected a duration"),
        ({"gateway": "ws://x:1", "topic": "openclaw.{agnet}"}, "openclaw.topic: unknown placeholder {agnet}"),
        (
            {"gateway": "ws://x:1", "rules": [{"agent": "("}]},
            "openclaw.rules[0].agent: not a regular expression",
        ),
        (
            {"gateway": "ws://x:1", "rules": [{"topic": "a.{team}"}]},
            "openclaw.rules[0].topic: unknown placeholder",
        ),
        ({"gateway": "ws://x:1", "server": "http://a", "bus": "redis://b"}, "give one, not both"),
        ({"gateway": "ws://x:1", "name": "a b"}, "openclaw.name"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, table: dict[str, object], message: str) -> None:
    lines = ["[openclaw]"]
    for key, value in table.items():
        if key == "rules":
            continue
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    for rule in table.get("rules", []):  # type: ignore[attr-defined]
        lines.append("[[openclaw.rules]]")
        lines.extend(f"{k} = {v!r}".replace("'", '"') for k, v in rule.items())
    path = tmp_path / "w.toml"
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(ConfigError) as info:
        validate(load_config(path), need_target=False)
    assert message in info.value.message


def test_a_file_without_the_table_and_a_missing_token_are_clear_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "[source]\ntopics = ['>']\n")
    with pytest.raises(ConfigError, match=r"no \[openclaw\] table"):
        load_config(path)
    cfg = config(token_env="DASH_TEST_SURELY_UNSET_TOKEN")
    with pytest.raises(ConfigError, match="DASH_TEST_SURELY_UNSET_TOKEN is not set"):
        read_token(cfg)
    (tmp_path / "token").write_text("secret\n")
    assert read_token(config(token_file=str(tmp_path / "token"))) == "secret"
