"""The demo's report: what was billed and measured, set against the simulator's ground truth.

Reads the billing run's bill files and the efficiency report the CLI wrote, asks the simulator for
the true volumes of the same window, and writes Markdown a person can read in a minute.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from billing.efficiency import crop_net_depths, head_tail_net, plots_field_figures
from billing.plots import whole_days
from canalflow.district import District
from canalflow.field import PlotResult
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


@dataclass(frozen=True)
class FieldTruth:
    """The simulator's field and head-tail figures for the window, by billing's own rules."""

    plots: dict[str, float]  # plot -> true η_f over its irrigations in the window
    field: float | None
    head_tail: float | None


def field_truth(district: District, truth: Truth, t0: int, t1: int) -> FieldTruth:
    """True η_f of each plot irrigated on the window's whole days (billing.plots.whole_days), the
    district's by crop area (billing.efficiency.plots_field_figures), and the head-tail figure
    (billing.efficiency.head_tail_net) over the true gross diversion."""
    days = {d for d, _, _ in whole_days(district, t0, t1)}
    results = []
    for plot_id, irrigations in truth.rootzone.irrigations.items():
        done = [i for i in irrigations if i.observed.day in days]
        applied, stored = sum(i.applied_mm for i in done), sum(i.stored_mm for i in done)
        if applied > 0:
            results.append(PlotResult(plot_id, len(done), applied, stored, stored / applied))
    if not results:
        return FieldTruth({}, None, None)
    field = plots_field_figures(district, results)[0].value
    season = district.season_for(district.local_date(t0))
    gross = truth.system_balance(t0, t1).gross_m3
    irrigated = {i.observed.day for v in truth.rootzone.irrigations.values() for i in v if i.observed.day in days}
    net = head_tail_net(district, season, t0, t1, crop_net_depths(district, results), irrigated) if season else None
    return FieldTruth({r.plot: r.stored_mm / r.applied_mm for r in results}, field, net.net_m3 / gross if net and gross > 0 else None)


def _row(label: str, fig: dict[str, Any], true: float | None, why_none: str) -> str:
    measured = _value(fig) if fig["value"] is not None else f"incomplete: {fig['note'].removeprefix('incomplete: ')}"
    diff = f"{fig['value'] / true - 1:+.2%}" if fig["value"] is not None and true else "—"
    return f"| {label} | {measured} | {why_none if true is None else f'{true:.3f}'} | {diff} | {_target(fig)} |"


def ground_truth_lines(efficiency: dict[str, Any], true_eta: float | None, field: FieldTruth) -> list[str]:
    """The official figures beside the simulator's truth (by the same definitions)."""
    lines = ["| figure | measured | truth | difference | target |", "| --- | ---: | ---: | ---: | ---: |"]
    official = efficiency["canal_system"]
    lines.append(_row("canal system", official, true_eta, "no truth (no diversion)"))
    lines.append(_row("field", efficiency["field"], field.field, "no truth: no typical plot irrigated in the window"))
    lines.append(_row("whole district (head-tail)", efficiency["whole"]["head_tail"], field.head_tail, "no truth: no typical plot irrigated in the window"))
    lines.append("")
    balance = official["note"].removeprefix(official["definition"]).lstrip("; ")
    lines.append(f"Canal system, by the official definition: {official['definition']}." + (f" Balance of the window: {balance}." if balance else ""))
    lines.append(f"Field: {efficiency['field']['method']}; {efficiency['field']['note']}.")
    lines.append(f"Whole district (head-tail): {efficiency['whole']['head_tail']['note']}.")
    if efficiency.get("plots"):
        lines += ["", "| typical plot | irrigations | applied mm | stored mm | measured η_f | truth | difference |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for p in efficiency["plots"]:
            true = field.plots.get(p["plot"])
            eta = "incomplete" if p["eta"] is None else f"{p['eta']:.3f}"
            diff = f"{p['eta'] / true - 1:+.2%}" if p["eta"] is not None and true else "—"
            lines.append(f"| {p['plot']} | {p['irrigations']} | {p['applied_mm']:.1f} | {p['stored_mm']:.1f} | {eta} | "
                         f"{'—' if true is None else f'{true:.3f}'} | {diff} |")
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
        *ground_truth_lines(efficiency, truth.system_balance(t0, t1).eta, field_truth(district, truth, t0, t1)),
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
