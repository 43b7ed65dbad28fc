"""A typical plot's soil-moisture station and rain gauge, simulated from the root zone's truth and read
over their published register maps (canalflow/profiles/soil-station.yaml, rain-gauge.yaml); and the
same readings going fleet -> edge -> Mosquitto -> ingest -> InfluxDB like every other meter
(testbed.pipeline: each part its own process, as deployed)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from canalflow.contract import M, source_of
from canalflow.district import District, DistrictError, load_district
from firmware_sim.meters import Meter
from firmware_sim.scenario import load_scenario
from firmware_sim.truth import Truth
from testbed.demo import DEMO_START
from testbed.pipeline import Pipeline

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-district.yaml"
PLOT_POINTS = "  # typical plots (典型田块, see plots: below)"  # the demo's plot block in points:, up to RG-1
PLOTS = "\n# Typical plots (典型田块)"  # and its plots: section, the file's last


SEED = 3


def district_with(tmp_path: Path, edit: tuple[str, str] = ("", ""), *, plots: bool = True) -> District:
    """The demo district (its typical plots left out with ``plots=False``), ``edit`` made once."""
    text = DEMO.read_text(encoding="utf-8").replace(*edit, 1)
    if not plots:
        a = text.index(PLOT_POINTS)
        text = text[:a] + text[text.index("\n", text.index("id: RG-1", a)) + 1:]
        a = text.index(PLOTS)
        text = text[:a] + "\n"
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / DEMO.name
    path.write_text(text, encoding="utf-8")
    return load_district(path)


def read(meter: Meter, name: str, t_ms: int) -> float:
    reg = meter.profile.register_named(name)
    answer = meter.respond(meter.profile.function_code, reg.wire_address, reg.word_count, t_ms)
    return float(reg.decode(answer.words))


def test_station_serves_the_plots_theta_and_the_gauge_its_rain(tmp_path):
    district = district_with(tmp_path)
    weather = tmp_path / "weather.yaml"
    weather.write_text("version: 1\nname: w\nweather:\n  et0_mm_per_day: 2.5\n  initial_share: 0.7\n"
                       "  rain: [{day: 2026-04-08, mm: 30.3}]\n", encoding="utf-8")
    sc = load_scenario(weather, district)
    truth = Truth(district, sc)
    station = Meter(district.points["SM-V03"], district.profile_of("SM-V03"), truth)
    gauge = Meter(district.points["RG-1"], district.profile_of("RG-1"), truth)
    irrigation = truth.rootzone.irrigations["P-V03-WHEAT"][0]
    day = irrigation.observed.day
    for d in (day, day + dt.timedelta(days=1)):
        t_ms = int(dt.datetime.combine(d, dt.time(6), district.tz).timestamp() * 1000)
        theta = truth.rootzone.theta("P-V03-WHEAT", d)
        for depth in (10, 20, 40):  # within its 0.4 m wetting depth
            assert read(station, f"vwc_{depth}cm", t_ms) == pytest.approx(theta, abs=1e-4)  # 0..10000 = 0..100 %
    after = truth.rootzone.theta("P-V03-WHEAT", day + dt.timedelta(days=1))
    assert after > truth.rootzone.theta("P-V03-WHEAT", day)  # the irrigation wetted the root zone
    def rain_at(d: dt.date) -> float:
        return read(gauge, "rainfall", int(dt.datetime.combine(d, dt.time(0, 30), district.tz).timestamp() * 1000))
    rainy = dt.date(2026, 4, 8)
    assert rain_at(rainy + dt.timedelta(days=1)) - rain_at(rainy) == pytest.approx(0.0303, abs=1e-6)  # 303 tips of 0.1 mm


def test_district_check_refuses_a_plot_station_that_is_not_a_soil_moisture_point(tmp_path):
    with pytest.raises(DistrictError, match="not a soil_moisture"):
        district_with(tmp_path, ("role: soil_moisture, canal: L12", "role: rain_gauge, canal: L12"))


def test_plot_sensors_leave_the_water_balance_unchanged(tmp_path):
    """A station and a gauge on a canal carry no water: the canal-system figures are those without them."""
    from billing.efficiency import efficiency_report
    from canalflow.volume import VolumeResult

    def system(district: District) -> dict[str, float | None]:
        truth = Truth(district)
        t0 = int(dt.datetime(2026, 3, 20, tzinfo=district.tz).timestamp() * 1000)
        t1 = t0 + 30 * 86_400_000
        volumes = {p: VolumeResult(truth.volume_m3(p, t0, t1), 1.0, 0.0, "truth", [], False, 1) for p in district.points}
        report = efficiency_report(district, volumes, t0, t1, season_kind="spring")
        return {m: f.value for m, f in report.system.items()} | {"whole": report.field.value}

    with_sensors = system(district_with(tmp_path / "a"))
    assert with_sensors == system(district_with(tmp_path / "b", plots=False)) | {"whole": with_sensors["whole"]}
    assert all(v is not None for k, v in with_sensors.items() if k != "whole")


def test_district_check_refuses_a_station_point_reading_a_flow_meter(tmp_path):
    with pytest.raises(DistrictError, match="reads 'em-pipe', a pipe meter"):
        district_with(tmp_path, ("unit_id: 41, profile: soil-station", "unit_id: 41, profile: em-pipe"))


@pytest.fixture(scope="module")
def stored(mosquitto, influxd, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e-plots")
    district = district_with(workdir)
    pipeline = Pipeline(district, workdir, mosquitto, influxd, "e2e_plots")
    pipeline.run_once(DEMO_START, 120.0, 600, seed=SEED)  # every point, sensors too, reports before the 600 s
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
    rain = influx.query_points(f'SELECT rain_total FROM {source_of(M.readings)} WHERE point = \'RG-1\'')
    assert len(rain) >= 5
    assert all(r["rain_total"] == pytest.approx(truth.sensor_value("RG-1", "rain_total", int(r["time"])), abs=1e-6) for r in rain)
