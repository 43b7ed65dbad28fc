"""Shared pytest fixtures.

Real services, started once per test session on free loopback ports (see testbed.services):

- ``mosquitto`` — a running :class:`~testbed.services.Mosquitto` (anonymous, persistence on).
- ``mqtt_url`` — its ``mqtt://127.0.0.1:PORT`` URL.
- ``influxd`` — a running :class:`~testbed.services.Influxd` (InfluxDB 1.6).
- ``influx`` — an :class:`~canalflow.influx.InfluxV1` on a fresh, uniquely named database,
  created for the test and dropped after it.
- ``postgres`` — a running :class:`~testbed.services.Postgres` (a throwaway cluster, trust auth on loopback).
- ``postgres_url`` — the SQLAlchemy URL of a fresh, uniquely named PostgreSQL database, created for the
  test and dropped after it (sorting text like en_US, as a production server would; see the fixture).
- ``make_mosquitto(**kwargs)`` / ``make_influxd(**kwargs)`` — start a private instance for one
  test (in its tmp_path; stopped at teardown), for tests that restart, kill or configure a
  service (password file, ACL, TLS) and so must not touch the shared one.

A missing binary fails the test with the install command; these tests are never skipped.
Tests that restart or kill a broker start their own instance instead of touching the shared one.

Add new fixtures below in their own section.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from canalflow.influx import InfluxV1
from ingest.admin import setup_database
from testbed.services import Influxd, Mosquitto, Postgres, ServiceError, ServiceMissing

_S = TypeVar("_S", Mosquitto, Influxd, Postgres)


def start_or_fail(make: Callable[[], _S]) -> _S:
    """Create and start a service; fail (never skip) the test with the hint when it cannot run.

    Usage: ``broker = start_or_fail(lambda: Mosquitto(tmp_path, password_file=pw))``.
    """
    try:
        return make().start()
    except ServiceMissing as exc:
        pytest.fail(f"{exc}\nThe integration tests need the real service; see `make deps`.", pytrace=False)
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)


# ---------------------------------------------------------------------------------------------
# MQTT broker
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = start_or_fail(lambda: Mosquitto(tmp_path_factory.mktemp("mosquitto")))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def mqtt_url(mosquitto: Mosquitto) -> str:
    return mosquitto.url


@pytest.fixture
def make_mosquitto(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    started: list[Mosquitto] = []

    def make(**kwargs: Any) -> Mosquitto:
        workdir = tmp_path / f"mosquitto-{len(started)}"
        broker = start_or_fail(lambda: Mosquitto(workdir, **kwargs))
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()


# ---------------------------------------------------------------------------------------------
# InfluxDB
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    server = start_or_fail(lambda: Influxd(tmp_path_factory.mktemp("influxd")))
    yield server
    server.stop()


@pytest.fixture
def make_influxd(tmp_path: Path) -> Iterator[Callable[..., Influxd]]:
    started: list[Influxd] = []

    def make(**kwargs: Any) -> Influxd:
        workdir = tmp_path / f"influxd-{len(started)}"
        server = start_or_fail(lambda: Influxd(workdir, **kwargs))
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def influx(influxd: Influxd, request: pytest.FixtureRequest) -> Iterator[InfluxV1]:
    name = f"t_{request.node.name[:40]}_{uuid.uuid4().hex[:8]}"
    client = InfluxV1(influxd.url, "".join(c if c.isalnum() else "_" for c in name))
    # as an operator does (`canalflow ingest setup`): policies `raw` (default) and `rollups`; raw kept
    # forever here because some tests write fixed timestamps older than the production 730 days
    setup_database(client, raw_retention="INF")
    yield client
    client.drop_database()
    client.close()


# ---------------------------------------------------------------------------------------------
# PostgreSQL (the billing ledger's production database)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = start_or_fail(lambda: Postgres(tmp_path_factory.mktemp("postgres")))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres: Postgres, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for one test.  It sorts text by ICU en-US, like the en_US.UTF-8 default of
    the postgres image we deploy (our cluster's own C locale would sort like SQLite and hide bugs)."""
    name = "".join(c if c.isalnum() else "_" for c in f"t_{request.node.name[:40]}_{uuid.uuid4().hex[:8]}").lower()
    yield postgres.create_database(name, icu_locale="en-US")
    postgres.drop_database(name)


# ---------------------------------------------------------------------------------------------
# The billing ledger default
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _ledger_in_a_temporary_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A `billing run` without --ledger records in $CANALFLOW_LEDGER, else sqlite:///out/ledger.db of the
    working directory (canalflow.cliopts): keep the tests' runs out of the repository's out/."""
    if os.environ.get("CANALFLOW_LEDGER"):
        yield
        return
    os.environ["CANALFLOW_LEDGER"] = f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.db'}"
    yield
    os.environ.pop("CANALFLOW_LEDGER", None)
