"""Topic patterns and the `where` filter: validity, matching, coverage, operators and error paths."""

from __future__ import annotations

from typing import Any

import pytest

from dash_stream.events import Event
from dash_stream.filters import (
    ALL_TOPICS,
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_LIST_ITEMS,
    TopicSet,
    compile_where,
    pattern_covers,
    topic_matches,
    validate_pattern,
)
from dash_stream.protocol.errors import BadRequest


def make_event(**overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "id": "01J0000000000000000000000",
        "topic": "swarm.s1.agent.a7",
        "type": "agent.failed",
        "source": "openclaw/gateway-1",
        "time": "2024-05-01T12:00:00.000000Z",
        "priority": "high",
        "labels": {"swarm": "s1", "agent": "a7", "mentions": "@ops,@oncall"},
        "data": {
            "reason": "oom",
            "attempts": 3,
            "ratio": 0.5,
            "ok": False,
            "nothing": None,
            "tags": ["x", "y"],
            "steps": [{"name": "boot", "ms": 12}, {"name": "run", "ms": 900}],
            "nested": {"deep": {"value": 7}},
        },
    }
    fields.update(overrides)
    return Event(**fields)


EVENT = make_event()


def where(filter_: object, event: Event = EVENT) -> bool:
    predicate = compile_where(filter_)
    return True if predicate is None else predicate(event)


# ---------------------------------------------------------------- topic patterns

VALID_PATTERNS = [
    "a",
    "swarm.s1.agent.a7",
    "*",
    ">",
    "a.*",
    "a.>",
    "*.*.>",
    "a.*.c",
    "A-b_9.x",
    "x" * 64,
    ".".join(["a"] * 16),
    ".".join(["*"] * 15 + [">"]),
]

INVALID_PATTERNS = [
    ("", "empty pattern"),
    ("a.>.x", "'>' is only allowed as the last segment"),
    (">.a", "'>' is only allowed as the last segment"),
    ("a..x", "empty segment"),
    (".a", "empty segment"),
    ("a.", "empty segment"),
    ("a.b c", "may hold only"),
    ("a.a*", "may hold only"),
    ("a.>>", "may hold only"),
    ("a.**", "may hold only"),
    ("a/b", "may hold only"),
    ("ä", "may hold only"),
    ("x" * 65, "longer than 64"),
    (".".join(["a"] * 17), "more than 16 segments"),
]


@pytest.mark.parametrize("pattern", VALID_PATTERNS)
def test_valid_patterns_pass_validation(pattern: str) -> None:
    validate_pattern(pattern)
    assert TopicSet([pattern]).patterns == (pattern,)


@pytest.mark.parametrize(("pattern", "reason"), INVALID_PATTERNS)
def test_invalid_patterns_are_rejected_with_their_path_and_reason(pattern: str, reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        validate_pattern(pattern, "topics[3]")
    assert caught.value.message.startswith("topics[3]: invalid pattern ")
    assert reason in caught.value.message


def test_topic_set_names_the_index_of_the_bad_pattern() -> None:
    with pytest.raises(BadRequest, match=r"^topics\[1\]: invalid pattern 'a\.\.b': empty segment$"):
        TopicSet(["ok.*", "a..b"])


def test_topic_set_uses_the_given_path() -> None:
    with pytest.raises(BadRequest, match=r"^sub\.topics\[0\]: "):
        TopicSet(["a.>.b"], path="sub.topics")


def test_topic_set_requires_at_least_one_pattern() -> None:
    with pytest.raises(BadRequest, match=r"^topics: at least one pattern required"):
        TopicSet([])


def test_topic_set_allows_64_patterns_and_rejects_65() -> None:
    TopicSet([f"t.{i}" for i in range(64)])
    with pytest.raises(BadRequest, match=r"^topics: at most 64 patterns"):
        TopicSet([f"t.{i}" for i in range(65)])


@pytest.mark.parametrize("patterns", ["a.b", 42, None, [1], ["a", None]])
def test_topic_set_rejects_values_that_are_not_lists_of_strings(patterns: Any) -> None:
    with pytest.raises(BadRequest, match=r"^topics"):
        TopicSet(patterns)


MATCHES = [
    # (pattern, topic, matches)
    ("swarm.s1.agent.a7", "swarm.s1.agent.a7", True),
    ("swarm.s1.agent.a7", "swarm.s1.agent.a8", False),
    ("swarm.s1.agent.a7", "swarm.s1.agent", False),
    ("swarm.s1.agent", "swarm.s1.agent.a7", False),
    ("Swarm", "swarm", False),
    ("swarm.s1.>", "swarm.s1.agent.a7", True),
    ("swarm.s1.>", "swarm.s1.status", True),
    ("swarm.s1.>", "swarm.s1", False),
    ("swarm.s1.>", "swarm.s2.status", False),
    ("a.>", "a", False),
    ("a.>", "a.b", True),
    ("a.>", "a.b.c.d", True),
    ("a.>", "ab.c", False),
    ("metrics.*", "metrics.cpu", True),
    ("metrics.*", "metrics", False),
    ("metrics.*", "metrics.cpu.load", False),
    ("a.*", "a.b.c", False),
    ("a.*", "a", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.b.d", False),
    ("a.*.c", "a.c", False),
    ("*", "a", True),
    ("*", "a.b", False),
    (">", "a", True),
    (">", "a.b.c", True),
    ("*.>", "a", False),
    ("*.>", "a.b", True),
    ("*.*.>", "a.b", False),
    ("*.*.>", "a.b.c", True),
    ("a-b.c_d", "a-b.c_d", True),
    ("a.b", "a-b", False),
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), MATCHES)
def test_topic_matches_table(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected
    assert TopicSet([pattern]).matches(topic) is expected


def test_topic_matches_treats_an_invalid_pattern_as_matching_nothing() -> None:
    assert topic_matches("a.>.b", "a.x.b") is False
    assert topic_matches("", "") is False


def test_topic_set_matches_when_any_pattern_does() -> None:
    topics = TopicSet(["swarm.s1.>", "metrics.*", "alerts.fire", "x.*.y"])
    assert topics.matches("swarm.s1.agent.a7")
    assert topics.matches("metrics.cpu")
    assert topics.matches("alerts.fire")
    assert topics.matches("x.q.y")
    assert not topics.matches("alerts.fire.now")
    assert not topics.matches("x.q.z")
    assert not topics.matches("swarm.s2.agent")


def test_regex_metacharacters_in_literal_segments_are_not_special() -> None:
    topics = TopicSet(["a-b.*", "a_b.c"])
    assert topics.matches("a-b.x")
    assert not topics.matches("axb.x")
    assert topics.matches("a_b.c")


def test_all_topics_matches_everything() -> None:
    assert ALL_TOPICS.patterns == (">",)
    assert ALL_TOPICS.matches("a")
    assert ALL_TOPICS.matches("swarm.s1.agent.a7")
    assert ALL_TOPICS.literal_topics() is None


def test_literal_topics_only_when_every_pattern_is_literal() -> None:
    assert TopicSet(["a.b", "c", "a.b"]).literal_topics() == frozenset({"a.b", "c"})
    assert TopicSet(["a.b", "c.*"]).literal_topics() is None
    assert TopicSet(["a.b", "c.>"]).literal_topics() is None


def test_topic_set_keeps_the_patterns_as_given() -> None:
    assert TopicSet(["b.*", "a", "b.*"]).patterns == ("b.*", "a", "b.*")
    assert repr(TopicSet(["a.>"])) == "TopicSet(['a.>'])"


COVERS = [
    # (acl, pattern, covered)
    (">", "anything.at.all", True),
    (">", ">", True),
    (">", "*", True),
    ("swarm.s1.>", "swarm.s1.*", True),
    ("swarm.s1.>", "swarm.s1.a.b", True),
    ("swarm.s1.>", "swarm.s1.>", True),
    ("swarm.s1.>", "swarm.s1.*.>", True),
    ("swarm.s1.>", "swarm.s1", False),
    ("swarm.s1.>", "swarm.>", False),
    ("swarm.s1.>", "swarm.*.a", False),
    ("swarm.s1.>", "swarm.s2.a", False),
    ("swarm.*.>", "swarm.s1.>", True),
    ("swarm.*.>", "swarm.>", False),
    ("swarm.>", "swarm.*.>", True),
    ("a.*", "a.b", True),
    ("a.*", "a.*", True),
    ("a.*", "a.>", False),
    ("a.*", "a.b.c", False),
    ("a.*", "a", False),
    ("a.b", "a.b", True),
    ("a.b", "a.*", False),
    ("a.b", "a.c", False),
    ("*", ">", False),
    ("*.*", "a.*", True),
    ("a.*.>", "a.>", False),
    ("a.>.b", "a.x.b", False),  # an invalid acl covers nothing
    ("a.>", "a..b", False),  # nor is an invalid pattern covered
]


@pytest.mark.parametrize(("acl", "pattern", "expected"), COVERS)
def test_pattern_covers_table(acl: str, pattern: str, expected: bool) -> None:
    assert pattern_covers(acl, pattern) is expected


def test_covered_by_needs_every_pattern_covered() -> None:
    topics = TopicSet(["swarm.s1.>", "metrics.cpu"])
    assert topics.covered_by(["swarm.s1.>", "metrics.*"])
    assert topics.covered_by([">"])
    assert not topics.covered_by(["swarm.s1.>"])
    assert not topics.covered_by(["swarm.s1.*", "metrics.*"])
    assert not topics.covered_by([])
    assert not topics.covered_by(["a..b", "metrics.*"])


# ---------------------------------------------------------------- the `where` filter


def test_no_filter_or_an_empty_one_compiles_to_none() -> None:
    assert compile_where(None) is None
    assert compile_where({}) is None


OPERATOR_CASES = [
    # bare values mean eq
    ({"type": "agent.failed"}, True),
    ({"type": "agent.completed"}, False),
    ({"labels.swarm": "s1"}, True),
    ({"data.attempts": 3}, True),
    ({"data.attempts": 3.0}, True),
    ({"data.ok": False}, True),
    ({"data.nothing": None}, True),
    ({"source": "openclaw/gateway-1", "topic": "swarm.s1.agent.a7"}, True),
    ({"id": "01J0000000000000000000000"}, True),
    ({"time": "2024-05-01T12:00:00.000000Z"}, True),
    # eq / ne
    ({"type": {"eq": "agent.failed"}}, True),
    ({"type": {"ne": "agent.failed"}}, False),
    ({"type": {"ne": "agent.completed"}}, True),
    ({"data.attempts": {"eq": "3"}}, False),
    ({"data.reason": {"eq": 3}}, False),
    ({"data.tags": {"eq": ["x", "y"]}}, True),
    ({"data.tags": {"eq": ["y", "x"]}}, False),
    ({"data.nested": {"eq": {"deep": {"value": 7}}}}, True),
    ({"data.nested": {"eq": {"deep": {"value": True}}}}, False),
    # in / nin
    ({"type": {"in": ["agent.failed", "agent.killed"]}}, True),
    ({"type": {"in": ["agent.completed"]}}, False),
    ({"type": {"in": []}}, False),
    ({"type": {"nin": ["agent.completed"]}}, True),
    ({"type": {"nin": ["agent.failed"]}}, False),
    ({"type": {"nin": []}}, True),
    ({"data.attempts": {"in": ["3", 3.0]}}, True),
    ({"data.attempts": {"in": ["3", True]}}, False),
    ({"data.tags": {"in": [["x", "y"], "z"]}}, True),
    ({"data.nothing": {"in": [None]}}, True),
    # ordering: numbers with numbers, strings with strings
    ({"data.attempts": {"gt": 2}}, True),
    ({"data.attempts": {"gt": 3}}, False),
    ({"data.attempts": {"gte": 3}}, True),
    ({"data.attempts": {"lt": 3.5}}, True),
    ({"data.attempts": {"lte": 2.99}}, False),
    ({"data.ratio": {"gt": 0, "lt": 1}}, True),
    ({"data.attempts": {"gte": 1, "lt": 3}}, False),
    ({"time": {"gte": "2024-05-01T00:00:00Z"}}, True),
    ({"time": {"lt": "2024-05-01T00:00:00Z"}}, False),
    ({"type": {"gt": "agent.a"}}, True),
    # exists
    ({"labels.swarm": {"exists": True}}, True),
    ({"labels.team": {"exists": True}}, False),
    ({"labels.team": {"exists": False}}, True),
    ({"data.nothing": {"exists": True}}, True),
    ({"data.steps.1.name": {"exists": True}}, True),
    ({"data.steps.2.name": {"exists": True}}, False),
    ({"type": {"exists": True}}, True),
    # prefix
    ({"type": {"prefix": "agent."}}, True),
    ({"type": {"prefix": "swarm."}}, False),
    ({"labels.mentions": {"prefix": "@ops"}}, True),
    ({"data.attempts": {"prefix": "3"}}, False),
    # paths into nested data and lists
    ({"data.steps.0.name": "boot"}, True),
    ({"data.steps.1.ms": {"gt": 500}}, True),
    ({"data.nested.deep.value": 7}, True),
    ({"data.tags.1": "y"}, True),
    ({"data.tags.x": "y"}, False),
    ({"data.reason.0": "o"}, False),
]


@pytest.mark.parametrize(("filter_", "expected"), OPERATOR_CASES)
def test_operator_semantics(filter_: dict[str, Any], expected: bool) -> None:
    assert where(filter_) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"eq": "x"}, False),
        ({"in": ["x"]}, False),
        ({"gt": 0}, False),
        ({"gte": ""}, False),
        ({"lt": 10}, False),
        ({"lte": "zzz"}, False),
        ({"prefix": ""}, False),
        ({"ne": "x"}, True),
        ({"nin": ["x"]}, True),
        ({"exists": False}, True),
        ({"exists": True}, False),
    ],
)
def test_a_missing_field_fails_positive_operators_and_passes_negative_ones(
    condition: dict[str, Any], expected: bool
) -> None:
    assert where({"labels.absent": condition}) is expected
    assert where({"data.absent.path": condition}) is expected
    assert where({"data.absent": condition}, make_event(data=None)) is expected
    assert where({"data.x": condition}, make_event(data=[1, 2])) is expected


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"data.ok": {"eq": 0}}, False),  # a bool is not a number
        ({"data.ok": {"lt": 1}}, False),
        ({"data.attempts": {"eq": True}}, False),
        ({"data.attempts": {"in": [True]}}, False),
        ({"data.reason": {"gt": 1}}, False),  # str against number
        ({"data.attempts": {"gt": "1"}}, False),
        ({"data.tags": {"gt": 1}}, False),  # a list against a number
        ({"data.nothing": {"lt": 1}}, False),
        ({"data.tags": {"eq": [True, 1]}}, False),
    ],
)
def test_incompatible_types_compare_false_and_never_raise(filter_: dict[str, Any], expected: bool) -> None:
    assert where(filter_) is expected


def test_ints_and_floats_compare_naturally() -> None:
    event = make_event(data={"n": 2, "f": 2.5, "big": 10**30})
    assert where({"data.n": {"lt": 2.5}}, event)
    assert where({"data.f": {"gt": 2}}, event)
    assert where({"data.n": 2.0}, event)
    assert where({"data.big": {"gt": 1e29}}, event)


@pytest.mark.parametrize(
    ("condition", "matching"),
    [
        ("high", {"high"}),
        ({"eq": "normal"}, {"normal"}),
        ({"ne": "low"}, {"normal", "high", "critical"}),
        ({"in": ["high", "critical"]}, {"high", "critical"}),
        ({"nin": ["high", "critical"]}, {"low", "normal"}),
        ({"gt": "normal"}, {"high", "critical"}),
        ({"gte": "normal"}, {"normal", "high", "critical"}),
        ({"lt": "high"}, {"low", "normal"}),
        ({"lte": "low"}, {"low"}),
        ({"gte": "normal", "lt": "critical"}, {"normal", "high"}),
        ({"exists": True}, {"low", "normal", "high", "critical"}),
    ],
)
def test_priority_compares_by_rank(condition: object, matching: set[str]) -> None:
    for priority in ("low", "normal", "high", "critical"):
        assert where({"priority": condition}, make_event(priority=priority)) is (priority in matching)


def test_several_fields_are_and_ed() -> None:
    assert where({"type": "agent.failed", "labels.swarm": "s1", "priority": {"gte": "high"}})
    assert not where({"type": "agent.failed", "labels.swarm": "s2"})


def test_any_is_or() -> None:
    assert where({"any": [{"type": "nope"}, {"labels.swarm": "s1"}]})
    assert not where({"any": [{"type": "nope"}, {"labels.swarm": "s2"}]})
    assert where({"any": [{"type": "agent.failed"}]})


def test_an_any_branch_without_conditions_matches_everything() -> None:
    assert where({"any": [{"type": "nope"}, {}]})


def test_not_negates() -> None:
    assert not where({"not": {"type": "agent.failed"}})
    assert where({"not": {"type": "agent.completed"}})
    assert not where({"not": {}})


def test_combinators_nest_and_mix_with_fields() -> None:
    filter_ = {
        "labels.swarm": "s1",
        "any": [
            {"priority": "critical"},
            {"not": {"any": [{"type": {"prefix": "task."}}, {"data.attempts": {"lt": 3}}]}},
        ],
    }
    assert where(filter_)
    assert not where(filter_, make_event(data={"attempts": 1}))
    assert where(filter_, make_event(data={"attempts": 1}, priority="critical"))
    assert not where(filter_, make_event(labels={"swarm": "s2"}, priority="critical"))


def test_label_names_may_contain_dots() -> None:
    assert where({"labels.k8s.io/app": "web"}, make_event(labels={"k8s.io/app": "web"}))


def test_the_filter_is_compiled_once_and_reused() -> None:
    predicate = compile_where({"data.attempts": {"gt": 1}})
    assert predicate is not None
    assert predicate(make_event(data={"attempts": 2}))
    assert not predicate(make_event(data={"attempts": 1}))
    assert not predicate(make_event(data="text"))


# ---------------------------------------------------------------- malformed filters


def nested(depth: int) -> dict[str, Any]:
    filter_: dict[str, Any] = {"type": "x"}
    for level in range(depth):
        filter_ = {"not": filter_} if level % 2 else {"any": [filter_]}
    return filter_


MALFORMED = [
    ("not an object", "where: expected an object"),
    (["type", "x"], "where: expected an object"),
    ({"priority": {"between": [1, 2]}}, "where.priority: unknown operator 'between'"),
    ({"data.x": {"frobnicate": 1}}, "where.data.x: unknown operator 'frobnicate'"),
    ({"foo": 1}, "where.foo: unknown field (use type, source, priority, topic, id, time, labels.<name>"),
    ({"data": 1}, "where.data: unknown field"),
    ({"labels": "x"}, "where.labels: unknown field"),
    ({"labels.": "x"}, "where.labels.: empty label name"),
    ({"data.a..b": 1}, "where.data.a..b: data path needs"),
    ({"data.": 1}, "where.data.: data path needs"),
    ({"data." + ".".join(["a"] * 33): 1}, "data path needs 1 to 32"),
    ({"labels.swarm": {"in": "s1"}}, "where.labels.swarm.in: expected a list"),
    ({"type": {"nin": {"a": 1}}}, "where.type.nin: expected a list"),
    ({"type": {"exists": "yes"}}, "where.type.exists: expected true or false"),
    ({"type": {"exists": 1}}, "where.type.exists: expected true or false"),
    ({"type": {"prefix": 1}}, "where.type.prefix: expected a string"),
    ({"type": {"gt": True}}, "where.type.gt: expected a number or a string"),
    ({"type": {"lte": None}}, "where.type.lte: expected a number or a string"),
    ({"type": {"lt": [1]}}, "where.type.lt: expected a number or a string"),
    ({"type": {}}, "where.type: empty condition"),
    ({"priority": "urgent"}, "where.priority: unknown priority 'urgent'"),
    ({"priority": {"gte": "urgent"}}, "where.priority.gte: unknown priority 'urgent'"),
    ({"priority": {"in": ["high", "HIGH"]}}, "where.priority.in[1]: unknown priority 'HIGH'"),
    ({"priority": {"eq": 2}}, "where.priority.eq: unknown priority 2"),
    ({"priority": {"prefix": "h"}}, "where.priority.prefix: not supported for priority"),
    ({"any": []}, "where.any: expected a non-empty list of filters"),
    ({"any": {"type": "x"}}, "where.any: expected a non-empty list of filters"),
    ({"any": [{"type": "x"}, "y"]}, "where.any[1]: expected an object"),
    ({"any": [{"type": {"bogus": 1}}]}, "where.any[0].type: unknown operator 'bogus'"),
    ({"not": "x"}, "where.not: expected an object"),
    ({"not": {"any": [{"labels.a": {"in": 1}}]}}, "where.not.any[0].labels.a.in: expected a list"),
    ({"type": {"in": list(range(MAX_LIST_ITEMS + 1))}}, "where.type.in: at most 256 items"),
    ({"type": {"nin": list(range(MAX_LIST_ITEMS + 1))}}, "where.type.nin: at most 256 items"),
    ({f"labels.l{i}": "x" for i in range(MAX_CONDITIONS + 1)}, "where.labels.l64: filter has more than 64"),
    ({"type": {"eq": "a", "ne": "b"}, **{f"labels.l{i}": "x" for i in range(63)}}, "more than 64 conditions"),
    ({"any": [{} for _ in range(MAX_CONDITIONS + 1)]}, "where.any[64]: filter has more than 64 conditions"),
    (nested(MAX_DEPTH + 1), "nested deeper than 8 levels"),
    ({1: "x"}, "where: field names must be strings"),
]


@pytest.mark.parametrize(("filter_", "message"), MALFORMED)
def test_malformed_filters_are_rejected_naming_the_path(filter_: object, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        compile_where(filter_)
    assert message in caught.value.message
    assert caught.value.message.startswith("where")


def test_the_error_path_starts_at_the_given_root() -> None:
    with pytest.raises(BadRequest, match=r"^subscribe\.where\.type\.in: expected a list"):
        compile_where({"type": {"in": "x"}}, "subscribe.where")


def test_nesting_up_to_the_limit_is_accepted() -> None:
    predicate = compile_where(nested(MAX_DEPTH))
    assert predicate is not None
    assert predicate(make_event(type="x")) is (MAX_DEPTH // 2 % 2 == 0)


def test_exactly_the_condition_and_list_limits_are_accepted() -> None:
    assert compile_where({f"labels.l{i}": "x" for i in range(MAX_CONDITIONS)}) is not None
    assert compile_where({"type": {"in": [str(i) for i in range(MAX_LIST_ITEMS)]}}) is not None


def test_filter_strings_are_never_evaluated_as_code() -> None:
    trap = "__import__('os').system('false')"
    assert not where({"type": trap})
    assert not where({"data.x": {"prefix": trap}})
    with pytest.raises(BadRequest):
        compile_where({trap: 1})
