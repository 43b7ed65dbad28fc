"""Billing test fixtures: the demo district, and a ledger on each backend we deploy.

``ledger_url`` is parametrized: a test that takes it runs once on a SQLite file and once on a
fresh database of the real PostgreSQL server started for the session (see tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from billing_synth import DEMO

from canalflow.district import District, load_district

LEDGER_BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def demo() -> District:
    return load_district(DEMO)


@pytest.fixture(params=LEDGER_BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    return str(request.getfixturevalue("postgres_url"))  # the server starts only when a test needs it
