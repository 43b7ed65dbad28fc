"""Scenario events change the truth exactly as the files say, and the balance still closes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from canalflow.district import District, PointRole
from firmware_sim.scenario import load_scenario
from firmware_sim.truth import Truth

SHANGHAI = ZoneInfo("Asia/Shanghai")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def at(text: str) -> int:
    return round(dt.datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp() * 1000)


def truth_with(demo: District, scenarios_dir: Path, name: str) -> Truth:
    return Truth(demo, load_scenario(scenarios_dir / name, demo))


def balance_gap(demo: District, truth: Truth, canal_id: str, t0: int, t1: int) -> float:
    inflow = truth.volume_m3(demo.diversion_point(canal_id).id, t0, t1)  # type: ignore[union-attr]
    out = loss = 0.0
    for reach in demo.canals[canal_id].reach_list:
        _, outs = demo.reach_balance_points(canal_id, reach.id)
        out += sum(truth.volume_m3(p.id, t0, t1) for p in outs if p.role is not PointRole.section)
        loss += truth.reach_loss_m3(canal_id, reach.id, t0, t1)
    return abs(inflow - out - loss) / inflow


def test_breach_is_an_unmetered_loss_of_its_reach(demo: District, demo_truth: Truth, scenarios_dir: Path) -> None:
    truth = truth_with(demo, scenarios_dir, "breach.yaml")
    t0, t1 = at("2026-03-09T00:00"), at("2026-03-22T00:00")
    assert truth.reach_unmetered_m3("M1", "M1-R2", t0, t1) == pytest.approx(1.5 * 6 * 3600)
    extra = truth.reach_loss_m3("M1", "M1-R2", t0, t1) - demo_truth.reach_loss_m3("M1", "M1-R2", t0, t1)
    assert extra > 1.5 * 6 * 3600  # the breach, plus seepage on the larger flow feeding it
    assert truth.reach_loss_m3("M1", "M1-R3", t0, t1) == pytest.approx(demo_truth.reach_loss_m3("M1", "M1-R3", t0, t1))
    assert truth.volume_m3("V01-IN", t0, t1) == demo_truth.volume_m3("V01-IN", t0, t1)  # users get their water
    assert balance_gap(demo, truth, "M1", t0, t1) < 1e-9


def test_unmetered_withdrawal(demo: District, demo_truth: Truth, scenarios_dir: Path) -> None:
    truth = truth_with(demo, scenarios_dir, "unmetered-withdrawal.yaml")
    t0, t1 = at("2026-03-09T00:00"), at("2026-03-22T00:00")
    assert truth.reach_unmetered_m3("B1", "B1-R1", t0, t1) == pytest.approx(0.04 * 10 * DAY_MS / 1000)
    assert truth.volume_m3("B1-HEAD", t0, t1) > demo_truth.volume_m3("B1-HEAD", t0, t1) + 0.04 * 10 * DAY_MS / 1000
    assert balance_gap(demo, truth, "B1", t0, t1) < 1e-9


def test_gates_left_open_at_night(demo: District, demo_truth: Truth, scenarios_dir: Path) -> None:
    truth = truth_with(demo, scenarios_dir, "gate-open-at-night.yaml")
    assert truth.flow_m3s("V03-IN", at("2026-03-21T23:00")) == pytest.approx(0.05)
    assert truth.flow_m3s("V03-IN", at("2026-03-21T12:00")) == 0
    t0, t1 = at("2026-03-20T12:00"), at("2026-03-26T00:00")  # from after round S1 has drained
    nights = 4 * 10 * 3600  # four nights of 10 hours inside the window
    assert truth.volume_m3("V03-IN", t0, t1) - demo_truth.volume_m3("V03-IN", t0, t1) == pytest.approx(0.05 * nights)
    assert truth.reach_unmetered_m3("L13", "L13-R1", t0, t1) == pytest.approx(0.08 * nights)
    assert balance_gap(demo, truth, "L13", t0, t1) < 1e-9
    assert balance_gap(demo, truth, "B1", t0, t1) < 1e-9


def test_dry_spell_raises_demand(demo: District, demo_truth: Truth, scenarios_dir: Path) -> None:
    truth = truth_with(demo, scenarios_dir, "dry-spell.yaml")
    april = demo_truth.rounds[1]
    assert april[0] == "S2"
    t0, t1 = april[1] - DAY_MS, april[2] + DAY_MS
    assert truth.volume_m3("V01-IN", t0, t1) == pytest.approx(1.35 * demo_truth.volume_m3("V01-IN", t0, t1))
    march = demo_truth.rounds[0]
    assert truth.volume_m3("V01-IN", march[1], march[2]) == demo_truth.volume_m3("V01-IN", march[1], march[2])
