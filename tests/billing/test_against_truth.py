"""Efficiency from stored readings against the simulator's ground truth (firmware_sim.truth).

Readings are sampled from the true state every 5 minutes, as the edge would publish them: pipes
and area-velocity stations report flow (stations also level and velocity), level-only meters
raw level and the flume's downstream head plus a provisional flow that is 10 % off on purpose —
billing must re-rate levels with the district's ratings (M1-HEAD's area-velocity rating too).
Each reach's η and the canal-system η must come within 1 % of the truth.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from billing.efficiency import efficiency_from_influx, efficiency_report
from billing.run import run_billing
from canalflow.contract import Flag, Reading, ReadingBatch, reading_lines
from canalflow.volume import VolumeResult
from firmware_sim.scenario import load_scenario
from firmware_sim.truth import Truth

STEP = 5 * 60_000
DAY = 86_400_000


def sampled_lines(demo, truth, t0, t1):
    lines = []
    for point_id, point in demo.points.items():
        readings = []
        for t in range(t0, t1 + 1, STEP):
            state = truth.state(point_id, t)
            level_only = demo.profile_of(point_id).kind == "level"
            values = {"flow": state.flow_m3s * (1.1 if level_only else 1.0)}
            for name, value in (("level", state.level_m), ("downstream_level", state.downstream_level_m), ("velocity", state.velocity_ms)):
                if value is not None:
                    values[name] = value
            flags = (Flag.rated,) if level_only else ()
            readings.append(Reading(ts=t, values=values, flags=flags))
        batch = ReadingBatch(district=demo.id, gateway=point.gateway, point=point_id, seq=0, readings=tuple(readings))
        lines += reading_lines(batch, point.canal, point.role.value)
    return lines


def test_reach_and_system_eta_within_1_percent_of_truth(influx, demo):
    truth = Truth(demo)
    _, start, _ = truth.rounds[0]
    t0, t1 = start + 2 * DAY, start + 3 * DAY  # a day in the middle of round S1: steady edges
    influx.write_lines(sampled_lines(demo, truth, t0 - 2 * 3_600_000, t1 + 2 * 3_600_000))
    report = efficiency_from_influx(demo, influx, t0, t1, season_kind="spring")
    exact = efficiency_report(demo, {p: VolumeResult(truth.volume_m3(p, t0, t1), 1.0, 0.0, "truth", [], False, 1) for p in demo.points}, t0, t1)
    for reach in report.reaches:
        inflow = sum(truth.volume_m3(p.id, t0, t1) for p in demo.reach_balance_points(reach.canal, reach.reach)[0])
        true_eta = 1 - truth.reach_loss_m3(reach.canal, reach.reach, t0, t1) / inflow
        assert reach.eta == pytest.approx(true_eta, rel=0.01), f"{reach.canal}/{reach.reach}"
        assert not reach.incomplete
    assert report.system["graph"].value == pytest.approx(exact.system["graph"].value, rel=0.01)
    official = report.canal_system
    assert official.method == "official" and official.value == pytest.approx(truth.system_balance(t0, t1).eta, rel=0.01)
    assert report.system["level_product"].value < report.system["graph"].value  # LS1 skips the branch level
    run = run_billing(demo, influx, t0, t1, as_of_ms=t1 + DAY)
    for unit in demo.root_units:  # a unit and the entities below it are billed what its intake measured
        true = sum(truth.volume_m3(p, t0, t1) / len(demo.units_sharing(p)) for p in unit.charging_points)
        if len(demo.units_sharing(unit.charging_points[0])) == 1:
            accuracy = demo.profile_of(unit.charging_points[0]).accuracy_pct / 100
            tree = sum(v for u, v in run.unit_volumes.items() if demo.root_of(u).id == unit.id)
            assert float(tree) == pytest.approx(true, rel=accuracy, abs=1), unit.id
    sub_meters = [p for p in demo.points.values() if p.below is not None and demo.units_sharing(p.id)]  # charging sub-meters (a plot inlet is none)
    assert sub_meters, "the demo district has sub-meters below a village intake"
    for point in sub_meters:
        measured = run.points[point.id].result.volume_m3
        assert measured == pytest.approx(truth.volume_m3(point.id, t0, t1), rel=demo.profile_of(point.id).accuracy_pct / 100, abs=1), point.id
    shared = truth.volume_m3("V0405-IN", t0, t1)
    assert float(run.unit_volumes["V04"] + run.unit_volumes["V05"]) == pytest.approx(shared, abs=1)


def test_travel_time_keeps_a_round_start_window_balanced(influx, demo):
    """A window opening with the round: upstream gates open hours before water reaches the tails."""
    from canalflow.seepage import headworks_travel_ms

    truth = Truth(demo)
    _, start, _ = truth.rounds[0]
    t0, t1 = start - 6 * 3_600_000, start + DAY
    lag = max(headworks_travel_ms(demo, p) for p in demo.points)
    influx.write_lines(sampled_lines(demo, truth, t0 - 2 * 3_600_000, t1 + lag + 2 * 3_600_000))
    plain = efficiency_from_influx(demo, influx, t0, t1)
    shifted = efficiency_from_influx(demo, influx, t0, t1, travel_time=True)
    worst_plain = worst_shifted = 0.0
    for a, b in zip(plain.reaches, shifted.reaches, strict=True):
        # the simulator's loss at t is Q_up(t) − Q_down(t + τ): count it over the inflow's (shifted) window
        [head] = demo.reach_balance_points(a.canal, a.reach)[0]
        lag_in = headworks_travel_ms(demo, head.id)
        inflow = truth.volume_m3(head.id, t0 + lag_in, t1 + lag_in)
        true_eta = 1 - truth.reach_loss_m3(a.canal, a.reach, t0 + lag_in, t1 + lag_in) / inflow
        # unshifted, a filling reach gets no number (storage_dominated) or a wrong one
        worst_plain = max(worst_plain, float("inf") if a.eta is None else abs(a.eta / true_eta - 1))
        worst_shifted = max(worst_shifted, abs(b.eta / true_eta - 1))
    assert worst_shifted < 0.01 < worst_plain


def test_official_figure_within_1_percent_of_truth_with_heavy_tail_spill(influx, demo, tmp_path: Path):
    """A round whose tails spill a quarter of what their canals serve: the spill is a loss of the system."""
    scenario_file = tmp_path / "heavy-spill.yaml"
    scenario_file.write_text("version: 1\nname: heavy tail spill\nhydraulics: {tail_spill_fraction: 0.25}\n", encoding="utf-8")
    truth = Truth(demo, load_scenario(scenario_file, demo))
    _, start, _ = truth.rounds[0]
    t0, t1 = start + 2 * DAY, start + 3 * DAY
    influx.write_lines(sampled_lines(demo, truth, t0 - 2 * 3_600_000, t1 + 2 * 3_600_000))
    report = efficiency_from_influx(demo, influx, t0, t1)
    true = truth.system_balance(t0, t1)
    assert true.spill_share > 0.05  # the scenario does spill heavily
    assert report.canal_system.value == pytest.approx(true.eta, rel=0.01)
    assert report.balance.spilled_m3 == pytest.approx(true.spilled_m3, rel=0.02)
    # the path-weighted graph leaves the spill out of the diversion: it over-states the system by more than the spill's weight
    graph = report.system["graph"]
    assert graph.value > report.canal_system.value + 0.05
    assert f"tail spill {report.balance.spill_share:.1%} of diversion" in graph.note
    assert f"tail spill {report.balance.spill_share:.1%} of diversion" in report.canal_system.note


def test_a_window_while_the_canals_fill_gives_no_canal_system_figure(influx, demo):
    """From 2 h before the round to 6 h into it the laterals are still filling: ΔS is large against the flows."""
    truth = Truth(demo)
    _, start, _ = truth.rounds[0]
    t0, t1 = start - 2 * 3_600_000, start + 6 * 3_600_000
    influx.write_lines(sampled_lines(demo, truth, t0 - 2 * 3_600_000, t1 + 2 * 3_600_000))
    report = efficiency_from_influx(demo, influx, t0, t1)
    # the simulator's storage change of a reach: what entered it and did not leave it or seep away
    true_storage = sum(r.in_m3 - r.out_m3 - truth.reach_loss_m3(r.canal, r.reach, t0, t1) for r in report.reaches)
    diverted = truth.system_balance(t0, t1).diverted_m3
    assert true_storage / diverted > 2 * demo.spec.tolerances.max_storage_share  # the window is dominated by filling
    official = report.canal_system
    assert official.value is None and official.incomplete and "storage_dominated" in official.flags
    assert "window too short for the round" in official.note and any("window too short" in w for w in report.warnings)
    assert report.storage_m3 == pytest.approx(true_storage, rel=0.5)  # width × length × Δlevel at the reach's meters
    filling = [r for r in report.reaches if "storage_dominated" in r.flags]
    assert filling and all(r.eta is None and not r.anomaly for r in filling)
    # a steady day later in the round: levels do not move, ΔS ≈ 0 and the figure is the truth's
    t0, t1 = start + 2 * DAY, start + 3 * DAY
    influx.write_lines(sampled_lines(demo, truth, t0 - 2 * 3_600_000, t1 + 2 * 3_600_000))
    steady = efficiency_from_influx(demo, influx, t0, t1)
    assert abs(steady.storage_m3) < 1e-3 * steady.balance.diverted_m3
    assert steady.canal_system.value == pytest.approx(truth.system_balance(t0, t1).eta, rel=0.01)
