"""Two districts' ingests on one broker and one host, with the same group and instance name: each keeps
its own MQTT session (the district's id is in the client id) and writes its own district's readings."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from ingest_helpers import DEMO, publish, rows_per_point, wait_for_rows

from canalflow.influx import InfluxV1
from canalflow.mqtt import MqttTarget
from ingest.admin import setup_database
from ingest.worker import IngestWorker, WorkerConfig
from testbed.services import end_mqtt_session

DAY1 = 1_772_294_400_000


def test_two_districts_on_one_broker_keep_their_own_sessions(mqtt_url: str, influx: InfluxV1, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    north = tmp_path / "north.yaml"
    north.write_text(DEMO.read_text(encoding="utf-8").replace("\n  id: demo\n", "\n  id: north\n", 1), encoding="utf-8")
    setup_database(influx, raw_retention="INF")
    caplog.set_level(logging.INFO, logger="canalflow.ingest.worker")
    workers = [IngestWorker(WorkerConfig(district=path, mqtt=MqttTarget.from_url(mqtt_url), influx_url=influx.url, db=influx.database,
                                         deadletter=tmp_path / f"dead-{path.stem}.sqlite", group="shared", instance="one-host"))
               for path in (DEMO, north)]
    assert workers[0].client_id != workers[1].client_id
    threads = [threading.Thread(target=w.run, kwargs={"grace_s": 1.0}) for w in workers]
    for thread in threads:
        thread.start()
    try:
        for path in (DEMO, north):
            publish(mqtt_url, "--district", str(path), "--points", "V01-IN", "--messages", "1", "--readings", "5",
                    "--start-ms", str(DAY1), "--step-ms", "600000")
        wait_for_rows(influx, 10)
    finally:
        for worker in workers:
            worker.stop.set()
        for thread in threads:
            thread.join(30)
        for worker in workers:
            end_mqtt_session(mqtt_url, worker.client_id)
    assert rows_per_point(influx) == {"V01-IN": 10}
    counts = influx.query_points('SELECT COUNT("qcode") AS n FROM "reading" GROUP BY "district"')
    assert {row["district"]: row["n"] for row in counts} == {"demo": 5, "north": 5}
    connects = [r.getMessage() for r in caplog.records if "connected to" in r.getMessage()]
    assert len(connects) == 2, connects  # one each: neither took the other's session and was thrown off
