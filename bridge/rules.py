"""Filter, transform and route: the first stages, compiled once from the config.

- `EventFilter`: loop safety (events whose `labels.origin` is the bridge's own are dropped) and the
  source's `where`, the very matcher subscriptions use (`dash_stream.filters.compile_where`).
- `Route`: one node of an Alertmanager-style tree. A node matches when its `match` (equality),
  `match_re` (full-match regexes) and `where` all hold; the tree is walked depth first, the first
  matching child wins unless it has `continue = true`, and a node none of whose children match is
  itself the match. Settings inherit from the parent; the root is `[defaults]`.
- `Mentions`: @names from `labels.mentions` mapped to targets; each mapped name adds a delivery
  (a *claim*) next to the route's own, sharing the route's grouping, dedup and throttle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from bridge.config import NO_GROUPING, TARGET_KEYS, BridgeConfig, ReceiverConfig, RouteConfig
from bridge.errors import ConfigError
from bridge.model import Target
from bridge.templates import MISSING, Getter, Template, TemplateError, field_getter
from dash_stream.events import Event
from dash_stream.filters import Predicate, compile_where
from dash_stream.protocol.errors import BadRequest

DEFAULT_TITLE: Final = "{badge} {type} on {topic}"
DEFAULT_TEXT: Final = "{type} {topic}: {summary}"
DEFAULT_DIGEST_TITLE: Final = "{badge} {count} events in {group}"
DEFAULT_GROUP_WAIT: Final = 30.0
DEFAULT_GROUP_INTERVAL: Final = 300.0
DEFAULT_REPEAT_INTERVAL: Final = 4 * 3600.0
MAX_MENTIONS: Final = 20
_EVENT_FIELDS: Final = frozenset({"type", "source", "priority", "topic", "id", "time"})
_INHERITED: Final = (
    "receiver",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "dedup_key",
    "dedup_window",
    "throttle",
    "title",
    "text",
    "digest_title",
    "links",
    "max_items",
    "mentions",
    *TARGET_KEYS,
)


def compile_filter(where: object, path: str) -> Predicate | None:
    """`compile_where` with errors as ConfigError naming the config key."""
    try:
        return compile_where(where, path)
    except BadRequest as e:
        raise ConfigError(e.message) from None


def template(source: str, path: str) -> Template:
    """Compile a template; ConfigError names the key."""
    try:
        return Template(source)
    except TemplateError as e:
        raise ConfigError(f"{path}: {e}") from None


def getter(name: str, path: str) -> Getter:
    """A field getter; ConfigError names the key."""
    try:
        return field_getter(name)
    except TemplateError as e:
        raise ConfigError(f"{path}: {e}") from None


def field_name(key: str) -> str:
    """A `match` key as a field: a bare name that is not an event field means a label."""
    return key if key in _EVENT_FIELDS or "." in key else f"labels.{key}"


class EventFilter:
    """Loop safety, then the source's `where`."""

    def __init__(self, where: Mapping[str, Any] | None, *, origin: str, forward_own: bool) -> None:
        """Compile `where` (ConfigError on a bad filter)."""
        self.origin = origin
        self.forward_own = forward_own
        self._where = compile_filter(dict(where) if where is not None else None, "source.where")

    def own(self, event: Event) -> bool:
        """Whether the event came from this bridge (and must not be forwarded again)."""
        return not self.forward_own and event.labels.get("origin") == self.origin

    def accepts(self, event: Event) -> bool:
        """Whether the source filter lets the event through."""
        return self._where is None or self._where(event)

    def server_where(self, where: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The subscription filter to send to the server: the source's `where` plus loop safety."""
        if self.forward_own:
            return dict(where) if where is not None else None
        own: dict[str, Any] = {"not": {"labels.origin": self.origin}}
        return {"any": [dict(where)], **own} if where is not None else own


class Route:
    """One compiled node of the routing tree (see the module docstring)."""

    def __init__(self, config: BridgeConfig, node: RouteConfig, path: str, parent: Route | None) -> None:
        """Compile `node` under `parent`; ConfigError names the key at fault."""
        self.path = path
        self.id = node.name or path
        inherited: dict[str, Any] = dict(parent.settings) if parent is not None else {}
        for key in _INHERITED:
            value = getattr(node, key)
            if value is not None:
                inherited[key] = value
        self.settings: dict[str, Any] = inherited
        self.continue_ = node.continue_
        self.matcher = self._matcher(node, path)
        receiver = inherited.get("receiver")
        self.receiver: str | None = receiver
        if receiver is not None and not any(r.name == receiver for r in config.receivers):
            known = ", ".join(r.name for r in config.receivers) or "none defined"
            raise ConfigError(f"{path}.receiver: no receiver named {receiver!r} (receivers: {known})")
        group_by = inherited.get("group_by")
        self.grouped = group_by != [NO_GROUPING]
        names = [] if group_by is None or not self.grouped else list(group_by)
        if NO_GROUPING in names:
            raise ConfigError(f'{path}.group_by: "..." (no grouping) must be the only entry')
        self.group_by: tuple[str, ...] = tuple(names)
        self.group_getters = tuple(getter(n, f"{path}.group_by[{i}]") for i, n in enumerate(names))
        self.group_wait = float(inherited.get("group_wait", DEFAULT_GROUP_WAIT))
        self.group_interval = float(inherited.get("group_interval", DEFAULT_GROUP_INTERVAL))
        self.repeat_interval = float(inherited.get("repeat_interval", DEFAULT_REPEAT_INTERVAL))
        if self.group_interval <= 0:
            raise ConfigError(f"{path}.group_interval: must be more than 0s")
        dedup_key = inherited.get("dedup_key")
        self.dedup_key = template(dedup_key, f"{path}.dedup_key") if dedup_key else None
        self.dedup_window = float(inherited.get("dedup_window", self.repeat_interval))
        throttle = inherited.get("throttle")
        self.throttle: tuple[float, float] | None = None
        if throttle is not None:
            burst = throttle.burst if throttle.burst is not None else max(1.0, throttle.rate * 60)
            if burst < 1:
                raise ConfigError(f"{path}.throttle.burst: must be at least 1")
            self.throttle = (float(throttle.rate), float(burst))
        self.title = template(inherited.get("title", DEFAULT_TITLE), f"{path}.title")
        self.text = template(inherited.get("text", DEFAULT_TEXT), f"{path}.text")
        self.digest_title = template(
            inherited.get("digest_title", DEFAULT_DIGEST_TITLE), f"{path}.digest_title"
        )
        self.links = tuple(
            template(s, f"{path}.links[{i}]") for i, s in enumerate(inherited.get("links", []))
        )
        self.max_items = int(inherited.get("max_items", 10))
        if self.max_items < 1:
            raise ConfigError(f"{path}.max_items: must be at least 1")
        self.mentions = bool(inherited.get("mentions", True))
        self.target_overrides = {k: inherited[k] for k in TARGET_KEYS if k in inherited}
        self.target = (
            TargetSpec(config.receiver(receiver), self.target_overrides, path)
            if receiver is not None
            else None
        )
        self.children = [
            Route(config, child, f"{path}.routes[{i}]" if parent is not None else f"routes[{i}]", self)
            for i, child in enumerate(node.routes)
        ]
        if parent is not None and not self.children and self.target is None:
            raise ConfigError(f"{path}.receiver: no receiver (set it on this route or in [defaults])")

    @staticmethod
    def _matcher(node: RouteConfig, path: str) -> Predicate | None:
        tests: list[Predicate] = []
        if node.match:
            eq = compile_filter({field_name(k): v for k, v in node.match.items()}, f"{path}.match")
            if eq is not None:
                tests.append(eq)
        for key, pattern in node.match_re.items():
            try:
                rx = re.compile(pattern)
            except re.error as e:
                raise ConfigError(f"{path}.match_re.{key}: invalid regex: {e}") from None
            get = getter(field_name(key), f"{path}.match_re.{key}")
            tests.append(_regex_test(get, rx))
        where = compile_filter(node.where, f"{path}.where")
        if where is not None:
            tests.append(where)
        if not tests:
            return None
        if len(tests) == 1:
            return tests[0]
        return lambda ev: all(t(ev) for t in tests)

    def matches(self, event: Event) -> bool:
        """Whether this node's own conditions hold."""
        return self.matcher is None or self.matcher(event)

    def walk(self, event: Event, out: list[Route]) -> bool:
        """Alertmanager's tree walk; appends the matching leaves to `out`; True when this node matched."""
        if not self.matches(event):
            return False
        matched_child = False
        for child in self.children:
            if child.walk(event, out):
                matched_child = True
                if not child.continue_:
                    break
        if not matched_child and self.target is not None:
            out.append(self)
        return True

    def group_values(self, event: Event) -> tuple[str, ...]:
        """The event's values of the `group_by` fields ("" when absent)."""
        return tuple(_text(g(event)) for g in self.group_getters)

    def describe_group(self, values: Sequence[str]) -> str:
        """`labels.swarm=s1 type=agent.failed` (or the route id when the route has one group)."""
        if not self.group_by:
            return self.id
        return " ".join(
            f"{n.removeprefix('labels.')}={v or '-'}" for n, v in zip(self.group_by, values, strict=True)
        )

    def all_routes(self) -> list[Route]:
        """This node and every descendant, depth first."""
        out = [self]
        for child in self.children:
            out.extend(child.all_routes())
        return out

    def __repr__(self) -> str:
        return f"Route({self.id!r}, receiver={self.receiver!r})"


def _regex_test(get: Getter, rx: re.Pattern[str]) -> Predicate:
    def test(event: Event) -> bool:
        value = get(event)
        return isinstance(value, str) and rx.fullmatch(value) is not None

    return test


def _text(value: object) -> str:
    return "" if value is MISSING else value if isinstance(value, str) else str(value)


class TargetSpec:
    """A receiver's target fields overridden by a route's (and a mention's); strings are templates."""

    def __init__(self, receiver: ReceiverConfig, overrides: Mapping[str, Any], path: str) -> None:
        """Merge receiver < overrides and compile the string fields."""
        values: dict[str, Any] = {
            k: getattr(receiver, k) for k in TARGET_KEYS if getattr(receiver, k) is not None
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        self.receiver = receiver.name
        self._static: dict[str, Any] = {}
        self._templates: dict[str, Template] = {}
        for key, value in values.items():
            if isinstance(value, str) and "{" in value:
                self._templates[key] = template(value, f"{path}.{key}")
            else:
                self._static[key] = value
        if ("channel" in values) != ("to" in values):
            raise ConfigError(f"{path}: set both channel and to, or neither (OpenClaw needs the pair)")

    def render(self, event: Event) -> Target:
        """The target for one event."""
        fields = dict(self._static)
        for key, tpl in self._templates.items():
            fields[key] = tpl.render(event)
        return Target(receiver=self.receiver, **fields)


class Delivery(NamedTuple):
    """One way an event leaves the bridge: a route, a claim (route or route+@name) and a target."""

    route: Route
    claim: str
    target: Target


def parse_mentions(value: str | None) -> list[str]:
    """`"@alice, bob @carol"` -> `["@alice", "@bob", "@carol"]` (deduplicated, at most 20)."""
    if not value:
        return []
    out: list[str] = []
    for raw in re.split(r"[,\s]+", value):
        name = raw.strip()
        if not name:
            continue
        name = name if name.startswith("@") else f"@{name}"
        if name not in out:
            out.append(name)
        if len(out) >= MAX_MENTIONS:
            break
    return out


class Mentions:
    """@name -> target overrides, from `[[mentions]]`."""

    def __init__(self, config: BridgeConfig) -> None:
        """Index the mention rules; ConfigError on duplicates or unknown receivers."""
        self._config = config
        self._rules: dict[str, tuple[str | None, dict[str, Any]]] = {}
        self._specs: dict[tuple[str, str], TargetSpec] = {}
        for i, rule in enumerate(config.mentions):
            names = parse_mentions(rule.name)
            if len(names) != 1:
                raise ConfigError(f'mentions[{i}].name: expected one @name like "@alice"')
            if names[0] in self._rules:
                raise ConfigError(f"mentions[{i}].name: {names[0]} is mapped twice")
            if rule.receiver is not None and not any(r.name == rule.receiver for r in config.receivers):
                raise ConfigError(f"mentions[{i}].receiver: no receiver named {rule.receiver!r}")
            overrides = {k: getattr(rule, k) for k in TARGET_KEYS if getattr(rule, k) is not None}
            self._rules[names[0]] = (rule.receiver, overrides)
            receiver = config.receiver(rule.receiver) if rule.receiver else None
            if receiver is not None:
                TargetSpec(receiver, overrides, f"mentions[{i}]")  # compile now: errors name the key

    def __contains__(self, name: str) -> bool:
        return name in self._rules

    def _spec(self, name: str, route: Route) -> TargetSpec | None:
        key = (name, route.id)
        spec = self._specs.get(key)
        if spec is None:
            rule = self._rules.get(name)
            receiver = (rule[0] or route.receiver) if rule is not None else None
            if rule is None or receiver is None:
                return None
            spec = TargetSpec(self._config.receiver(receiver), {**route.target_overrides, **rule[1]}, name)
            self._specs[key] = spec
        return spec

    def deliveries(self, route: Route, event: Event, names: list[str]) -> list[Delivery]:
        """The extra deliveries of `route` for the mapped @names of an event."""
        out: list[Delivery] = []
        for name in names:
            spec = self._spec(name, route) if name in self._rules else None
            if spec is not None:
                out.append(Delivery(route, f"{route.id}{name}", spec.render(event)))
        return out


class Router:
    """The compiled routing tree plus mention rules."""

    def __init__(self, config: BridgeConfig) -> None:
        """Compile the tree; ConfigError names the key at fault."""
        root_cfg = config.defaults
        for key in ("name", "where", "routes"):
            if getattr(root_cfg, key):
                raise ConfigError(f"defaults.{key}: not allowed in [defaults] (it is the root of the tree)")
        if root_cfg.match or root_cfg.match_re or root_cfg.continue_:
            raise ConfigError("defaults: match, match_re and continue are not allowed on the root")
        self.root = Route(config, RouteConfig(**_fields(root_cfg), routes=config.routes), "defaults", None)
        self.routes = self.root.all_routes()
        ids = [r.id for r in self.routes]
        for r in self.routes:
            if ids.count(r.id) > 1:
                raise ConfigError(f"{r.path}.name: route name {r.id!r} is used twice")
        self.mentions = Mentions(config)

    def route(self, event: Event) -> list[Route]:
        """The routes an event goes to (empty: unrouted)."""
        out: list[Route] = []
        self.root.walk(event, out)
        return out

    def deliveries(self, event: Event) -> list[Delivery]:
        """Every delivery of an event: each matched route, plus its mention deliveries."""
        routes = self.route(event)
        if not routes:
            return []
        names = parse_mentions(event.labels.get("mentions"))
        out: list[Delivery] = []
        for route in routes:
            assert route.target is not None
            out.append(Delivery(route, route.id, route.target.render(event)))
            if names and route.mentions:
                out.extend(self.mentions.deliveries(route, event, names))
        return out


def _fields(node: RouteConfig) -> dict[str, Any]:
    return {k: getattr(node, k) for k in RouteConfig.__struct_fields__ if k not in ("routes", "continue_")}
