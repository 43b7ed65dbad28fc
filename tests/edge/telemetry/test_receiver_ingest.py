"""Stations -> receiver -> Mosquitto -> `canalflow ingest run` -> InfluxDB, confirmed end to end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from telemetry_testkit import IngestRun, sl651_report, stations_district, szy206_report

from canalflow.contract import M
from canalflow.district import load_district
from canalflow.influx import InfluxV1
from canalflow.services import Mosquitto
from edge.telemetry.receiver import StationReceiver


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def test_station_readings_are_stored_by_ingest_and_confirmed(make_mosquitto: Callable[..., Mosquitto],
                                                             influx: InfluxV1, tmp_path: Path) -> None:
    broker = make_mosquitto()
    path = stations_district(tmp_path)
    ingest = IngestRun(tmp_path, path, broker.url, influx.url, influx.database)
    receiver = StationReceiver(load_district(path), "RX-1", mqtt_url=broker.url, buffer_path=tmp_path / "rx.db")
    assert receiver.config.publish.confirm == "ingest"

    async def scenario() -> None:
        task = asyncio.create_task(receiver.run())
        try:
            await asyncio.wait_for(receiver.ready.wait(), 10)
            assert receiver.port is not None
            _, rtu = await asyncio.open_connection("127.0.0.1", receiver.port)
            rtu.write(sl651_report(5, "0.300"))
            _, meter = await asyncio.open_connection("127.0.0.1", receiver.port)
            meter.write(szy206_report("0.200", 4200))
            await until(lambda: receiver.stats["ST-V01"].readings == 1 and receiver.stats["ST-L11"].readings == 1,
                        15, "both stations' readings stored")
            await until(lambda: receiver.outstanding.confirmed >= 2 and receiver.buffer is not None
                        and receiver.buffer.depth == 0, 30, "ingest's confirmation")
        finally:
            receiver.stop()
            await asyncio.wait_for(task, 30)

    try:
        asyncio.run(scenario())
    finally:
        ingest.stop()
    rows = influx.query(f'SELECT * FROM "{M.readings}" GROUP BY "point"', epoch="ms")
    by_point = {row["tags"]["point"]: dict(zip(row["columns"], row["values"][0], strict=True)) for row in rows}
    assert set(by_point) == {"L11-HEAD", "V01-IN"}
    assert by_point["V01-IN"]["flow"] == 0.2 and by_point["V01-IN"]["totaliser"] == 4200
    assert by_point["L11-HEAD"]["level"] == 0.3 and by_point["L11-HEAD"]["flow"] > 0
