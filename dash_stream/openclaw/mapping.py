"""Where an ingested event goes: its topic and labels, from rules on the run's agent id and session key.

Defaults (docs/openclaw-watch.md, "Topics and labels"):

- run events: topic `openclaw.<agentId>.<kind>`, where `kind` is the session key's third part
  (`agent:main:cron:…` -> `cron`, `agent:main:main` -> `main`, anything else -> `session`);
- gateway events: topic `openclaw.gateway.<gateway name>`;
- labels: `swarm` (default: the gateway name), `agent` (agentId), `session` (sessionKey),
  `gateway`; `origin` is added later, once the run's origin is known.

The first rule (`[[openclaw.rules]]`) whose `agent` and `session` regexes both fully match decides
`topic`, `swarm` and extra `labels`; whatever it leaves unset keeps the default. Values put into a
topic are made topic-safe (characters other than `[A-Za-z0-9_-]` become `_`, 64 at most); a topic
that is still invalid falls back to the default and counts as a translation error.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Final, NamedTuple

from dash_stream.events import TOPIC_REGEX
from dash_stream.openclaw.config import RUN_TOPIC, WatchConfig

_TOPIC: Final = re.compile(TOPIC_REGEX)
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")
_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CACHE_SIZE: Final = 4096
_MAX_LABEL: Final = 1024


class Placement(NamedTuple):
    """An event's topic and labels (before `origin`); `fallback` when a rule's topic was invalid."""

    topic: str
    labels: dict[str, str]
    fallback: bool = False


def segment(value: str) -> str:
    """`value` as one topic segment: unsafe characters become `_`, at most 64, never empty."""
    return _UNSAFE.sub("_", value)[:64] or "_"


def render(template: str, values: dict[str, str], *, for_topic: bool = False) -> str:
    """Fill `{name}` placeholders (validated at load); in a topic each value is one safe segment."""

    def fill(m: re.Match[str]) -> str:
        value = values.get(m.group(1), "")
        return segment(value) if for_topic else value

    return _PLACEHOLDER.sub(fill, template)


def session_kind(session_key: str | None) -> str:
    """`cron` for `agent:main:cron:…`, `main` for `agent:main:main`, else `session`."""
    if session_key:
        parts = session_key.split(":")
        if len(parts) >= 3 and parts[0] == "agent" and parts[2]:
            return parts[2]
    return "session"


class _Rule:
    __slots__ = ("agent", "labels", "session", "swarm", "topic")

    def __init__(
        self,
        agent: str | None,
        session: str | None,
        topic: str | None,
        swarm: str | None,
        labels: dict[str, str],
    ) -> None:
        self.agent = re.compile(agent) if agent is not None else None
        self.session = re.compile(session) if session is not None else None
        self.topic = topic
        self.swarm = swarm
        self.labels = labels

    def match(self, agent_id: str, session_key: str) -> dict[str, str] | None:
        groups: dict[str, str] = {}
        for pattern, value in ((self.agent, agent_id), (self.session, session_key)):
            if pattern is None:
                continue
            m = pattern.fullmatch(value)
            if m is None:
                return None
            groups.update({k: v for k, v in m.groupdict().items() if v is not None})
        return groups


class Mapper:
    """Computes placements; remembers the last few thousand (runs repeat the same agent and session)."""

    def __init__(self, config: WatchConfig) -> None:
        self.gateway = config.gateway_name
        self._topic = config.topic
        self._swarm = config.swarm
        self._gateway_topic = config.gateway_topic
        self._rules = [_Rule(r.agent, r.session, r.topic, r.swarm, dict(r.labels)) for r in config.rules]
        self._cache: OrderedDict[tuple[str, str], Placement] = OrderedDict()

    def place(self, agent_id: str | None, session_key: str | None) -> Placement:
        """The topic and labels of an event of a run of `agent_id` in `session_key`."""
        key = (agent_id or "", session_key or "")
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        placement = self._compute(*key)
        self._cache[key] = placement
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return placement

    def gateway_placement(self) -> Placement:
        """The topic and labels of the gateway's own events (status, health, shutdown)."""
        values = {"gateway": self.gateway, "agent": "", "session": "", "kind": "gateway"}
        swarm = render(self._swarm, values)
        values["swarm"] = swarm
        topic = render(self._gateway_topic, values, for_topic=True)
        labels = {"gateway": self.gateway}
        if swarm:
            labels["swarm"] = swarm[:_MAX_LABEL]
        if _TOPIC.match(topic):
            return Placement(topic, labels)
        return Placement(f"openclaw.gateway.{segment(self.gateway)}", labels, fallback=True)

    def _compute(self, agent_id: str, session_key: str) -> Placement:
        values = {
            "gateway": self.gateway,
            "agent": agent_id or "unknown",
            "session": session_key,
            "kind": session_kind(session_key),
        }
        topic_t, swarm_t, extra = self._topic, self._swarm, {}
        for rule in self._rules:
            groups = rule.match(agent_id, session_key)
            if groups is None:
                continue
            values.update(groups)
            topic_t = rule.topic if rule.topic is not None else topic_t
            swarm_t = rule.swarm if rule.swarm is not None else swarm_t
            extra = rule.labels
            break
        swarm = render(swarm_t, values)
        values["swarm"] = swarm
        labels: dict[str, str] = {"gateway": self.gateway}
        if swarm:
            labels["swarm"] = swarm[:_MAX_LABEL]
        if agent_id:
            labels["agent"] = agent_id[:_MAX_LABEL]
        if session_key:
            labels["session"] = session_key[:_MAX_LABEL]
        for name, template in list(extra.items())[:24]:  # 32 labels at most, origin included
            labels[name[:64]] = render(template, values)[:_MAX_LABEL]
        topic = render(topic_t, values, for_topic=True)
        if _TOPIC.match(topic):
            return Placement(topic, labels)
        return Placement(render(RUN_TOPIC, values, for_topic=True), labels, fallback=True)
