"""The public water-use notice (水务公开): issued bills only, per township and village, and its A4 PDF.

A row shows what a notice board shows: the unit (village, association, operator), its use against
its quota, the prices it was charged, and its charges, subsidies, rewards and total. Figures come
from the stored bill documents of issued runs; a draft or approved run never appears. A subsidy,
reward or adjustment of 0.00 is not shown as money; where the bill refused a subsidy or reward, its
note says why, in the reader's language (billing.notes).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from billing.ledger import Ledger, LedgerError
from billing.notes import CREDITS, localize, note_codes, refusals
from canalflow.district import District

KINDS = ("charge", "subsidy", "reward", "adjustment")
MAX_RUNS = 200
MAX_BILLS = 100_000


@dataclass(frozen=True)
class HouseholdRow:
    """A household below a bill (its statement: its share of the bill): shown only where the district enables names."""

    unit_id: str
    name: str
    volume_m3: str
    total: str


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
    households: tuple[HouseholdRow, ...] = ()
    refusals: tuple[str, ...] = ()  # the bill's notes (as stored) refusing a subsidy or reward it shows none of
    note_codes: Mapping[str, Any] = field(default_factory=dict)

    def shown(self, kind: str) -> bool:
        """Charges always; a subsidy, reward or adjustment only when it is money."""
        return kind == "charge" or self.sums[kind] != 0

    def reasons(self, lang: str) -> list[str]:
        return [localize(n, self.note_codes, lang) for n in self.refusals]


def issued_runs(ledger: Ledger) -> list[Any]:
    return [r for r in ledger.runs(limit=MAX_RUNS) if r.status == "issued"]


def issued_run(ledger: Ledger, run_id: str) -> Any:
    """The issued run ``run_id``; an unknown or not yet issued run is "no such notice" alike."""
    row = ledger.run(run_id)
    if row.status != "issued":
        raise LedgerError(f"no issued billing run {run_id!r}")
    return row


def notice_rows(ledger: Ledger, run_id: str, district: District | None = None) -> list[NoticeRow]:
    """The issued run's unblocked bills as notice rows. Where ``district`` enables ``public_household_names``
    and is the file the run billed from (its shares), each row lists the households below it by name."""
    row = issued_run(ledger, run_id)
    bills = [b for b in ledger.bills_of_run(row.id, limit=MAX_BILLS) if not b["blocked"]]
    households = _households_of(district, row, bills)
    return [_row(bill, households.get(bill["bill_id"], ())) for bill in bills]


def _households_of(district: District | None, run: Any, bills: list[dict[str, Any]]) -> dict[str, tuple[HouseholdRow, ...]]:
    """bill id -> its households' statements (billing.bills.household_statements of the stored bills)."""
    if district is None or not district.spec.district.public_household_names or district.sha256 != run.district_sha256:
        return {}
    from billing.bills import household_statements

    season_kind = bills[0]["season"]["kind"] if bills else ""
    out: dict[str, list[HouseholdRow]] = {}
    for s in household_statements(district, [_bill(b) for b in bills], season_kind):
        out.setdefault(s.bill_id, []).append(HouseholdRow(s.unit_id, s.unit_name, str(s.volume_m3), str(s.total)))
    return {bill_id: tuple(rows) for bill_id, rows in out.items()}


def _bill(doc: Mapping[str, Any]) -> Any:
    """A stored bill document as the :class:`billing.bills.Bill` its statements are split from."""
    from billing.allocation import LossShare
    from billing.bills import Bill
    from billing.tariff import Line

    lines = tuple(Line(ln["kind"], ln["crop_class"], ln["component"], ln["band"], Decimal(ln["volume_m3"]), Decimal(ln["rate"]), Decimal(ln["amount"]), ln["note"])
                  for ln in doc["lines"])
    losses = tuple(LossShare(doc["unit"]["id"], x["below"], tuple(x["points"]), x["method"], Decimal(x["weight"]), Decimal(x["volume_m3"]))
                   for x in doc.get("losses", []))
    unit, season, window = doc["unit"], doc["season"], doc["window"]
    return Bill(doc["bill_id"], doc["run_id"], unit["id"], unit["name"], unit["kind"], unit["township"], season["id"], season["kind"],
                window["t0_ms"], window["t1_ms"], Decimal(doc["volume_m3"]), Decimal(doc["quota_m3"]), lines, (), (), (),
                doc["blocked_reason"], parent=doc.get("parent"), losses=losses)


def _row(bill: Mapping[str, Any], households: tuple[HouseholdRow, ...]) -> NoticeRow:
    sums = {kind: sum((Decimal(ln["amount"]) for ln in bill["lines"] if ln["kind"] == kind), Decimal(0)) for kind in KINDS}
    prices = tuple(dict.fromkeys((ln["component"], ln["rate"]) for ln in bill["lines"] if ln["kind"] == "charge"))
    unit = bill["unit"]
    refused = tuple(dict.fromkeys(n for kind in CREDITS if not sums[kind] for n in refusals(bill, kind)))
    return NoticeRow(unit["id"], unit["name"], unit["township"], bill["volume_m3"], bill["quota_m3"], prices, sums, Decimal(bill["total"]), bill["bill_id"],
                     households, refused, note_codes(bill))


def by_township(rows: list[NoticeRow]) -> dict[str, list[NoticeRow]]:
    out: dict[str, list[NoticeRow]] = {}
    for r in sorted(rows, key=lambda r: (r.township, r.unit_id)):
        out.setdefault(r.township, []).append(r)
    return out


def notice_pdf(row: NoticeRow, run: Any, url: str, words: Mapping[str, str], township_name: str, lang: str = "zh") -> bytes:
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
        *((words[kind], str(row.sums[kind])) for kind in KINDS if row.shown(kind)),
        (words["total"], str(row.total)), (words["bills"], row.bill_id),
    ]
    for label, value in facts:
        pdf.drawString(25 * mm, y, label)
        pdf.drawRightString(width - 25 * mm, y, value)
        pdf.line(25 * mm, y - 2.5 * mm, width - 25 * mm, y - 2.5 * mm)
        y -= 10 * mm
    pdf.setFont(font, 10)
    for reason in row.reasons(lang):
        pdf.drawString(25 * mm, y, reason)
        y -= 7 * mm
    y = _households(pdf, row.households, words, y, font)
    if y < 75 * mm:  # the QR code on a page of its own rather than over the list
        pdf.showPage()
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


def _households(pdf: Any, households: tuple[HouseholdRow, ...], words: Mapping[str, str], y: float, font: str) -> float:
    """The households' list below the unit's figures (new pages as needed); returns where the next line goes."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm

    width = A4[0]
    if not households:
        return y
    pdf.setFont(font, 12)
    pdf.drawString(25 * mm, y, words["households"])
    pdf.setFont(font, 10)
    y -= 8 * mm
    for h in households:
        if y < 20 * mm:
            pdf.showPage()
            pdf.setFont(font, 10)
            y = A4[1] - 25 * mm
        pdf.drawString(25 * mm, y, f"{h.name} ({h.unit_id})")
        pdf.drawRightString(width - 70 * mm, y, f"{h.volume_m3} m³")
        pdf.drawRightString(width - 25 * mm, y, h.total)
        y -= 7 * mm
    return y
