"""InfluxQL for the dashboards, built only from the names in ``canalflow.contract``.

Every SELECT names its output columns with ``AS "..."`` and filters time with Grafana's macros,
so ``dashboards.querycheck`` can both run the query and know the shape it must return.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from canalflow.contract import M, source_of

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


def select(
    columns: Sequence[tuple[str, str]],
    measurement: str,
    where: Sequence[str],
    *,
    group_by: Sequence[str] = (),
    time_bucket: str | None = None,
    fill: str | None = None,
    tail: str = "",
    tz: str | None = None,
) -> str:
    """``SELECT expr AS "alias", ... FROM "policy"."m" WHERE a AND b GROUP BY time(...), "tag" fill(...)``.

    The policy is where the contract says ``measurement`` lives (``contract.source_of``). A daily
    bucket needs ``tz`` (the district's zone): ingest's daily rollups are local days, so UTC days
    would draw one local day's water in two bars."""
    if time_bucket and time_bucket.endswith("d") and not tz:
        raise ValueError(f"GROUP BY time({time_bucket}) on {measurement!r} needs tz= (the district's time zone)")
    cols = ", ".join(f"{expr} AS {ident(alias)}" for expr, alias in columns)
    text = f"SELECT {cols} FROM {source_of(measurement)} WHERE {' AND '.join(where)}"
    groups = ([f"time({time_bucket})"] if time_bucket else []) + [ident(t) for t in group_by]
    if groups:
        text += " GROUP BY " + ", ".join(groups)
    if fill:
        text += f" fill({fill})"
    text += f" {tail}" if tail else ""
    return text + (f" tz({literal(tz)})" if tz else "")


def show_tag_values(measurement: str, key: str, where: Sequence[str] = ()) -> str:
    text = f"SHOW TAG VALUES FROM {source_of(measurement)} WITH KEY = {ident(key)}"
    return text + (" WHERE " + " AND ".join(where) if where else "")


def district_filter() -> str:
    return var_match("district", "district")


__all__ = ["TIME_FILTER", "M", "district_filter", "ident", "literal", "select", "show_tag_values", "tag_in", "var_match"]
