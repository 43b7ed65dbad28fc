"""Web workbench fixtures: accounts made as an operator makes them, readings in a real InfluxDB, a real ledger.

The district is the demo district with one hostile unit name (V01), so every page that shows it
proves it is escaped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "billing"))

from billing_synth import DEMO, MIN, Meter, write_meter
from web_accounts import ACCOUNTS, HOSTILE, password

from billing.service import ServiceConfig
from billing.window import season_window
from canalflow.district import District, load_district
from canalflow.influx import InfluxV1
from testbed.steady import steady_flows
from web.app import WebConfig
from web.auth import add_user, load_users

DAY_MS = 86_400_000


@pytest.fixture(scope="session")
def district_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = DEMO.read_text(encoding="utf-8")
    assert "name: 张庄村," in text
    path = tmp_path_factory.mktemp("district") / "district.yaml"
    path.write_text(text.replace("name: 张庄村,", f'name: "{HOSTILE}",'), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def district(district_path: Path) -> District:
    return load_district(district_path)


@pytest.fixture(scope="session")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users.yaml"
    for user, role in ACCOUNTS.items():
        add_user(path, user, role, password(user))
    return path


@pytest.fixture
def day(district: District, influx: InfluxV1) -> tuple[int, int]:
    """Two days of steady readings at every point; returns the first day's window (ms)."""
    t0 = season_window(district, district.seasons["2026-spring"])[0] + 10 * DAY_MS
    for point, flow in steady_flows(district, 0.1).items():
        write_meter(influx, district, point, Meter(flow, swing=0.0), t0 - 60 * MIN, t0 + 2 * DAY_MS + 60 * MIN, step_ms=15 * MIN)
    return t0, t0 + DAY_MS


@pytest.fixture
def config(tmp_path: Path, users_file: Path, district_path: Path, influx: InfluxV1) -> WebConfig:
    return WebConfig(ServiceConfig(f"sqlite:///{tmp_path}/ledger.db", district_path, influx.url, influx.database), load_users(users_file))
