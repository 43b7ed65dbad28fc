"""Balance and efficiency on the demo district's graph, from consistent synthetic volumes."""

from __future__ import annotations

import math

import pytest
from billing_synth import DEMO, network_volumes, volume_result
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.efficiency import efficiency_report, kpi_lines
from canalflow.district import District, DistrictError, load_district

DAY = 86_400_000
DELIVERIES = {
    "V01-IN": 20_000, "V02-IN": 15_000, "V03-IN": 25_000, "V0405-IN": 30_000, "V06-IN": 18_000, "V07-IN": 12_000,
    "WUA1-IN": 40_000, "OP1-IN": 50_000, "V08-IN": 16_000, "V09-IN": 14_000, "V10-IN": 22_000, "V11-IN": 10_000, "V12-IN": 20_000,
}
LEVEL_ETA = {"main": 0.95, "branch": 0.90, "lateral": 0.85}


DEMO_TEXT = DEMO.read_text(encoding="utf-8")


def copy_demo(tmp_path, text):
    """The demo district file as an operator edited it (it uses the built-in profiles only)."""
    path = tmp_path / DEMO.name
    path.write_text(text, encoding="utf-8")
    return path


def eta_by_level(demo):
    def eta(canal_id, reach_id):
        # the whole canal's loss in its first reach, so every canal's η is exactly its level's
        canal = demo.canals[canal_id]
        return LEVEL_ETA[canal.level.value] if reach_id == canal.reach_list[0].id else 1.0
    return eta


def report_of(demo, true, coverage=None, season_kind="spring"):
    coverage = coverage or {}
    volumes = {p: volume_result(v, coverage.get(p, 1.0)) for p, v in true.items()}
    return efficiency_report(demo, volumes, 0, DAY, season_kind=season_kind)


def test_reach_and_canal_eta_recover_the_truth(demo):
    true = network_volumes(demo, DELIVERIES, eta_by_level(demo), {"M1-TAIL": 0.0, "B2-TAIL": 0.0, "B3-TAIL": 0.0})
    rep = report_of(demo, true)
    for reach in rep.reaches:
        canal = demo.canals[reach.canal]
        expected = LEVEL_ETA[canal.level.value] if reach.reach == canal.reach_list[0].id else 1.0
        assert reach.eta == pytest.approx(expected, rel=1e-12)
        assert reach.loss_m3 == pytest.approx(reach.in_m3 - reach.out_m3)
        assert not reach.incomplete
    for canal_id, fig in rep.canals.items():
        assert fig.value == pytest.approx(LEVEL_ETA[demo.canals[canal_id].level.value], rel=1e-12)
    for level, fig in rep.levels.items():
        assert fig.value == pytest.approx(LEVEL_ETA[level], rel=1e-12)


def test_skip_level_graph_is_right_and_product_under_estimates(demo):
    true = network_volumes(demo, DELIVERIES, eta_by_level(demo), {"M1-TAIL": 0.0, "B2-TAIL": 0.0, "B3-TAIL": 0.0})
    truth = sum(DELIVERIES.values()) / true["M1-HEAD"]
    rep = report_of(demo, true)
    graph, product = rep.system["graph"], rep.system["level_product"]
    assert graph.value == pytest.approx(truth, rel=1e-12)
    assert product.value == pytest.approx(0.95 * 0.90 * 0.85, rel=1e-12)
    # OP1 (50,000 m3 via the skip-level lateral LS1) never passes a branch canal: the product is too low
    assert product.value < truth - 0.005
    assert product.flags == ("skip_level",) and "LS1" in product.note
    assert any("not valid here" in w for w in rep.warnings)
    # by hand: path efficiencies 0.95*0.85 for OP1, 0.95*0.90*0.85 for every other intake
    gross = 50_000 / (0.95 * 0.85) + (sum(DELIVERIES.values()) - 50_000) / (0.95 * 0.90 * 0.85)
    assert truth == pytest.approx(sum(DELIVERIES.values()) / gross, rel=1e-12)


def test_outfalls_are_returned_not_delivered(demo):
    outfalls = {"M1-TAIL": 5_000.0, "B2-TAIL": 2_000.0, "B3-TAIL": 1_000.0}
    true = network_volumes(demo, DELIVERIES, eta_by_level(demo), outfalls)
    rep = report_of(demo, true)
    delivered = sum(DELIVERIES.values())
    gross_returned = 5_000 / 0.95 + 2_000 / (0.95 * 0.90) + 1_000 / (0.95 * 0.90)
    assert rep.system["graph"].value == pytest.approx(delivered / (true["M1-HEAD"] - gross_returned), rel=1e-12)
    assert rep.system["delivered_over_diverted"].value == pytest.approx(delivered / true["M1-HEAD"], rel=1e-12)
    assert rep.system["delivered_over_diverted"].value < rep.system["graph"].value


def test_official_figure_counts_spill_as_loss_and_deducts_returns(demo, tmp_path):
    outfalls = {"M1-TAIL": 5_000.0, "B2-TAIL": 2_000.0, "B3-TAIL": 1_000.0}
    true = network_volumes(demo, DELIVERIES, eta_by_level(demo), outfalls)
    delivered = sum(DELIVERIES.values())
    rep = report_of(demo, true)
    official = rep.canal_system
    assert official is rep.system["official"] and official.method == "official"
    assert official.value == pytest.approx(delivered / true["M1-HEAD"], rel=1e-12)  # every outfall spills by default
    assert rep.balance.spilled_m3 == 8_000 and rep.balance.returned_m3 == 0
    assert f"tail spill {8_000 / true['M1-HEAD']:.1%} of diversion" in official.note
    assert "diagnostic" in rep.system["graph"].note and "points against the official figure" in rep.system["graph"].note
    # the operator declares M1's tail a return to the river: its water is deducted from the gross diversion
    text = DEMO_TEXT.replace("canal: M1, km: 30, gateway: GW-MAIN, unit_id: 4,", "canal: M1, km: 30, gateway: GW-MAIN, unit_id: 4, outfall_kind: return,")
    assert text != DEMO_TEXT
    returning = load_district(copy_demo(tmp_path, text))
    rep = report_of(returning, true)
    assert rep.canal_system.value == pytest.approx(delivered / (true["M1-HEAD"] - 5_000), rel=1e-12)
    assert rep.balance.returned_m3 == 5_000 and rep.balance.spilled_m3 == 3_000
    assert "returned to the source" in rep.canal_system.note
    system_kpis = [line for line in kpi_lines(rep) if ",scope=system " in line]
    assert len(system_kpis) == 1 and "method=\"official\"" in system_kpis[0]
    assert f"eta={rep.canal_system.value!r}" in system_kpis[0]


def test_outfall_kind_only_on_outfalls(tmp_path):
    text = DEMO_TEXT.replace("canal: M1, km: 12, gateway: GW-MAIN, unit_id: 2,", "canal: M1, km: 12, gateway: GW-MAIN, unit_id: 2, outfall_kind: spill,", 1)
    assert text != DEMO_TEXT
    with pytest.raises(DistrictError) as err:
        load_district(copy_demo(tmp_path, text))
    [problem] = [p for p in err.value.problems if p.severity == "error"]
    assert problem.field.endswith("outfall_kind") and "only an outfall" in problem.message and problem.line > 0


def test_incomplete_data_gives_no_number(demo):
    true = network_volumes(demo, DELIVERIES, eta_by_level(demo))
    rep = report_of(demo, true, coverage={"V06-IN": 0.5})
    assert rep.system["graph"].value is None and rep.system["graph"].incomplete
    assert rep.canals["L21"].value is None and "coverage 50%" in rep.canals["L21"].note
    assert rep.canals["L22"].value == pytest.approx(0.85)
    l21 = next(r for r in rep.reaches if r.canal == "L21")
    assert l21.eta is None and l21.incomplete
    missing = dict(true)
    del missing["V10-IN"]
    rep2 = report_of(demo, missing)
    assert rep2.canals["L32"].value is None and "V10-IN" in rep2.canals["L32"].note


def test_loss_anomaly_and_eta_above_one_are_flagged(demo):
    true = network_volumes(demo, DELIVERIES, eta_by_level(demo))
    true["V03-IN"] = 5_000.0  # L12 reach now loses 20,000 m3 more than it should (unmetered take)
    rep = report_of(demo, true)
    l12 = next(r for r in rep.reaches if r.canal == "L12")
    assert l12.anomaly and "loss_anomaly" in l12.flags
    assert any("L12" in w and "expected seepage" in w for w in rep.warnings)
    true["V11-IN"] = 60_000.0  # more out of L33 than into it: a meter error
    rep = report_of(demo, true)
    l33 = next(r for r in rep.reaches if r.canal == "L33")
    assert l33.eta > 1 and "eta_above_1" in l33.flags
    assert "eta_above_1" in rep.canals["L33"].flags


def test_field_and_whole_district(demo):
    """Without typical plots the field figure is the units' configured field_efficiency, labelled a fallback."""
    demo = District(demo.spec.model_copy(update={"plots": ()}), demo.path, demo.sha256, demo.profiles)
    true = network_volumes(demo, DELIVERIES, eta_by_level(demo))
    rep = report_of(demo, true)
    assert rep.field.value == pytest.approx(0.85) and rep.field.method == "units_field_efficiency"  # every unit has the default
    assert rep.field.note.endswith("fallback, not a measurement: the units' configured field_efficiency (no typical plots in the district file)")
    assert rep.whole["field_coefficients"].value == pytest.approx(rep.canal_system.value * 0.85)
    assert rep.whole["head_tail"].method == "head_tail" and rep.whole["head_tail"].value > 0
    assert rep.canal_system.target == 0.70 and rep.field.target == 0.85
    assert rep.canal_system.meets_target is (rep.canal_system.value >= 0.70)


@settings(max_examples=60, deadline=None)
@given(st.floats(0.5, 1.0), st.floats(0.5, 1.0), st.floats(0.5, 1.0), st.floats(0.9, 1.1))
def test_eta_at_most_one_or_flagged(demo, main, branch, lateral, noise):
    etas = {"main": main, "branch": branch, "lateral": lateral}
    true = network_volumes(demo, DELIVERIES, lambda c, r: etas[demo.canals[c].level.value] ** (1 / len(demo.canals[c].reach_list)))
    true["V01-IN"] *= noise  # a meter error can push a lateral over 1
    rep = report_of(demo, true)
    figures = [*rep.canals.values(), *rep.levels.values(), *rep.system.values()]
    for fig in figures:
        assert fig.value is None or fig.value <= 1 + 1e-12 or "eta_above_1" in fig.flags
    for reach in rep.reaches:
        assert reach.eta is None or reach.eta <= 1 + 1e-12 or "eta_above_1" in reach.flags
    assert all(math.isfinite(r.loss_m3) for r in rep.reaches)


def test_declared_volume_level_relation_gives_the_storage_change(demo, tmp_path):
    curve = "storage: {point: M1-S12, curve: [[0, 0], [1, 30000], [2, 100000]]}"
    text = DEMO_TEXT.replace("- {id: M1-R1, from_km: 0,  to_km: 12}", "- {id: M1-R1, from_km: 0,  to_km: 12, " + curve + "}")
    assert text != DEMO_TEXT
    district = load_district(copy_demo(tmp_path, text))
    true = network_volumes(district, DELIVERIES, eta_by_level(district))
    volumes = {p: volume_result(v) for p, v in true.items()}
    rep = efficiency_report(district, volumes, 0, DAY, water_levels={"M1-S12": (0.5, 1.5)})
    r1 = next(r for r in rep.reaches if r.reach == "M1-R1")
    assert r1.storage_m3 == pytest.approx(65_000 - 15_000)  # V(1.5) − V(0.5) on the declared curve
    assert r1.loss_m3 == pytest.approx(r1.in_m3 - r1.out_m3 - 50_000)
    assert "storage_dominated" in r1.flags and r1.eta is None  # 50,000 m3 against a day's flow of the reach
    # M1-S12 also bounds M1-R2, which declares no relation: water-surface width × length × Δlevel
    r2 = next(r for r in rep.reaches if r.reach == "M1-R2")
    assert r2.storage_m3 == pytest.approx(district.canals["M1"].width_m * 12_000 * 1.0)
    assert rep.storage_m3 == pytest.approx(50_000 + r2.storage_m3) and "storage_dominated" in rep.canals["M1"].flags
    small = efficiency_report(district, volumes, 0, DAY, water_levels={"M1-S12": (1.0, 1.001)})  # 70 m3 in R1: no flag
    assert small.canal_system.value == pytest.approx(rep.system["delivered_over_diverted"].value)
    assert next(r for r in small.reaches if r.reach == "M1-R1").eta == pytest.approx(0.95 + 70 / r1.in_m3)


def test_storage_relation_must_name_a_point_on_the_reach(tmp_path):
    text = DEMO_TEXT.replace("- {id: M1-R1, from_km: 0,  to_km: 12}", "- {id: M1-R1, from_km: 0,  to_km: 12, storage: {point: M1-S24, curve: [[1, 10], [0, 0]]}}")
    with pytest.raises(DistrictError) as err:
        load_district(copy_demo(tmp_path, text))
    problems = {p.field: p.message for p in err.value.problems if p.severity == "error"}
    assert "not a metering point on reach 'M1-R1'" in problems["canals[0].reaches[0].storage.point"]
    assert "must increase" in problems["canals[0].reaches[0].storage.curve"]


def test_official_figure_above_one_is_a_data_error_not_a_number(demo):
    true = network_volumes(demo, DELIVERIES, eta_by_level(demo))
    true["V03-IN"] = 5e7  # a totaliser reset read as a huge volume
    rep = report_of(demo, true)
    official = rep.canal_system
    assert official.value is None and official.incomplete and "eta_above_1" in official.flags
    assert official.note.startswith("data error:") and "V03-IN" in official.note
    assert rep.system["delivered_over_diverted"].value > 1  # the diagnostic keeps its (flagged) number


def test_whole_season_kind_is_the_one_rule_for_cli_and_api(demo):
    """Head-tail takes whole-season net depths only for a window that covers one season whole: the CLI's
    --season and --from/--to of the same days, and the API's window, all reach this one function."""
    from billing.window import season_window, whole_season_kind

    spring = demo.seasons["2026-spring"]
    t0, t1 = season_window(demo, spring)
    assert whole_season_kind(demo, t0, t1) == "spring"
    assert whole_season_kind(demo, t0 - DAY, t1 + DAY) == "spring"
    assert whole_season_kind(demo, t0 + DAY, t1) is None  # a day short of the season
    assert whole_season_kind(demo, t0, t0 + DAY) is None
    winter = season_window(demo, demo.seasons["2026-winter"])
    assert whole_season_kind(demo, t0, winter[1]) is None  # two seasons: no single kind
