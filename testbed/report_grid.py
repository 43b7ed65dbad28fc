"""The demo report's section on grid charging below the village (docs/billing.md, "The metering hierarchy").

Reads what the billing run wrote — bill files, household statements (CSV), the run's point
volumes — and shows, for each unit with entities below it: the tree (intake → blocks →
households), where each entity's volume came from, the loss lines with their method, and the
check that the volumes billed behind each charging meter add up to what it measured.
"""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from billing.allocation import quantize_volume
from canalflow.district import BillingUnit, District

Bills = dict[str, dict[str, Any]]


def hierarchy_lines(district: District, bills_dir: Path) -> list[str]:
    """The section's Markdown lines (empty when no unit has entities below it)."""
    roots = [u for u in district.root_units if district.below_of(u.id)]
    if not roots:
        return []
    bills = {u.id: _bill(bills_dir, u.id) for u in district.spec.units if district.is_charged(u.id)}
    measured = {p["point"]: quantize_volume(p["volume_m3"]) for p in json.loads((bills_dir / "run.json").read_text(encoding="utf-8"))["points"]}
    lines: list[str] = []
    for root in roots:
        statements = _statements(bills_dir / "statements" / f"{root.id}.csv")
        lines += [f"### {root.id} {root.name}", "", "| entity | kind | volume from | measured / share m³ | own use m³ | loss m³ | billed m³ | total (元) |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        lines += _tree_rows(district, root, bills, statements, 0)
        lines += ["", *_loss_lines(district, root, bills, measured), "", "Billed = metered at every charging meter of the tree:", "",
                  "| meter | charges | measured m³ | billed behind it m³ | billed = metered |", "| --- | --- | ---: | ---: | --- |"]
        lines += _check_rows(district, root, bills, measured)
        lines.append("")
    return lines


def _bill(bills_dir: Path, unit_id: str) -> dict[str, Any]:
    return json.loads((bills_dir / "bills" / f"{unit_id}.json").read_text(encoding="utf-8"))


def _statements(path: Path) -> dict[str, dict[str, str]]:
    """Household -> its statement's first row (weight, volume, loss) and its total over all rows."""
    if not path.exists():
        return {}
    out: dict[str, dict[str, str]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            first = out.setdefault(row["household_id"], dict(row, total="0"))
            first["total"] = str(Decimal(first["total"]) + Decimal(row["amount_yuan"]))
    return out


def _tree_rows(district: District, unit: BillingUnit, bills: Bills, statements: dict[str, dict[str, str]], depth: int) -> list[str]:
    indent = "&nbsp;&nbsp;" * depth + ("└ " if depth else "")
    if unit.id in bills:
        bill = bills[unit.id]
        source = _source(district, unit)
        row = [f"{indent}{unit.id} {unit.name}", unit.kind.value, source, _m3(_behind(district, unit, bills)), _m3(bill["own_m3"]),
               _losses(bill), _m3(bill["volume_m3"]), f"{Decimal(bill['total']):,.2f}"]
    else:
        st = statements.get(unit.id, {})
        row = [f"{indent}{unit.id} {unit.name}", unit.kind.value, f"statement: share of {unit.parent}'s bill by {unit.share} (weight {st.get('weight', '?')})",
               _m3(st.get("volume_m3", "0")), "", _m3(st.get("loss_m3", "0")), _m3(st.get("volume_m3", "0")), f"{Decimal(st.get('total', '0')):,.2f}"]
    rows = ["| " + " | ".join(row) + " |"]
    for sub in district.below_of(unit.id):
        rows += _tree_rows(district, sub, bills, statements, depth + 1)
    return rows


def _source(district: District, unit: BillingUnit) -> str:
    if unit.charging_points:
        meters = "+".join(unit.charging_points)
        return f"own meter {meters}" + (", passed down to the entities below" if _passes_down(district, unit) else "")
    return f"share of {unit.parent} by {unit.share}"


def _passes_down(district: District, unit: BillingUnit) -> bool:
    below = district.below_of(unit.id)
    return bool(below) and all(district.is_charged(u.id) for u in below)


def _losses(bill: dict[str, Any]) -> str:
    return "; ".join(f"{_m3(x['volume_m3'])} (below {'+'.join(x['points']) or x['below']}, by {x['method']})" for x in bill["losses"]) or "0"


def _loss_lines(district: District, root: BillingUnit, bills: Bills, measured: dict[str, Decimal]) -> list[str]:
    """One sentence per meter with metered entities below it: its loss and how it was shared."""
    out = []
    for unit in district.tree_of(root.id):
        metered = [u for u in district.below_of(unit.id) if u.charging_points]
        if not metered or not unit.charging_points:
            continue
        inflow = sum((measured.get(p, Decimal(0)) for p in unit.charging_points), Decimal(0)) if unit.parent is None else _behind(district, unit, bills)
        subs = [sum((measured.get(p, Decimal(0)) for p in u.charging_points), Decimal(0)) for u in metered]
        loss = inflow - sum(subs, Decimal(0))
        shares = [(x["method"], u.id, x["volume_m3"]) for u in metered for x in bills[u.id]["losses"] if x["below"] == unit.id]
        where, minus = "+".join(unit.charging_points), " + ".join(f"{_m3(v)} ({u.id})" for u, v in zip(metered, subs, strict=True))
        minus = f"({minus})" if len(metered) > 1 else minus
        unmetered = [u.id for u in district.below_of(unit.id) if not u.charging_points]
        if unmetered:
            out.append(f"- Below {where}: {_m3(inflow)} − {minus} = {_m3(loss)} m³ not measured by a sub-meter, the loss included: "
                       f"taken by {', '.join(unmetered)} (by {district.units[unmetered[0]].share}), no loss line.")
        elif unit.loss == "parent":
            out.append(f"- Loss below {where}: {_m3(inflow)} − {minus} = {_m3(loss)} m³, borne by {unit.id} itself (loss: parent), its own loss line.")
        else:
            said = ", ".join(f"{u} {_m3(v)}" for _, u, v in shares)
            out.append(f"- Loss below {where}: {_m3(inflow)} − {minus} = {_m3(loss)} m³, a loss line on each bill below it, shared by {unit.loss}: {said}.")
    return out


def _check_rows(district: District, root: BillingUnit, bills: Bills, measured: dict[str, Decimal]) -> list[str]:
    rows = []
    for unit in district.tree_of(root.id):
        if not unit.charging_points or unit.id not in bills:
            continue
        metered = sum((measured.get(p, Decimal(0)) for p in unit.charging_points), Decimal(0))
        behind = _behind(district, unit, bills)
        rows.append(f"| {'+'.join(unit.charging_points)} | {unit.id} | {_m3(metered)} | {_m3(behind)} | {'yes' if behind == metered else '**NO**'} |")
    return rows


def _behind(district: District, unit: BillingUnit, bills: Bills) -> Decimal:
    """What is billed behind an entity's meter: its tree's billed volumes less the loss it was given from above."""
    from_above = sum((Decimal(x["volume_m3"]) for x in bills[unit.id]["losses"] if x["below"] != unit.id), Decimal(0))
    return _tree_billed(district, unit, bills) - from_above


def _tree_billed(district: District, unit: BillingUnit, bills: Bills) -> Decimal:
    own = Decimal(bills[unit.id]["volume_m3"]) if unit.id in bills else Decimal(0)
    return own + sum((_tree_billed(district, u, bills) for u in district.below_of(unit.id)), Decimal(0))


def _m3(value: Any) -> str:
    """Whole m³ as they are; a household's share to the litre, without trailing zeros."""
    number = Decimal(str(value))
    return f"{number:,.0f}" if number == number.to_integral() else f"{number:,.3f}".rstrip("0")
