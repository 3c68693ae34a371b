"""Property tests: topic matching against a reference, coverage soundness, and `where` robustness."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dash_stream.events import Event
from dash_stream.filters import TopicSet, compile_where, pattern_covers, topic_matches

SETTINGS = settings(max_examples=200, deadline=None)

# A small alphabet so that random patterns and topics often meet; '-' and '_' keep regex escaping honest.
SEGMENTS = st.one_of(
    st.sampled_from(["a", "b", "c", "d-1", "E_2"]),
    st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True),
)
PATTERN_SEGMENTS = st.one_of(SEGMENTS, st.just("*"))


@st.composite
def topics(draw: st.DrawFn, max_segments: int = 6) -> str:
    return ".".join(draw(st.lists(SEGMENTS, min_size=1, max_size=max_segments)))


@st.composite
def patterns(draw: st.DrawFn) -> str:
    segments = draw(st.lists(PATTERN_SEGMENTS, min_size=0, max_size=5))
    if draw(st.booleans()) or not segments:
        segments.append(">")
    return ".".join(segments)


@st.composite
def topic_matching(draw: st.DrawFn, pattern: str) -> str:
    """A topic that `pattern` matches: each `*` becomes one segment, a `>` one to three."""
    out: list[str] = []
    for segment in pattern.split("."):
        if segment == "*":
            out.append(draw(SEGMENTS))
        elif segment == ">":
            out.extend(draw(st.lists(SEGMENTS, min_size=1, max_size=3)))
        else:
            out.append(segment)
    return ".".join(out)


@st.composite
def narrower(draw: st.DrawFn, acl: str) -> str:
    """A pattern made from `acl` by narrowing wildcards, so that `acl` usually covers it."""
    out: list[str] = []
    for segment in acl.split("."):
        if segment == "*":
            out.append(draw(st.one_of(st.just("*"), SEGMENTS)))
        elif segment == ">":
            out.append(draw(st.sampled_from([">", "*", "a", "*.>", "a.>", "a.*.b", "*.*.>"])))
        else:
            out.append(segment)
    return ".".join(out)


def reference_matches(pattern: str, topic: str) -> bool:
    """Backtracking matcher written from the definition (`>` consumes one or more segments)."""
    pat, top = pattern.split("."), topic.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(top)
        if pat[i] == ">":
            return any(match(i + 1, k) for k in range(j + 1, len(top) + 1))
        return j < len(top) and pat[i] in ("*", top[j]) and match(i + 1, j + 1)

    return match(0, 0)


@SETTINGS
@given(st.lists(patterns(), min_size=1, max_size=6), st.lists(topics(), min_size=1, max_size=8))
def test_topic_set_agrees_with_the_reference_matcher(pattern_list: list[str], topic_list: list[str]) -> None:
    topic_set = TopicSet(pattern_list)
    for topic in topic_list:
        expected = any(reference_matches(p, topic) for p in pattern_list)
        assert topic_set.matches(topic) is expected
        assert any(topic_matches(p, topic) for p in pattern_list) is expected


@SETTINGS
@given(st.data())
def test_a_topic_built_from_a_pattern_matches_it(data: st.DataObject) -> None:
    pattern = data.draw(patterns())
    topic = data.draw(topic_matching(pattern))
    assert TopicSet([pattern]).matches(topic)
    assert topic_matches(pattern, topic)


@SETTINGS
@given(st.data())
def test_pattern_covers_is_sound(data: st.DataObject) -> None:
    acl = data.draw(patterns())
    pattern = data.draw(st.one_of(patterns(), narrower(acl)))
    if not pattern_covers(acl, pattern):
        return
    assert TopicSet([pattern]).covered_by([acl])
    candidates = [*data.draw(st.lists(topics(), max_size=5)), data.draw(topic_matching(pattern))]
    for topic in candidates:
        if reference_matches(pattern, topic):
            assert reference_matches(acl, topic), (acl, pattern, topic)


@SETTINGS
@given(patterns())
def test_every_pattern_covers_itself_and_is_covered_by_all(pattern: str) -> None:
    assert pattern_covers(pattern, pattern)
    assert pattern_covers(">", pattern)


# ---------------------------------------------------------------- the `where` filter

PRIORITIES = st.sampled_from(["low", "normal", "high", "critical"])
KEYS = st.sampled_from(["a", "b", "0", "1", "x"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(),
    st.text(max_size=6),
    st.sampled_from(["a", "b", "0", ""]),
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(KEYS, children, max_size=3)),
    max_leaves=12,
)
ORDERABLE = st.one_of(st.integers(-5, 5), st.floats(allow_nan=False), st.sampled_from(["a", "b", "2024"]))
DATA_FIELDS = st.lists(KEYS, min_size=1, max_size=3).map(lambda path: "data." + ".".join(path))
LABEL_FIELDS = KEYS.map(lambda name: f"labels.{name}")
STRING_FIELDS = st.one_of(
    st.sampled_from(["type", "source", "topic", "id", "time"]), LABEL_FIELDS, DATA_FIELDS
)


def condition(value: st.SearchStrategy[Any], orderable: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    operator = st.one_of(
        st.tuples(st.sampled_from(["eq", "ne"]), value),
        st.tuples(st.sampled_from(["in", "nin"]), st.lists(value, max_size=4)),
        st.tuples(st.sampled_from(["gt", "gte", "lt", "lte"]), orderable),
        st.tuples(st.just("exists"), st.booleans()),
        st.tuples(st.just("prefix"), st.text(max_size=3)),
    )
    operators = st.lists(operator, min_size=1, max_size=2, unique_by=lambda pair: pair[0]).map(dict)
    # a bare value means eq, but a bare dict would read as operators
    return st.one_of(value.filter(lambda v: not isinstance(v, dict)), operators)


PRIORITY_CONDITION = condition(PRIORITIES, PRIORITIES).filter(
    lambda c: not (isinstance(c, dict) and "prefix" in c)
)
FIELD = st.one_of(
    st.tuples(st.just("priority"), PRIORITY_CONDITION),
    st.tuples(STRING_FIELDS, condition(JSON, ORDERABLE)),
)
FIELDS = st.lists(FIELD, max_size=2).map(dict)
FEW_FIELDS = st.lists(FIELD, max_size=1).map(dict)


def filters(depth: int = 3) -> st.SearchStrategy[dict[str, Any]]:
    """Valid filters: a few fields, with any/not combinators nested at most `depth` deep.

    Sized so that even the largest (depth 3, two branches everywhere) stays within 64 conditions.
    """
    if depth == 0:
        return FIELDS
    inner = filters(depth - 1)
    branches = st.lists(inner, min_size=1, max_size=2)
    return st.one_of(
        FIELDS,
        st.builds(lambda f, any_of: {**f, "any": any_of}, FEW_FIELDS, branches),
        st.builds(lambda f, negated: {**f, "not": negated}, FEW_FIELDS, inner),
    )


EVENTS = st.builds(
    Event,
    id=st.text(min_size=1, max_size=4),
    topic=topics(),
    type=st.sampled_from(["agent.failed", "a", "b", "2024"]),
    source=st.sampled_from(["a", "b", "unknown"]),
    time=st.sampled_from(["2024-05-01T12:00:00Z", "2023-01-01T00:00:00Z"]),
    priority=PRIORITIES,
    labels=st.dictionaries(KEYS, st.text(max_size=3), max_size=4),
    data=JSON,
)


def evaluate(filter_: dict[str, Any], event: Event) -> bool:
    predicate = compile_where(filter_)
    return True if predicate is None else predicate(event)


@SETTINGS
@given(filters(), st.lists(EVENTS, min_size=1, max_size=4))
def test_a_valid_filter_compiles_and_never_raises_on_any_event(
    filter_: dict[str, Any], events: list[Event]
) -> None:
    predicate = compile_where(filter_)
    for event in events:
        result = True if predicate is None else predicate(event)
        assert type(result) is bool


@SETTINGS
@given(filters(), EVENTS)
def test_not_is_the_negation_of_its_filter(filter_: dict[str, Any], event: Event) -> None:
    assert evaluate({"not": filter_}, event) is (not evaluate(filter_, event))


@SETTINGS
@given(filters(2), filters(2), EVENTS)
def test_any_is_the_or_and_merged_fields_the_and_of_filters(
    first: dict[str, Any], second: dict[str, Any], event: Event
) -> None:
    either = evaluate(first, event) or evaluate(second, event)
    assert evaluate({"any": [first, second]}, event) is either
    both = evaluate(first, event) and evaluate(second, event)
    assert evaluate({"any": [{"not": {"any": [{"not": first}, {"not": second}]}}]}, event) is both
