"""Scale-out and failure: a $share group splits the load; InfluxDB restarts and worker crashes lose nothing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from ingest_helpers import DEMO, publish, publish_async, rows_per_point, wait_for_rows

from canalflow.district import load_district
from canalflow.influx import InfluxV1
from ingest.admin import setup_database
from testbed.services import Influxd, Mosquitto

POINTS = list(load_district(DEMO).points)


def expected_rows(messages: int, readings: int) -> dict[str, int]:
    return dict.fromkeys(POINTS, messages * readings)


def written_by_worker(influx: InfluxV1) -> dict[str, int]:
    rows = influx.query_points('SELECT LAST("readings") AS n FROM "ingest_stats" GROUP BY "worker"')
    return {r["worker"]: int(r["n"]) for r in rows}


def test_two_workers_in_a_share_group_split_the_load_and_write_nothing_twice(
    mqtt_url: str, influx: InfluxV1, start_ingest
) -> None:
    ingest = start_ingest(mqtt_url, influx, workers=2)
    messages, readings = 40, 5
    publish(mqtt_url, "--district", str(DEMO), "--messages", str(messages), "--readings", str(readings))
    total = len(POINTS) * messages * readings
    wait_for_rows(influx, total, ingest=ingest)
    assert ingest.stop() == 0
    assert rows_per_point(influx) == expected_rows(messages, readings)
    per_worker = written_by_worker(influx)
    assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker
    assert sum(per_worker.values()) == total, f"some readings were written by both workers: {per_worker}"


def test_influxdb_restarted_mid_load_loses_and_duplicates_nothing(
    mqtt_url: str, make_influxd: Callable[..., Influxd], start_ingest
) -> None:
    server = make_influxd()
    influx = InfluxV1(server.url, "restart")
    setup_database(influx)  # as an operator does: `canalflow ingest setup`
    ingest = start_ingest(mqtt_url, influx, workers=1)
    messages, readings = 120, 10
    publisher = publish_async(mqtt_url, "--district", str(DEMO), "--messages", str(messages), "--readings", str(readings))
    wait_for_rows(influx, 2000, ingest=ingest)
    server.stop()
    time.sleep(2.0)  # writes fail meanwhile: nothing may be acknowledged
    server.start()
    assert publisher.wait(120) == 0, publisher.stderr.read() if publisher.stderr else ""
    wait_for_rows(influx, len(POINTS) * messages * readings, timeout=90, ingest=ingest)
    assert rows_per_point(influx) == expected_rows(messages, readings)
    assert "retrying" in ingest.output()
    ingest.stop()
    influx.close()


def test_worker_killed_with_sigkill_under_load_loses_nothing(mqtt_url: str, influx: InfluxV1, start_ingest) -> None:
    ingest = start_ingest(mqtt_url, influx, workers=2)
    messages, readings = 120, 10
    publisher = publish_async(mqtt_url, "--district", str(DEMO), "--messages", str(messages), "--readings", str(readings))
    wait_for_rows(influx, 3000, ingest=ingest)
    victims = ingest.worker_pids()
    assert len(victims) == 2, victims
    os.kill(victims[0], signal.SIGKILL)
    assert publisher.wait(120) == 0
    wait_for_rows(influx, len(POINTS) * messages * readings, timeout=90, ingest=ingest)
    assert rows_per_point(influx) == expected_rows(messages, readings)
    assert "restarting it" in ingest.output()
    assert ingest.stop() == 0


def test_broker_restarted_mid_load_loses_nothing(make_mosquitto: Callable[..., Mosquitto], influx: InfluxV1, start_ingest) -> None:
    broker = make_mosquitto()
    ingest = start_ingest(broker.url, influx, workers=2)
    messages, readings = 60, 10
    publish(broker.url, "--district", str(DEMO), "--messages", str(messages), "--readings", str(readings))
    wait_for_rows(influx, 1000, ingest=ingest)
    # A graceful restart keeps the persistent sessions and their queued messages; in-flight ones are
    # redelivered under new packet ids after the reconnect (acks of the old ids must not be sent).
    broker.restart()
    wait_for_rows(influx, len(POINTS) * messages * readings, timeout=90, ingest=ingest)
    assert rows_per_point(influx) == expected_rows(messages, readings)
    assert "connection lost" in ingest.output()
    assert ingest.stop() == 0
