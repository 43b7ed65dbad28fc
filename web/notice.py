"""The public water-use notice (水务公开): issued bills only, per township and village, and its A4 PDF.

A row shows what a notice board shows: the unit (village, association, operator), its use against
its quota, the prices it was charged, and its charges, subsidies, rewards and total. Figures come
from the stored bill documents of issued runs; a draft or approved run never appears.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from billing.ledger import Ledger, LedgerError

KINDS = ("charge", "subsidy", "reward", "adjustment")
MAX_RUNS = 200
MAX_BILLS = 100_000


@dataclass(frozen=True)
class NoticeRow:
    unit_id: str
    unit_name: str
    township: str
    volume_m3: str
    quota_m3: str
    prices: tuple[tuple[str, str], ...]  # (component, rate), charge lines only
    sums: Mapping[str, Decimal]  # kind -> yuan
    total: Decimal
    bill_id: str


def issued_runs(ledger: Ledger) -> list[Any]:
    return [r for r in ledger.runs(limit=MAX_RUNS) if r.status == "issued"]


def issued_run(ledger: Ledger, run_id: str) -> Any:
    """The issued run ``run_id``; an unknown or not yet issued run is "no such notice" alike."""
    row = ledger.run(run_id)
    if row.status != "issued":
        raise LedgerError(f"no issued billing run {run_id!r}")
    return row


def notice_rows(ledger: Ledger, run_id: str) -> list[NoticeRow]:
    row = issued_run(ledger, run_id)
    return [_row(bill) for bill in ledger.bills_of_run(row.id, limit=MAX_BILLS) if not bill["blocked"]]


def _row(bill: Mapping[str, Any]) -> NoticeRow:
    sums = {kind: sum((Decimal(ln["amount"]) for ln in bill["lines"] if ln["kind"] == kind), Decimal(0)) for kind in KINDS}
    prices = tuple(dict.fromkeys((ln["component"], ln["rate"]) for ln in bill["lines"] if ln["kind"] == "charge"))
    unit = bill["unit"]
    return NoticeRow(unit["id"], unit["name"], unit["township"], bill["volume_m3"], bill["quota_m3"], prices, sums, Decimal(bill["total"]), bill["bill_id"])


def by_township(rows: list[NoticeRow]) -> dict[str, list[NoticeRow]]:
    out: dict[str, list[NoticeRow]] = {}
    for r in sorted(rows, key=lambda r: (r.township, r.unit_id)):
        out.setdefault(r.township, []).append(r)
    return out


def notice_pdf(row: NoticeRow, run: Any, url: str, words: Mapping[str, str], township_name: str) -> bytes:
    """An A4 notice (公示表) of one unit for the notice board, with a QR code to its page."""
    import qrcode
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    from billing.pdf import register_font

    font = register_font()
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4, pageCompression=1)
    width, height = A4
    pdf.setTitle(f"{words['village_notice']} {row.unit_name}")
    pdf.setFont(font, 22)
    pdf.drawCentredString(width / 2, height - 30 * mm, words["village_notice"])
    pdf.setFont(font, 13)
    pdf.drawCentredString(width / 2, height - 40 * mm, f"{township_name} · {row.unit_name} ({row.unit_id})")
    pdf.setFont(font, 11)
    y = height - 58 * mm
    facts = [
        (words["season"], run.season_id or "—"), (words["tariff"], f"{run.tariff_id} v{run.tariff_version}"),
        (words["volume"], row.volume_m3), (words["quota"], row.quota_m3),
        *((f"{words['rate']} · {words.get('item:' + c, c)}", rate) for c, rate in row.prices),
        *((words[kind], str(row.sums[kind])) for kind in KINDS if row.sums[kind] or kind != "adjustment"),
        (words["total"], str(row.total)), (words["bills"], row.bill_id),
    ]
    for label, value in facts:
        pdf.drawString(25 * mm, y, label)
        pdf.drawRightString(width - 25 * mm, y, value)
        pdf.line(25 * mm, y - 2.5 * mm, width - 25 * mm, y - 2.5 * mm)
        y -= 10 * mm
    image = qrcode.make(url, border=2).get_image()
    png = io.BytesIO()
    image.save(png, format="PNG")
    png.seek(0)
    pdf.drawImage(ImageReader(png), width / 2 - 20 * mm, 25 * mm, 40 * mm, 40 * mm)
    pdf.setFont(font, 9)
    pdf.drawCentredString(width / 2, 20 * mm, url)
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()
