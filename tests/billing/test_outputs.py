"""Bill outputs: PDF (CJK embedded, zh and en), XLSX, and `billing explain` down to the readings."""

from __future__ import annotations

import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from billing_synth import MIN, write_meter

from billing.bills import build_run
from billing.explain import explain_line, format_explanation
from billing.exports import write_outputs, write_pdfs
from billing.ledger import LedgerError, open_ledger
from billing.pdf import render_bill
from billing.run import run_billing
from billing.volumes import PointVolume, charging_points
from billing.window import season_window
from canalflow.volume import VolumeResult
from testbed.steady import steady_share

MONTHS = (("2026-03", 100_000.0), ("2026-04", 150_000.0), ("2026-05", 50_000.0))


@pytest.fixture(scope="module")
def season_run(demo):
    t0, t1 = season_window(demo, demo.seasons["2026-spring"])
    steady = steady_share(demo, 300_000.0)
    volumes = {p: PointVolume(p, VolumeResult(steady[p], 0.98, 0.01, "flow", [], False, 999), MONTHS) for p in charging_points(demo)}
    return build_run(demo, volumes, t0, t1, season=demo.seasons["2026-spring"], as_of_ms=t1)


def pdftext(path: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


def test_pdf_in_chinese_with_embedded_cjk_font(demo, season_run, tmp_path):
    [path] = write_pdfs(demo, _only(season_run, "V01"), tmp_path, workers=1)
    fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, check=True).stdout
    cjk = [row for row in fonts.splitlines() if "WenQuanYi" in row]
    assert cjk and cjk[0].split()[-5:-2] == ["yes", "yes", "yes"]  # embedded, subset, with a ToUnicode map
    text = pdftext(path)
    bill = season_run.bill_of("V01")
    assert "农业用水水费通知单" in text and "张庄村" in text and "骨干工程水价" in text and "累计用水量与定额" in text
    assert "朝城镇 (T1)" in text  # the township by its name, not only its id
    assert str(bill.total) in text and f"{bill.bill_id}" in text
    png = tmp_path / "page"
    subprocess.run(["pdftoppm", "-r", "40", "-png", "-singlefile", str(path), str(png)], check=True)
    assert png.with_suffix(".png").stat().st_size > 10_000


@pytest.mark.parametrize("locale, items, marker", [("zh", ("骨干工程水价", "末级渠系水价"), "（分摊损失）"),
                                                  ("en", ("backbone works", "terminal canals"), "(loss share)")])
def test_a_loss_line_is_marked_on_a_line_of_its_own_in_the_item_column(demo, season_run, tmp_path, locale, items, marker):
    """The marker on a line below the item: in one line it ran over into the band column."""
    path = next(p for p in write_pdfs(demo, _only(season_run, "V15-B2"), tmp_path, locale=locale, workers=1) if p.stem == "V15-B2")
    rows = pdftext(path).splitlines()
    marked = [i for i, row in enumerate(rows) if marker in row]
    assert len(marked) == 2  # its two loss lines, one per price component
    for i, item in zip(marked, items, strict=True):
        assert rows[i].strip() == marker, rows[i - 2:i + 3]  # alone on its line
        assert any(item in row for row in rows[i - 2:i]), rows[i - 2:i + 3]  # below its item and the line's figures


def test_pdf_in_english_and_byte_identical_rerender(demo, season_run, tmp_path):
    [a] = write_pdfs(demo, _only(season_run, "OP1"), tmp_path / "a", locale="en", workers=1)
    [b] = write_pdfs(demo, _only(season_run, "OP1"), tmp_path / "b", locale="en", workers=1)
    assert a.read_bytes() == b.read_bytes()
    text = pdftext(a)
    assert "Irrigation water bill" in text and "water-saving reward" in text and "鲁西农业合作社" in text


def test_blocked_bill_pdf_says_why(demo, season_run, tmp_path):
    from billing.pdf import bill_context

    doc = season_run.bill_of("V02").to_dict() | {"blocked": True, "blocked_reason": "V02-IN coverage 50% below 90%", "lines": []}
    path = render_bill(doc, bill_context(demo, season_run), tmp_path / "V02.pdf")
    assert "本账单暂停出具" in pdftext(path) and "V02-IN coverage 50%" in pdftext(path)


def test_a_blocked_bill_says_why_in_chinese_by_its_codes(demo, season_run, tmp_path):
    half = PointVolume("V02-IN", VolumeResult(150_000.0, 0.5, 0.0, "flow", [(season_run.t0_ms, season_run.t1_ms)], True, 999), MONTHS)
    run = build_run(demo, season_run.points | {"V02-IN": half}, season_run.t0_ms, season_run.t1_ms, season=demo.seasons["2026-spring"],
                    as_of_ms=season_run.t1_ms)
    bill = run.bill_of("V02")
    assert bill.blocked_reason == "V02-IN coverage 50% below 90% (1 gap(s)): fill or estimate the gaps (VEE) and rerun"  # stored in English
    [path] = [p for p in write_pdfs(demo, _only(run, "V02"), tmp_path, workers=1) if p.name == "V02.pdf"]
    text = "".join(pdftext(path).split())
    assert "本账单暂停出具：V02-IN数据覆盖率50%，低于90%（1处缺测）：请补测或估算缺测数据（数据核查）后重新计费" in text and "coverage" not in text


def test_xlsx_keeps_a_formula_like_name_as_text(season_run):
    import io

    from openpyxl import load_workbook

    from billing.exports import write_xlsx

    hostile = '=HYPERLINK("http://evil.example","click")'
    doc = season_run.bill_of("V01").to_dict()
    doc["unit"]["name"] = hostile
    out = io.BytesIO()
    write_xlsx(season_run.document().model_dump(mode="json"), [doc], out)
    cell = load_workbook(io.BytesIO(out.getvalue()))["Bills"]["C2"]
    assert cell.value == hostile and cell.data_type == "s"


def test_xlsx_lines_add_up_to_bills(season_run, tmp_path):
    from openpyxl import load_workbook

    write_outputs(season_run, tmp_path)
    wb = load_workbook(tmp_path / "bills.xlsx", read_only=True)
    bills = {r[1]: r for r in wb["Bills"].iter_rows(min_row=2, values_only=True)}
    sums: dict[str, Decimal] = {}
    for r in wb["Lines"].iter_rows(min_row=2, values_only=True):
        sums[r[2]] = sums.get(r[2], Decimal(0)) + Decimal(str(r[9]))
    assert set(sums) <= set(bills) and set(bills) - set(sums) == {"V15"}  # V15 passes all its water down: a bill without lines
    for unit, row in bills.items():
        assert Decimal(str(row[8])).quantize(Decimal("0.01")) == sums.get(unit, Decimal(0)) == season_run.bill_of(unit).total
    assert dict(wb["Run"].iter_rows(values_only=True))["run_id"] == season_run.run_id
    towns = {r[0]: r for r in wb["Townships"].iter_rows(min_row=2, values_only=True)}
    assert set(towns) == {"T1", "T2", "T3"} and towns["T1"][1] == 9  # V01..V05, V15 and the bills below it (2 blocks, 1 metered household)
    assert towns["T1"][3] == float(sum(season_run.bill_of(u).quota_m3 for u in ("V01", "V02", "V03", "V04", "V05", "V15")))  # blocks' quotas are inside V15's
    assert sum(Decimal(str(r[4])).quantize(Decimal("0.01")) for r in towns.values()) == season_run.total


def test_explain_traces_a_line_to_the_readings(influx, demo, ledger_url):
    from test_billing_run import T0, T1, all_meters  # the same synthetic meters

    for point, meter in all_meters(demo).items():
        write_meter(influx, demo, point, meter, T0 - 60 * MIN, T1 + 60 * MIN)
    run = run_billing(demo, influx, T0, T1, ledger_url=ledger_url, as_of_ms=T1 + 60 * MIN)
    bill = run.bill_of("V01")
    line_id = bill.line_id(1)
    ex = explain_line(open_ledger(ledger_url), line_id, influx)
    assert ex["line"]["amount"] == str(bill.lines[0].amount)
    assert ex["allocations"][0]["point"] == "V01-IN"
    readings = ex["readings"]["V01-IN"]
    assert readings["counts"]["good"] == (T1 - T0) // (5 * MIN) + 1 and readings["counts"]["bad"] == 0
    assert readings["first"]["time"] == T0
    text = format_explanation(ex)
    assert line_id in text and "totaliser_rollover" in text and "rounded half up" in text
    with pytest.raises(LedgerError, match="there is no line 99"):
        explain_line(open_ledger(ledger_url), bill.line_id(99))
    with pytest.raises(LedgerError, match="not a bill line id"):
        explain_line(open_ledger(ledger_url), "nonsense")


def _only(run, unit_id):
    from dataclasses import replace

    bill = run.bill_of(unit_id)
    return replace(run, bills=(bill,), statements=tuple(s for s in run.statements if s.bill_id == bill.bill_id))


def test_notes_are_in_chinese_on_a_chinese_bill_by_their_code(season_run):
    from billing.notes import localize, note_codes

    doc = season_run.bill_of("V02").to_dict()  # over quota
    [over] = doc["notes"]
    assert over == f"use {doc['volume_m3']} m3 exceeds quota {doc['quota_m3']} m3: subsidy and reward refused"  # the stored English
    assert doc["note_codes"][over] == {"code": "tariff.over_quota", "params": {"use": doc["volume_m3"], "quota": doc["quota_m3"]}}
    assert localize(over, note_codes(doc), "zh") == f"用水量 {doc['volume_m3']} m³ 超过定额 {doc['quota_m3']} m³：不享受精准补贴和节水奖励"
    assert localize(over, note_codes(doc), "en") == over
    # a note without a code (an older ledger's document) is shown as stored, in either language
    assert localize(over, {}, "zh") == over


def test_a_chinese_bill_prints_its_notes_by_code_and_no_zero_reward_line(demo, season_run, tmp_path):
    from grid_layouts import write_grid
    from test_grid import COST_SUBSIDY, G1, run_of

    from canalflow.district import load_district

    # V01 one m3 short of its season quota: its cash crops earn less than half a fen, a reward line of 0.00
    short = float(season_run.bill_of("V01").quota_m3 - 1)
    points = season_run.points | {"V01-IN": PointVolume("V01-IN", VolumeResult(short, 0.98, 0.01, "flow", [], False, 999), MONTHS)}
    run = build_run(demo, points, season_run.t0_ms, season_run.t1_ms, season=demo.seasons["2026-spring"], as_of_ms=season_run.t1_ms)
    v01 = run.bill_of("V01").to_dict()
    [zero] = [ln for ln in v01["lines"] if ln["kind"] == "reward" and ln["amount"] == "0.00"]  # the stored bill keeps it
    [path] = [p for p in write_pdfs(demo, _only(run, "V01"), tmp_path / "v01", workers=2) if p.name == "V01.pdf"]
    labels = {ln["id"].rsplit("-", 1)[1] for ln in v01["lines"]}
    printed = {line.split()[0] for line in pdftext(path).splitlines() if line.split()}
    assert printed & labels == labels - {zero["id"].rsplit("-", 1)[1]}
    # a subsidy budget shared pro rata: the bill's note in Chinese, in the district's language
    (tmp_path / "grid").mkdir()
    district = load_district(write_grid(tmp_path / "grid", ('subsidy: {grain_per_m3: "0.020"}', COST_SUBSIDY % "")))
    grid = run_of(district, G1, default=0.0)
    c1 = grid.bill_of("G2-C1")
    [budget] = [n for n in c1.notes if "exceed the season budget" in n]
    [path] = [p for p in write_pdfs(district, _only(grid, "G2-C1"), tmp_path / "c1", workers=1) if p.name == "G2-C1.pdf"]
    text = "".join(pdftext(path).split())
    assert "精准补贴申请合计3050.00元超过本季预算2000.00元：按比例65.5738%支付" in text and "exceed" not in text
    assert budget == "subsidy claims 3050.00 exceed the season budget 2000.00: paid pro rata 65.5738%"  # stored as before
