"""Bills as PDF: Chinese by default (the district's locale), English by option, CJK font embedded.

reportlab's built-in CID fonts are not embedded and render as empty boxes in poppler, so a
TrueType CJK font is embedded (subset): ``CANALFLOW_CJK_FONT`` if set, else Debian's
fonts-wqy-zenhei (``/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc``, face 0).

Each bill has the unit and the run's identity (run id, district file hash, tariff version), the
volume against the quota, every money line with its id (for ``canalflow billing explain``; no
subsidy or reward of 0.00, :func:`billing.notes.money_lines`), the total, the meters behind the
volume with their coverage, a chart of cumulative use by month against the season quota, and the
bill's notes in its language (by their codes, :mod:`billing.notes`). Rendering works from the
bill's JSON dict, so bills render in worker processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from billing.notes import CLASSES, localize, money_lines, note_codes
from canalflow.errors import CanalflowError

FONT_NAME = "CanalflowCJK"
DEFAULT_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")

TEXT = {
    "zh": {
        "title": "农业用水水费通知单", "district": "灌区", "unit": "用水单位", "kind": "类型", "township": "乡镇",
        "season": "灌溉季", "window": "计量时段", "bill": "账单号", "run": "计费批次", "tariff": "水价方案",
        "district_file": "灌区文件摘要", "volume": "用水量 (m³)", "quota": "定额 (m³)", "use_ratio": "用水/定额",
        "line": "行号", "class": "作物类别", "item": "项目", "band": "档次", "line_volume": "水量 (m³)",
        "rate": "单价 (元/m³)", "amount": "金额 (元)", "total": "合计 (元)", "meters": "计量点",
        "method": "方法", "coverage": "数据覆盖率", "estimated": "估算比例", "chart": "累计用水量与定额（按月）",
        "cumulative": "累计用水", "blocked": "本账单暂停出具：", "notes": "说明", "trace": "每行可追溯：canalflow billing explain 行号",
        "village": "村", "association": "农民用水协会", "operator": "土地流转大户",
    },
    "en": {
        "title": "Irrigation water bill", "district": "District", "unit": "Billing unit", "kind": "Kind", "township": "Township",
        "season": "Season", "window": "Metered period", "bill": "Bill", "run": "Billing run", "tariff": "Tariff",
        "district_file": "District file SHA-256", "volume": "Use (m³)", "quota": "Quota (m³)", "use_ratio": "Use / quota",
        "line": "Line", "class": "Crop class", "item": "Item", "band": "Band", "line_volume": "Volume (m³)",
        "rate": "Rate (yuan/m³)", "amount": "Amount (yuan)", "total": "Total (yuan)", "meters": "Metering points",
        "method": "Method", "coverage": "Coverage", "estimated": "Estimated", "chart": "Cumulative use by month against the quota",
        "cumulative": "cumulative use", "blocked": "Bill withheld: ", "notes": "Notes", "trace": "Every line traces back: canalflow billing explain LINE",
        "village": "village", "association": "water-user association", "operator": "large operator",
    },
}
ITEMS = {"zh": {"backbone": "骨干工程水价", "terminal": "末级渠系水价", "village_fee": "村级费用", "subsidy": "精准补贴", "reward": "节水奖励", "adjustment": "调整"},
         "en": {"backbone": "backbone works", "terminal": "terminal canals", "village_fee": "village fee", "subsidy": "precise subsidy", "reward": "water-saving reward", "adjustment": "adjustment"}}

# grid charging (billing.allocation, billing.tariff): entity kinds and the lines they add
TEXT["zh"] |= {"block": "地块/用水小组", "household": "农户", "entities": "下属用水单元", "source": "水量来源", "loss": "分摊损失 (m³)", "billed": "计费水量 (m³)", "loss_line": "（分摊损失）"}
TEXT["en"] |= {"block": "block", "household": "household", "entities": "Entities below", "source": "Volume from", "loss": "Loss share (m³)", "billed": "Billed (m³)", "loss_line": " (loss share)"}
ITEMS["zh"] |= {"fixed": "固定水费（按亩）", "buy_back": "节水回购", "budget": "预算不足扣减"}
ITEMS["en"] |= {"fixed": "fixed charge per mu", "buy_back": "saved-quota buy-back", "budget": "cut by the season budget"}


class FontMissing(CanalflowError, RuntimeError):
    pass


def font_path() -> Path:
    path = Path(os.environ.get("CANALFLOW_CJK_FONT", DEFAULT_FONT))
    if not path.exists():
        raise FontMissing(f"CJK font {path} not found: install it (sudo apt-get install fonts-wqy-zenhei) or set CANALFLOW_CJK_FONT to a .ttf/.ttc file")
    return path


def register_font() -> str:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if FONT_NAME not in pdfmetrics.getRegisteredFontNames():
        path = font_path()
        kwargs = {"subfontIndex": 0} if path.suffix.lower() == ".ttc" else {}
        pdfmetrics.registerFont(TTFont(FONT_NAME, str(path), **kwargs))
    return FONT_NAME


def band_labels(bands: Sequence[Mapping[str, Any]], locale: str) -> list[str]:
    """Human band names from the tariff's bands (fractions of quota)."""
    labels = []
    lower = 0.0
    for band in bands:
        upper = band.get("up_to")
        mult = band["multiplier"]
        if locale == "zh":
            span = f"定额 {lower:.0%}–{float(upper):.0%}" if upper is not None else f"超过定额 {lower:.0%}"
            labels.append(f"{span} ×{mult}")
        else:
            span = f"{lower:.0%}–{float(upper):.0%} of quota" if upper is not None else f"above {lower:.0%} of quota"
            labels.append(f"{span} x{mult}")
        lower = float(upper) if upper is not None else lower
    return labels


def render_bill(bill: Mapping[str, Any], context: Mapping[str, Any], path: Path) -> Path:
    """Write one bill (``Bill.to_dict()``) as a PDF; ``context``: district_name, locale, bands, tariff, district_sha256,
    townships (id -> name)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

    font = register_font()
    locale = context.get("locale", "zh")
    t = TEXT[locale]
    style = ParagraphStyle("body", fontName=font, fontSize=9, leading=12)
    title = ParagraphStyle("title", fontName=font, fontSize=16, leading=20, spaceAfter=6)
    small = ParagraphStyle("small", fontName=font, fontSize=7, leading=9, textColor=colors.grey)
    unit = bill["unit"]
    story: list[Any] = [Paragraph(f"{context.get('district_name', '')} · {t['title']}", title)]
    header = [
        [t["unit"], f"{unit['name']} ({unit['id']})", t["kind"], t.get(unit["kind"], unit["kind"])],
        [t["township"], _township(unit["township"], context), t["season"], bill["season"]["id"]],
        [t["window"], context.get("window_text", ""), t["tariff"], context.get("tariff", "")],
        [t["bill"], bill["bill_id"], t["run"], bill["run_id"][:12]],
    ]
    story.append(_table(header, font, widths=[24 * mm, 66 * mm, 24 * mm, 66 * mm], header_row=False))
    story.append(Spacer(1, 4 * mm))
    volume, quota = float(bill["volume_m3"]), float(bill["quota_m3"])
    ratio = f"{volume / quota:.1%}" if quota > 0 else "—"
    story.append(_table([[t["volume"], t["quota"], t["use_ratio"]], [f"{volume:,.0f}", f"{quota:,.0f}", ratio]], font, widths=[60 * mm] * 3))
    story.append(Spacer(1, 4 * mm))
    if bill["blocked"]:
        story.append(Paragraph(t["blocked"] + escape(localize(bill["blocked_reason"], note_codes(bill), locale)), style))
    else:
        story.append(_lines_table(bill, context, font, locale))
    if bill.get("entities"):
        story += [Spacer(1, 3 * mm), _entities_table(bill["entities"], font, t)]
    story.append(Spacer(1, 4 * mm))
    story.append(Paragraph(t["chart"], style))
    story.append(use_chart(bill.get("monthly_m3", {}), quota, font, t["cumulative"]))
    story.append(Spacer(1, 3 * mm))
    meters = [[t["meters"], t["method"], t["volume"], t["coverage"], t["estimated"]]]
    meters += [[s["point"], s["method"], f"{s['volume_m3']:,.1f}", f"{s['coverage']:.1%}", f"{s['estimated_share']:.1%}"] for s in bill["sources"]]
    story.append(_table(meters, font, widths=[40 * mm, 30 * mm, 40 * mm, 35 * mm, 35 * mm]))
    if bill["notes"]:
        story.append(Spacer(1, 2 * mm))
        story.append(Paragraph(f"{t['notes']}: " + "；".join(escape(localize(n, note_codes(bill), locale)) for n in bill["notes"]), style))
    story.append(Spacer(1, 3 * mm))
    story.append(Paragraph(f"{t['district_file']}: {context.get('district_sha256', '')}", small))
    story.append(Paragraph(t["trace"], small))
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = SimpleDocTemplate(str(path), pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm, bottomMargin=15 * mm,
                            title=f"{t['title']} {bill['bill_id']}", author="canalflow", invariant=1)
    doc.build(story)
    return path


def _lines_table(bill: Mapping[str, Any], context: Mapping[str, Any], font: str, locale: str) -> Any:
    from reportlab.lib.units import mm

    t = TEXT[locale]
    bands = band_labels(context.get("bands", []), locale)
    rows = [[t["line"], t["class"], t["item"], t["band"], t["line_volume"], t["rate"], t["amount"]]]
    for item in money_lines(bill["lines"]):
        band = bands[item["band"]] if item["band"] is not None and item["band"] < len(bands) else ""
        rows.append([item["id"].rsplit("-", 1)[-1], CLASSES[locale].get(item["crop_class"], item["crop_class"]),
                     ITEMS[locale].get(item["component"], item["component"]) + ("\n" + t["loss_line"].strip() if item["kind"] == "loss" else ""), band,
                     f"{float(item['volume_m3']):,.3f}", f"{Decimal(item['rate']):.4f}", item["amount"]])
    rows.append(["", "", "", "", "", t["total"], bill["total"]])
    return _table(rows, font, widths=[12 * mm, 22 * mm, 30 * mm, 42 * mm, 28 * mm, 24 * mm, 22 * mm], total_row=True)


def _entities_table(entities: Sequence[Mapping[str, Any]], font: str, t: Mapping[str, str]) -> Any:
    """A village bill's blocks: what each measured, its loss share, what it is billed."""
    from reportlab.lib.units import mm

    rows = [[t["entities"], t["source"], t["volume"], t["loss"], t["billed"], t["amount"]]]
    rows += [[f"{e['name']} ({e['unit']})", e["source"], f"{float(e['inflow_m3']):,.0f}", f"{float(e['loss_m3']):,.0f}", f"{float(e['billed_m3']):,.0f}", e["total"]] for e in entities]
    return _table(rows, font, widths=[50 * mm, 24 * mm, 28 * mm, 28 * mm, 28 * mm, 22 * mm])


def _table(rows: list[list[Any]], font: str, *, widths: Sequence[float], header_row: bool = True, total_row: bool = False) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    table = Table(rows, colWidths=list(widths))
    commands: list[tuple[Any, ...]] = [
        ("FONTNAME", (0, 0), (-1, -1), font), ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey), ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
    ]
    if header_row:
        commands.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef5")))
    if total_row:
        commands += [("BACKGROUND", (0, -1), (-1, -1), colors.HexColor("#f5f5f5")), ("ALIGN", (4, 1), (-1, -1), "RIGHT")]
    table.setStyle(TableStyle(commands))
    return table


def use_chart(monthly: Mapping[str, float], quota: float, font: str, label: str) -> Any:
    """Bars of cumulative use at each month's end, and a red line at the season quota."""
    from reportlab.graphics.charts.barcharts import VerticalBarChart
    from reportlab.graphics.shapes import Drawing, Line, String
    from reportlab.lib import colors

    months = sorted(monthly)
    cumulative = []
    running = 0.0
    for m in months:
        running += monthly[m]
        cumulative.append(running)
    drawing = Drawing(480, 150)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 50, 25, 400, 110
    chart.data = [cumulative or [0.0]]
    chart.categoryAxis.categoryNames = months or ["—"]
    chart.categoryAxis.labels.fontName = font
    chart.valueAxis.labels.fontName = font
    top = max([quota, *cumulative, 1.0]) * 1.15
    chart.valueAxis.valueMin, chart.valueAxis.valueMax = 0, top
    chart.valueAxis.valueStep = _nice_step(top)
    chart.bars[0].fillColor = colors.HexColor("#4a7ab5")
    drawing.add(chart)
    if quota > 0:
        y = chart.y + chart.height * quota / top
        drawing.add(Line(chart.x, y, chart.x + chart.width, y, strokeColor=colors.red, strokeWidth=1.2))
        drawing.add(String(chart.x + chart.width - 2, y + 3, f"{quota:,.0f} m³", fontName=font, fontSize=7, fillColor=colors.red, textAnchor="end"))
    drawing.add(String(chart.x, chart.y + chart.height + 6, f"{label} (m³)", fontName=font, fontSize=7))
    return drawing


def _nice_step(top: float) -> float:
    raw = top / 5
    magnitude = 10 ** int(f"{raw:e}".split("e")[1])
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return raw


def _township(township_id: str, context: Mapping[str, Any]) -> str:
    """The township's name as the district file gives it, with its id (the id alone when the name is unknown)."""
    name = context.get("townships", {}).get(township_id)
    return f"{name} ({township_id})" if name and name != township_id else township_id


def bill_context(district: Any, run: Any, locale: str | None = None) -> dict[str, Any]:
    import datetime as dt
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(district.spec.district.timezone)
    tariff = district.tariffs[run.tariff_id]
    start = dt.datetime.fromtimestamp(run.t0_ms / 1000, tz)
    end = dt.datetime.fromtimestamp(run.t1_ms / 1000, tz)
    return {
        "district_name": district.name,
        "locale": locale or district.spec.district.locale,
        "bands": [{"up_to": str(b.up_to) if b.up_to is not None else None, "multiplier": str(b.multiplier)} for b in tariff.bands],
        "tariff": f"{tariff.id} v{tariff.version}",
        "district_sha256": run.district_sha256,
        "townships": {town.id: town.name for town in district.spec.townships},
        "window_text": f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M}",
    }


def _render_one(task: tuple[dict[str, Any], dict[str, Any], str]) -> str:
    bill, context, path = task
    return str(render_bill(bill, context, Path(path)))


def render_bills_parallel(district: Any, bills: Iterable[Any], out_dir: Path, *, workers: int = 2, locale: str | None = None, run: Any = None) -> list[Path]:
    """Render bills (``Bill`` objects) to ``out_dir/<unit>.pdf`` on ``workers`` processes."""
    bills = list(bills)
    if not bills:
        return []
    if run is None:
        run = _RunInfo(bills[0])
    font_path()  # fail early, with the install hint
    context = bill_context(district, run, locale)
    tasks = [(b.to_dict(), context, str(out_dir / f"{b.unit_id}.pdf")) for b in bills]
    if workers <= 1:
        return [Path(_render_one(task)) for task in tasks]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [Path(p) for p in pool.map(_render_one, tasks, chunksize=max(1, len(tasks) // (workers * 4)))]


class _RunInfo:
    """The run fields bill_context needs, when only bills are at hand."""

    def __init__(self, bill: Any) -> None:
        charge = bill.charge
        self.tariff_id = charge.tariff_id if charge is not None else ""
        self.t0_ms, self.t1_ms = bill.t0_ms, bill.t1_ms
        self.district_sha256 = ""
