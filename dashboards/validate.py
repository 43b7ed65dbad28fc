"""Check a dashboard's JSON shape: it round-trips through the SDK's models, and the parts that the
SDK does not check (unique ids, grid layout, datasource, variables used but not defined) hold."""

from __future__ import annotations

import json
import re
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards import influxql
from dashboards.influxql import InfluxQLQuery

GRID_COLUMNS = 24
BUILTIN_VARIABLES = frozenset({"timeFilter", "__timeFilter", "__interval", "interval", "__interval_ms", "__from", "__to"})
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")

register_default_plugins()
influxql.register()  # after the defaults, so influxdb targets decode as InfluxQLQuery


def round_trip(data: dict[str, Any]) -> dict[str, Any]:
    """Decode dashboard JSON into the SDK's models and encode it again."""
    return json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key not in b:
                out.append(f"{path}.{key} lost in the round trip")
            elif key not in a:
                out.append(f"{path}.{key} appeared in the round trip")
            else:
                out += _diff(a[key], b[key], f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} became {b!r}"]


def validate_dashboard(data: dict[str, Any]) -> list[str]:
    """Every problem found in one dashboard's JSON (empty when valid)."""
    problems: list[str] = []
    try:
        decoded = Dashboard.from_json(data)
        problems += [f"SDK round trip: {d}" for d in _diff(data, round_trip(data))]
    except (KeyError, TypeError, ValueError) as exc:
        return [f"the SDK's Dashboard model cannot decode it: {exc!r}"]
    uid = data.get("uid") or ""
    if not 1 <= len(uid) <= 40:
        problems.append(f"uid {uid!r} must be 1..40 characters")
    defined = {v["name"] for v in (data.get("templating") or {}).get("list", [])} | BUILTIN_VARIABLES
    ids: set[int] = set()
    cells: dict[tuple[int, int], int] = {}
    for panel in data.get("panels", []):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("id") in ids:
            problems.append(f"{where}: duplicate panel id")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos") or {}
        if grid.get("x", 0) + grid.get("w", 0) > GRID_COLUMNS or grid.get("w", 0) <= 0 or grid.get("h", 0) <= 0:
            problems.append(f"{where}: gridPos {grid} does not fit the {GRID_COLUMNS}-column grid")
        for x in range(grid.get("x", 0), grid.get("x", 0) + grid.get("w", 0)):
            for y in range(grid.get("y", 0), grid.get("y", 0) + grid.get("h", 0)):
                if (x, y) in cells:
                    problems.append(f"{where}: overlaps panel {cells[(x, y)]}")
                    break
                cells[(x, y)] = panel.get("id")
            else:
                continue
            break
        refs = [t.get("refId") for t in panel.get("targets") or []]
        if len(refs) != len(set(refs)):
            problems.append(f"{where}: duplicate refId in {refs}")
        for target in panel.get("targets") or []:
            if (target.get("datasource") or {}).get("uid") != (panel.get("datasource") or {}).get("uid"):
                problems.append(f"{where}: target {target.get('refId')} uses another datasource than its panel")
            for match in _VAR.finditer(target.get("query", "")):
                name = match.group(1) or match.group(2)
                if name not in defined:
                    problems.append(f"{where}: query uses ${name}, which is neither a dashboard variable nor a Grafana macro")
    for panel in decoded.panels or []:
        for target in getattr(panel, "targets", None) or []:
            if not isinstance(target, InfluxQLQuery):
                problems.append(f"panel {getattr(panel, 'id', '?')}: target decoded as {type(target).__name__}, not InfluxQL")
    return problems
