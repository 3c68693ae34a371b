"""Event fields by name, and the small `{field}` template language of messages and targets.

Field names are those of the `where` filter: `type`, `topic`, `source`, `id`, `time`, `priority`,
`offset`, `traceparent`, `labels.<name>`, `data.<path>`; plus derived ones: `trace_id` (from
`traceparent`) and `summary` (`data.reason`, `data.message`, `data.error` or `data.status`, else
the data as compact JSON). Templates also see context fields set by the message builder (`badge`,
`route`, `count`, `group`, `mentions`, ...).

A template is text with `{name}` or `{name|default}`; `{{` and `}}` are literal braces. It compiles
once (unknown names are a config error naming the key) and renders without raising: an absent
field renders as its default (empty when none). Substituted values are capped at `MAX_VALUE_CHARS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final

import orjson

from dash_stream.events import Event

MISSING: Final = object()
MAX_VALUE_CHARS: Final = 2000
SUMMARY_CHARS: Final = 300

Getter = Callable[[Event], object]

EVENT_FIELDS: Final = (
    "id",
    "topic",
    "type",
    "source",
    "time",
    "priority",
    "offset",
    "traceparent",
    "tracestate",
)
DERIVED_FIELDS: Final = ("trace_id", "summary")
CONTEXT_FIELDS: Final = (
    "badge",
    "route",
    "receiver",
    "count",
    "group",
    "mentions",
    "first_time",
    "last_time",
    "types",
    "worst_priority",
    "origin",
)
_SUMMARY_KEYS: Final = ("reason", "message", "error", "status")
_PLACEHOLDER: Final = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class TemplateError(ValueError):
    """A template or field name that cannot work; the message says why (without the key)."""


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), or None."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def summary(event: Event) -> str:
    """A one-line description of an event's data, for message lines."""
    data = event.data
    if isinstance(data, dict):
        for key in _SUMMARY_KEYS:
            value = data.get(key)
            if isinstance(value, str) and value:
                return value[:SUMMARY_CHARS]
    if data is None:
        return ""
    if isinstance(data, str):
        return data[:SUMMARY_CHARS]
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()[:SUMMARY_CHARS]


def field_getter(name: str) -> Getter:
    """A function reading field `name` of an event (MISSING when absent); TemplateError if unknown."""
    if name in EVENT_FIELDS:
        attr = name
        return lambda ev: _or_missing(getattr(ev, attr))
    if name == "trace_id":
        return lambda ev: _or_missing(trace_id(ev.traceparent))
    if name == "summary":
        return summary
    if name.startswith("labels."):
        label = name[len("labels.") :]
        if not label:
            raise TemplateError("empty label name (use labels.<name>)")
        return lambda ev: ev.labels.get(label, MISSING)
    if name.startswith("data."):
        steps = name[len("data.") :].split(".")
        if "" in steps or len(steps) > 32:
            raise TemplateError(f"data path {name!r} needs 1 to 32 non-empty segments")
        return lambda ev: _walk(ev.data, steps)
    known = ", ".join((*EVENT_FIELDS, *DERIVED_FIELDS))
    raise TemplateError(f"unknown field {name!r} (use {known}, labels.<name>, data.<path>)")


def _or_missing(value: object) -> object:
    return MISSING if value is None else value


def _walk(value: object, steps: list[str]) -> object:
    for step in steps:
        if isinstance(value, dict):
            value = value.get(step, MISSING)
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return MISSING
    return MISSING if value is None else value


def as_text(value: object) -> str:
    """A field value as message text: strings as they are, other JSON values compact, MISSING empty."""
    if value is MISSING:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return orjson.dumps(value).decode()
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


class Template:
    """A compiled template; `render(event, context)` never raises."""

    __slots__ = ("_parts", "fields", "source")

    def __init__(self, source: str) -> None:
        """Compile `source`; TemplateError names the first problem."""
        self.source = source
        parts: list[str | tuple[str, Getter | None, str]] = []
        fields: list[str] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(source):
            if m.start() > pos:
                parts.append(source[pos : m.start()])
            pos = m.end()
            token = m.group(0)
            if token in ("{{", "}}"):
                parts.append(token[0])
                continue
            if m.group(1) is None:
                raise TemplateError(
                    f"unmatched {token!r} at position {m.start()} (write {token * 2} for a brace)"
                )
            name, bar, default = m.group(1).partition("|")
            name = name.strip()
            if not name:
                raise TemplateError(f"empty placeholder at position {m.start()}")
            getter = None if name in CONTEXT_FIELDS else field_getter(name)
            fields.append(name)
            parts.append((name, getter, default if bar else ""))
        if pos < len(source):
            parts.append(source[pos:])
        self._parts = tuple(parts)
        self.fields = tuple(fields)

    def render(self, event: Event | None, context: Mapping[str, str] | None = None) -> str:
        """The text with every placeholder replaced (context fields first, then event fields)."""
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            name, getter, default = part
            text = ""
            if getter is None:
                text = context.get(name, "") if context else ""
            elif event is not None:
                text = as_text(getter(event))
            out.append(text[:MAX_VALUE_CHARS] if text else default)
        return "".join(out)

    @property
    def is_static(self) -> bool:
        """Whether the template has no placeholder at all."""
        return not self.fields

    def __repr__(self) -> str:
        return f"Template({self.source!r})"
