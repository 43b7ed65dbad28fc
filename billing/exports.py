"""A run's files: run.json, one JSON per bill, CSV tables, an XLSX workbook, PDF bills.

    write_outputs(run, Path("out"))            # run.json, bills/<unit>.json, bills.csv, bill_lines.csv, townships.csv, bills.xlsx
    write_xlsx(manifest, bills, fh)             # the workbook of stored documents (the web workbench's download)
    write_pdfs(district, run, Path("out"))     # out/pdf/<unit>.pdf, out/statements/<village>.pdf

Household statements (CSV per village, statements.xlsx, a PDF list per village) are written by
:mod:`billing.statements`.

The bill files contain nothing but the run's inputs and results, so the same run gives the same
files byte for byte. Money is written as exact decimal strings in JSON and CSV; the workbook has
numbers formatted to the fen (Excel has no decimal type).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

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
    document = run.document()
    manifest.write_text(document_json(document), encoding="utf-8")
    docs = [b.to_dict() for b in run.bills]
    written += [manifest, _write_csv(out_dir / "bills.csv", BILL_COLUMNS, map(bill_row, docs)),
                _write_csv(out_dir / "bill_lines.csv", LINE_COLUMNS, (row for doc in docs for row in line_rows(doc))),
                _write_csv(out_dir / "townships.csv", TOWNSHIP_COLUMNS, township_totals(docs))]
    with (out_dir / "bills.xlsx").open("wb") as fh:
        write_xlsx(document.model_dump(mode="json"), docs, fh)
    written.append(out_dir / "bills.xlsx")
    return written + write_statement_tables(run, out_dir)


def write_pdfs(district: District, run: BillingRun, out_dir: Path, *, locale: str | None = None, workers: int = 2) -> list[Path]:
    """One PDF per bill in ``out_dir/pdf`` (Chinese by default for a zh district; ``locale="en"`` for English)."""
    bills = render_bills_parallel(district, run.bills, out_dir / "pdf", workers=workers, locale=locale, run=run)
    return bills + write_statement_pdfs(district, run, out_dir, locale=locale)


def bill_row(bill: Mapping[str, Any]) -> list[Any]:
    """A bill document (bills/<unit>.json, the ledger's) as a row of :data:`BILL_COLUMNS`."""
    unit = bill["unit"]
    return [bill["bill_id"], unit["id"], unit["name"], unit["kind"], unit["township"], bill["season"]["id"], bill["volume_m3"], bill["quota_m3"],
            bill["total"], int(bill["blocked"]), bill["blocked_reason"]]


def line_rows(bill: Mapping[str, Any]) -> list[list[Any]]:
    """A bill document's lines as rows of :data:`LINE_COLUMNS`."""
    return [[ln["id"], bill["bill_id"], bill["unit"]["id"], ln["kind"], ln["crop_class"], ln["component"], "" if ln["band"] is None else ln["band"],
             ln["volume_m3"], ln["rate"], ln["amount"], ln["note"]] for ln in bill["lines"]]


def township_totals(bills: Iterable[Mapping[str, Any]]) -> list[tuple[str, int, Decimal, Decimal, Decimal, int]]:
    """Per township (乡镇): units, volume, quota and money summed from its units' bill documents."""
    sums: dict[str, list[Any]] = {}
    for b in bills:
        row = sums.setdefault(b["unit"]["township"], [0, Decimal(0), Decimal(0), Decimal(0), 0])
        row[0] += 1
        row[1] += Decimal(b["volume_m3"])
        row[2] += Decimal(b["quota_m3"]) if b.get("parent") is None else 0  # an entity's quota is inside its parent's: counted once
        row[3] += Decimal(b["total"])
        row[4] += int(b["blocked"])
    return [(t, *values) for t, values in sorted(sums.items())]  # type: ignore[misc]


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def write_xlsx(manifest: Mapping[str, Any], bills: Sequence[Mapping[str, Any]], out: BinaryIO) -> None:
    """A run's manifest and bill documents (all of them, or one bill's) as a workbook with sheets Bills,
    Lines (up to ``MAX_LINE_ROWS``), Townships, Points and Run, written to ``out``.

    Money cells are numbers formatted to the fen (Excel has no decimal type); the exact strings are
    in the CSV and JSON. The Run sheet's total is the total of the bills written."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    wb = Workbook(write_only=True)

    def money(ws: Any, value: Decimal | str) -> WriteOnlyCell:
        cell = WriteOnlyCell(ws, value=float(value))
        cell.number_format = "0.00"
        return cell

    def text(ws: Any, values: list[Any]) -> list[Any]:
        """Strings as text cells: openpyxl would store a name like ``=HYPERLINK(...)`` as a formula."""
        cells = []
        for value in values:
            if isinstance(value, str):
                value = WriteOnlyCell(ws, value=value)
                value.data_type = "s"
            cells.append(value)
        return cells

    sheet = wb.create_sheet("Bills")
    sheet.append(list(BILL_COLUMNS))
    for b in bills:
        row = bill_row(b)
        sheet.append(text(sheet, [*row[:6], float(row[6]), float(row[7]), money(sheet, row[8]), *row[9:]]))
    n_lines = sum(len(b["lines"]) for b in bills)
    if n_lines <= MAX_LINE_ROWS:
        sheet = wb.create_sheet("Lines")
        sheet.append(list(LINE_COLUMNS))
        for b in bills:
            for row in line_rows(b):
                sheet.append(text(sheet, [*row[:6], row[6] if row[6] != "" else None, float(row[7]), float(row[8]), money(sheet, row[9]), row[10]]))
    sheet = wb.create_sheet("Townships")
    sheet.append(list(TOWNSHIP_COLUMNS))
    for township, units, volume, quota, total, blocked in township_totals(bills):
        sheet.append(text(sheet, [township, units, float(volume), float(quota), money(sheet, total), blocked]))
    sheet = wb.create_sheet("Points")
    sheet.append(list(POINT_COLUMNS))
    for s in sorted(manifest["points"], key=lambda p: p["point"]):
        sheet.append(text(sheet, [s["point"], s["volume_m3"], s["method"], s["coverage"], s["estimated_share"], int(s["incomplete"]), s["n_readings"], ",".join(s["flags"])]))
    sheet = wb.create_sheet("Run")
    total = sum((Decimal(b["total"]) for b in bills), Decimal(0))
    tariff = manifest["tariff"]
    for key, value in (("run_id", manifest["run_id"]), ("district", manifest["district"]["id"]), ("district_sha256", manifest["district"]["sha256"]),
                       ("season", manifest["season"]), ("tariff", f"{tariff['id']} v{tariff['version']}"), ("t0_ms", manifest["window"]["t0_ms"]),
                       ("t1_ms", manifest["window"]["t1_ms"]), ("as_of_ms", manifest["as_of_ms"]), ("total_yuan", str(total)),
                       ("lines", "sheet Lines" if n_lines <= MAX_LINE_ROWS else f"{n_lines} lines: see bill_lines.csv")):
        sheet.append(text(sheet, [key, value]))
    wb.save(out)
