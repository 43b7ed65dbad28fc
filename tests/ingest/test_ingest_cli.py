"""The ingest command line: help with examples, clear errors, setup, self-metrics, periodic rollups."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest
from ingest_helpers import DEMO, publish, run_cli, wait_for_rows

from canalflow.contract import M, Reading, ReadingBatch, reading_lines, source_of
from canalflow.influx import InfluxV1
from testbed.services import free_port

DAY1 = 1_772_294_400_000


@pytest.mark.parametrize("command", [
    ["run"], ["setup"], ["rollup"], ["deadletter", "list"], ["deadletter", "show"], ["deadletter", "replay"],
])
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    done = run_cli("ingest", *command, "--help")
    assert done.returncode == 0
    assert "example" in done.stdout and "canalflow ingest" in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["run", "--district", "missing.yaml", "--mqtt", "mqtt://127.0.0.1:1", "--influx", "http://127.0.0.1:1", "--db", "x"], "missing.yaml"),
    (["run", "--district", str(DEMO), "--mqtt", "http://127.0.0.1:1", "--influx", "http://127.0.0.1:1", "--db", "x"], "scheme 'http' is not supported"),
    (["run", "--district", str(DEMO), "--mqtt", "mqtt://127.0.0.1:1", "--influx", "http://127.0.0.1:1", "--db", "x",
      "--inflight", "0"], "--inflight"),
    (["run", "--district", str(DEMO), "--mqtt", "mqtt://127.0.0.1:1", "--influx", "http://127.0.0.1:1", "--db", "x",
      "--group", "a/b"], "--group 'a/b'"),
    (["rollup", "--district", str(DEMO), "--influx", "http://127.0.0.1:1", "--db", "x", "--from", "2026-03-02",
      "--to", "2026-03-01"], "--to must be after --from"),
    (["rollup", "--district", str(DEMO), "--influx", "http://127.0.0.1:1", "--db", "x", "--from", "yesterday",
      "--to", "2026-03-01"], "ISO 8601"),
    (["deadletter", "list", "--store", "/nonexistent/dl.sqlite"], "does not exist"),
    (["setup", "--influx", f"http://127.0.0.1:{free_port()}", "--db", "x"], "is InfluxDB running"),
])
def test_errors_exit_non_zero_and_say_what_to_fix(args: list[str], message: str) -> None:
    done = run_cli("ingest", *args)
    assert done.returncode == 1
    assert message in done.stderr


def test_setup_creates_raw_and_rollup_policies_and_rollups_go_to_the_longer_one(influx: InfluxV1) -> None:
    for _ in range(2):  # idempotent
        done = run_cli("ingest", "setup", "--influx", influx.url, "--db", influx.database, "--raw-retention", "400d")
        assert done.returncode == 0, done.stderr
    policies = {r["name"]: r for r in influx.query_points("SHOW RETENTION POLICIES")}
    assert policies["raw"]["default"] is True and policies["raw"]["duration"] == "9600h0m0s"
    assert policies["rollups"]["duration"] == "0s"  # INF

    batch = ReadingBatch(district="demo", gateway="GW-B1", point="V01-IN", seq=0, readings=tuple(
        Reading(ts=DAY1 + i * 600_000, values={"totaliser": 100.0 + i}) for i in range(145)))
    influx.write_lines(reading_lines(batch, "L11", "intake"))
    done = run_cli("ingest", "rollup", "--district", str(DEMO), "--influx", influx.url, "--db", influx.database,
                   "--from", "2026-03-01T00:00:00+08:00", "--to", "2026-03-02T00:00:00+08:00", "--intervals", "1d")
    assert done.returncode == 0, done.stderr
    assert "retention policy 'rollups'" in done.stdout
    rows = influx.query_points('SELECT "volume_m3" FROM "rollups"."volume" WHERE "point" = \'V01-IN\'')
    assert [r["volume_m3"] for r in rows] == [144.0]
    assert influx.query_points('SELECT COUNT("qcode") FROM "raw"."reading"')[0]["count"] == 145


def test_metrics_endpoint_stats_rows_and_periodic_rollup(mqtt_url: str, influx: InfluxV1, start_ingest, tmp_path: Path) -> None:
    port = free_port()
    ingest = start_ingest(mqtt_url, influx, "--metrics-port", str(port), "--rollup-every", "1")
    publish(mqtt_url, "--district", str(DEMO), "--points", "V01-IN,V02-IN", "--messages", "3", "--readings", "49",
            "--start-ms", str(DAY1), "--step-ms", "600000")
    wait_for_rows(influx, 2 * 147, ingest=ingest)
    # Retained gateway statuses left on the shared broker by other tests count as written messages too.
    written = re.compile(r'^canalflow_ingest_messages_total\{result="written"\} (\d+)\.0$', re.M)
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline and not ((m := written.search(text)) and int(m.group(1)) >= 6):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()  # counted after the ack, just after the rows
        time.sleep(0.2)
    assert "canalflow_ingest_readings_total 294.0" in text
    count = written.search(text)
    assert count and int(count.group(1)) >= 6, text[-1500:]
    assert "canalflow_ingest_write_seconds_bucket" in text

    deadline = time.monotonic() + 30
    rows: list[dict] = []
    while time.monotonic() < deadline and not rows:
        rows = influx.query_points(f'SELECT "volume_m3" FROM {source_of(M.volume)} WHERE "point" = \'V01-IN\' AND "interval" = \'1d\' '
                                   f'AND time = {DAY1}ms')
        time.sleep(0.5)
    assert rows, ingest.output()[-2000:]
    assert rows[0]["volume_m3"] == pytest.approx(144 * 0.6)
    assert ingest.stop() == 0
    stats = influx.query_points('SELECT LAST("readings") AS n, LAST("messages") AS m FROM "ingest_stats"')
    assert stats[0]["n"] == 294 and stats[0]["m"] >= 6


def test_setup_refuses_to_hide_points_in_another_policy(influxd) -> None:
    client = InfluxV1(influxd.url, f"t_autogen_{free_port()}")
    client.create_database()  # as `CREATE DATABASE` leaves it: autogen is the default policy
    try:
        client.write_lines(['reading,point=V01-IN flow=1.5 1772294400000'])
        done = run_cli("ingest", "setup", "--influx", influxd.url, "--db", client.database)
        assert done.returncode == 1
        assert "retention policy 'autogen'" in done.stderr and "reading" in done.stderr
        assert "SELECT * INTO" in done.stderr  # says what to do
        assert client.query_points("SELECT COUNT(flow) FROM reading")[0]["count"] == 1  # nothing hidden
        assert "raw" not in {r["name"] for r in client.query_points("SHOW RETENTION POLICIES")}
    finally:
        client.drop_database()
        client.close()


def test_setup_reports_altered_policies(influx: InfluxV1) -> None:
    done = run_cli("ingest", "setup", "--influx", influx.url, "--db", influx.database)
    assert done.returncode == 0, done.stderr
    assert "[altered]" in done.stdout and "alterd" not in done.stdout


def test_run_on_a_database_setup_did_not_make_says_to_run_setup(influxd) -> None:
    db = f"t_missing_{free_port()}"
    done = run_cli("ingest", "run", "--district", str(DEMO), "--mqtt", "mqtt://127.0.0.1:1", "--influx", influxd.url,
                   "--db", db)
    assert done.returncode == 1
    assert f"database '{db}' does not exist" in done.stderr and "canalflow ingest setup" in done.stderr
