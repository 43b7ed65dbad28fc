"""Stations -> receiver -> Mosquitto -> `canalflow ingest run` -> InfluxDB, confirmed end to end."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from telemetry_testkit import IngestRun, sl651_report, stations_district, szy206_report

from canalflow.contract import M
from canalflow.district import load_district
from canalflow.influx import InfluxV1
from edge.telemetry.receiver import StationReceiver
from testbed.services import Mosquitto


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def run_receiver(receiver: StationReceiver, ingest: IngestRun, stations: Callable[[int], Awaitable[None]]) -> None:
    """Run the receiver while ``stations(port)`` talk to it; then stop it, and ingest."""
    async def scenario() -> None:
        task = asyncio.create_task(receiver.run())
        try:
            await asyncio.wait_for(receiver.ready.wait(), 10)
            assert receiver.port is not None
            await stations(receiver.port)
        finally:
            receiver.stop()
            await asyncio.wait_for(task, 30)

    try:
        asyncio.run(scenario())
    finally:
        ingest.stop()


def test_station_readings_are_stored_by_ingest_and_confirmed(make_mosquitto: Callable[..., Mosquitto],
                                                             influx: InfluxV1, tmp_path: Path) -> None:
    broker = make_mosquitto()
    path = stations_district(tmp_path)
    ingest = IngestRun(tmp_path, path, broker.url, influx.url, influx.database)
    receiver = StationReceiver(load_district(path), "RX-1", mqtt_url=broker.url, buffer_path=tmp_path / "rx.db")
    assert receiver.config.publish.confirm == "ingest"

    async def stations(port: int) -> None:
        _, rtu = await asyncio.open_connection("127.0.0.1", port)
        rtu.write(sl651_report(5, "0.300"))
        _, meter = await asyncio.open_connection("127.0.0.1", port)
        meter.write(szy206_report("0.200", 4200))
        await until(lambda: receiver.stats["ST-V01"].readings == 1 and receiver.stats["ST-L11"].readings == 1,
                    15, "both stations' readings stored")
        await until(lambda: receiver.outstanding.confirmed >= 2 and receiver.buffer is not None
                    and receiver.buffer.depth == 0, 30, "ingest's confirmation")

    run_receiver(receiver, ingest, stations)
    rows = influx.query(f'SELECT * FROM "{M.readings}" GROUP BY "point"', epoch="ms")
    by_point = {row["tags"]["point"]: dict(zip(row["columns"], row["values"][0], strict=True)) for row in rows}
    assert set(by_point) == {"L11-HEAD", "V01-IN"}
    assert by_point["V01-IN"]["flow"] == 0.2 and by_point["V01-IN"]["totaliser"] == 4200
    assert by_point["L11-HEAD"]["level"] == 0.3 and by_point["L11-HEAD"]["flow"] > 0


def test_simulated_stations_volumes_match_the_truth(make_mosquitto: Callable[..., Mosquitto], influx: InfluxV1,
                                                    tmp_path: Path) -> None:
    """Two simulated hours of both stations through ingest: the stored series give the true volumes."""
    from canalflow.clock import SimClock
    from canalflow.volume import Series, window_volume
    from edge.telemetry.simstation import SimStation, truth_values
    from firmware_sim.truth import Truth

    broker = make_mosquitto()
    path = stations_district(tmp_path)
    district = load_district(path)
    truth = Truth(district)
    start = truth.rounds[0][1] + 86_400_000  # a day into the first round
    clock = SimClock.starting_at(start, speed=600.0)
    ingest = IngestRun(tmp_path, path, broker.url, influx.url, influx.database)
    receiver = StationReceiver(district, "RX-1", mqtt_url=broker.url, buffer_path=tmp_path / "rx.db", clock=clock)

    async def stations(port: int) -> None:
        sims = [SimStation(st, truth_values(truth, st.point), host="127.0.0.1", port=port, clock=clock,
                           zone=district.tz, keepalive_s=3600) for st in district.stations.values()]
        runs = [asyncio.create_task(sim.run()) for sim in sims]
        await asyncio.sleep(2 * 3600 / 600 + 0.5)
        for sim in sims:
            sim.stop()
        await asyncio.gather(*runs)
        await until(lambda: receiver.buffer is not None and receiver.buffer.depth == 0, 30, "ingest's confirmation")

    run_receiver(receiver, ingest, stations)
    for point, tolerance in (("V01-IN", 0.005), ("L11-HEAD", 0.02)):  # totaliser in whole m3; rated level
        rows = influx.query(f'SELECT "flow", "totaliser", "qcode" FROM "{M.readings}" WHERE "point" = \'{point}\'',
                            epoch="ms")
        series = Series.from_rows(dict(zip(rows[0]["columns"], values, strict=True)) for values in rows[0]["values"])
        assert len(series) >= 20, point
        t0, t1 = int(series.ts_ms[0]), int(series.ts_ms[-1])
        got = window_volume(series, t0, t1, max_gap_ms=3_600_000)
        true = truth.volume_m3(point, t0, t1)
        assert true > 10 and got.volume_m3 == pytest.approx(true, rel=tolerance), (point, got, true)
