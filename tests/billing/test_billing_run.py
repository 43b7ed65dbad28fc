"""Billing runs against a real InfluxDB: readings -> volumes -> allocation -> bills -> files and ledger."""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal

import pytest
from billing_synth import MIN, Meter, write_meter

from billing.ledger import LedgerError, open_ledger
from billing.run import run_billing
from billing.window import DAY_MS, season_window
from canalflow.cli import main as canalflow
from canalflow.contract import M, line, policy_of, source_of
from canalflow.influx import InfluxV1
from testbed.steady import below_meters

HOUR = 3_600_000
# A spring-season day, 06:00 to 12:00 Beijing time.
T0 = int(dt.datetime(2026, 3, 12, 6, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp() * 1000)
T1 = T0 + 6 * HOUR

METERS = {
    "V01-IN": Meter(0.20, totaliser_start=42_949_000.0, rollover=42_949_672.96),  # wraps during the window
    "V02-IN": Meter(0.15),
    "V03-IN": Meter(0.25, swing=0.0),
    "V0405-IN": Meter(0.30),
    "V06-IN": Meter(0.18),
    "V07-IN": Meter(0.12),
    "WUA1-IN": Meter(0.40),
    "OP1-IN": Meter(0.50),
    "V08-IN": Meter(0.16, integer_totaliser=True),
    "V09-IN": Meter(0.14, integer_totaliser=True),
    "V10-IN": Meter(0.22, integer_totaliser=True),
    "V11-IN": Meter(0.10, integer_totaliser=True),
    "V12-IN": Meter(0.20, integer_totaliser=True),
    "V15-IN": Meter(0.09, swing=0.0),  # its sub-meters: below_meters
}


def all_meters(demo) -> dict[str, Meter]:
    """METERS and the sub-meters behind V15-IN, steady at their share of its flow."""
    return METERS | {p: Meter(q, swing=0.0) for p, q in below_meters(demo, {p: m.base_m3s for p, m in METERS.items()}).items()}


@pytest.fixture
def metered(influx: InfluxV1, demo):
    for point, meter in all_meters(demo).items():
        write_meter(influx, demo, point, meter, T0 - HOUR, T1 + HOUR)
    return influx


def test_billed_volumes_match_true_volumes_within_meter_accuracy(metered, demo, tmp_path):
    run = run_billing(demo, metered, T0, T1, out_dir=tmp_path / "out", ledger_url=f"sqlite:///{tmp_path}/ledger.db", as_of_ms=T1 + 2 * HOUR, write_kpis=True)
    assert run.season_id == "2026-spring"
    for point, meter in METERS.items():
        truth = meter.true_volume(T0, T1, T0 - HOUR)
        measured = run.points[point].result.volume_m3
        accuracy = demo.profile_of(point).accuracy_pct / 100
        assert measured == pytest.approx(truth, rel=accuracy), point
    assert "totaliser_rollover" in run.points["V01-IN"].result.flags
    # V04 and V05 share one intake, split by area 2200 : 1200 mu, exactly
    shared = run.unit_volumes["V04"] + run.unit_volumes["V05"]
    assert shared == Decimal(round(run.points["V0405-IN"].result.volume_m3))
    assert float(run.unit_volumes["V04"] / shared) == pytest.approx(2200 / 3400, abs=1e-3)
    for bill in run.bills:
        assert not bill.blocked
        assert bill.total == sum(line.amount for line in bill.lines)
    assert run.ledger_status == "created"
    rows = metered.query_points(f'SELECT volume_m3, total_yuan FROM {source_of(M.billing)} GROUP BY "unit"')
    assert {r["unit"]: r["volume_m3"] for r in rows} == {u: float(v) for u, v in run.unit_volumes.items()}
    assert sum(r["total_yuan"] for r in rows) == pytest.approx(float(run.total))


def test_billing_and_efficiency_take_the_same_point_volumes(influx, demo):
    """One volume stage: a reach's metered outflow in the efficiency report is the sum of the
    volumes billing charged for. V01-IN's totaliser wraps mid-window (a stage without the
    profile's rollover would read a reset and lose the counts before it); V08..V12 count whole m3."""
    from billing.efficiency import efficiency_from_influx

    wraps = Meter(0.20, swing=0.0, totaliser_start=42_949_672.96 - 1500.0, rollover=42_949_672.96)  # 1500 m3 after T0 - 1 h
    for point, meter in (all_meters(demo) | {"V01-IN": wraps}).items():
        write_meter(influx, demo, point, meter, T0 - HOUR, T1 + HOUR)
    run = run_billing(demo, influx, T0, T1, as_of_ms=T1 + 2 * HOUR)
    assert "totaliser_rollover" in run.points["V01-IN"].result.flags
    assert run.points["V01-IN"].result.volume_m3 == pytest.approx(wraps.true_volume(T0, T1, T0 - HOUR), rel=1e-3)
    report = efficiency_from_influx(demo, influx, T0, T1)
    compared = []
    for reach in report.reaches:
        if reach.outflow_points and set(reach.outflow_points) <= set(METERS):
            assert reach.out_m3 == sum(run.points[p].result.volume_m3 for p in reach.outflow_points), reach.reach
            compared += reach.outflow_points
    assert "V01-IN" in compared and "V08-IN" in compared and len(compared) >= 8


def test_rerun_gives_identical_bills_and_is_idempotent(metered, demo, tmp_path, ledger_url):
    first = run_billing(demo, metered, T0, T1, out_dir=tmp_path / "a", ledger_url=ledger_url, as_of_ms=T1 + HOUR)
    second = run_billing(demo, metered, T0, T1, out_dir=tmp_path / "b", ledger_url=ledger_url, as_of_ms=T1 + HOUR)
    assert first.run_id == second.run_id and second.ledger_status == "unchanged"
    for name in ["run.json", "bills.csv", "bill_lines.csv", "townships.csv", *(f"bills/{u}.json" for u in demo.units if demo.is_charged(u))]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert len(open_ledger(ledger_url).runs()) == 1


def test_output_files_are_consistent(metered, demo, tmp_path):
    run = run_billing(demo, metered, T0, T1, out_dir=tmp_path, as_of_ms=T1 + HOUR)
    with (tmp_path / "bills.csv").open(encoding="utf-8") as fh:
        rows = {r["unit_id"]: r for r in csv.DictReader(fh)}
    with (tmp_path / "bill_lines.csv").open(encoding="utf-8") as fh:
        lines = list(csv.DictReader(fh))
    for unit_id, row in rows.items():
        amounts = [Decimal(x["amount_yuan"]) for x in lines if x["unit_id"] == unit_id]
        assert Decimal(row["total_yuan"]) == sum(amounts, Decimal(0))
        assert Decimal(row["volume_m3"]) == run.unit_volumes[unit_id]
    doc = json.loads((tmp_path / "bills" / "V01.json").read_text(encoding="utf-8"))
    assert doc["unit"]["name"] == "张庄村"
    assert doc["sources"][0]["point"] == "V01-IN"


def test_gap_blocks_the_bill_and_approval(influx, demo, ledger_url):
    silent = {
        "V06-IN": lambda t: t >= T0 + 4 * HOUR,  # last reading at T0+3h55: 3h55 of 6h covered
        "V07-IN": lambda t: T0 + HOUR <= t <= T0 + 3 * HOUR,  # comm outage inside the window
    }
    for point, meter in all_meters(demo).items():
        write_meter(influx, demo, point, meter, T0 - HOUR, T1 + HOUR, skip=silent.get(point, lambda t: False))
    run = run_billing(demo, influx, T0, T1, ledger_url=ledger_url, as_of_ms=T1 + HOUR)
    bill = run.bill_of("V06")
    assert bill.blocked and "V06-IN coverage 65%" in bill.blocked_reason and bill.lines == ()
    # the totaliser counted through V07's outage: measured volume, not blocked
    v07 = run.points["V07-IN"].result
    assert not run.bill_of("V07").blocked and v07.coverage == 1.0 and v07.gaps == []
    assert v07.volume_m3 == pytest.approx(METERS["V07-IN"].true_volume(T0, T1, T0 - HOUR), rel=0.005)
    with pytest.raises(LedgerError, match="blocked bills"):
        open_ledger(ledger_url).advance(run.run_id, "approved", "clerk")


def test_lifecycle_and_adjustment_on_next_run(metered, demo, ledger_url):
    ledger = open_ledger(ledger_url)
    first = run_billing(demo, metered, T0, T1, ledger_url=ledger_url, as_of_ms=T1 + HOUR)
    with pytest.raises(LedgerError, match="can only become approved"):
        ledger.advance(first.run_id, "issued", "manager")
    with pytest.raises(LedgerError, match="rerun the draft"):
        ledger.add_adjustment(first.bill_of("V01").bill_id, Decimal("-5.00"), "over-read", "clerk")
    ledger.advance(first.run_id, "approved", "clerk")
    ledger.advance(first.run_id, "issued", "manager")
    with pytest.raises(LedgerError, match="issued is final"):
        ledger.advance(first.run_id, "approved", "clerk")
    adj_id = ledger.add_adjustment(first.bill_of("V01").bill_id, Decimal("-5.00"), "meter over-read in March", "clerk")
    second = run_billing(demo, metered, T1, T1 + HOUR, ledger_url=ledger_url, as_of_ms=T1 + 2 * HOUR)
    adj = [line for line in second.bill_of("V01").lines if line.kind == "adjustment"]
    assert len(adj) == 1 and adj[0].amount == Decimal("-5.00")
    assert ledger.bill(first.bill_of("V01").bill_id)["total"] == str(first.bill_of("V01").total)  # issued bill unchanged
    assert [e.action for e in ledger.events(first.run_id)] == ["created", "approved", "issued", "adjustment"]
    assert [w["bill_id"] for w in ledger.water_use("V01")] == [first.bill_of("V01").bill_id]
    # carried by a draft, the adjustment stays pending (a rerun of the draft carries it again) until approved
    assert [a.id for a in ledger.pending_adjustments(demo.id)] == [adj_id]
    ledger.advance(second.run_id, "approved", "clerk")
    assert ledger.pending_adjustments(demo.id) == []
    # the first run's bills are issued and unpaid: the second run knows (and refuses subsidies to) their units
    assert "V01" in second.unpaid_units and "V01" in second.manifest()["unpaid_units"]
    ledger.mark_paid(first.bill_of("V01").bill_id, "clerk")
    with pytest.raises(LedgerError, match="already paid"):
        ledger.mark_paid(first.bill_of("V01").bill_id, "clerk")
    assert "V01" not in ledger.unpaid_units(demo.id, T1)


def test_unpaid_units_get_no_subsidy_and_short_windows_a_prorated_quota(demo):
    from billing.bills import build_run
    from billing.volumes import PointVolume, charging_points
    from billing.window import quota_share
    from canalflow.volume import VolumeResult
    from testbed.steady import steady_share

    season = demo.seasons["2026-spring"]
    t0, t1 = season_window(demo, season)
    steady = steady_share(demo, 100_000.0)
    volumes = {p: PointVolume(p, VolumeResult(steady[p], 1.0, 0.0, "flow", [], False, 9)) for p in charging_points(demo)}
    run = build_run(demo, volumes, t0, t1, season=season, as_of_ms=t1, unpaid_units=["V03"])
    assert not any(line.kind == "subsidy" for line in run.bill_of("V03").lines)
    assert any("unpaid fees" in n for n in run.bill_of("V03").notes)
    assert any(line.kind == "subsidy" for line in run.bill_of("V10").lines)
    # rounds S1 (10 days), S2 (10), S3 (8): a window holding exactly S2 gets 10/28 of the quota
    s2 = season.rounds[1]
    a = int(s2.start.timestamp() * 1000)
    share = quota_share(demo, season, a - DAY_MS, a + 10 * DAY_MS + DAY_MS)
    assert share == Decimal("0.357143")
    short = build_run(demo, volumes, a - DAY_MS, a + 11 * DAY_MS, season=season, as_of_ms=t1)
    assert short.bill_of("V03").quota_m3 == (Decimal(360_000) * share).quantize(Decimal("0.001"))
    assert quota_share(demo, season, t0, t1) == 1


def test_season_window_is_local_midnight_to_midnight(demo):
    t0, t1 = season_window(demo, demo.seasons["2026-spring"])
    assert dt.datetime.fromtimestamp(t0 / 1000, dt.UTC) == dt.datetime(2026, 2, 28, 16, tzinfo=dt.UTC)
    assert (t1 - t0) == (31 + 30 + 31) * 24 * HOUR
    assert MIN == 60_000


def test_season_from_daily_rollups(influx, demo):
    t0, t1 = season_window(demo, demo.seasons["2026-spring"])
    days = (t1 - t0) // (24 * HOUR)
    lines = []
    for point in ("V01-IN", "V03-IN", "V0405-IN"):
        p = demo.points[point]
        for day in range(days):
            if point == "V03-IN" and day >= days - 15:
                continue  # V03's meter stopped reporting for the last 15 days: coverage 77/92
            tags = {"district": demo.id, "point": point, "canal": p.canal, "role": p.role.value, "interval": "1d"}
            lines.append(line(M.volume, tags, {"volume_m3": 1000.5, "coverage": 1.0, "estimated_share": 0.0}, t0 + day * 24 * HOUR))
    influx.write_lines(lines, rp=policy_of(M.volume))  # where ingest writes them
    run = run_billing(demo, influx, t0, t1, season_id="2026-spring", source="rollups", as_of_ms=t1)
    assert run.points["V01-IN"].result.volume_m3 == pytest.approx(1000.5 * days)
    assert run.unit_volumes["V01"] == Decimal(round(1000.5 * days))
    assert run.points["V03-IN"].result.coverage == pytest.approx((days - 15) / days)
    assert run.bill_of("V03").blocked
    assert run.bill_of("V02").blocked and "coverage 0%" in run.bill_of("V02").blocked_reason  # no rollups at all
    assert run.unit_volumes["V04"] + run.unit_volumes["V05"] == Decimal(round(1000.5 * days))


def test_rollups_without_coverage_field_count_intervals(influx, demo):
    t0 = T0 - 6 * HOUR  # local midnight
    p = demo.points["V02-IN"]
    tags = {"district": demo.id, "point": "V02-IN", "canal": p.canal, "role": p.role.value, "interval": "1d"}
    influx.write_lines([line(M.volume, tags, {"volume_m3": 500.0}, t0 + d * 24 * HOUR) for d in range(9)], rp=policy_of(M.volume))
    run = run_billing(demo, influx, t0, t0 + 10 * 24 * HOUR, source="rollups", as_of_ms=T1)
    result = run.points["V02-IN"].result
    assert result.volume_m3 == 4500.0 and result.coverage == pytest.approx(0.9) and not result.incomplete


def test_efficiency_from_daily_rollups(influx, demo):
    from billing.efficiency import efficiency_from_influx

    t0 = T0 - 6 * HOUR  # local midnight
    lines = []
    for p in demo.points.values():
        tags = {"district": demo.id, "point": p.id, "canal": p.canal, "role": p.role.value, "interval": "1d"}
        volume = 1000.0 if p.role.value == "intake" else 0.0
        lines += [line(M.volume, tags, {"volume_m3": volume, "coverage": 1.0, "estimated_share": 0.0}, t0 + d * 24 * HOUR) for d in range(2)]
    influx.write_lines(lines, rp=policy_of(M.volume))
    report = efficiency_from_influx(demo, influx, t0, t0 + 2 * 24 * HOUR, source="rollups")
    # every intake delivers but no diversion measured anything: out > in, flagged, never a gain
    l11 = next(r for r in report.reaches if r.canal == "L11")
    assert l11.out_m3 == 4000.0 and l11.in_m3 == 0.0 and l11.eta is None and "eta_above_1" in l11.flags
    assert any("L11/L11-R1: 4000 m3 out for 0 m3 in is a data error" in w for w in report.warnings)
    assert report.canals["L11"].value is None and "no inflow" in report.canals["L11"].note
    with pytest.raises(ValueError, match="needs raw readings"):
        efficiency_from_influx(demo, influx, t0, t0 + DAY_MS, source="rollups", travel_time=True)


def test_rollups_ingest_writes_bill_like_the_readings(influx, demo, capsys):
    """Production layout: the fixture's database is made by `ingest setup`, the readings go where ingest
    writes them, `ingest rollup` writes the daily rollups into their policy, and billing finds them there."""
    t0 = T0 - 6 * HOUR  # local midnight, 2026-03-12
    t1 = t0 + 3 * DAY_MS
    for point, meter in all_meters(demo).items():
        write_meter(influx, demo, point, meter, t0 - HOUR, t1 + HOUR, step_ms=10 * MIN)
    local = dt.timezone(dt.timedelta(hours=8))
    window = [dt.datetime.fromtimestamp(t / 1000, local).isoformat() for t in (t0, t1)]
    assert canalflow(["ingest", "rollup", "--district", str(demo.path), "--influx", influx.url, "--db", influx.database,
                      "--from", window[0], "--to", window[1], "--intervals", "1d"]) == 0
    assert "retention policy 'rollups'" in capsys.readouterr().out
    by_readings = run_billing(demo, influx, t0, t1, as_of_ms=t1 + HOUR)
    by_rollups = run_billing(demo, influx, t0, t1, source="rollups", as_of_ms=t1 + HOUR)
    for point in METERS:
        assert by_rollups.points[point].result.volume_m3 == pytest.approx(by_readings.points[point].result.volume_m3, rel=1e-9), point
        assert by_rollups.points[point].result.coverage == pytest.approx(1.0), point

    def summary(run):
        return [(b.unit_id, b.volume_m3, b.total, bool(b.blocked_reason)) for b in run.bills]

    assert summary(by_rollups) == summary(by_readings)
    assert sum(not b.blocked_reason for b in by_rollups.bills) >= len(METERS) - 1  # the metered units are billed, not blocked


def test_a_draft_superseded_by_a_newer_run_carrying_its_adjustment_cannot_be_approved(metered, demo, ledger_url):
    ledger = open_ledger(ledger_url)
    first = run_billing(demo, metered, T0, T0 + 3 * HOUR, ledger_url=ledger_url, as_of_ms=T1 + HOUR)
    ledger.advance(first.run_id, "approved", "clerk")
    ledger.advance(first.run_id, "issued", "manager")
    ledger.add_adjustment(first.bill_of("V01").bill_id, Decimal("-5.00"), "meter over-read", "clerk")
    older = run_billing(demo, metered, T0 + 3 * HOUR, T0 + 4 * HOUR, ledger_url=ledger_url, as_of_ms=T1 + HOUR)
    newer = run_billing(demo, metered, T0 + 3 * HOUR, T0 + 5 * HOUR, ledger_url=ledger_url, as_of_ms=T1 + HOUR)
    for run in (older, newer):
        assert [line.amount for line in run.bill_of("V01").lines if line.kind == "adjustment"] == [Decimal("-5.00")]
    with pytest.raises(LedgerError, match="carried by the newer run"):
        ledger.advance(older.run_id, "approved", "clerk")
    ledger.advance(newer.run_id, "approved", "clerk")
    assert ledger.pending_adjustments(demo.id) == []
