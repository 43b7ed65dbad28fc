"""Chaos on the whole pipeline under load: fleet -> edge agents -> Mosquitto -> ingest -> InfluxDB, each
part its own process, about 260 readings per second (the demo's 44 meters polled every 5 simulated minutes at
1800x). One fault per test, in the middle of the run; then the edges stop, ingest drains and the
figures of issues 4 and 5 are checked per gateway from the edge's own durable buffer
(``proof_kit.loss_report``):

    lost       = confirmed by ingest - rows in InfluxDB           must be 0
    duplicated = rows of one (point, ts) beyond the first         must be 0

A reading leaves the edge's buffer only when ingest confirms it stored (``publish.confirm: ingest``),
so "confirmed" is every reading that left the buffer other than by the declared full-buffer policy.
The disk-full test bounds the edge buffer instead, and checks that the declared policy
(drop_oldest) happens, is logged and is counted in the buffer and the status.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from proof_kit import (
    TZ,
    distinct_rows_per_point,
    dump_logs,
    log_count,
    loss_report,
    season_district,
    settle,
)

from testbed.pipeline import Pipeline, wait_for
from testbed.services import Influxd, Mosquitto, free_port

SPEED = 1800.0
FAST_S, SLOW_S = 300, 900
START = dt.datetime(2026, 3, 12, 6, 0, tzinfo=TZ)  # inside round S1: every meter sees flow
BEFORE_S, AFTER_S = 5.0, 8.0  # wall seconds of load before the fault and after it


@pytest.fixture
def chaos(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[Mosquitto, Influxd], Pipeline]]:
    """A factory: chaos(broker, server) -> a started Pipeline; stopped (and its database dropped) at teardown."""
    started: list[Pipeline] = []

    def make(broker: Mosquitto, server: Influxd) -> Pipeline:
        district = season_district(tmp_path, FAST_S, SLOW_S)
        name = "chaos_" + re.sub(r"\W", "_", request.node.name)[:40]
        pipeline = Pipeline(district, tmp_path, broker, server, name)
        started.append(pipeline)
        try:
            pipeline.start_all(START, SPEED, seed=5)
        except Exception:
            dump_logs(pipeline)
            raise
        return pipeline

    yield make
    for pipeline in started:
        pipeline.stop()
        if pipeline.influxd.running:
            pipeline.influx.drop_database()


def load(pipeline: Pipeline, wall_s: float) -> None:
    pipeline.run_for_sim(wall_s * SPEED)


def finish(pipeline: Pipeline) -> dict[str, dict[str, int]]:
    """Stop the edges, drain ingest; return the loss report (printed for the record)."""
    settle(pipeline, quiet_s=3.0)
    report = loss_report(pipeline)
    print(json.dumps(report, indent=1))
    return report


def assert_nothing_lost_or_duplicated(pipeline: Pipeline, report: dict[str, dict[str, int]], dropped_ok: bool = False) -> None:
    for gateway, figures in report.items():
        assert figures["committed"] > 0, (gateway, figures)
        assert figures["waiting"] == 0, (gateway, figures)
        lost = figures["confirmed"] - figures["stored"]
        if dropped_ok:
            # A reading in flight when the broker went away may have reached it (and so InfluxDB) before
            # the full buffer dropped it unconfirmed: stored may exceed confirmed, by at most the drops.
            lost = max(0, lost)
            assert figures["stored"] <= figures["confirmed"] + figures["dropped"], (gateway, figures)
        else:
            assert figures["dropped"] == 0, (gateway, figures)
        assert lost == 0, f"{gateway}: {lost} confirmed readings are not in InfluxDB: {figures}"
    duplicated = {p: rows - distinct for p, (rows, distinct) in distinct_rows_per_point(pipeline.influx).items() if rows != distinct}
    assert not duplicated, duplicated


def test_broker_restarted_under_load(chaos, make_mosquitto, influxd):
    """Mosquitto 2.0 forgets ingest's shared subscription on a restart (test_broker_limits.py): what
    the edges publish before ingest subscribes again is acknowledged and dropped. The edges keep those
    readings until ingest confirms them and publish them again (edge/outstanding.py), so nothing is
    lost. The wait after the restart covers reconnection and the edges' confirmation timeout (5 s)."""
    broker = make_mosquitto()
    pipeline = chaos(broker, influxd)
    load(pipeline, BEFORE_S)
    broker.restart()
    load(pipeline, AFTER_S + 6.0)
    assert_nothing_lost_or_duplicated(pipeline, finish(pipeline))
    edge_logs = [pipeline.workdir / f"edge-{g}.log" for g in pipeline.district.gateways]
    assert all(log_count(log, "lost the broker") >= 1 for log in edge_logs)  # the restart did cut them off
    print("readings published again for want of a confirmation:",
          {log.stem: log_count(log, "publishing") for log in edge_logs})


def test_broker_killed_9_under_load(chaos, make_mosquitto, influxd):
    """kill -9 of Mosquitto: what it acknowledged but had not saved is gone from the broker, and what
    ingest had not yet taken with it. The edges still hold those readings (unconfirmed) and publish
    them again once ingest confirms later ones."""
    broker = make_mosquitto()
    pipeline = chaos(broker, influxd)
    load(pipeline, BEFORE_S)
    broker.kill()
    broker.start()
    load(pipeline, AFTER_S + 6.0)
    assert_nothing_lost_or_duplicated(pipeline, finish(pipeline))


def test_influxdb_restarted_under_load(chaos, mosquitto, make_influxd):
    """Ingest's writes fail while InfluxDB is down and are retried; nothing is acknowledged meanwhile.

    On the session-wide broker this test once stored far more rows than confirmed: its ingest took
    over the persistent MQTT session an earlier pipeline had left (same group and instance), queued
    full of other tests' readings. Each pipeline now has its own group and ends its sessions."""
    server = make_influxd()
    pipeline = chaos(mosquitto, server)
    load(pipeline, BEFORE_S)
    server.restart()
    load(pipeline, AFTER_S)
    assert_nothing_lost_or_duplicated(pipeline, finish(pipeline))


def test_ingest_worker_killed_9_under_load(chaos, mosquitto, influxd):
    pipeline = chaos(mosquitto, influxd)
    load(pipeline, BEFORE_S)
    ingest_log = pipeline.procs["ingest"].log_path
    (pid,) = re.findall(r"started worker 0 \(pid (\d+)\)", ingest_log.read_text())
    os.kill(int(pid), signal.SIGKILL)
    wait_for(lambda: log_count(ingest_log, "restarting it") >= 1, 30, "the ingest supervisor to restart the worker")
    load(pipeline, AFTER_S)
    assert_nothing_lost_or_duplicated(pipeline, finish(pipeline))


def test_edge_killed_9_mid_publish_and_restarted_on_its_buffer(chaos, mosquitto, influxd):
    pipeline = chaos(mosquitto, influxd)
    load(pipeline, BEFORE_S)
    # GW-MAIN carries the most meters: it is publishing at every moment of the run.
    pipeline.procs.pop("edge-GW-MAIN").kill()
    load(pipeline, 2.0)  # its meters go unpolled for an hour of simulated time
    pipeline.start_edge("GW-MAIN")
    load(pipeline, AFTER_S)
    assert_nothing_lost_or_duplicated(pipeline, finish(pipeline))


def test_edge_buffer_full_applies_the_declared_policy_visibly(chaos, mosquitto, influxd, tmp_path):
    """GW-MAIN's link to the broker is down; its buffer holds 100 readings, drop_oldest: the overflow
    is dropped, logged and counted (buffer meta, status line); everything it kept reaches InfluxDB
    once the agent, restarted on the same buffer, reaches the broker again.

    The link is cut at the edge (an unreachable broker address): the broker and ingest stay up."""
    pipeline = chaos(mosquitto, influxd)
    pipeline.procs.pop("edge-GW-MAIN").stop()
    config = tmp_path / "edge-GW-MAIN.yaml"
    config.write_text(f"district: {pipeline.district.path}\ngateway: GW-MAIN\n"
                      "buffer: {max_rows: 100, when_full: drop_oldest}\npublish: {status_interval_s: 1}\n")

    def edge_via(broker_url: str):
        return pipeline.spawn("edge-GW-MAIN", [
            "edge", "run", "--config", str(config), "--mqtt", broker_url,
            "--endpoints", str(pipeline.manifest_path), "--clock-from", str(pipeline.manifest_path),
            "--buffer", str(pipeline.workdir / "edge-GW-MAIN.sqlite")])

    cut_off = edge_via(f"mqtt://127.0.0.1:{free_port()}")  # nothing listens there
    # 9 meters at 6 polls per wall second: 100 rows fill in about 2 s
    wait_for(lambda: log_count(cut_off.log_path, "under policy drop_oldest") >= 1, 30, "the buffer to overflow")
    wait_for(lambda: re.search(r"dropped [1-9]\d*\)", cut_off.log_path.read_text()) is not None, 10,
               "the status line to count the dropped readings")
    pipeline.procs.pop("edge-GW-MAIN").stop()
    edge_via(pipeline.mqtt_url)
    load(pipeline, AFTER_S)
    report = finish(pipeline)
    assert report["GW-MAIN"]["dropped"] > 0, report
    assert_nothing_lost_or_duplicated(pipeline, report, dropped_ok=True)

