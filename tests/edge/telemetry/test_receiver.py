"""Stations dial in over real TCP to the real receiver, whose readings leave through a real Mosquitto."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from telemetry_testkit import SL_STATION, STATIONS, Collector, sl651_report, stations_district, szy206_report

from canalflow.contract import Flag, readings_filter
from canalflow.district import load_district
from edge.telemetry import sl651, szy206
from edge.telemetry.receiver import Limits, StationReceiver

SZY_ADDRESS = "5303810D00"
IMPOSTOR = '  - {id: ST-L12, protocol: sl651, address: "0087654321", centre: 1, password: "4321", point: L12-HEAD,\n' \
           '     elements: {level: "39"}}\n'


class Station:
    """A station's TCP connection, as a 4G RTU would hold it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def dial(cls, port: int) -> Station:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, frame: bytes) -> None:
        self.writer.write(frame)
        await self.writer.drain()

    async def answer(self, size: int, timeout: float = 5.0) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(size), timeout)

    async def closed_by_centre(self, timeout: float = 5.0) -> bool:
        return await asyncio.wait_for(self.reader.read(100), timeout) == b""

    async def nothing_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.reader.read(100), seconds)
        except TimeoutError:
            return True
        return False


async def until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def with_receiver(tmp_path: Path, mqtt_url: str, body: Callable[[StationReceiver], Awaitable[Any]], *,
                  stations: str = STATIONS, limits: Limits | None = None,
                  status_interval_s: float | None = None) -> StationReceiver:
    points = ("L11-HEAD", "L12-HEAD", "V01-IN")
    district = load_district(stations_district(tmp_path, stations=stations, points=points))
    receiver = StationReceiver(district, "RX-1", mqtt_url=mqtt_url, buffer_path=tmp_path / "rx.db",
                               limits=limits)
    receiver.config.publish.confirm = "broker"  # no ingest here: rows leave the buffer on the PUBACK
    if status_interval_s:
        receiver.config.publish.status_interval_s = status_interval_s

    async def scenario() -> None:
        task = asyncio.create_task(receiver.run())
        await asyncio.wait_for(receiver.ready.wait(), 10)
        await until(lambda: receiver.link is not None and receiver.link.connected)
        try:
            await body(receiver)
            await until(lambda: receiver.buffer is not None and receiver.buffer.depth == 0)  # all published
        finally:
            receiver.stop()
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    return receiver


def test_sl651_and_szy206_stations_reach_the_broker_answered_after_storing(tmp_path: Path, mqtt_url: str) -> None:
    collector = Collector(mqtt_url, [readings_filter("demo")])

    async def body(receiver: StationReceiver) -> None:
        assert receiver.port is not None
        rtu = await Station.dial(receiver.port)
        frame = sl651_report(41, "0.350")
        await rtu.send(frame)
        down = sl651.decode(await rtu.answer(25))  # ACK frame: header 13 + STX + 8 body + end + CRC
        assert (down.uplink, down.station, down.function, down.end) == (False, SL_STATION, 0x32, sl651.ESC)
        assert down.report is not None and down.report.serial == 41
        assert receiver.buffer is not None and receiver.buffer.last_id >= 1  # stored before it answered
        await rtu.send(frame)  # the station missed the answer: it sends again, and is answered again
        assert sl651.decode(await rtu.answer(25)).report.serial == 41  # type: ignore[union-attr]
        await rtu.send(bytes.fromhex("7e7e011090330853a0002f000802009f26020209410003bde3"))  # another's keep-alive
        assert await rtu.closed_by_centre()

        meter = await Station.dial(receiver.port)
        login = szy206.encode(address=SZY_ADDRESS, afn=szy206.AFN_LINK, data=b"\xf0", function=3)
        await meter.send(login)
        echo = szy206.decode(await meter.answer(len(login)))
        assert (echo.uplink, echo.link) == (False, "login")
        await meter.send(szy206_report("0.125", 1500))
        assert await meter.nothing_within(0.3)  # real-time data is not answered

    receiver = with_receiver(tmp_path, mqtt_url, body)
    assert collector.wait_for(lambda: {p for p, _ in collector.readings()} >= {"L11-HEAD", "V01-IN"}, 15)
    collector.close()
    readings = {b.point: r for b in collector.batches for r in b.readings}
    level = readings["L11-HEAD"]
    assert level.values["level"] == pytest.approx(0.35) and level.values["battery"] == pytest.approx(12.47)
    assert level.values["flow"] > 0 and Flag.rated in level.flags  # the point's Parshall rating
    assert readings["V01-IN"].values == {"flow": 0.125, "totaliser": 1500.0}
    assert len([r for b in collector.batches if b.point == "L11-HEAD" for r in b.readings]) == 1
    stats = receiver.stats
    assert stats["ST-L11"].errors == {"replayed": 1} and stats["ST-L11"].frames == 2
    assert stats["ST-V01"].frames == 2 and stats["ST-V01"].readings == 1
    assert receiver.unattributed == {"unknown_station": 1}
    assert [d["reason"] for d in receiver.deadletters.read()] == ["unknown_station"]


def test_bad_input_is_rejected_counted_and_dead_lettered(tmp_path: Path, mqtt_url: str) -> None:
    async def body(receiver: StationReceiver) -> None:
        port = receiver.port
        assert port is not None
        rtu = await Station.dial(port)
        good = sl651_report(7, "1.000")
        await rtu.send(good[:-1] + bytes([good[-1] ^ 0xFF]))  # bad CRC: refused, the connection stays
        assert await rtu.nothing_within(0.3)
        await rtu.send(good)
        assert sl651.decode(await rtu.answer(25)).report.serial == 7  # type: ignore[union-attr]
        await rtu.send(sl651_report(8, "1.000", station="0087654321", password=0x4321))  # claims ST-L12's address
        assert await rtu.closed_by_centre()

        thief = await Station.dial(port)
        await thief.send(sl651_report(9, "1.000", password=0x9999))
        assert await thief.closed_by_centre()

        skewed = await Station.dial(port)
        await skewed.send(sl651_report(10, "1.010", sent=dt.datetime(2026, 1, 1, 0, 0)))
        assert (await skewed.answer(25))[10] == 0x32  # a clock far off is flagged, not refused

        noise = await Station.dial(port)
        await noise.send(b"GET / HTTP/1.1\r\n\r\n")
        assert await noise.closed_by_centre()
        huge = await Station.dial(port)
        await huge.send(b"\x68\xff\x68")  # L=255: a 260-byte frame, over this receiver's bound of 200
        assert await huge.closed_by_centre()
        partial = await Station.dial(port)
        await partial.send(good[:20])  # and the rest never comes
        silent = await Station.dial(port)
        assert await silent.closed_by_centre(timeout=3)  # first_frame_s
        assert await partial.closed_by_centre(timeout=3)  # idle_s

    limits = Limits(first_frame_s=0.5, idle_s=0.5, max_frame_bytes=200, status_stations=2)
    receiver = with_receiver(tmp_path, mqtt_url, body, stations=STATIONS + IMPOSTOR, limits=limits)
    errors = receiver.stats["ST-L11"].errors
    assert errors["bad_crc"] == 1 and errors["address_changed"] == 1 and errors["wrong_password"] == 1
    assert errors["clock_skew"] == 1
    assert receiver.unattributed == {"bad_start": 1, "too_long": 1, "silent": 2}
    letters = receiver.deadletters.read()
    by_reason = {d["reason"]: d for d in letters}
    assert set(by_reason) == {"bad_crc", "address_changed", "wrong_password", "bad_start", "too_long"}
    assert bytes.fromhex(by_reason["bad_start"]["raw"]).startswith(b"GET / HTTP")
    assert by_reason["bad_crc"]["station"] == "ST-L11" and "at byte" in by_reason["bad_crc"]["message"]
    health = receiver.health()  # the status lists 2 of the 3 stations, the one with errors first
    assert next(iter(health)) == "ST-L11" and len(health) == 3 and health["_receiver"]["stations"] == 3
    assert health["_receiver"]["unattributed_bad_start"] == 1


def test_connections_over_the_bound_are_refused(tmp_path: Path, mqtt_url: str) -> None:
    async def body(receiver: StationReceiver) -> None:
        assert receiver.port is not None
        first = await Station.dial(receiver.port)
        await asyncio.sleep(0.1)
        second = await Station.dial(receiver.port)
        assert await second.closed_by_centre()
        await first.send(sl651_report(1, "0.2"))
        assert len(await first.answer(25)) == 25

    receiver = with_receiver(tmp_path, mqtt_url, body, limits=Limits(max_connections=1))
    assert receiver.refused_connections == 1


def test_edge_stations_lists_them_from_the_receivers_status(tmp_path: Path, mqtt_url: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from canalflow.cli import main

    async def body(receiver: StationReceiver) -> None:
        assert receiver.port is not None
        rtu = await Station.dial(receiver.port)
        good = sl651_report(12, "0.5")
        await rtu.send(good[:-1] + bytes([good[-1] ^ 1]))
        await rtu.send(good)
        await rtu.answer(25)
        await asyncio.sleep(0.6)  # a status message with these counts
        demo = Path(__file__).resolve().parents[3] / "examples" / "demo-district.yaml"  # district id demo
        argv = ["edge", "stations", "--mqtt", mqtt_url, "--district", str(demo), "--gateway", "RX-1"]
        assert await asyncio.to_thread(main, argv) == 0
        assert await asyncio.to_thread(main, [*argv, "--json"]) == 0

    with_receiver(tmp_path, mqtt_url, body, status_interval_s=0.2)
    out = capsys.readouterr().out
    table, _, raw = out.partition("{")
    assert "receiver online: 2 stations, 1 connected, 0 rejects" in table and "ST-L11" in table
    assert "bad_crc 1" in table
    assert json.loads("{" + raw)["receiver"]["frames"] == 1
    entry = json.loads("{" + raw)["stations"]["ST-L11"]
    assert (entry["connected"], entry["frames"], entry["readings"], entry["error_bad_crc"]) == (1, 1, 1, 1)
    assert entry["last_function"] == "timed report" and json.loads("{" + raw)["stations"]["ST-V01"]["frames"] == 0


def test_an_ascii_station_is_answered_in_ascii(tmp_path: Path, mqtt_url: str) -> None:
    from edge.telemetry import sl651_ascii

    hex_frame = sl651.decode(sl651_report(21, "0.620"))
    assert hex_frame.report is not None
    body = sl651_ascii.encode_body(hex_frame.report, 0x32)
    frame = sl651_ascii.encode(centre=1, station=SL_STATION, password=0x1234, function=0x32, body=body)

    async def body_(receiver: StationReceiver) -> None:
        assert receiver.port is not None
        rtu = await Station.dial(receiver.port)
        await rtu.send(frame)
        down = sl651_ascii.decode(await rtu.answer(16 + 29))  # serial (4) and time (12) in an ASCII frame
        assert (down.uplink, down.station, down.report.serial) == (False, SL_STATION, 21)  # type: ignore[union-attr]
        await rtu.send(frame[:-1] + b"X")  # a CRC that is no hex: refused, the connection stays
        assert await rtu.nothing_within(0.3)

    receiver = with_receiver(tmp_path, mqtt_url, body_)
    assert receiver.stats["ST-L11"].readings == 1 and receiver.stats["ST-L11"].errors == {"bad_crc": 1}
