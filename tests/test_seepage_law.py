"""The one hydraulic law (canalflow.seepage): by hand, and the same expected loss from all four users.

The four users of the law are the simulator (its true seepage), billing's efficiency report, VEE's
balance estimate and ingest's daily reach balance. On a steady day of round S1 with no scenario
events a reach loses seepage only, so each must find the simulator's loss of the reach.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from billing.vee import estimate_from_balance
from canalflow import seepage
from canalflow.contract import M, Reading, ReadingBatch, reading_lines, source_of
from canalflow.district import District, load_district
from canalflow.influx import InfluxV1
from canalflow.volume import VolumeResult
from firmware_sim.truth import Truth

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo-district.yaml"
DAY_S = 86_400.0
STEP_MS = 600_000
# 12 March 2026, local day: inside round S1 (10 March 06:00 + 10 days) and far from its edges
FROM, TO = "2026-03-12T00:00:00+08:00", "2026-03-13T00:00:00+08:00"
T0 = int(dt.datetime.fromisoformat(FROM).timestamp() * 1000)
T1 = int(dt.datetime.fromisoformat(TO).timestamp() * 1000)
CANAL, REACH = "B1", "B1-R1"  # three lateral offtakes (km 3, 8, 13) and a dry tail to km 14


@pytest.fixture(scope="module")
def demo() -> District:
    return load_district(DEMO)


# ---------------------------------------------------------------------------------------------
# The law by hand


def test_sigma_is_the_soil_law_per_km(demo: District) -> None:
    # L13 on clay (A 0.7, m 0.3), unlined; at 1 m3/s sigma = 0.7 / 100 = 0.007 per km
    assert seepage.sigma_per_km(seepage.canal_law(demo, "L13"), 1.0) == pytest.approx(0.007)
    # M1 on medium loam (A 1.9, m 0.4), lining 0.25; at 8 m3/s sigma = 0.019 / 8**0.4 × 0.25
    assert seepage.sigma_per_km(seepage.canal_law(demo, "M1"), 8.0) == pytest.approx(0.019 / 8**0.4 * 0.25)
    assert seepage.sigma_per_km(seepage.canal_law(demo, "M1"), 0.0) == 0.0


def test_expected_seepage_integrates_the_soil_law_between_offtakes(demo: District) -> None:
    law = seepage.canal_law(demo, "L13")
    # 1 m3/s leaving the end at km 5: Q_up^0.3 = 1 + 0.3 × 0.007 × 5
    end_only = seepage.expected_seepage_m3(law, 0.0, 5.0, [(5.0, DAY_S)], DAY_S)
    assert end_only == pytest.approx(((1 + 0.3 * 0.007 * 5) ** (1 / 0.3) - 1) * DAY_S)
    # the same water taken off at km 1 instead seeps over 1 km only
    early = seepage.expected_seepage_m3(law, 0.0, 5.0, [(1.0, DAY_S)], DAY_S)
    assert early == pytest.approx(((1 + 0.3 * 0.007 * 1) ** (1 / 0.3) - 1) * DAY_S)
    assert seepage.expected_seepage_m3(law, 0.0, 5.0, [], DAY_S) == 0.0
    # two offtakes: 0.5 m3/s at km 5 reaches km 2 as q2, then 0.5 more is taken there
    q2 = (0.5**0.3 + 0.3 * 0.007 * 3) ** (1 / 0.3) + 0.5
    q0 = (q2**0.3 + 0.3 * 0.007 * 2) ** (1 / 0.3)
    assert seepage.required_inflow_m3s(law, 0.0, 5.0, [(2.0, 0.5), (5.0, 0.5)]) == pytest.approx(q0)


def test_a_soil_with_m_zero_loses_a_fixed_fraction_exponentially() -> None:
    law = seepage.SoilLaw.of(2.0, 0.0)  # dQ/dx = −0.02·Q
    assert seepage.required_inflow_m3s(law, 0.0, 10.0, [(10.0, 1.0)]) == pytest.approx(math.exp(0.2))


def test_outflow_for_inflow_inverts_the_required_inflow(demo: District) -> None:
    law = seepage.canal_law(demo, "L21")
    x = seepage.outflow_for_inflow_m3(law, 0.0, 4.0, 0.4 * DAY_S, [(3.8, 0.15 * DAY_S)], 2.0, DAY_S)
    assert seepage.required_inflow_m3s(law, 0.0, 4.0, [(2.0, x / DAY_S), (3.8, 0.15)]) == pytest.approx(0.4, rel=1e-9)
    assert seepage.outflow_for_inflow_m3(law, 0.0, 4.0, 0.1 * DAY_S, [(3.8, 0.15 * DAY_S)], 2.0, DAY_S) == 0.0


def test_travel_time_is_length_over_velocity(demo: District) -> None:
    assert seepage.travel_s(9.0, 0.9) == pytest.approx(10_000.0)
    # L11-HEAD: 3 km down B1 (0.7 m/s) from its offtake at km 8 of M1 (0.9 m/s)
    assert seepage.headworks_travel_ms(demo, "L11-HEAD") == round((8_000 / 0.9 + 3_000 / 0.7) * 1000)


# ---------------------------------------------------------------------------------------------
# One reach, four users


def truth_lines(district: District, truth: Truth) -> list[str]:
    """The simulator's true flow at every point every 10 minutes, an hour either side of the day."""
    lines = []
    for point in district.spec.points:
        readings = tuple(Reading(ts=t, values={"flow": truth.flow_m3s(point.id, t)})
                         for t in range(T0 - 3_600_000, T1 + 3_600_000 + 1, STEP_MS))
        batch = ReadingBatch(district=district.id, gateway=point.gateway, point=point.id, seq=0, readings=readings)
        lines += reading_lines(batch, point.canal, point.role.value)
    return lines


def canalflow(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "canalflow.cli", *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def implied_vee_seepage(district: District, truth: Truth, point_id: str, canal: str = CANAL, reach: str = REACH) -> float:
    """The seepage VEE's balance estimate of ``point_id`` implies: Σ in − Σ out of its reach with the estimate in place."""
    ins, outs = district.reach_balance_points(canal, reach)
    volumes = {p.id: VolumeResult(truth.volume_m3(p.id, T0, T1), 1.0, 0.0, "flow", [], False, 145)
               for p in (*ins, *outs) if p.id != point_id}
    estimate = estimate_from_balance(district, point_id, volumes, T0, T1)
    assert estimate is not None
    volumes[point_id] = estimate[0]
    return sum(volumes[p.id].volume_m3 for p in ins) - sum(volumes[p.id].volume_m3 for p in outs)


def test_one_reach_has_the_same_expected_loss_from_all_four_users(demo: District, influx: InfluxV1) -> None:
    truth = Truth(demo)  # no events: the reach loses seepage only
    true_loss = truth.reach_loss_m3(CANAL, REACH, T0, T1)
    assert true_loss > 1_000  # a real loss to compare, not a rounding error

    influx.write_lines(truth_lines(demo, truth))
    common = ["--district", str(DEMO), "--influx", influx.url, "--db", influx.database, "--from", FROM, "--to", TO]
    canalflow("ingest", "rollup", *common, "--intervals", "1d")
    [balance] = influx.query_points(f'SELECT * FROM {source_of(M.balance)} WHERE "reach" = \'{REACH}\' AND time = {T0}ms')
    report = json.loads(canalflow("billing", "efficiency", *common, "--json"))
    [efficiency] = [r for r in report["reaches"] if r["reach"] == REACH]

    expected = {
        "ingest rollup balance": balance["expected_loss_m3"],
        "billing efficiency": efficiency["expected_loss_m3"],
        "VEE estimate of an offtake": implied_vee_seepage(demo, truth, "L12-HEAD"),
    }
    assert expected == {user: pytest.approx(true_loss, rel=1e-6) for user in expected}, true_loss
    # the meters' balance agrees too: on a steady day measured loss = seepage, so none is an anomaly
    assert balance["loss_m3"] == pytest.approx(true_loss, rel=1e-6) and not balance["anomaly"]
    assert efficiency["loss_m3"] == pytest.approx(true_loss, rel=1e-6) and not efficiency["anomaly"]


@pytest.mark.parametrize(("point", "canal", "reach", "side"), [
    ("B1-HEAD", "M1", "M1-R1", "out"),  # a diversion is estimated as an outflow of the reach it leaves
    ("M1-S12", "M1", "M1-R2", "in"),  # a section point as the inflow of the reach below it
])
def test_vee_estimates_on_either_side_of_a_balance_imply_the_true_seepage(demo: District, point: str, canal: str, reach: str, side: str) -> None:
    from billing.vee import reach_of

    truth = Truth(demo)
    assert reach_of(demo, point) == (canal, reach, side)
    implied = implied_vee_seepage(demo, truth, point, canal, reach)
    assert implied == pytest.approx(truth.reach_loss_m3(canal, reach, T0, T1), rel=1e-6)


def test_one_verdict_for_a_reach_balance() -> None:
    """Billing's efficiency report and ingest's daily balances judge a reach by the same rule (judge_reach)."""
    from canalflow.seepage import ReachVerdict, judge_reach

    # a missing outflow meter makes the loss look huge: an incomplete balance is judged neither way
    assert judge_reach(1000.0, 100.0, 50.0, incomplete=True, anomaly_factor=2.0) == ReachVerdict(False, False)
    assert judge_reach(1000.0, 100.0, 50.0, incomplete=False, anomaly_factor=2.0).anomaly
    assert not judge_reach(1000.0, 901.0, 50.0, incomplete=False, anomaly_factor=2.0).anomaly  # loss 99 ≤ 2 × 50
    assert judge_reach(1000.0, 1001.0, 50.0, incomplete=False, anomaly_factor=2.0).data_error  # more out than in
    assert judge_reach(0.0, 5.0, 0.0, incomplete=False, anomaly_factor=2.0).data_error  # out with nothing in
