"""Topic patterns and the structured `where` filter (PROTOCOL.md sections 3 and 6).

Both compile once into sets, one regex and plain closures, so that matching on the fan-out path does
no parsing, evaluates no code built from input, and never raises. Every compile error is a
`BadRequest` whose message starts with the offending path (`topics[1]`, `where.priority.gte`).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from dash_stream.events import PRIORITY_RANK, TOPIC_SEGMENT, Event
from dash_stream.protocol.errors import BadRequest

Predicate = Callable[[Event], bool]
_Test = Callable[[object], bool]
_T = TypeVar("_T")

MAX_SEGMENTS: Final = 16
MAX_PATTERNS: Final = 64
MAX_DEPTH: Final = 8
MAX_CONDITIONS: Final = 64
MAX_LIST_ITEMS: Final = 256
MAX_DATA_PATH: Final = 32
MAX_FILTER_BYTES: Final = 16 * 1024  # names and values of one filter; a subscription holds them all

_SEGMENT: Final = re.compile(TOPIC_SEGMENT)
_ONE: Final = r"[^.]+"
_ONE_OR_MORE: Final = r"[^.]+(?:\.[^.]+)*"

# ---------------------------------------------------------------- topic patterns


def _pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not a valid topic pattern, or None when it is."""
    if not pattern:
        return "empty pattern"
    segments = pattern.split(".")
    if len(segments) > MAX_SEGMENTS:
        return f"more than {MAX_SEGMENTS} segments"
    for i, segment in enumerate(segments):
        if segment == ">" and i != len(segments) - 1:
            return "'>' is only allowed as the last segment"
        if segment in ("*", ">"):
            continue
        if not segment:
            return "empty segment"
        if len(segment) > 64:
            return "segment longer than 64 characters"
        if _SEGMENT.fullmatch(segment) is None:
            return f"segment {segment[:64]!r} may hold only A-Z a-z 0-9 _ - (or be exactly '*' or '>')"
    return None


def validate_pattern(pattern: str, path: str = "topics[0]") -> None:
    """Raise BadRequest naming `path` unless `pattern` is a valid topic pattern."""
    if not isinstance(pattern, str):
        raise BadRequest(f"{path}: expected a string, got {type(pattern).__name__}")
    problem = _pattern_problem(pattern)
    if problem is not None:
        raise BadRequest(f"{path}: invalid pattern {pattern[:120]!r}: {problem}")


def _segments_match(pattern: Sequence[str], topic: Sequence[str]) -> bool:
    for i, segment in enumerate(pattern):
        if segment == ">":
            return len(topic) > i
        if i >= len(topic) or (segment != "*" and segment != topic[i]):
            return False
    return len(topic) == len(pattern)


def _covers(acl: Sequence[str], pattern: Sequence[str]) -> bool:
    for i, segment in enumerate(acl):
        if segment == ">":
            return len(pattern) > i
        if i >= len(pattern) or pattern[i] == ">":
            return False  # the pattern's `>` reaches topics longer than any non-`>` acl matches
        if segment != "*" and segment != pattern[i]:
            return False
    return len(pattern) == len(acl)


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether `pattern` matches `topic`; an invalid pattern matches nothing."""
    if not isinstance(pattern, str) or _pattern_problem(pattern) is not None:
        return False
    return _segments_match(pattern.split("."), topic.split("."))


def pattern_covers(acl: str, pattern: str) -> bool:
    """Whether every topic `pattern` matches is also matched by `acl`; False if either is invalid.

    `>` covers everything at and after its position; `*` covers a literal or `*` at its position; a
    `>` in `pattern` is covered only by a `>` in `acl` at the same or an earlier position.
    """
    if not isinstance(acl, str) or not isinstance(pattern, str):
        return False
    if _pattern_problem(acl) is not None or _pattern_problem(pattern) is not None:
        return False
    return _covers(acl.split("."), pattern.split("."))


def _regex_for(segments: Sequence[str]) -> str:
    parts = (_ONE_OR_MORE if s == ">" else _ONE if s == "*" else re.escape(s) for s in segments)
    return r"\.".join(parts)


class TopicSet:
    """A compiled set of topic patterns (`*` one segment, `>` one or more trailing segments).

    Literal patterns are a set lookup; wildcard patterns are one precompiled regex. Topics passed to
    `matches` are assumed valid (events.TOPIC_REGEX); nothing is cached per topic.
    """

    __slots__ = ("_literals", "_match_all", "_segments", "_wildcards", "patterns")

    def __init__(self, patterns: Sequence[str], *, path: str = "topics") -> None:
        if isinstance(patterns, (str, bytes)) or not isinstance(patterns, Sequence):
            raise BadRequest(f"{path}: expected a list of topic patterns")
        if not patterns:
            raise BadRequest(f"{path}: at least one pattern required")
        if len(patterns) > MAX_PATTERNS:
            raise BadRequest(f"{path}: at most {MAX_PATTERNS} patterns, got {len(patterns)}")
        for i, pattern in enumerate(patterns):
            validate_pattern(pattern, f"{path}[{i}]")
        self.patterns: tuple[str, ...] = tuple(patterns)
        self._segments = tuple(p.split(".") for p in dict.fromkeys(self.patterns))
        literal = [p for p in self._segments if "*" not in p and ">" not in p]
        wild = [p for p in self._segments if "*" in p or ">" in p]
        self._literals: frozenset[str] = frozenset(".".join(p) for p in literal)
        self._match_all = [">"] in wild
        regex = "|".join(f"(?:{_regex_for(p)})" for p in wild)
        self._wildcards = re.compile(regex).fullmatch if wild and not self._match_all else None

    def matches(self, topic: str) -> bool:
        """Whether any pattern matches `topic`."""
        if self._match_all or topic in self._literals:
            return True
        wildcards = self._wildcards
        return wildcards is not None and wildcards(topic) is not None

    def literal_topics(self) -> frozenset[str] | None:
        """The exact topics when every pattern is literal (no `*` or `>`), else None."""
        return None if self._match_all or self._wildcards is not None else self._literals

    def covered_by(self, acls: Sequence[str]) -> bool:
        """Whether every pattern is covered by some pattern of `acls` (see `pattern_covers`)."""
        allowed = [a.split(".") for a in acls if isinstance(a, str) and _pattern_problem(a) is None]
        return all(any(_covers(acl, p) for acl in allowed) for p in self._segments)

    def __repr__(self) -> str:
        return f"TopicSet({list(self.patterns)!r})"


ALL_TOPICS: Final = TopicSet([">"])

# ---------------------------------------------------------------- the `where` filter

# The value of an absent label or data path: it fails eq/in/ordering/prefix and passes ne/nin.
_MISSING: Final = object()
# JSON kinds: a bool is its own kind (never a number); the missing marker and foreign objects have none.
_KIND: Final[dict[type, str]] = {str: "str", int: "num", float: "num", bool: "bool", type(None): "null"}
_KIND.update({list: "list", tuple: "list", dict: "dict"})
_SCALAR: Final = frozenset({"str", "num", "bool", "null"})
_Compare = Callable[[Any, Any], bool]
_ORDER: Final[dict[str, _Compare]] = dict(gt=operator.gt, gte=operator.ge, lt=operator.lt, lte=operator.le)
_OPERATORS: Final = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "exists", "prefix")
_FIELDS_HINT: Final = "use type, source, priority, topic, id, time, labels.<name>, data.<path>"
_ATTRIBUTES: Final[dict[str, Callable[[Event], object]]] = {
    name: operator.attrgetter(name) for name in ("type", "source", "topic", "id", "time")
}


def _strict_equal(a: object, b: object) -> bool:
    """JSON equality in which a bool never equals a number; iterative, so no depth can overflow."""
    stack: list[tuple[object, object]] = [(a, b)]
    while stack:
        x, y = stack.pop()
        kind = _KIND.get(type(x))
        if kind is None or kind != _KIND.get(type(y)):
            return False
        if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)) and len(x) == len(y):
            stack.extend(zip(x, y, strict=True))
        elif isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys():
            stack.extend((x[k], y[k]) for k in x)
        elif kind in ("list", "dict") or x != y:
            return False
    return True


def _all_of(tests: Sequence[Callable[[_T], bool]]) -> Callable[[_T], bool]:
    if len(tests) == 1:
        return tests[0]
    frozen = tuple(tests)

    def all_of(value: _T) -> bool:
        for test in frozen:  # noqa: SIM110 - a plain loop: no generator per event on the hot path
            if not test(value):
                return False
        return True

    return all_of


def _any_of(tests: Sequence[Callable[[_T], bool]]) -> Callable[[_T], bool]:
    if len(tests) == 1:
        return tests[0]
    frozen = tuple(tests)

    def any_of(value: _T) -> bool:
        for test in frozen:  # noqa: SIM110 - as in _all_of
            if test(value):
                return True
        return False

    return any_of


def _negate(test: Callable[[_T], bool]) -> Callable[[_T], bool]:
    return lambda value: not test(value)


def _is_missing(value: object) -> bool:
    return value is _MISSING


def _eq_test(expected: object) -> _Test:
    kind = _KIND.get(type(expected))
    if kind == "str":
        return lambda x: type(x) is str and x == expected
    if kind == "num":
        return lambda x: (type(x) is int or type(x) is float) and x == expected
    if kind in ("bool", "null"):
        return lambda x: x is expected  # True, False and None are singletons
    return lambda x: _strict_equal(x, expected)


def _in_test(items: Sequence[object]) -> _Test:
    kinds = [_KIND.get(type(item)) for item in items]
    if all(kind == "str" for kind in kinds):
        strings = frozenset(items)
        return lambda x: type(x) is str and x in strings
    scalars = frozenset((k, item) for k, item in zip(kinds, items, strict=True) if k in _SCALAR)
    containers = tuple(item for k, item in zip(kinds, items, strict=True) if k not in _SCALAR)

    def contained(x: object) -> bool:
        kind = _KIND.get(type(x))
        if kind in _SCALAR:
            return (kind, x) in scalars  # hashable: a scalar
        return kind is not None and any(_strict_equal(x, item) for item in containers)

    return contained


def _order_test(op: str, bound: str | float) -> _Test:
    compare = _ORDER[op]
    if type(bound) is str:
        return lambda x: type(x) is str and compare(x, bound)
    return lambda x: (type(x) is int or type(x) is float) and compare(x, bound)


def _prefix_test(prefix: str) -> _Test:
    return lambda x: type(x) is str and x.startswith(prefix)


def _rank(value: object, path: str) -> int:
    if isinstance(value, str) and value in PRIORITY_RANK:
        return PRIORITY_RANK[value]
    raise BadRequest(f"{path}: unknown priority {value!r:.60} (use low, normal, high, critical)")


def _spend(budget: list[int], path: str) -> None:
    """Count one condition against MAX_CONDITIONS for the whole filter."""
    budget[0] += 1
    if budget[0] > MAX_CONDITIONS:
        raise BadRequest(f"{path}: filter has more than {MAX_CONDITIONS} conditions")


def _compile_condition(condition: object, path: str, priority: bool, budget: list[int]) -> _Test:
    """One field's condition: a bare value (eq) or an object of operators, AND-ed."""
    if not isinstance(condition, dict):
        _spend(budget, path)
        return _eq_test(_rank(condition, path) if priority else condition)
    if not condition:
        raise BadRequest(f"{path}: empty condition (use an operator such as eq, in or exists)")
    tests: list[_Test] = []
    for op, arg in condition.items():
        if op not in _OPERATORS:
            raise BadRequest(f"{path}: unknown operator {op!r:.60} (use {', '.join(_OPERATORS)})")
        op_path = f"{path}.{op}"
        _spend(budget, op_path)
        if op in ("in", "nin"):
            if not isinstance(arg, (list, tuple)):
                raise BadRequest(f"{op_path}: expected a list")
            if len(arg) > MAX_LIST_ITEMS:
                raise BadRequest(f"{op_path}: at most {MAX_LIST_ITEMS} items, got {len(arg)}")
            test = _in_test([_rank(v, f"{op_path}[{i}]") if priority else v for i, v in enumerate(arg)])
            tests.append(test if op == "in" else _negate(test))
        elif op in ("eq", "ne"):
            test = _eq_test(_rank(arg, op_path) if priority else arg)
            tests.append(test if op == "eq" else _negate(test))
        elif op in _ORDER:
            if not priority and type(arg) not in (str, int, float):
                raise BadRequest(f"{op_path}: expected a number or a string")
            tests.append(_order_test(op, _rank(arg, op_path) if priority else arg))
        elif op == "exists":
            if type(arg) is not bool:
                raise BadRequest(f"{op_path}: expected true or false")
            tests.append(_negate(_is_missing) if arg else _is_missing)
        else:  # prefix
            if priority or type(arg) is not str:
                raise BadRequest(
                    f"{op_path}: " + ("not supported for priority" if priority else "expected a string")
                )
            tests.append(_prefix_test(arg))
    return _all_of(tests)


def _field(name: str, path: str) -> tuple[Callable[[Event], object], bool]:
    """The getter for field `name`, and whether it is `priority` (compared by rank)."""
    if name in _ATTRIBUTES:
        return _ATTRIBUTES[name], False
    if name == "priority":
        return (lambda ev: PRIORITY_RANK.get(ev.priority, _MISSING)), True
    if name.startswith("labels."):
        if name == "labels.":
            raise BadRequest(f"{path}: empty label name (use labels.<name>)")
        label = name[len("labels.") :]
        return (lambda ev: ev.labels.get(label, _MISSING)), False
    if name.startswith("data."):
        segments = name[len("data.") :].split(".")
        if "" in segments or len(segments) > MAX_DATA_PATH:
            raise BadRequest(f"{path}: data path needs 1 to {MAX_DATA_PATH} non-empty segments")
        steps = tuple((s, int(s) if s.isascii() and s.isdigit() else None) for s in segments)

        def walk(ev: Event) -> object:
            current: object = ev.data
            for key, index in steps:
                if isinstance(current, dict):
                    current = current.get(key, _MISSING)
                elif index is not None and isinstance(current, (list, tuple)):
                    current = current[index] if index < len(current) else _MISSING
                else:
                    return _MISSING
            return current

        return walk, False
    raise BadRequest(f"{path}: unknown field ({_FIELDS_HINT})")


def _field_predicate(get: Callable[[Event], object], test: _Test) -> Predicate:
    return lambda ev: test(get(ev))


def _compile_filter(where: object, path: str, depth: int, budget: list[int]) -> Predicate | None:
    """A filter object: fields and combinators, AND-ed; None when it holds no condition at all."""
    if not isinstance(where, dict):
        raise BadRequest(f"{path}: expected an object")
    if depth > MAX_DEPTH:
        raise BadRequest(f"{path}: any/not nested deeper than {MAX_DEPTH} levels")
    predicates: list[Predicate] = []
    for name, value in where.items():
        if not isinstance(name, str):
            raise BadRequest(f"{path}: field names must be strings, got {name!r:.60}")
        field_path = f"{path}.{name}"
        if name == "any":
            if not isinstance(value, list) or not value:
                raise BadRequest(f"{field_path}: expected a non-empty list of filters")
            branches: list[Predicate | None] = []
            for i, branch in enumerate(value):
                _spend(budget, f"{field_path}[{i}]")
                branches.append(_compile_filter(branch, f"{field_path}[{i}]", depth + 1, budget))
            if None not in branches:  # else a branch without conditions makes the `any` match all
                predicates.append(_any_of([b for b in branches if b is not None]))
        elif name == "not":
            _spend(budget, field_path)
            inner = _compile_filter(value, field_path, depth + 1, budget)
            predicates.append(_negate(inner or (lambda ev: True)))
        else:
            get, is_priority = _field(name, field_path)
            test = _compile_condition(value, field_path, is_priority, budget)
            predicates.append(_field_predicate(get, test))
    return _all_of(predicates) if predicates else None


def compile_where(where: object, path: str = "where") -> Predicate | None:
    """Compile a `where` filter (PROTOCOL.md section 6) into a predicate; None means match all.

    Raises BadRequest whose message starts with the offending path. Bounds: any/not nested at most
    MAX_DEPTH deep; at most MAX_CONDITIONS conditions (each operator or bare value, each `any` branch
    and each `not` counts one); in/nin lists of at most MAX_LIST_ITEMS. The predicate never raises.
    """
    if where is None:
        return None
    if _weight_exceeds(where, MAX_FILTER_BYTES):
        raise BadRequest(f"{path}: filter larger than {MAX_FILTER_BYTES} bytes of names and values")
    return _compile_filter(where, path, 0, [0])


def _weight_exceeds(value: object, limit: int) -> bool:
    """Whether the strings (by length) and other scalars (8 each) of `value` weigh more than `limit`.

    Iterative, and it stops as soon as the limit is passed: a hostile filter costs at most `limit`.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            total += 8 * len(item)
            for key, inner in item.items():
                total += len(key) if isinstance(key, str) else 8
                stack.append(inner)
        elif isinstance(item, list | tuple):
            total += 8 * len(item)
            stack.extend(item)
        else:
            total += len(item) if isinstance(item, str) else 8
        if total > limit:
            return True
    return False
