"""Ingest's background work never dies silently (canalflow/supervise.py's rule): a worker that exits
is logged and restarted, one that keeps exiting stops ingest with exit status 1; the rollup loop
logs a failed round and succeeds at a later one; a worker whose MQTT network thread dies exits 1."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from ingest_helpers import DEMO, publish, wait_for_rows

from canalflow.contract import M, source_of
from canalflow.credentials import generate_credentials
from canalflow.district import load_district
from canalflow.influx import InfluxV1
from canalflow.mqtt import MqttTarget
from ingest.admin import setup_database
from ingest.worker import IngestWorker, WorkerConfig
from testbed.services import Influxd, Mosquitto

DAY1 = 1_772_294_400_000  # 2026-03-01T00:00+08:00, a local midnight of the demo district


def wait_for_text(read: Callable[[], str], pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, out := read()):
            return out
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} within {timeout:.0f} s:\n{read()[-3000:]}")


def test_a_worker_the_broker_keeps_refusing_stops_ingest_with_exit_1(
    make_mosquitto: Callable[..., Mosquitto], influx: InfluxV1, start_ingest, tmp_path: Path
) -> None:
    creds = tmp_path / "creds"
    generate_credentials(load_district(DEMO), creds)
    broker = make_mosquitto(password_file=creds / "mosquitto.passwd", acl_file=creds / "mosquitto.acl")
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    ingest = start_ingest(broker.url, influx, "--mqtt-username", "ingest", "--mqtt-password-file", str(wrong), wait=False)
    try:
        code = ingest.proc.wait(120)
    finally:
        ingest.stop()
    out = ingest.output()
    assert code == 1, out[-3000:]
    assert out.count("exited with code 1; restarting it") == 4, out[-3000:]  # the fifth exit within a minute ends it
    assert "bad user name or password" in out or "not authorised" in out
    assert "the worker 0 failed 5 times within a minute, last with exit code 1; stopping ingest (exit 1)" in out
    assert "not-the-password" not in out


def test_the_rollup_loop_logs_an_unreachable_influxdb_and_rolls_up_once_it_is_back(
    mqtt_url: str, make_influxd: Callable[..., Influxd], start_ingest
) -> None:
    server = make_influxd()
    influx = InfluxV1(server.url, "supervised")
    setup_database(influx, raw_retention="INF")
    writer = start_ingest(mqtt_url, influx)  # no rollups: the day it writes stays dirty in its state file
    publish(mqtt_url, "--district", str(DEMO), "--points", "V01-IN", "--messages", "1", "--readings", "13",
            "--start-ms", str(DAY1), "--step-ms", "600000")
    wait_for_rows(influx, 13, ingest=writer)
    writer.stop()

    server.stop()
    ingest = start_ingest(mqtt_url, influx, "--rollup-every", "1")  # same state file: it finds the dirty day
    wait_for_text(ingest.output, "rollup failed, will retry", 30)
    server.start()
    wait_for_text(ingest.output, r"rollup: recomputed [1-9]\d* day\(s\)", 60)  # the day, and the one its margin reaches
    assert ingest.proc.poll() is None, ingest.output()[-3000:]
    days = influx.query_points(f"SELECT volume_m3 FROM {source_of(M.volume)} WHERE point = 'V01-IN' AND \"interval\" = '1d'")
    assert {row["time"]: row["volume_m3"] for row in days}[DAY1] == pytest.approx(12 * 0.6)  # 13 readings, 0.6 m3 apart
    assert ingest.stop() == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # that thread's death is the point
def test_a_worker_whose_mqtt_thread_dies_exits_1(mqtt_url: str, influx: InfluxV1, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A group the CLI would refuse, given to the worker directly: paho raises in the connect
    callback (an invalid subscription filter), which ends its network thread."""
    config = WorkerConfig(district=DEMO, mqtt=MqttTarget.from_url(mqtt_url), influx_url=influx.url, db=influx.database,
                          deadletter=tmp_path / "deadletter.sqlite", group="bad#group", instance="thread-test")
    worker = IngestWorker(config)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(worker.run(grace_s=1.0)))
    runner.start()
    runner.join(30)
    if runner.is_alive():
        worker.stop.set()
        runner.join(10)
        pytest.fail("the worker went on without its MQTT network thread")
    assert result == [1]
    assert any("MQTT network thread died" in r.getMessage() for r in caplog.records)
