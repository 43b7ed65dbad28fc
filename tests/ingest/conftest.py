"""Fixtures of the ingest tests (helpers live in ingest_helpers.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ingest_helpers import DEMO, IngestProcess

from canalflow.district import load_district
from canalflow.influx import InfluxV1
from ingest.worker import ingest_client_id
from testbed.services import end_mqtt_session


@pytest.fixture
def start_ingest(tmp_path: Path) -> Iterator[Callable[..., IngestProcess]]:
    started: list[IngestProcess] = []
    sessions: list[tuple[str, str]] = []

    def start(mqtt_url: str, influx: InfluxV1, *extra: str, workers: int = 1, deadletter: Path | None = None,
              group: str | None = None, wait: bool = True) -> IngestProcess:
        store = deadletter or tmp_path / "deadletter.sqlite"
        group = group or f"g{len(started)}{os.getpid()}{int(time.time() * 1000) % 100000}"
        instance = tmp_path.name[-20:]
        args = [
            "--district", str(DEMO), "--mqtt", mqtt_url, "--influx", influx.url, "--db", influx.database,
            "--workers", str(workers), "--deadletter", str(store), "--stats-interval", "2", "--backoff-max", "0.5",
            "--group", group, "--instance", instance, *extra,
        ]
        process = IngestProcess(args, tmp_path / f"ingest-{len(started)}.log")
        started.append(process)
        sessions.extend((mqtt_url, ingest_client_id(load_district(DEMO).id, group, instance, i)) for i in range(workers))
        if wait:
            process.wait_ready(workers)
        return process

    yield start
    for process in started:
        process.stop()
    for url, client_id in sessions:
        end_mqtt_session(url, client_id)

