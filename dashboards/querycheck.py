"""Run every panel, variable and alert query of the dashboards against a real InfluxDB.

Grafana is not needed: this does what Grafana's InfluxDB datasource does before it sends a query
(substitute ``$timeFilter``/``$__timeFilter``, ``$__interval``, ``${__from}``/``${__to}`` and the
template variables, as Grafana renders them for InfluxQL), runs it on the v1 ``/query`` endpoint,
and checks the answer has the shape the panel needs: the columns the query names with
``AS "..."``, one series per ``GROUP BY`` tag combination, and values that are not all null.

Alert rules are run the same way over their relative time range, and their reduce/threshold
expressions are evaluated, so a test can check which instances would fire.

Used by the tests, ``canalflow dashboards check`` and ``canalflow dashboards preview``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from canalflow.errors import CanalflowError
from canalflow.influx import InfluxError, InfluxV1

NICE_INTERVALS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800)
DEFAULT_MIN_INTERVAL_MS = 60_000  # the datasource's timeInterval: readings come at most once a minute
DEFAULT_MAX_POINTS = 1000
STRING_FIELDS = frozenset({"quality", "flags", "state", "point", "canal", "reach", "gateway", "role", "unit", "township", "kind"})
_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_REGEX_VAR = re.compile(r"/\^\$\{?(\w+)\}?\$/")
_MACROS = ("timeFilter", "__timeFilter", "__interval", "interval", "__interval_ms", "__from", "__to")


@dataclass(frozen=True)
class TimeRange:
    from_ms: int
    to_ms: int

    @property
    def span_ms(self) -> int:
        return self.to_ms - self.from_ms


@dataclass(frozen=True)
class Shape:
    """What a query must return: columns (after ``time``), the GROUP BY tags, a time bucket."""

    columns: tuple[str, ...]
    tags: frozenset[str]
    bucketed: bool
    show: bool = False


@dataclass
class QueryResult:
    source: str  # "dashboard uid / panel title", "variable NAME" or "alert TITLE"
    ref_id: str
    query: str
    rendered: str
    series: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    panel_id: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        state = "ok" if self.ok else "; ".join(self.problems)
        return f"{self.source} [{self.ref_id}]: {state}\n    {self.rendered}"


class QueryCheckError(CanalflowError, ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# Macros and variables


def grafana_interval_ms(rng: TimeRange, max_points: int = DEFAULT_MAX_POINTS, min_ms: int = DEFAULT_MIN_INTERVAL_MS) -> int:
    """``$__interval`` as Grafana computes it: range / data points, rounded up to a nice step."""
    raw_s = rng.span_ms / 1000 / max(1, max_points)
    nice = next((s for s in NICE_INTERVALS_S if s >= raw_s), NICE_INTERVALS_S[-1])
    return max(nice * 1000, min_ms)


def interval_text(ms: int) -> str:
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def regex_escape(value: str) -> str:
    """Escape a value for an InfluxQL regex the way Grafana's InfluxDB datasource does."""
    return re.sub(r"[\\^$*+?.()|{}\[\]/]", lambda m: "\\" + m.group(0), value)


def render(query: str, variables: Mapping[str, Sequence[str]], rng: TimeRange, interval_ms: int) -> str:
    """Substitute Grafana's macros and template variables in an InfluxQL query."""
    macros = {
        "timeFilter": f"time >= {rng.from_ms}ms and time <= {rng.to_ms}ms",
        "__timeFilter": f"time >= {rng.from_ms}ms and time <= {rng.to_ms}ms",
        "__interval": interval_text(interval_ms),
        "interval": interval_text(interval_ms),
        "__interval_ms": str(interval_ms),
        "__from": str(rng.from_ms),
        "__to": str(rng.to_ms),
    }

    def regex_value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise QueryCheckError(f"query uses variable ${name}, which the dashboard does not define: {query}")
        values = list(variables[name])
        return "/^(" + "|".join(regex_escape(v) for v in values) + ")$/"

    def plain_value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in macros:
            return macros[name]
        if name not in variables:
            raise QueryCheckError(f"query uses variable ${name}, which the dashboard does not define: {query}")
        values = list(variables[name])
        if len(values) != 1:
            raise QueryCheckError(f"variable ${name} has {len(values)} values but is used outside a regex: {query}")
        return values[0]

    return _VAR.sub(plain_value, _REGEX_VAR.sub(regex_value, query))


# ---------------------------------------------------------------------------------------------
# Expected shape


def _mask_parentheses(text: str) -> str:
    """Blank out everything inside parentheses (and quoted strings/regexes) so top-level keywords can be found."""
    out, depth, quote = [], 0, ""
    for char in text:
        if quote:
            out.append(" ")
            if char == quote:
                quote = ""
            continue
        if char in "'\"/" and depth == 0 and char != "/":
            quote = char
            out.append(char)
            continue
        if char == "(":
            depth += 1
            out.append("(")
            continue
        if char == ")":
            depth -= 1
            out.append(")")
            continue
        out.append(" " if depth else char)
    return "".join(out)


def expected_shape(query: str) -> Shape:
    """Columns and GROUP BY tags a query must return, read from its outermost SELECT."""
    if re.match(r"\s*SHOW\s+TAG\s+VALUES", query, re.IGNORECASE):
        return Shape(columns=("key", "value"), tags=frozenset(), bucketed=False, show=True)
    masked = _mask_parentheses(query)
    from_at = re.search(r"\sFROM\s", masked, re.IGNORECASE)
    if not from_at:
        raise QueryCheckError(f"not a SELECT ... FROM query: {query}")
    aliases = tuple(re.findall(r'\bAS\s+"([^"]+)"', query[: from_at.start()], re.IGNORECASE))
    if not aliases:
        raise QueryCheckError(f'name every selected column with AS "...": {query}')
    group_at = re.search(r"\sGROUP\s+BY\s", masked, re.IGNORECASE)
    tags: set[str] = set()
    bucketed = False
    if group_at:
        clause = query[group_at.end():]
        clause = re.split(r"\s(?:fill|ORDER|LIMIT|SLIMIT|OFFSET|tz)\b", clause, maxsplit=1, flags=re.IGNORECASE)[0]
        bucketed = bool(re.search(r"\btime\s*\(", clause))
        tags = set(re.findall(r'"([^"]+)"', clause))
    return Shape(columns=aliases, tags=frozenset(tags), bucketed=bucketed)


def shape_problems(shape: Shape, series: list[dict[str, Any]]) -> list[str]:
    """Why a query's answer does not fit the panel (empty list when it does)."""
    if not series:
        return ["returned no data"]
    problems: list[str] = []
    expected_columns = list(shape.columns) if shape.show else ["time", *shape.columns]
    rows = 0
    non_null = {c: 0 for c in shape.columns}
    for item in series:
        if item["columns"] != expected_columns:
            problems.append(f"columns {item['columns']} != expected {expected_columns}")
            continue
        if set(item["tags"]) != set(shape.tags):
            problems.append(f"series tags {sorted(item['tags'])} != GROUP BY tags {sorted(shape.tags)}")
        for row in item["values"]:
            rows += 1
            for name, value in zip(expected_columns, row, strict=False):
                if name in non_null and value is not None:
                    non_null[name] += 1
                    if name not in STRING_FIELDS and not shape.show and not _is_number(value):
                        problems.append(f"column {name!r} holds {value!r}, not a number")
    if rows == 0:
        problems.append("series have no rows")
    problems += [f"column {name!r} is null in every row" for name, count in non_null.items() if rows and count == 0]
    return sorted(set(problems))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------
# Time ranges


def _relative_ms(text: str, now_ms: int, tz: str) -> int:
    text = text.strip()
    if text == "now":
        return now_ms
    match = re.fullmatch(r"now-(\d+)([smhdw])", text)
    if match:
        return now_ms - int(match.group(1)) * _UNITS_MS[match.group(2)]
    if text == "now/d":
        local = dt.datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz))
        return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
    raise QueryCheckError(f"unsupported time expression {text!r} (use now, now-Nd|h|m|s|w or now/d)")


def dashboard_range(dashboard: Mapping[str, Any], now_ms: int) -> TimeRange:
    tz = dashboard.get("timezone") or "UTC"
    time = dashboard.get("time") or {"from": "now-6h", "to": "now"}
    return TimeRange(_relative_ms(time["from"], now_ms, tz), _relative_ms(time["to"], now_ms, tz))


def panel_range(panel: Mapping[str, Any], dashboard: Mapping[str, Any], now_ms: int, chosen: TimeRange | None = None) -> TimeRange:
    """The range a panel queries: its relative-time override (``timeFrom``), else the range the
    user picked (``chosen``), else the dashboard's default."""
    time_from = panel.get("timeFrom")
    if not time_from:
        return chosen or dashboard_range(dashboard, now_ms)
    tz = dashboard.get("timezone") or "UTC"
    expression = time_from if time_from.startswith("now") else f"now-{time_from}"
    return TimeRange(_relative_ms(expression, now_ms, tz), now_ms)


# ---------------------------------------------------------------------------------------------
# Running


def _run(db: InfluxV1, result: QueryResult, shape: Shape | None) -> QueryResult:
    try:
        result.series = db.query(result.rendered)
    except InfluxError as exc:
        hint = ""
        if "retention policy not found" in str(exc):
            hint = " (the database was not made by `canalflow ingest setup`, which creates the policies canalflow.contract names: run it)"
        result.problems.append(f"{exc}{hint}")
        return result
    if shape is not None:
        result.problems += shape_problems(shape, result.series)
    return result


def resolve_variables(
    dashboard: Mapping[str, Any], db: InfluxV1, now_ms: int, overrides: Mapping[str, Sequence[str]] | None = None,
    chosen: TimeRange | None = None,
) -> tuple[dict[str, list[str]], list[QueryResult]]:
    """Values of each template variable, as Grafana would pick them on load (``All`` = every value)."""
    overrides = overrides or {}
    rng = chosen or dashboard_range(dashboard, now_ms)
    values: dict[str, list[str]] = {}
    results: list[QueryResult] = []
    for variable in (dashboard.get("templating") or {}).get("list", []):
        name = variable["name"]
        if name in overrides:
            values[name] = list(overrides[name])
            continue
        current = variable.get("current") or {}
        current_value = current.get("value")
        if variable.get("type") == "query":
            rendered = render(variable["query"], values, rng, grafana_interval_ms(rng))
            result = _run(db, QueryResult(f"variable {name}", name, variable["query"], rendered), expected_shape(variable["query"]))
            results.append(result)
            found = [row[1] for s in result.series for row in s["values"]]
            is_all = current_value in ("$__all", ["$__all"])
            if current_value and not is_all:
                chosen = current_value if isinstance(current_value, list) else [current_value]
                missing = [v for v in chosen if v not in found]
                if missing:
                    result.problems.append(f"default value(s) {missing} not among the values found {found}")
                values[name] = chosen
            else:
                values[name] = found
        elif current_value is not None:
            values[name] = current_value if isinstance(current_value, list) else [current_value]
        else:
            raise QueryCheckError(f"variable {name!r} of type {variable.get('type')!r} has no current value")
    return values, results


def iter_panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels += panel.get("panels", [])  # rows
    return panels


def check_dashboard(
    dashboard: Mapping[str, Any], db: InfluxV1, *, now_ms: int, overrides: Mapping[str, Sequence[str]] | None = None,
    time_range: TimeRange | None = None,
) -> list[QueryResult]:
    """Run every variable and panel query of one dashboard; one result per query.

    ``time_range`` is the range a user picked in Grafana's time picker (default: the dashboard's
    own, relative to ``now_ms``)."""
    values, results = resolve_variables(dashboard, db, now_ms, overrides, time_range)
    for panel in iter_panels(dashboard):
        rng = panel_range(panel, dashboard, now_ms, time_range)
        interval_ms = grafana_interval_ms(rng, int(panel.get("maxDataPoints") or DEFAULT_MAX_POINTS))
        for target in panel.get("targets") or []:
            source = f"{dashboard.get('uid')} / {panel.get('title')}"
            result = QueryResult(source, target.get("refId", "?"), target["query"], "", panel_id=panel.get("id"))
            try:
                result.rendered = render(target["query"], values, rng, interval_ms)
                shape = expected_shape(target["query"])
            except QueryCheckError as exc:
                result.problems.append(str(exc))
                results.append(result)
                continue
            results.append(_run(db, result, shape))
    return results


# ---------------------------------------------------------------------------------------------
# Alert rules


@dataclass
class AlertEvaluation:
    title: str
    results: list[QueryResult]
    firing: list[dict[str, str]]  # labels of each instance whose condition holds
    instances: int


_REDUCERS = {
    "last": lambda v: v[-1],
    "mean": lambda v: sum(v) / len(v),
    "max": max,
    "min": min,
    "sum": sum,
    "count": len,
}
_EVALUATORS = {
    "gt": lambda x, p: x > p[0],
    "lt": lambda x, p: x < p[0],
    "within_range": lambda x, p: p[0] < x < p[1],
    "outside_range": lambda x, p: x < p[0] or x > p[1],
}


def evaluate_rule(rule: Mapping[str, Any], db: InfluxV1, *, now_ms: int) -> AlertEvaluation:
    """Run a provisioned alert rule's queries and evaluate its reduce/threshold expressions."""
    frames: dict[str, list[tuple[dict[str, str], list[float]]]] = {}
    scalars: dict[str, list[tuple[dict[str, str], float]]] = {}
    results: list[QueryResult] = []
    for item in rule["data"]:
        model = item["model"]
        ref = item["refId"]
        kind = model.get("type")
        if item["datasourceUid"] != "__expr__":
            span = item["relativeTimeRange"]
            rng = TimeRange(now_ms - int(span["from"]) * 1000, now_ms - int(span.get("to", 0)) * 1000)
            interval_ms = int(model.get("intervalMs") or grafana_interval_ms(rng, int(model.get("maxDataPoints") or DEFAULT_MAX_POINTS)))
            result = QueryResult(f"alert {rule['title']}", ref, model["query"], render(model["query"], {}, rng, interval_ms))
            results.append(_run(db, result, expected_shape(model["query"])))
            column = expected_shape(model["query"]).columns[0]
            frames[ref] = [
                (dict(s["tags"]), [row[s["columns"].index(column)] for row in s["values"] if row[s["columns"].index(column)] is not None])
                for s in result.series
            ]
        elif kind == "reduce":
            reducer = _REDUCERS[model["reducer"]]
            scalars[ref] = [(labels, float(reducer(values))) for labels, values in frames[model["expression"]] if values]
        elif kind == "threshold":
            evaluator = model["conditions"][0]["evaluator"]
            check = _EVALUATORS[evaluator["type"]]
            scalars[ref] = [(labels, 1.0 if check(x, evaluator["params"]) else 0.0) for labels, x in scalars[model["expression"]]]
        else:
            raise QueryCheckError(f"alert {rule['title']!r}: expression type {kind!r} is not supported by querycheck")
    condition = scalars.get(rule["condition"], [])
    firing = [labels for labels, value in condition if value]
    return AlertEvaluation(rule["title"], results, firing, len(condition))


def alert_rules(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every rule of a Grafana alert provisioning document (``apiVersion: 1, groups: [...]``)."""
    return [rule for group in document.get("groups", []) for rule in group.get("rules", [])]
