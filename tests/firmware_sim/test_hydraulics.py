"""The hydraulic model: mass balance at every node and exact volumes."""

from __future__ import annotations

import itertools

import pytest

from canalflow.district import District, PointRole
from firmware_sim.stepfn import StepFn, total
from firmware_sim.truth import Truth

DAY_MS = 86_400_000


def _window(round_: tuple[str, int, int]) -> tuple[int, int]:
    """The round plus a day either side, so the water in transit at its edges is counted."""
    return round_[1] - DAY_MS, round_[2] + DAY_MS


def test_every_canal_balances_over_a_round(demo: District, demo_truth: Truth, first_round: tuple[str, int, int]) -> None:
    t0, t1 = _window(first_round)
    for canal in demo.spec.canals:
        diversion = demo.diversion_point(canal.id)
        assert diversion is not None
        inflow = demo_truth.volume_m3(diversion.id, t0, t1)
        out = loss = 0.0
        for reach in canal.reach_list:
            _, outs = demo.reach_balance_points(canal.id, reach.id)
            out += sum(demo_truth.volume_m3(p.id, t0, t1) for p in outs if p.role is not PointRole.section)
            loss += demo_truth.reach_loss_m3(canal.id, reach.id, t0, t1)
        assert inflow > 0, canal.id
        assert loss > 0, canal.id
        assert abs(inflow - out - loss) <= 0.001 * inflow, (canal.id, inflow, out, loss)


def test_every_reach_balances_over_a_round(demo: District, demo_truth: Truth, first_round: tuple[str, int, int]) -> None:
    t0, t1 = _window(first_round)
    for ref in demo.reaches:
        ins, outs = demo.reach_balance_points(ref.canal, ref.reach.id)
        v_in = sum(demo_truth.volume_m3(p.id, t0, t1) for p in ins)
        v_out = sum(demo_truth.volume_m3(p.id, t0, t1) for p in outs)
        loss = demo_truth.reach_loss_m3(ref.canal, ref.reach.id, t0, t1)
        assert abs(v_in - v_out - loss) <= 0.001 * v_in, (ref.canal, ref.reach.id, v_in, v_out, loss)


def test_canal_system_efficiency_is_plausible(demo: District, demo_truth: Truth, first_round: tuple[str, int, int]) -> None:
    t0, t1 = _window(first_round)
    diverted = demo_truth.volume_m3("M1-HEAD", t0, t1)
    delivered = sum(demo_truth.volume_m3(p.id, t0, t1) for p in demo.canal_intakes)
    assert 0.6 < delivered / diverted < 0.9


def test_intakes_deliver_their_quota_share(demo: District, demo_truth: Truth, first_round: tuple[str, int, int]) -> None:
    season = demo.spec.seasons[0]
    share = season.rounds[0].days / sum(r.days for r in season.rounds)
    t0, t1 = _window(first_round)
    for unit in demo.spec.units:
        if not unit.charging_points or len(demo.units_sharing(unit.charging_points[0])) > 1:
            continue  # a household shares its block's meter; a shared intake serves two units
        depth, up = 0, unit
        while up.parent is not None:
            depth, up = depth + 1, demo.units[up.parent]
        kept = 0.94 ** depth  # a sub-meter: its quota less the default sub_meter_loss_fraction, once per meter above it
        expected = float(demo.quota_m3(unit.id, season.kind)) * share * kept
        assert demo_truth.volume_m3(unit.charging_points[0], t0, t1) == pytest.approx(expected, rel=1e-9)


def test_outside_rounds_only_the_main_canal_base_flow_runs(demo_truth: Truth, first_round: tuple[str, int, int]) -> None:
    before = first_round[1] - 3 * DAY_MS
    assert demo_truth.flow_m3s("V01-IN", before) == 0
    assert demo_truth.flow_m3s("B1-HEAD", before) == 0
    assert demo_truth.flow_m3s("M1-TAIL", before) == pytest.approx(0.3)
    assert demo_truth.flow_m3s("M1-HEAD", before) > 0.3  # plus the seepage on the way


def test_head_gates_open_before_the_round_by_the_travel_time(demo_truth: Truth, first_round: tuple[str, int, int]) -> None:
    start = first_round[1]
    assert demo_truth.flow_m3s("V01-IN", start - 1) == 0 < demo_truth.flow_m3s("V01-IN", start)
    assert demo_truth.flow_m3s("L11-HEAD", start - 1) > 0  # water for V01 left the lateral head earlier
    # V01 is 1.5 km down the lateral (50 min at 0.5 m/s), V02 3.5 km (117 min)
    assert demo_truth.flow_m3s("L11-HEAD", start - 60 * 60_000) > 0
    assert demo_truth.flow_m3s("L11-HEAD", start - 60 * 60_000) < demo_truth.flow_m3s("L11-HEAD", start - 1)
    assert demo_truth.flow_m3s("L11-HEAD", start - 118 * 60_000) == 0


def test_volume_is_the_exact_integral_of_flow(demo_truth: Truth, first_round: tuple[str, int, int]) -> None:
    t0, t1 = first_round[1] - 5 * 3_600_000, first_round[1] + 7 * 3_600_000
    for point in ("M1-HEAD", "L11-HEAD", "V01-IN", "B3-TAIL"):
        fn = demo_truth.flow_fn(point)
        edges = sorted({t0, t1, *(t for t in fn.times if t0 < t < t1)})
        riemann = sum(fn.at(a) * (b - a) / 1000 for a, b in itertools.pairwise(edges))
        assert demo_truth.volume_m3(point, t0, t1) == pytest.approx(riemann, rel=1e-12)
        assert demo_truth.volume_m3(point, t0, t1) == pytest.approx(
            demo_truth.volume_m3(point, t0, t0 + 3_600_000) + demo_truth.volume_m3(point, t0 + 3_600_000, t1), rel=1e-12
        )


def test_truth_is_deterministic(demo: District, demo_truth: Truth, first_round: tuple[str, int, int]) -> None:
    again = Truth(demo, seed=0)
    t = first_round[1] + 5 * 3_600_000
    assert [again.flow_m3s(p, t) for p in demo.points] == [demo_truth.flow_m3s(p, t) for p in demo.points]


def test_step_functions() -> None:
    pulse = StepFn.pulses([(1000, 3000, 2.0), (2000, 4000, 1.0)], base=0.5)
    assert [pulse.at(t) for t in (0, 1000, 2500, 3500, 4000)] == [0.5, 2.5, 3.5, 1.5, 0.5]
    assert pulse.integral(0, 5000) == pytest.approx(0.5 * 5 + 2.0 * 2 + 1.0 * 2)
    assert pulse.shifted(-1000).at(0) == 2.5
    assert total([pulse, pulse]).integral(0, 5000) == pytest.approx(2 * pulse.integral(0, 5000))
    assert (pulse - pulse).max() == 0
    # ∫ f(t)·(t − 1 s) dt over [1 s, 4 s], piece by piece: 2.5·(1−0)/2 + 3.5·(4−1)/2 + 1.5·(9−4)/2
    assert pulse.moment(1000, 4000, 1000) == pytest.approx(2.5 * 0.5 + 3.5 * 1.5 + 1.5 * 2.5)
