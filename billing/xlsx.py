"""The run summary as an XLSX workbook: bills, bill lines and metering points (write-only, streamed)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from billing.run import BILL_COLUMNS, LINE_COLUMNS, TOWNSHIP_COLUMNS, BillingRun, township_totals

MAX_LINE_ROWS = 20_000  # above this the Lines sheet is left out (bill_lines.csv has them): openpyxl writes ~40k cells/s
POINT_COLUMNS = ("point", "volume_m3", "method", "coverage", "estimated_share", "incomplete", "n_readings", "flags")


def write_xlsx(run: BillingRun, path: Path) -> Path:
    """Write ``run`` as a workbook with sheets Bills, Lines (up to ``MAX_LINE_ROWS``), Townships, Points and Run.
    Money cells are numbers formatted to the fen (Excel has no decimal type); the exact strings are
    in the CSV and JSON."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    wb = Workbook(write_only=True)

    def money(ws: Any, value: Decimal) -> WriteOnlyCell:
        cell = WriteOnlyCell(ws, value=float(value))
        cell.number_format = "0.00"
        return cell

    bills = wb.create_sheet("Bills")
    bills.append(list(BILL_COLUMNS))
    for b in run.bills:
        bills.append([b.bill_id, b.unit_id, b.unit_name, b.unit_kind, b.township, b.season_id, float(b.volume_m3), float(b.quota_m3),
                      money(bills, b.total), int(b.blocked), b.blocked_reason])
    n_lines = sum(len(b.lines) for b in run.bills)
    if n_lines <= MAX_LINE_ROWS:
        lines = wb.create_sheet("Lines")
        lines.append(list(LINE_COLUMNS))
        for b in run.bills:
            for n, item in enumerate(b.lines, start=1):
                lines.append([b.line_id(n), b.bill_id, b.unit_id, item.kind, item.crop_class, item.component, item.band,
                              float(item.volume_m3), float(item.rate), money(lines, item.amount), item.note])
    towns = wb.create_sheet("Townships")
    towns.append(list(TOWNSHIP_COLUMNS))
    for township, units, volume, quota, total, blocked in township_totals(run):
        towns.append([township, units, float(volume), float(quota), money(towns, total), blocked])
    points = wb.create_sheet("Points")
    points.append(list(POINT_COLUMNS))
    for pid in sorted(run.points):
        s = run.points[pid].summary()
        points.append([s["point"], s["volume_m3"], s["method"], s["coverage"], s["estimated_share"], int(s["incomplete"]), s["n_readings"], ",".join(s["flags"])])
    meta = wb.create_sheet("Run")
    for key, value in (("run_id", run.run_id), ("district", run.district_id), ("district_sha256", run.district_sha256), ("season", run.season_id),
                       ("tariff", f"{run.tariff_id} v{run.tariff_version}"), ("t0_ms", run.t0_ms), ("t1_ms", run.t1_ms), ("as_of_ms", run.as_of_ms),
                       ("total_yuan", str(run.total)),
                       ("lines", "sheet Lines" if n_lines <= MAX_LINE_ROWS else f"{n_lines} lines: see bill_lines.csv")):
        meta.append([key, value])
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path
