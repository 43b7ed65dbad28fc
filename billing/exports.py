"""A run's files: run.json, one JSON per bill, CSV tables, an XLSX workbook, PDF bills.

    write_outputs(run, Path("out"))            # run.json, bills/<unit>.json, bills.csv, bill_lines.csv, townships.csv, bills.xlsx
    write_pdfs(district, run, Path("out"))     # out/pdf/<unit>.pdf, out/statements/<village>.pdf

Household statements (CSV per village, statements.xlsx, a PDF list per village) are written by
:mod:`billing.statements`.

The bill files contain nothing but the run's inputs and results, so the same run gives the same
files byte for byte. Money is written as exact decimal strings in JSON and CSV; the workbook has
numbers formatted to the fen (Excel has no decimal type).
"""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path
from typing import Any

from billing.bills import BillingRun
from billing.pdf import render_bills_parallel
from billing.schemas import document_json
from billing.statements import write_statement_pdfs, write_statement_tables
from canalflow.district import District

BILL_COLUMNS = ("bill_id", "unit_id", "unit_name", "kind", "township", "season", "volume_m3", "quota_m3", "total_yuan", "blocked", "blocked_reason")
LINE_COLUMNS = ("line_id", "bill_id", "unit_id", "kind", "crop_class", "component", "band", "volume_m3", "rate", "amount_yuan", "note")
TOWNSHIP_COLUMNS = ("township", "units", "volume_m3", "quota_m3", "total_yuan", "blocked_units")
MAX_LINE_ROWS = 20_000  # above this the Lines sheet is left out (bill_lines.csv has them): openpyxl writes ~40k cells/s
POINT_COLUMNS = ("point", "volume_m3", "method", "coverage", "estimated_share", "incomplete", "n_readings", "flags")


def write_outputs(run: BillingRun, out_dir: Path) -> list[Path]:
    """run.json, bills/<unit>.json, bills.csv, bill_lines.csv, townships.csv and bills.xlsx in ``out_dir``; returns the paths."""
    bills_dir = out_dir / "bills"
    bills_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for bill in run.bills:
        path = bills_dir / f"{bill.unit_id}.json"
        path.write_text(bill.to_json(), encoding="utf-8")
        written.append(path)
    manifest = out_dir / "run.json"
    manifest.write_text(document_json(run.document()), encoding="utf-8")
    written += [manifest, _write_bills_csv(run, out_dir / "bills.csv"), _write_lines_csv(run, out_dir / "bill_lines.csv"),
                _write_townships_csv(run, out_dir / "townships.csv")]
    written.append(write_xlsx(run, out_dir / "bills.xlsx"))
    return written + write_statement_tables(run, out_dir)


def write_pdfs(district: District, run: BillingRun, out_dir: Path, *, locale: str | None = None, workers: int = 2) -> list[Path]:
    """One PDF per bill in ``out_dir/pdf`` (Chinese by default for a zh district; ``locale="en"`` for English)."""
    bills = render_bills_parallel(district, run.bills, out_dir / "pdf", workers=workers, locale=locale, run=run)
    return bills + write_statement_pdfs(district, run, out_dir, locale=locale)


def _write_bills_csv(run: BillingRun, path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(BILL_COLUMNS)
        for b in run.bills:
            writer.writerow([b.bill_id, b.unit_id, b.unit_name, b.unit_kind, b.township, b.season_id, b.volume_m3, b.quota_m3, b.total, int(b.blocked), b.blocked_reason])
    return path


def township_totals(run: BillingRun) -> list[tuple[str, int, Decimal, Decimal, Decimal, int]]:
    """Per township (乡镇): units, volume, quota and money summed from its units' bills."""
    sums: dict[str, list[Any]] = {}
    for b in run.bills:
        row = sums.setdefault(b.township, [0, Decimal(0), Decimal(0), Decimal(0), 0])
        row[0] += 1
        row[1] += b.volume_m3
        row[2] += b.quota_m3 if b.parent is None else 0  # an entity's quota is inside its parent's: counted once
        row[3] += b.total
        row[4] += int(b.blocked)
    return [(t, *values) for t, values in sorted(sums.items())]  # type: ignore[misc]


def _write_townships_csv(run: BillingRun, path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(TOWNSHIP_COLUMNS)
        writer.writerows(township_totals(run))
    return path


def _write_lines_csv(run: BillingRun, path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(LINE_COLUMNS)
        for b in run.bills:
            for n, line in enumerate(b.lines, start=1):
                d = line.to_dict()
                writer.writerow([b.line_id(n), b.bill_id, b.unit_id, d["kind"], d["crop_class"], d["component"], "" if d["band"] is None else d["band"], d["volume_m3"], d["rate"], d["amount"], d["note"]])
    return path


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
