"""The thin path end to end, as deployed: fleet -> edge agents -> Mosquitto -> ingest -> InfluxDB ->
billing, for one accelerated simulated hour of an irrigation round on the demo district.

Every part runs as its own process with the command line an operator would use (testbed.pipeline).
The billed volume of every unit must equal the simulator's true volume within the stated accuracy of
the meters that charge it.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest

from billing.bills import tree_bills
from billing.run import run_billing
from canalflow.contract import M, source_of
from canalflow.district import District, load_district
from firmware_sim.truth import Truth
from testbed.demo import DEMO_START
from testbed.pipeline import Pipeline, run_canalflow

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo-district.yaml"
SPEED = 120.0  # one simulated hour in 30 s
SEED = 3
MINUTE_MS = 60_000


@pytest.fixture(scope="module")
def district() -> District:
    return load_district(DEMO)


@pytest.fixture(scope="module")
def one_hour(district, mosquitto, influxd, tmp_path_factory):
    """Run the pipeline for one simulated hour; yield (pipeline, billing window)."""
    workdir = tmp_path_factory.mktemp("e2e")
    pipeline = Pipeline(district, workdir, mosquitto, influxd, "e2e_skeleton")
    began, ended = pipeline.run_once(DEMO_START, SPEED, 3600, seed=SEED)
    # Whole minutes well inside the polled span, so both window edges have readings around them.
    t0 = began + 5 * MINUTE_MS - began % MINUTE_MS
    t1 = ended - 5 * MINUTE_MS - ended % MINUTE_MS
    yield pipeline, (t0, t1)
    pipeline.influx.drop_database()


def test_every_meter_reported_at_its_interval(district, one_hour):
    pipeline, _ = one_hour
    rows = pipeline.influx.query(f'SELECT count("qcode") FROM "{M.readings}" GROUP BY "point"')
    counts = {row["tags"]["point"]: row["values"][0][1] for row in rows}
    assert set(counts) == set(district.points)
    # Polled every simulated minute for an hour (agents start within a few simulated minutes).
    assert min(counts.values()) >= 45, counts


def test_billed_volume_equals_true_volume_within_meter_accuracy(district, one_hour, tmp_path):
    pipeline, (t0, t1) = one_hour
    run = run_billing(district, pipeline.influx, t0, t1, out_dir=tmp_path / "bills")
    truth = Truth(district, seed=SEED)
    checked = 0
    for unit in district.root_units:  # with the entities below it, billed what its intake measured
        bills = tree_bills(district, run, unit.id)
        assert not any(b.blocked for b in bills), [(b.blocked_reason, b.sources, t0, t1) for b in bills]
        volume = sum(b.volume_m3 for b in bills)
        true_m3 = sum(true_unit_share(district, truth, unit.id, p, t0, t1) for p in unit.charging_points)
        accuracy = max(district.profile_of(p).accuracy_pct for p in unit.charging_points) / 100
        assert true_m3 > 100, f"{unit.id} should be irrigating in round S1"
        tolerance = accuracy * true_m3 + 1.0  # + the 1 m3 quantum a bill volume is rounded to
        assert abs(float(volume) - true_m3) <= tolerance, (unit.id, volume, true_m3)
        charges = [line for bill in bills for line in bill.lines if line.kind in ("charge", "loss")]
        assert sum(line.volume_m3 for line in charges if line.component == "backbone") == volume
        assert all(isinstance(line.amount, Decimal) and line.amount >= 0 for line in charges)
        assert sum(line.amount for line in charges) > 0
        checked += 1
    assert checked == 15
    for point in (p for p in district.points.values() if p.below is not None and district.units_sharing(p.id)):  # V15's charging sub-meters (a plot inlet is no charging point)
        accuracy = district.profile_of(point.id).accuracy_pct / 100
        true_m3 = truth.volume_m3(point.id, t0, t1)
        assert true_m3 > 10 and abs(run.points[point.id].result.volume_m3 - true_m3) <= accuracy * true_m3 + 1.0, point.id
    assert (tmp_path / "bills" / "run.json").exists()


def test_the_demo_report_shows_the_village_hierarchy_and_billed_equals_metered(district, one_hour, tmp_path):
    """`canalflow demo`'s report on what came through the pipeline: V15's tree below its intake, the
    loss line with its method, and billed = metered at each of its meters, with the numbers."""
    from billing.allocation import quantize_volume
    from testbed.report import demo_report

    pipeline, (t0, t1) = one_hour
    common = ["--district", str(DEMO), "--influx", pipeline.influxd.url, "--db", pipeline.database, "--from", _iso(t0), "--to", _iso(t1)]
    run_canalflow("billing", "run", *common, "--out", str(tmp_path / "bills"))
    efficiency = json.loads(run_canalflow("billing", "efficiency", *common, "--json"))
    text = demo_report(district, tmp_path, (t0, t1), efficiency, seed=SEED)
    section = text.split("## Grid charging below the village\n")[1].split("\n## ")[0]
    assert "### V15 杨庄村" in section
    assert "| V15-B1-H1 杨大户 | household | statement: share of V15-B1's bill by area (weight 160) |" in section.replace("&nbsp;", "").replace("└ ", "")
    assert "| V15-B2-H3 杨三户 | household | own meter V15-B2-H3 |" in section.replace("&nbsp;", "").replace("└ ", "")
    measured = {p["point"]: quantize_volume(p["volume_m3"]) for p in json.loads((tmp_path / "bills" / "run.json").read_text(encoding="utf-8"))["points"]}
    subs = measured["V15-B1"] + measured["V15-B2"]
    assert 0 < subs < measured["V15-IN"]  # the sub-meters measured less than the intake: a loss
    assert f"- Loss below V15-IN: {measured['V15-IN']:,.0f} − ({measured['V15-B1']:,.0f} (V15-B1) + {measured['V15-B2']:,.0f} (V15-B2)) = " \
           f"{measured['V15-IN'] - subs:,.0f} m³, a loss line on each bill below it, shared by metered:" in section
    for meter, unit in (("V15-IN", "V15"), ("V15-B1", "V15-B1"), ("V15-B2", "V15-B2"), ("V15-B2-H3", "V15-B2-H3")):
        assert f"| {meter} | {unit} | {measured[meter]:,.0f} | {measured[meter]:,.0f} | yes |" in section, (meter, section)
    assert "**NO**" not in text


def true_unit_share(district: District, truth: Truth, unit_id: str, point_id: str, t0: int, t1: int) -> float:
    """A unit's share of a charging point's true volume, split by area as the district says."""
    sharing = district.units_sharing(point_id)
    area = sum(u.area_mu for u in sharing)
    return truth.volume_m3(point_id, t0, t1) * float(district.units[unit_id].area_mu / area)


@pytest.fixture(scope="module")
def with_rollups_and_kpis(district, one_hour, tmp_path_factory):
    """What an operator runs after ingest: rollups, a billing run and efficiency, both writing KPIs."""
    pipeline, (t0, t1) = one_hour
    common = ["--district", str(DEMO), "--influx", pipeline.influxd.url, "--db", pipeline.database,
              "--from", _iso(t0), "--to", _iso(t1)]
    run_canalflow("ingest", "rollup", *common)
    run_canalflow("billing", "run", *common, "--write-kpis", "--out", str(tmp_path_factory.mktemp("kpi-bills")))
    run_canalflow("billing", "efficiency", *common, "--write-kpis")
    return pipeline, (t0, t1)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def test_every_dashboard_query_answers_on_data_that_came_through_the_pipeline(district, with_rollups_and_kpis, tmp_path):
    from dashboards.build import season_at
    from dashboards.querycheck import TimeRange, check_dashboard

    pipeline, (t0, now) = with_rollups_and_kpis
    # The manager looks at the whole local day: daily rollups are stamped at its midnight.
    day = dt.datetime.combine(district.local_date(t0), dt.time(), tzinfo=district.tz)
    t0, t1 = int(day.timestamp() * 1000), int((day + dt.timedelta(days=1)).timestamp() * 1000)
    out = tmp_path / "dash"
    run_canalflow("dashboards", "build", "--district", str(DEMO), "--out", str(out))
    boards = [json.loads(p.read_text()) for p in out.rglob("cf-*.json")]
    assert len(boards) == 4
    queries = [t["query"] for b in boards for p in b.get("panels", []) for t in p.get("targets", [])]
    assert any(f"FROM {source_of(M.readings)}" in q for q in queries)
    failed, answered, empty_exceptions = {}, 0, []
    for board in boards:
        # the season variable as Grafana would default it on the simulated day
        results = check_dashboard(board, pipeline.influx, now_ms=now, overrides=season_at(district, now), time_range=TimeRange(t0, t1))
        for result in results:
            if not result.problems:
                answered += 1
            elif _legitimately_empty(result):
                empty_exceptions.append(result.source)
            else:
                failed[f"{result.source} [{result.ref_id}]"] = result.problems
    assert not failed, failed
    assert answered >= 30 and len(empty_exceptions) <= 3, (answered, empty_exceptions)


# Panels that list exceptions: on an hour of healthy irrigation there are none to list. The field
# coefficient is measured on a typical plot's irrigation day (its query answers in tests/demo and on
# tests/dashboards' data): an hour with no plot irrigated has none.
EXCEPTION_PANELS = ("异常", "告警", "anomal", "alarm", "alert", "田间水利用系数")


def _legitimately_empty(result) -> bool:
    return result.problems == ["returned no data"] and any(word in result.source.lower() for word in EXCEPTION_PANELS)
