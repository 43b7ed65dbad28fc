"""Station receivers publish a retained status for gateway RX-1, which the demo district's Modbus
tests do not know: each test module here gets a broker of its own, so no retained message of a
receiver reaches another suite's ingest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.services import Mosquitto


@pytest.fixture(scope="module")
def mqtt_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = Mosquitto(tmp_path_factory.mktemp("telemetry-mosquitto")).start()  # a ServiceError fails the tests
    yield broker.url
    broker.stop()
