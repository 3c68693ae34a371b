"""Metric names used by PromQL expressions, and metric names a Prometheus text scrape offers."""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER_SUFFIX = re.compile(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?[smhdwy]?\b")
_NOT_METRICS = frozenset(
    (
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "rate",
        "irate",
        "increase",
        "delta",
        "idelta",
        "deriv",
        "predict_linear",
        "resets",
        "changes",
        "histogram_quantile",
        "histogram_count",
        "histogram_sum",
        "clamp",
        "clamp_min",
        "clamp_max",
        "abs",
        "ceil",
        "floor",
        "round",
        "exp",
        "ln",
        "log2",
        "log10",
        "sqrt",
        "time",
        "timestamp",
        "vector",
        "scalar",
        "absent",
        "absent_over_time",
        "label_replace",
        "label_join",
        "sort",
        "sort_desc",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "last_over_time",
        "quantile_over_time",
        "present_over_time",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "inf",
        "nan",
        "e",
    )
)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (strings, label matchers, ranges, groupings removed)."""
    text = _STRING.sub(" ", expr)
    while True:
        stripped = _BRACES.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    text = _NUMBER_SUFFIX.sub(" ", text)
    return {name for name in _IDENT.findall(text) if name.lower() not in _NOT_METRICS}


def scraped_names(text: str) -> set[str]:
    """Every sample name a scrape offers, including those of labelled families with no sample yet."""
    names: set[str] = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def names_in(exprs: Iterable[str]) -> dict[str, set[str]]:
    """metric name -> the expressions that use it."""
    used: dict[str, set[str]] = {}
    for expr in exprs:
        for name in metric_names(expr):
            used.setdefault(name, set()).add(expr)
    return used
