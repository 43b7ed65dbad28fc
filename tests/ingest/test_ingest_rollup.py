"""Rollups from real ingested readings: interval volumes, reach balances, and late data recomputing only its windows.

The load generator's totaliser rises 0.6 m³ per reading for every point; with a reading every
10 minutes a local day holds 144 steps = 86.4 m³ and an hour 3.6 m³.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ingest_helpers import DEMO, publish, run_cli, wait_for_rows

from canalflow.contract import M, source_of
from canalflow.district import load_district
from canalflow.influx import InfluxV1

DAY1 = 1_772_294_400_000  # 2026-03-01T00:00+08:00, the demo district's midnight (Asia/Shanghai)
DAY2 = DAY1 + 86_400_000
STEP = 600_000
DAY_M3 = 144 * 0.6
DISTRICT = load_district(DEMO)
POINTS = list(DISTRICT.points)


def volumes(influx: InfluxV1, interval: str) -> dict[tuple[str, int], dict]:
    rows = influx.query_points(f'SELECT * FROM {source_of(M.volume)} WHERE "interval" = \'{interval}\' GROUP BY "point"')
    return {(r["point"], r["time"]): r for r in rows}


def balances(influx: InfluxV1) -> dict[tuple[str, int], dict]:
    rows = influx.query_points(f'SELECT * FROM {source_of(M.balance)} GROUP BY "reach"')
    return {(r["reach"], r["time"]): r for r in rows}


def rollup(influx: InfluxV1, *args: str) -> str:
    done = run_cli("ingest", "rollup", "--district", str(DEMO), "--influx", influx.url, "--db", influx.database, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_rollup_writes_hour_and_day_volumes_and_reach_balances(mqtt_url: str, influx: InfluxV1, start_ingest) -> None:
    ingest = start_ingest(mqtt_url, influx)
    publish(mqtt_url, "--district", str(DEMO), "--messages", "17", "--readings", "17", "--start-ms", str(DAY1),
            "--step-ms", str(STEP))  # 289 readings: two whole days, both ends included
    wait_for_rows(influx, len(POINTS) * 289, ingest=ingest)
    out = rollup(influx, "--from", "2026-03-01T00:00:00+08:00", "--to", "2026-03-03T00:00:00+08:00")
    assert "for 2 day(s)" in out

    days = volumes(influx, "1d")
    assert len(days) == 2 * len(POINTS)
    for (point, t0), row in days.items():
        assert t0 in (DAY1, DAY2)
        assert row["volume_m3"] == pytest.approx(DAY_M3), point
        assert (row["method"], row["coverage"], row["incomplete"]) == ("totaliser", 1.0, False)
        assert row["canal"] == DISTRICT.points[point].canal
    hours = volumes(influx, "1h")
    assert len(hours) == 48 * len(POINTS)
    assert all(r["volume_m3"] == pytest.approx(3.6) for r in hours.values())

    bal = balances(influx)
    assert len(bal) == 2 * sum(1 for r in DISTRICT.reaches if DISTRICT.reach_balance_points(r.canal, r.reach.id)[0])
    inflow, outflow = DISTRICT.reach_balance_points("M1", "M1-R1")
    row = bal[("M1-R1", DAY1)]
    assert row["in_m3"] == pytest.approx(DAY_M3 * len(inflow))
    assert row["out_m3"] == pytest.approx(DAY_M3 * len(outflow))
    assert row["eta"] == pytest.approx(len(outflow) / len(inflow))
    assert row["data_error"] is (len(outflow) > len(inflow))
    ingest.stop()


def test_late_backlog_recomputes_the_windows_it_touches_and_no_others(
    mqtt_url: str, influx: InfluxV1, start_ingest, tmp_path: Path
) -> None:
    store = tmp_path / "state.sqlite"
    ingest = start_ingest(mqtt_url, influx, deadletter=store)
    others = [p for p in POINTS if p != "V01-IN"]
    publish(mqtt_url, "--district", str(DEMO), "--points", ",".join(others), "--messages", "17", "--readings", "17",
            "--start-ms", str(DAY1), "--step-ms", str(STEP))
    # V01-IN's gateway was offline on day 1: only day 2 arrives live (reading numbers continue at 144)
    publish(mqtt_url, "--district", str(DEMO), "--points", "V01-IN", "--messages", "1", "--readings", "145",
            "--start-ms", str(DAY1), "--step-ms", str(STEP), "--first-index", "144")
    wait_for_rows(influx, len(others) * 289 + 145, ingest=ingest)
    rollup(influx, "--dirty", "--store", str(store))
    before_days, before_hours, before_bal = volumes(influx, "1d"), volumes(influx, "1h"), balances(influx)
    assert before_days[("V01-IN", DAY1)]["incomplete"] is True
    assert before_days[("V01-IN", DAY1)]["volume_m3"] == pytest.approx(0.0)
    assert before_days[("V01-IN", DAY2)]["volume_m3"] == pytest.approx(DAY_M3)
    assert "recomputed 0 day(s)" in rollup(influx, "--dirty", "--store", str(store)), "nothing new, nothing recomputed"

    # the gateway comes back and replays day 1 as a historical backlog
    publish(mqtt_url, "--district", str(DEMO), "--points", "V01-IN", "--messages", "8", "--readings", "18",
            "--start-ms", str(DAY1), "--step-ms", str(STEP), "--historical")
    wait_for_rows(influx, len(others) * 289 + 289, ingest=ingest)
    rollup(influx, "--dirty", "--store", str(store))
    after_days, after_hours, after_bal = volumes(influx, "1d"), volumes(influx, "1h"), balances(influx)

    assert after_days[("V01-IN", DAY1)]["volume_m3"] == pytest.approx(DAY_M3)
    assert after_days[("V01-IN", DAY1)]["incomplete"] is False
    assert after_days[("V01-IN", DAY2)]["volume_m3"] == pytest.approx(DAY_M3)
    assert all(after_hours[("V01-IN", DAY1 + h * 3_600_000)]["volume_m3"] == pytest.approx(3.6) for h in range(24))
    v01_reaches = {x.reach.id for x in DISTRICT.reaches
                   if any(p.id == "V01-IN" for side in DISTRICT.reach_balance_points(x.canal, x.reach.id) for p in side)}
    assert v01_reaches == {"L11-R1"}
    assert after_bal[("L11-R1", DAY1)]["out_m3"] == pytest.approx(before_bal[("L11-R1", DAY1)]["out_m3"] + DAY_M3)

    # no other point's rows and no other reach's balances were rewritten
    for key, row in before_days.items():
        if key[0] != "V01-IN":
            assert after_days[key] == row, key
    for key, row in before_hours.items():
        if key[0] != "V01-IN":
            assert after_hours[key] == row, key
    for key, row in before_bal.items():
        if key[0] not in v01_reaches:
            assert after_bal[key] == row, key
    ingest.stop()


def test_level_only_readings_are_rated_with_the_points_rating(influx: InfluxV1) -> None:
    from canalflow import ratings
    from canalflow.contract import Reading, ReadingBatch, reading_lines

    point = DISTRICT.points["L11-HEAD"]  # radar level at a 610 mm Parshall flume
    batch = ReadingBatch(district="demo", gateway=point.gateway, point=point.id, seq=0, readings=tuple(
        Reading(ts=DAY1 + i * STEP, values={"level": 0.42}) for i in range(145)))
    influx.write_lines(reading_lines(batch, point.canal, point.role.value))
    rollup(influx, "--from", "2026-03-01T00:00:00+08:00", "--to", "2026-03-02T00:00:00+08:00", "--intervals", "1d")
    row = volumes(influx, "1d")[("L11-HEAD", DAY1)]
    q = ratings.flow(ratings.parse_rating(point.ratings[0].model_dump()), 0.42).flow_m3s
    assert q > 0
    assert (row["method"], row["coverage"]) == ("flow", 1.0)
    assert row["volume_m3"] == pytest.approx(q * 86_400, rel=1e-9)
