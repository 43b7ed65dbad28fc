"""The demo's report: what was billed and measured, set against the simulator's ground truth.

Reads the billing run's bill files and the efficiency report the CLI wrote, asks the simulator for
the true volumes of the same window, and writes Markdown a person can read in a minute.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from canalflow.district import District
from firmware_sim.truth import Truth


def _local(district: District, ms: int) -> str:
    tz = ZoneInfo(district.spec.district.timezone)
    return dt.datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M %Z")


def unit_true_m3(district: District, truth: Truth, unit_id: str, t0: int, t1: int) -> float:
    """A unit's true volume: its area share of each charging point's true volume."""
    total = 0.0
    for point_id in district.units[unit_id].charging_points:
        sharing = district.units_sharing(point_id)
        share = district.units[unit_id].area_mu / sum(u.area_mu for u in sharing)
        total += truth.volume_m3(point_id, t0, t1) * float(share)
    return total


def bills_table(district: District, bills_dir: Path, truth: Truth, t0: int, t1: int) -> tuple[list[str], Decimal]:
    rows = ["| unit | name | kind | township | billed m³ | true m³ | difference | meter class | bill total (元) |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    grand = Decimal(0)
    for unit in district.root_units:  # with the entities below it: their bills add up to its intake
        tree = [json.loads((bills_dir / "bills" / f"{u.id}.json").read_text(encoding="utf-8"))
                for u in district.spec.units if district.root_of(u.id).id == unit.id and district.is_charged(u.id)]
        billed = float(sum(Decimal(b["volume_m3"]) for b in tree))
        true_m3 = unit_true_m3(district, truth, unit.id, t0, t1)
        accuracy = max(district.profile_of(p).accuracy_pct for p in unit.charging_points)
        diff = (billed - true_m3) / true_m3 if true_m3 else 0.0
        total = sum((Decimal(b["total"]) for b in tree), Decimal(0))
        grand += total
        blocked = [b["blocked_reason"] for b in tree if b["blocked"]]
        status = " (blocked: " + blocked[0] + ")" if blocked else ""
        rows.append(f"| {unit.id} | {unit.name} | {unit.kind.value} | {district.townships[unit.township].name} | "
                    f"{billed:,.0f} | {true_m3:,.0f} | {diff:+.2%} | ±{accuracy:g}% | {total:,.2f}{status} |")
    return rows, grand


def _value(fig: dict[str, Any]) -> str:
    return "incomplete" if fig["value"] is None else f"{fig['value']:.3f}"


def _target(fig: dict[str, Any]) -> str:
    return "" if fig.get("target") is None else f"{fig['target']:.2f}"


def ground_truth_lines(efficiency: dict[str, Any], true_eta: float | None) -> list[str]:
    """The official figures beside the simulator's truth (by the same definition, canalflow.coefficients)."""
    lines = ["| figure | measured | truth | difference | target |", "| --- | ---: | ---: | ---: | ---: |"]
    official = efficiency["canal_system"]
    diff = f"{official['value'] / true_eta - 1:+.2%}" if official["value"] is not None and true_eta is not None else "—"
    truth = "no truth (no diversion)" if true_eta is None else f"{true_eta:.3f}"
    lines.append(f"| canal system | {_value(official)} | {truth} | {diff} | {_target(official)} |")
    field = efficiency["field"]
    lines.append(f"| field | not measured: {field['method']} is the configured field_efficiency ({_value(field)}), no typical plots in the district file "
                 f"| no truth: the demo district has no typical plots for the simulator's root zone | — | {_target(field)} |")
    head_tail = efficiency["whole"]["head_tail"]
    measured = _value(head_tail) if head_tail["value"] is not None else f"not measured: {head_tail['note']}"
    lines.append(f"| whole district (head-tail) | {measured} | no truth: no typical plots in the district file | — | {_target(head_tail)} |")
    lines.append("")
    balance = official["note"].removeprefix(official["definition"]).lstrip("; ")
    lines.append(f"Canal system, by the official definition: {official['definition']}." + (f" Balance of the window: {balance}." if balance else ""))
    return lines


def efficiency_lines(efficiency: dict[str, Any]) -> list[str]:
    lines = ["| figure | value | method | target | coverage | note |", "| --- | ---: | --- | ---: | ---: | --- |"]
    for name, fig in efficiency.get("system", {}).items():
        label = "canal system (official)" if name == "official" else f"canal system, diagnostic ({name})"
        note = fig["note"] if name != "official" else "the headline figure"
        lines.append(f"| {label} | {_value(fig)} | {fig['method']} | {_target(fig)} | {fig['coverage']:.0%} | {note} |")
    for level, fig in efficiency.get("levels", {}).items():
        lines.append(f"| {level} canals | {_value(fig)} | {fig['method']} | | {fig['coverage']:.0%} | |")
    anomalies = [r for r in efficiency.get("reaches", []) if r.get("anomaly")]
    lines.append("")
    lines.append("Reaches whose loss exceeds the expected seepage by the anomaly factor: "
                 + (", ".join(f"{r['canal']}/{r['reach']}" for r in anomalies) if anomalies else "none"))
    for warning in efficiency.get("warnings", []):
        lines.append(f"\n> warning: {warning}")
    return lines


def _hierarchy(district: District, bills_dir: Path) -> list[str]:
    from testbed.report_grid import hierarchy_lines

    lines = hierarchy_lines(district, bills_dir)
    if not lines:
        return []
    intro = ("Units with blocks and households below them: each entity's volume comes from its own meter or a share "
             "of its parent's; a unit's row above sums its whole tree (bills of the entities below it included).")
    return ["## Grid charging below the village", "", intro, "", *lines]


def demo_report(district: District, out: Path, window: tuple[int, int], efficiency: dict[str, Any], *, seed: int) -> str:
    t0, t1 = window
    truth = Truth(district, seed=seed)
    table, grand = bills_table(district, out / "bills", truth, t0, t1)
    parts = [
        f"# canalflow demo — {district.name}",
        "",
        f"Window billed: {_local(district, t0)} to {_local(district, t1)}; {len(district.points)} meters on "
        f"{len(district.gateways)} gateways, through edge agents, Mosquitto, ingest and InfluxDB.",
        "",
        "## Bills against the simulator's ground truth",
        "",
        *table,
        "",
        f"Sum of all bills: {grand:,.2f} 元. A negative total is a water-saving reward larger than the charges.",
        "",
        *_hierarchy(district, out / "bills"),
        "## Efficiency against ground truth",
        "",
        *ground_truth_lines(efficiency, truth.system_balance(t0, t1).eta),
        "",
        "## Canal-system efficiency: official figure and diagnostics",
        "",
        *efficiency_lines(efficiency),
        "",
        "## Files",
        "",
        "- `bills/` — run.json (inputs and hashes), bills/*.json, pdf/*.pdf, bills.csv, bill_lines.csv, bills.xlsx",
        "- `efficiency.json` — reach balances, canal/level/system coefficients with method and coverage",
        "- `dashboards/` — Grafana dashboards, provisioning and alert rules; `previews/` — their panels as PNG",
        "- `ledger.db` — the billing ledger (the default `--ledger`, sqlite:///out/ledger.db); `logs/` — each process's log",
        "",
    ]
    return "\n".join(parts)
