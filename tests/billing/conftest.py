"""Billing test fixtures: the demo district."""

from __future__ import annotations

import pytest
from billing_synth import DEMO

from canalflow.district import District, load_district


@pytest.fixture(scope="session")
def demo() -> District:
    return load_district(DEMO)
