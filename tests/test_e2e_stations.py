"""Simulated SL 651 and SZY 206 stations billed through the whole pipeline like Modbus meters.

The demo district with two points moved to receiver gateway RX-1: L11-HEAD (an SL 651 RTU reporting
a level, rated at the receiver) and V01-IN (an SZY 206 meter reporting flow and totaliser), which
charges village V01. Fleet, ingest, edge agents, `edge receive` and `edge simstations` run as
processes (testbed.pipeline) for one accelerated simulated hour; every unit's bill must equal the
truth within the class of its meters, V01's included.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_e2e_skeleton import true_unit_share

from billing.bills import tree_bills
from billing.run import run_billing
from canalflow.contract import M
from canalflow.district import District, load_district
from firmware_sim.truth import Truth
from testbed.demo import DEMO_START
from testbed.pipeline import Pipeline
from testbed.services import Mosquitto

sys.path.insert(0, str(Path(__file__).resolve().parent / "edge" / "telemetry"))
from telemetry_testkit import stations_district

SPEED = 120.0
SEED = 3
MINUTE_MS = 60_000


@pytest.fixture(scope="module")
def district(tmp_path_factory) -> District:
    return load_district(stations_district(tmp_path_factory.mktemp("district")))


@pytest.fixture(scope="module")
def one_hour(district, influxd, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e-stations")
    # A broker of its own: the receiver's retained status must not reach other suites' ingest.
    broker = Mosquitto(workdir / "mosquitto").start()
    pipeline = Pipeline(district, workdir, broker, influxd, "e2e_stations")
    try:
        began, ended = pipeline.run_once(DEMO_START, SPEED, 3600, seed=SEED)
    finally:
        broker.stop()
    # Stations report every 5 simulated minutes: keep a report's span clear of both edges.
    t0 = began + 10 * MINUTE_MS - began % MINUTE_MS
    t1 = ended - 10 * MINUTE_MS - ended % MINUTE_MS
    yield pipeline, (t0, t1)
    pipeline.influx.drop_database()


def test_station_points_arrive_through_the_receiver(one_hour):
    pipeline, _ = one_hour
    where = "\"point\" = 'L11-HEAD' OR \"point\" = 'V01-IN'"
    rows = pipeline.influx.query(f'SELECT count("flow") FROM "{M.readings}" WHERE {where} GROUP BY "point"')
    counts = {row["tags"]["point"]: row["values"][0][1] for row in rows}
    assert set(counts) == {"L11-HEAD", "V01-IN"}, counts
    assert min(counts.values()) >= 9, counts  # an hour of 5-minute reports, less the start-up


def test_every_unit_is_billed_the_true_volume_within_meter_class(district, one_hour, tmp_path):
    pipeline, (t0, t1) = one_hour
    run = run_billing(district, pipeline.influx, t0, t1, out_dir=tmp_path / "bills")
    truth = Truth(district, seed=SEED)
    fed_by_station = {s.point for s in district.spec.stations}
    checked = set()
    for unit in district.root_units:  # with the entities below it, billed what its intake measured
        bills = tree_bills(district, run, unit.id)
        assert not any(b.blocked for b in bills), [(b.unit_id, b.blocked_reason, b.sources) for b in bills]
        volume = sum(b.volume_m3 for b in bills)
        true_m3 = sum(true_unit_share(district, truth, unit.id, p, t0, t1) for p in unit.charging_points)
        accuracy = max(district.profile_of(p).accuracy_pct for p in unit.charging_points) / 100
        assert true_m3 > 50, unit.id
        assert abs(float(volume) - true_m3) <= accuracy * true_m3 + 1.0, (unit.id, volume, true_m3)
        if fed_by_station & set(unit.charging_points):
            checked.add(unit.id)
    assert checked == {"V01"}
