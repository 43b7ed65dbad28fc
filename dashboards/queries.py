"""InfluxQL for the dashboards, built only from the names in ``canalflow.contract``.

Every SELECT names its output columns with ``AS "..."`` and filters time with Grafana's macros,
so ``dashboards.querycheck`` can both run the query and know the shape it must return.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from canalflow.contract import M

TIME_FILTER = "$timeFilter"


def ident(name: str) -> str:
    return '"' + name.replace('"', '\\"') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def var_match(tag: str, variable: str) -> str:
    """Filter a tag by a (multi-value) template variable, as Grafana renders it for InfluxQL."""
    return f"{ident(tag)} =~ /^${variable}$/"


def tag_in(tag: str, values: Iterable[str]) -> str:
    """Filter a tag to a fixed set of values known when the dashboard is built."""
    escaped = "|".join(_regex_escape(v) for v in values)
    return f"{ident(tag)} =~ /^({escaped})$/"


def _regex_escape(value: str) -> str:
    return "".join("\\" + c if c in r"\^$.|?*+()[]{}/" else c for c in value)


@dataclass(frozen=True)
class InPolicy:
    """A measurement kept in a named retention policy (ingest writes rollups to their own)."""

    policy: str
    measurement: str


def source(measurement: str | InPolicy) -> str:
    if isinstance(measurement, InPolicy):
        return f"{ident(measurement.policy)}.{ident(measurement.measurement)}"
    return ident(measurement)


def in_policy(measurement: str, policy: str | None) -> str | InPolicy:
    return InPolicy(policy, measurement) if policy else measurement


def select(
    columns: Sequence[tuple[str, str]],
    measurement: str | InPolicy,
    where: Sequence[str],
    *,
    group_by: Sequence[str] = (),
    time_bucket: str | None = None,
    fill: str | None = None,
    tail: str = "",
) -> str:
    """``SELECT expr AS "alias", ... FROM m WHERE a AND b GROUP BY time(...), "tag" fill(...)``."""
    cols = ", ".join(f"{expr} AS {ident(alias)}" for expr, alias in columns)
    text = f"SELECT {cols} FROM {source(measurement)} WHERE {' AND '.join(where)}"
    groups = ([f"time({time_bucket})"] if time_bucket else []) + [ident(t) for t in group_by]
    if groups:
        text += " GROUP BY " + ", ".join(groups)
    if fill:
        text += f" fill({fill})"
    return text + (f" {tail}" if tail else "")


def show_tag_values(measurement: str | InPolicy, key: str, where: Sequence[str] = ()) -> str:
    text = f"SHOW TAG VALUES FROM {source(measurement)} WITH KEY = {ident(key)}"
    return text + (" WHERE " + " AND ".join(where) if where else "")


def district_filter() -> str:
    return var_match("district", "district")


__all__ = ["TIME_FILTER", "InPolicy", "M", "district_filter", "ident", "in_policy", "literal", "select", "show_tag_values", "source", "tag_in", "var_match"]
