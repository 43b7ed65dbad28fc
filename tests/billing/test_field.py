"""The field coefficient measured on typical plots, against the simulator's root-zone truth (firmware_sim.rootzone).

The demo district file has typical plots as an operator writes them (one per irrigated crop); a
scenario file sets the weather. The plots' readings (θ at each depth, rain-gauge tips, plot inlet volume) are the
simulator's, with its sensor noise and meter error; the truth is its daily root-zone balance.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from billing_synth import DEMO

from billing.efficiency import efficiency_report, kpi_lines
from canalflow.district import District, DistrictError, load_district
from canalflow.field import aggregate
from canalflow.volume import VolumeResult
from firmware_sim.rootzone import RootZone
from firmware_sim.scenario import load_scenario
from firmware_sim.truth import Truth

RAIN_ON_S2 = "  rain: [{day: 2026-04-10, mm: 30}, {day: 2026-03-25, mm: 12}]\n"  # on round S2's plot turn


def district_with(tmp_path: Path, *edits: tuple[str, str]) -> District:
    """The demo district, each (old, new) edit made once."""
    text = DEMO.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / DEMO.name
    path.write_text(text, encoding="utf-8")
    return load_district(path)


def scenario(tmp_path: Path, district: District, rain: str = RAIN_ON_S2):
    path = tmp_path / "weather.yaml"
    path.write_text("version: 1\nname: spring weather\nweather:\n  et0_mm_per_day: 2.5\n  initial_share: 0.7\n" + rain, encoding="utf-8")
    return load_scenario(path, district)


def spring_eta(zone: RootZone, plot_id: str) -> float:
    season = zone.district.seasons["2026-spring"]
    return zone.plot_eta(plot_id, season.start, season.end)


def spring(district: District) -> tuple[int, int]:
    season = district.seasons["2026-spring"]
    start = dt.datetime.combine(season.start, dt.time(0), district.tz)
    end = dt.datetime.combine(season.end + dt.timedelta(days=1), dt.time(0), district.tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def season_report(district: District, sc, plots):
    t0, t1 = spring(district)
    truth = Truth(district, sc)
    volumes = {p: VolumeResult(truth.volume_m3(p, t0, t1), 1.0, 0.0, "truth", [], False, 1) for p in district.points}
    return efficiency_report(district, volumes, t0, t1, season_kind="spring", plots=plots), truth


def test_field_coefficient_per_plot_and_district_within_2_percent_of_truth(tmp_path):
    district = district_with(tmp_path)
    sc = scenario(tmp_path, district)
    zone = RootZone(district, sc, seed=3)
    report, _ = season_report(district, sc, zone.observations())
    field = report.field
    assert field.method == "typical_plots" and field.value is not None and not field.incomplete
    true_eta = {p: spring_eta(zone, p) for p in district.plots}
    for result in report.plots:
        assert result.irrigations == 3  # rounds S1, S2, S3
        assert result.eta == pytest.approx(true_eta[result.plot], rel=0.02), result.plot
    truth = aggregate(district, true_eta)
    assert field.value == pytest.approx(truth.value, rel=0.02)
    for unit, fig in report.field_units.items():
        assert fig.value == pytest.approx(truth.unit_eta[unit], rel=0.02), unit
    # every irrigated crop has a plot; fish ponds fall back to the configured constant, said so
    assert "fallback" in field.flags and "fallback configured field_efficiency for fish" in field.note
    assert "P-V03-WHEAT (wheat)" in field.note and field.target == 0.85
    assert report.whole["field_coefficients"].value == pytest.approx(report.canal_system.value * field.value)
    unit_kpis = [ln for ln in kpi_lines(report) if ",scope=field_unit," in ln]
    assert len(unit_kpis) == len([u for u in district.spec.units if u.crops])  # units with crops of their own (V15 has its entities')
    [v09] = [ln for ln in unit_kpis if ",unit=V09 " in ln]
    assert float(v09.split("eta=")[1].split(",")[0]) == pytest.approx(truth.unit_eta["V09"], rel=0.02)


def test_a_plot_irrigated_above_field_capacity_has_a_low_coefficient(tmp_path):
    district = district_with(tmp_path)
    sc = scenario(tmp_path, district)
    zone = RootZone(district, sc, seed=3)
    report, _ = season_report(district, sc, zone.observations())
    shallow = next(r for r in report.plots if r.plot == "P-V09-COTTON")  # 0.25 m of root zone cannot hold a 48 mm irrigation
    assert spring_eta(zone, "P-V09-COTTON") < 0.8
    assert shallow.eta == pytest.approx(spring_eta(zone, "P-V09-COTTON"), rel=0.02)
    deep = next(r for r in report.plots if r.plot == "P-V03-WHEAT")
    assert shallow.eta < deep.eta - 0.1


def test_rain_during_an_irrigation_is_not_counted_as_stored_irrigation_water(tmp_path):
    district = district_with(tmp_path)
    wet, dry = scenario(tmp_path, district), scenario(tmp_path, district, rain="")
    wet_zone, dry_zone = RootZone(district, wet, seed=3), RootZone(district, dry, seed=3)
    wet_report, _ = season_report(district, wet, wet_zone.observations())
    for plot_id in district.plots:
        # 30 mm of rain on round S2's plot turn fills the soil first: more of the irrigation drains away
        assert spring_eta(wet_zone, plot_id) < spring_eta(dry_zone, plot_id) - 0.02
        measured = next(r for r in wet_report.plots if r.plot == plot_id)
        assert measured.eta == pytest.approx(spring_eta(wet_zone, plot_id), rel=0.02)
    s2 = next(i.observed for i in wet_zone.irrigations["P-V03-WHEAT"] if i.observed.day == dt.date(2026, 4, 10))
    assert s2.rain_mm == pytest.approx(30.0)  # the rain gauge saw it


def test_a_plot_without_its_soil_moisture_station_gives_no_figure(tmp_path):
    district = district_with(tmp_path, (", station: SM-V09", ""))
    sc = scenario(tmp_path, district)
    report, _ = season_report(district, sc, RootZone(district, sc, seed=3).observations())
    assert report.field.value is None and report.field.incomplete
    assert "plot P-V09-COTTON: no soil-moisture station" in report.field.note
    assert report.whole["head_tail"].value is None and "P-V09-COTTON" in report.whole["head_tail"].note
    assert report.whole["field_coefficients"].value is None


def test_head_tail_uses_the_plots_net_depths_within_2_percent_of_truth(tmp_path):
    district = district_with(tmp_path)
    sc = scenario(tmp_path, district)
    zone = RootZone(district, sc, seed=3)
    report, truth = season_report(district, sc, zone.observations())
    t0, t1 = spring(district)
    true_depth: dict[str, list[tuple[float, float]]] = {}
    for plot_id, plot in district.plots.items():
        stored = sum(i.stored_mm for i in zone.irrigations[plot_id] if district.seasons["2026-spring"].start <= i.observed.day <= district.seasons["2026-spring"].end)
        true_depth.setdefault(plot.crop, []).append((float(plot.area_mu), stored))
    w = {c: sum(a * d for a, d in v) / sum(a for a, _ in v) for c, v in true_depth.items()}
    net = sum((w.get(c.crop) if c.crop in w else district.crops[c.crop].net_depth_mm.get("spring", 0.0)) / 1000 * float(c.area_mu) * 10_000 / 15
              for u in district.spec.units for c in u.crops)
    head_tail = report.whole["head_tail"]
    assert head_tail.value == pytest.approx(net / truth.system_balance(t0, t1).gross_m3, rel=0.02)
    assert "net depths measured on plots for cotton, maize, vegetables, wheat" in head_tail.note
    assert "no spring net depth for fish (counted as 0)" in head_tail.note


def test_district_check_names_a_wrong_plot(tmp_path):
    with pytest.raises(DistrictError) as err:
        district_with(tmp_path, ("unit: V03, crop: wheat", "unit: V03, crop: cotton"), ("unit: V04, crop: maize", "unit: V99, crop: maize"),
                      ("inlet: P-V09-IN", "inlet: V09-IN"), ("inlet: P-V11-IN", "inlet: P-V11-INLET"))
    problems = {p.field: p for p in err.value.problems if p.severity == "error"}
    assert "unit 'V03' grows no 'cotton'" in problems["plots[0].crop"].message
    assert "unknown billing unit 'V99'" in problems["plots[1].unit"].message
    # a plot's inlet must be a sub-meter of its unit's water, else its water would be billed or balanced twice
    inlet = problems["plots[2].inlet"]
    assert "'V09-IN' is not a sub-meter of unit 'V09'" in inlet.message and "below: one of ['V09-IN']" in inlet.hint
    assert inlet.line == next(i for i, ln in enumerate(DEMO.read_text(encoding="utf-8").splitlines(), 1) if "inlet: P-V09-IN" in ln)
    assert "unknown point 'P-V11-INLET'" in problems["plots[3].inlet"].message


def test_declared_plots_without_readings_give_no_figure_not_the_constant(tmp_path):
    district = district_with(tmp_path)
    report, _ = season_report(district, scenario(tmp_path, district), None)
    assert report.field.value is None and report.field.method == "typical_plots"
    assert "no plot readings were given" in report.field.note
    assert report.whole["head_tail"].value is None
