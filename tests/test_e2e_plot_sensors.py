"""A typical plot's soil-moisture station and rain gauge go fleet -> edge -> Mosquitto -> ingest ->
InfluxDB like every other meter (testbed.pipeline: each part its own process, as deployed), and what
lands in the readings measurement is the simulator's root-zone truth at the station's resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from canalflow.contract import M, source_of
from canalflow.district import load_district
from firmware_sim.truth import Truth
from testbed.demo import DEMO_START
from testbed.pipeline import Pipeline

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo-district.yaml"
SENSORS = """
  - {id: SM-V03, name: 王庄村墒情站, role: soil_moisture, canal: L12, km: 2.0, gateway: GW-B1, unit_id: 41, profile: soil-station}
  - {id: RG-T1, name: 雨量站, role: rain_gauge, canal: L12, km: 2.0, gateway: GW-B1, unit_id: 42, profile: rain-gauge}
"""
PLOTS = """
plots:
  - {id: P-V03-WHEAT, unit: V03, crop: wheat, area_mu: 5, wetting_depth_m: 0.6, field_capacity: 0.30, wilting_point: 0.12, station: SM-V03, rain_gauge: RG-T1}
"""
SEED = 3


@pytest.fixture(scope="module")
def stored(mosquitto, influxd, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e-plots")
    text = DEMO.read_text(encoding="utf-8").replace("\npoints:\n", "\npoints:\n" + SENSORS.lstrip("\n"), 1)
    path = workdir / DEMO.name
    path.write_text(text.replace("\nseasons:\n", PLOTS + "\nseasons:\n", 1), encoding="utf-8")
    district = load_district(path)
    pipeline = Pipeline(district, workdir, mosquitto, influxd, "e2e_plots")
    try:
        pipeline.start_all(DEMO_START, 120.0, seed=SEED)  # returns once every point, sensors too, has reported
        pipeline.run_for_sim(600)
        pipeline.stop_edges()
        pipeline.drain()
    except Exception:
        for proc in pipeline.procs.values():
            print(f"--- {proc.name}\n{proc.tail()}")
        raise
    finally:
        pipeline.stop()
    yield district, pipeline.influx
    pipeline.influx.drop_database()


def test_station_and_gauge_readings_are_stored_as_the_root_zone_truth(stored):
    district, influx = stored
    truth = Truth(district, seed=SEED).rootzone
    rows = influx.query_points(f'SELECT vwc_10cm, vwc_40cm, vwc_100cm FROM {source_of(M.readings)} WHERE point = \'SM-V03\'')
    assert len(rows) >= 5
    for row in rows:
        t_ms = int(row["time"])
        for quantity in ("vwc_10cm", "vwc_40cm", "vwc_100cm"):
            assert row[quantity] == pytest.approx(truth.sensor_value("SM-V03", quantity, t_ms), abs=1e-4), (quantity, row)
    rain = influx.query_points(f'SELECT rain_total FROM {source_of(M.readings)} WHERE point = \'RG-T1\'')
    assert len(rain) >= 5
    assert all(r["rain_total"] == pytest.approx(truth.sensor_value("RG-T1", "rain_total", int(r["time"])), abs=1e-6) for r in rain)
