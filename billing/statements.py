"""Household statements (农户明细): per village, one CSV, one sheet of a workbook and one PDF list.

A household is not billed: its statement is its share (by area or quota) of every line of its
parent's bill, split to the fen so the statements add up to the bill (:func:`billing.bills.household_statements`).
Statements are listed per village (the unit charged at the canal), never one PDF process per household.

    write_statement_tables(run, Path("out"))          # out/statements/<village>.csv, out/statements.xlsx
    write_statement_pdfs(district, run, Path("out"))  # out/statements/<village>.pdf
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from billing.bills import BillingRun, Statement
from billing.notes import is_money_line
from billing.pdf import ITEMS, TEXT, _table, bill_context, register_font
from canalflow.district import District

COLUMNS = ("village", "household_id", "household", "parent", "bill_id", "method", "weight", "volume_m3", "loss_m3",
           "kind", "crop_class", "component", "line_volume_m3", "amount_yuan", "note")
SUMMARY = ("household_id", "household", "parent", "weight", "volume_m3", "loss_m3", "total_yuan")


def by_village(run: BillingRun) -> dict[str, list[Statement]]:
    out: dict[str, list[Statement]] = {}
    for statement in run.statements:
        out.setdefault(statement.root_id, []).append(statement)
    return dict(sorted(out.items()))


def write_statement_tables(run: BillingRun, out_dir: Path) -> list[Path]:
    """``statements/<village>.csv`` (one row per statement line, exact decimals) and ``statements.xlsx``."""
    villages = by_village(run)
    if not villages:
        return []
    folder = out_dir / "statements"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for village, statements in villages.items():
        path = folder / f"{village}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(COLUMNS)
            writer.writerows(_rows(village, statements))
        written.append(path)
    written.append(_write_xlsx(villages, out_dir / "statements.xlsx"))
    return written


def _rows(village: str, statements: Sequence[Statement]) -> list[list[Any]]:
    return [[village, s.unit_id, s.unit_name, s.parent_id, s.bill_id, s.method, s.weight, s.volume_m3, s.loss_m3,
             line.kind, line.crop_class, line.component, line.volume_m3, line.amount, line.note]
            for s in statements for line in s.lines]


def _write_xlsx(villages: dict[str, list[Statement]], path: Path) -> Path:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    for village, statements in villages.items():
        sheet = wb.create_sheet(village[:31])
        sheet.append(list(SUMMARY))
        for s in statements:
            sheet.append([s.unit_id, s.unit_name, s.parent_id, float(s.weight), float(s.volume_m3), float(s.loss_m3), float(s.total)])
    wb.save(path)
    return path


def write_statement_pdfs(district: District, run: BillingRun, out_dir: Path, *, locale: str | None = None) -> list[Path]:
    """One PDF per village listing its households: each with its share of every line of its parent's bill."""
    villages = by_village(run)
    if not villages:
        return []
    context = bill_context(district, run, locale)
    return [_render(district, village, statements, context, out_dir / "statements" / f"{village}.pdf") for village, statements in villages.items()]


def _render(district: District, village: str, statements: Sequence[Statement], context: dict[str, Any], path: Path) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

    font = register_font()
    locale = context["locale"]
    zh = locale == "zh"
    title = ParagraphStyle("title", fontName=font, fontSize=14, leading=18, spaceAfter=6)
    body = ParagraphStyle("body", fontName=font, fontSize=9, leading=12)
    name = district.units[village].name
    story: list[Any] = [Paragraph(f"{context['district_name']} · {name} ({village}) · {'农户用水明细' if zh else 'household statements'}", title),
                        Paragraph(f"{TEXT[locale]['window']}: {context['window_text']} · {TEXT[locale]['tariff']}: {context['tariff']}", body),
                        Spacer(1, 3 * mm)]
    head = ["农户" if zh else "household", "所属" if zh else "below", "权重" if zh else "weight", TEXT[locale]["volume"], "分摊损失 (m³)" if zh else "loss share (m³)", TEXT[locale]["amount"]]
    rows = [head] + [[f"{s.unit_name} ({s.unit_id})", s.parent_id, f"{s.method} {s.weight}", f"{s.volume_m3:,.3f}", f"{s.loss_m3:,.3f}", str(s.total)] for s in statements]
    rows.append(["", "", "", "", TEXT[locale]["total"], str(sum((s.total for s in statements), Decimal(0)))])
    story.append(_table(rows, font, widths=[45 * mm, 28 * mm, 25 * mm, 30 * mm, 30 * mm, 22 * mm], total_row=True))
    for s in statements:
        story.append(Spacer(1, 3 * mm))
        story.append(Paragraph(f"{s.unit_name} ({s.unit_id}) · {s.bill_id}", body))
        lines = [[ITEMS[locale].get(x.component, x.component), x.crop_class, f"{x.volume_m3:,.3f}", str(x.amount)] for x in s.lines if is_money_line(x.kind, x.amount)]
        story.append(_table([[TEXT[locale]["item"], TEXT[locale]["class"], TEXT[locale]["line_volume"], TEXT[locale]["amount"]], *lines],
                            font, widths=[50 * mm, 30 * mm, 40 * mm, 30 * mm]))
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = SimpleDocTemplate(str(path), pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm, bottomMargin=15 * mm,
                            title=f"{village} statements", author="canalflow", invariant=1)
    doc.build(story)
    return path
