"""Versioned ratings (history recomputed from raw levels) and VEE."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from billing_synth import DEMO

from billing.hydrometry import rerate
from billing.volumes import compute_point_volumes
from canalflow.contract import Quality
from canalflow.district import load_district
from canalflow.volume import Series

CST = dt.timezone(dt.timedelta(hours=8))
DAY = 86_400_000
MIDNIGHT_12 = int(dt.datetime(2026, 3, 12, tzinfo=CST).timestamp() * 1000)


@pytest.fixture(scope="module")
def rerated_district(tmp_path_factory):
    text = DEMO.read_text(encoding="utf-8")
    old = "feeds: L11, gateway: GW-B1, unit_id: 1, profile: radar-parshall, ratings: [{type: parshall, throat_mm: 610}]}"
    assert old in text
    new = old.replace("[{type: parshall, throat_mm: 610}]", "[{type: parshall, throat_mm: 610}, {type: parshall, throat_mm: 914, valid_from: 2026-03-12}]")
    path = tmp_path_factory.mktemp("district") / "rerated.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return load_district(path)


def level_series(t0: int, t1: int, level: float, reported_flow: float, step: int = 600_000, downstream: float | None = None) -> Series:
    ts = np.arange(t0, t1 + 1, step, dtype=np.int64)
    values = {"level": np.full(len(ts), level), "flow": np.full(len(ts), reported_flow)}
    if downstream is not None:
        values["downstream_level"] = np.full(len(ts), downstream)
    return Series(ts, values, np.zeros(len(ts), dtype=np.int8))


def test_each_reading_is_rated_by_the_version_in_force(rerated_district):
    t0, t1 = MIDNIGHT_12 - DAY, MIDNIGHT_12 + DAY
    series = level_series(t0, t1, 0.5, reported_flow=9.99)  # the edge's provisional flow is ignored
    rated, uses = rerate(rerated_district, "L11-HEAD", series)
    q610, q914 = 1.428 * 0.5**1.550, 2.184 * 0.5**1.566
    before = rated.ts_ms < MIDNIGHT_12
    assert np.allclose(rated.values["flow"][before], q610) and np.allclose(rated.values["flow"][~before], q914)
    assert [(u.version, u.valid_from, u.readings) for u in uses] == [(0, None, 144), (1, "2026-03-12", 145)]
    volumes = compute_point_volumes(rerated_district, {"L11-HEAD": series}, t0, t1)
    pv = volumes["L11-HEAD"]
    # trapezoids: the 10 minutes before midnight ramp from the old rating's flow to the new one's
    assert pv.result.volume_m3 == pytest.approx(q610 * 85_800 + (q610 + q914) / 2 * 600 + q914 * 86_400, rel=1e-9)
    assert [r["valid_from"] for r in pv.summary()["ratings"]] == [None, "2026-03-12"]


def test_submerged_flume_readings_become_suspect(demo):
    series = level_series(MIDNIGHT_12, MIDNIGHT_12 + DAY, 0.5, 1.0, downstream=0.45)  # Hb/Ha 0.9 > 0.7
    rated, uses = rerate(demo, "L11-HEAD", series)
    assert np.all(rated.qcode == Quality.suspect.code) and uses[0].submerged == len(series)


def test_points_without_level_keep_their_flow(demo):
    ts = np.array([0, 600_000], dtype=np.int64)
    series = Series(ts, {"flow": np.array([1.0, 1.0])}, np.zeros(2, dtype=np.int8))
    assert rerate(demo, "L11-HEAD", series) == (series, [])
    assert rerate(demo, "V01-IN", series) == (series, [])


# --- VEE -----------------------------------------------------------------------------------------

def flow_series(flows, step=600_000, q=None):
    ts = np.arange(0, len(flows) * step, step, dtype=np.int64)
    return Series(ts, {"flow": np.array(flows, dtype=float)}, np.array(q or [0] * len(flows), dtype=np.int8))


def test_validation_rules_by_hand(demo):
    from billing.vee import STUCK_READINGS, validate_series

    flows = [1.0, 1.1, -0.2, -0.3, 1.2, 300.0, 1.3] + [2.5] * STUCK_READINGS + [0.0, 0.0]
    series = flow_series(flows)
    found = {(f.rule, f.start_ms // 600_000, f.end_ms // 600_000) for f in validate_series(demo, "V01-IN", series, 0, len(flows) * 600_000)}
    assert ("range", 2, 3) in found  # reverse flow, readings 2..3
    assert ("range", 5, 5) in found  # above the 240 m3/s headworks capacity
    assert ("rate_of_change", 5, 6) in found  # up by 298.8, then down again
    assert ("stuck", 7, 7 + STUCK_READINGS - 1) in found
    assert not any(rule == "stuck" and a >= 7 + STUCK_READINGS for rule, a, _ in found)  # zeros are not stuck


def test_validation_reports_gaps_and_totaliser_events(demo):
    from billing.vee import validate_series
    from canalflow.volume import window_volume

    ts = np.array([0, 600_000, 1_200_000, 9_000_000], dtype=np.int64)
    series = Series(ts, {"totaliser": np.array([42_949_600.0, 42_949_672.0, 10.0, 500.0])}, np.zeros(4, dtype=np.int8))
    result = window_volume(series, 0, 9_000_000, max_gap_ms=3_600_000, rollover_m3=42_949_672.96)
    rules = {f.rule for f in validate_series(demo, "V01-IN", series, 0, 9_000_000, result)}
    assert {"totaliser_rollover"} <= rules and "gap" not in rules  # the totaliser bridged the outage inside the window


def _write_l21(influx, demo, t0, t1, silent_v06):
    from billing_synth import Meter, write_meter

    write_meter(influx, demo, "L21-HEAD", Meter(0.40, swing=0.0), t0 - 3_600_000, t1 + 3_600_000)
    write_meter(influx, demo, "V07-IN", Meter(0.15, swing=0.0), t0 - 3_600_000, t1 + 3_600_000)
    write_meter(influx, demo, "V06-IN", Meter(0.20, swing=0.0), t0 - 3_600_000, t1 + 3_600_000, skip=silent_v06)


def test_long_gap_estimated_from_the_balance_of_neighbours(influx, demo):
    from billing.notes import localize
    from billing.run import run_billing
    from canalflow.seepage import canal_law, required_inflow_m3s

    t0, t1 = MIDNIGHT_12, MIDNIGHT_12 + DAY
    _write_l21(influx, demo, t0, t1, silent_v06=lambda t: t >= t0 + 12 * 3_600_000)
    run = run_billing(demo, influx, t0, t1, as_of_ms=t1 + DAY)
    v06 = run.points["V06-IN"].result
    assert v06.method == "balance_estimate" and v06.estimated_share == 1.0
    # the estimate is what the soil law lets L21's 0.40 m3/s deliver at V06 (km 2) besides V07's 0.15 (km 3.8)
    needed = required_inflow_m3s(canal_law(demo, "L21"), 0.0, 4.0, [(2.0, v06.volume_m3 / 86_400), (3.8, 0.15)])
    assert needed == pytest.approx(0.40, rel=1e-6)
    assert 0.40 * 86_400 - 0.15 * 86_400 - v06.volume_m3 > 0.01 * 86_400  # less some seepage
    assert not run.bill_of("V06").blocked and run.bill_of("V06").volume_m3 == round(v06.volume_m3)
    assert any("V06-IN: estimated from the balance of reach L21/L21-R1" in e for e in run.vee.estimates)
    assert any(f.point == "V06-IN" and f.rule == "gap" for f in run.vee.findings)
    manifest = run.manifest()
    [estimate] = manifest["vee"]["estimates"]
    assert manifest["note_codes"][estimate]["code"] == "vee.balance_estimate"  # as the VEE page shows it in Chinese:
    assert localize(estimate, manifest["note_codes"], "zh").startswith("V06-IN：按渠段 L21/L21-R1（L21-HEAD, V07-IN）的水量平衡扣除预计渗漏估算为")


def test_manual_edit_replaces_the_gap_and_keeps_the_raw_readings(influx, demo, ledger_url):
    from billing.ledger import LedgerError, open_ledger
    from billing.run import run_billing
    from canalflow.contract import M

    t0, t1 = MIDNIGHT_12, MIDNIGHT_12 + DAY
    half = t0 + 12 * 3_600_000
    _write_l21(influx, demo, t0, t1, silent_v06=lambda t: t >= half)
    url = ledger_url
    ledger = open_ledger(url)
    before = run_billing(demo, influx, t0, t1, ledger_url=url, as_of_ms=t1 + DAY)
    with pytest.raises(LedgerError, match="named user and a reason"):
        ledger.add_edit(demo.id, "V06-IN", half, t1, 8000.0, "li", " ")
    ledger.add_edit(demo.id, "V06-IN", half, t1, 8000.0, "li", "meter battery flat; volume from the village's gate log")
    after = run_billing(demo, influx, t0, t1, ledger_url=url, as_of_ms=t1 + DAY)
    v06 = after.points["V06-IN"].result
    # the last reading is 5 minutes before the edit starts: those 5 minutes stay a gap
    assert v06.method == "manual_edit" and v06.coverage == pytest.approx(1 - 300 / 86_400)
    assert v06.volume_m3 == pytest.approx(0.20 * (43_200 - 300) + 8000.0, rel=1e-9)
    assert after.run_id != before.run_id and [e.user for e in after.vee.edits] == ["li"]
    raw = influx.query_points(f'SELECT count(flow) AS n FROM "{M.readings}" WHERE point = \'V06-IN\'')
    assert raw[0]["n"] == (half - (t0 - 3_600_000)) // 300_000  # untouched: readings up to the outage only


def test_a_reset_high_in_the_totaliser_span_is_a_reset_for_billing_and_efficiency_alike(influx, demo):
    """V03-IN's totaliser stands above half its 42,949,672.96 m3 span when its memory is cleared: the drop
    to 0 also fits a wrap, but a wrap would mean 18 million m3 in five minutes, more than canal L12 can
    carry. The volume method reads a reset, once, for the bill and the canal balance alike."""
    from billing_synth import Meter, write_meter

    from billing.edits import Edit
    from billing.efficiency import efficiency_from_influx
    from billing.run import run_billing

    hour = 3_600_000
    t0 = int(dt.datetime(2026, 3, 12, 6, tzinfo=demo.tz).timestamp() * 1000)
    t1, reset = t0 + 6 * hour, t0 + 3 * hour
    write_meter(influx, demo, "V03-IN", Meter(0.2, swing=0.0, totaliser_start=24_737_712.65), t0 - hour, reset - 1)
    write_meter(influx, demo, "V03-IN", Meter(0.2, swing=0.0, totaliser_start=0.0), reset, t1 + hour)
    write_meter(influx, demo, "V15-IN", Meter(0.0, swing=0.0), t0 - hour, t1 + hour)  # L12's other offtake, shut
    true_m3 = 0.2 * (t1 - t0) / 1000
    billed = run_billing(demo, influx, t0, t1).points["V03-IN"].result
    assert "totaliser_reset" in billed.flags and "totaliser_rollover" not in billed.flags
    lost = 0.2 * 300  # counted between the last reading and the reset: cleared with the memory
    assert billed.volume_m3 == pytest.approx(true_m3 - lost, rel=1e-3)  # not 18 million m3
    report = efficiency_from_influx(demo, influx, t0, t1)
    l12 = next(r for r in report.reaches if r.canal == "L12")
    assert l12.outflow_points == ("V03-IN", "V15-IN") and l12.out_m3 == pytest.approx(billed.volume_m3)
    assert any(w.startswith("V03-IN: totaliser_reset") for w in report.warnings)
    # a clerk's manual edit of the lost minutes (kept in the ledger; `billing efficiency --ledger`) puts them back
    edit = Edit(1, "V03-IN", reset - 300_000, reset, lost, "clerk-li", "minutes cleared by the reset, from the flow")
    l12 = next(r for r in efficiency_from_influx(demo, influx, t0, t1, edits=[edit]).reaches if r.canal == "L12")
    assert l12.out_m3 == pytest.approx(true_m3, rel=1e-3)
