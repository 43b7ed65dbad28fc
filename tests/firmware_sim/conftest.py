"""Fixtures for the fleet tests: the demo district, its ground truth and a running fleet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from canalflow.clock import SimClock
from canalflow.district import District, load_district
from firmware_sim.fleet import Fleet, FleetThread
from firmware_sim.truth import Truth

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-district.yaml"
SCENARIOS = ROOT / "examples" / "scenarios"
HOUR_MS = 3_600_000


@pytest.fixture(scope="session")
def scenarios_dir() -> Path:
    return SCENARIOS


@pytest.fixture(scope="session")
def demo() -> District:
    return load_district(DEMO)


@pytest.fixture(scope="session")
def demo_truth(demo: District) -> Truth:
    return Truth(demo, seed=0)


@pytest.fixture(scope="session")
def first_round(demo_truth: Truth) -> tuple[str, int, int]:
    """(label, start ms, end ms) of the demo district's first irrigation round."""
    return demo_truth.rounds[0]


@pytest.fixture
def running_fleet(demo: District, demo_truth: Truth, first_round: tuple[str, int, int]) -> Iterator[Fleet]:
    """The demo fleet served on free ports, its clock running in real time from 12 h into round 1."""
    clock = SimClock.starting_at(first_round[1] + 12 * HOUR_MS, 1.0)
    with FleetThread(demo, clock=clock, truth=demo_truth) as fleet:
        yield fleet
