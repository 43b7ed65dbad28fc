"""Synthetic districts (the benchmark's) are valid district files whose water balances."""

from __future__ import annotations

from pathlib import Path

import pytest

from canalflow.district import load_district
from firmware_sim.synth import synthetic_district, write_synthetic_district
from firmware_sim.truth import Truth

DAY_MS = 86_400_000


def test_a_small_synthetic_district_loads_and_balances(tmp_path: Path) -> None:
    district = load_district(write_synthetic_district(tmp_path / "d.yaml", 120, branches=3, laterals_per_branch=2,
                                                     units_per_gateway=50))
    assert len(district.points) == 120 and len(district.gateways) == 3
    truth = Truth(district)
    _, start, end = truth.rounds[0]
    t0, t1 = start - DAY_MS, end + DAY_MS
    head = truth.volume_m3("M1-HEAD", t0, t1)
    intakes = sum(truth.volume_m3(p, t0, t1) for p, point in district.points.items() if point.role.value == "intake")
    losses = sum(truth.reach_loss_m3(r.canal, r.reach.id, t0, t1) for r in district.reaches)
    assert head > 0 and head == pytest.approx(intakes + losses, rel=1e-9)


def test_synthetic_district_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="units_per_gateway"):
        synthetic_district(100, units_per_gateway=300)
    with pytest.raises(ValueError, match="cannot fill"):
        synthetic_district(50, branches=10, laterals_per_branch=8)
