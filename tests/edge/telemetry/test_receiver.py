"""Stations dial in over real TCP to the real receiver, whose readings leave through a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import random
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from telemetry_testkit import (
    SHANGHAI,
    SL_STATION,
    STATIONS,
    Collector,
    sl651_report,
    stations_district,
    szy206_report,
)

from canalflow.contract import Flag, readings_filter
from canalflow.district import load_district
from edge.telemetry import sl651, szy206
from edge.telemetry.cli import _stations_table
from edge.telemetry.errors import REASONS
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


def multi_station_report(serial: int, *addresses: str) -> bytes:
    """A timed report of ST-L11 whose body carries one part per address (6.6.2.7), levels 1.1, 1.2, ..."""
    now = dt.datetime.now(SHANGHAI).replace(tzinfo=None, microsecond=0)
    observed = now.replace(second=0)
    parts = [sl651.Report(serial, now, address, 0x5A, observed,
                          (sl651.Element(0x39, 4, 3, value=Decimal(f"1.{n}00"), observed=observed),))
             for n, address in enumerate(addresses, start=1)]
    report = dataclasses.replace(parts[0], others=tuple(parts[1:]))
    return sl651.encode(centre=1, station=SL_STATION, password=0x1234, function=0x32,
                        body=sl651.encode_body(report, 0x32))


def test_more_bad_input_and_a_multi_station_report(tmp_path: Path, mqtt_url: str) -> None:
    """Wrong centre, bad CS, the per-station rate; a relayed part for a known and an unknown station."""
    collector = Collector(mqtt_url, [readings_filter("demo")])

    async def body(receiver: StationReceiver) -> None:
        assert receiver.port is not None
        rtu = await Station.dial(receiver.port)
        wrong_centre = sl651.encode(centre=2, station=SL_STATION, password=0x1234, function=0x2F,
                                    body=bytes.fromhex("0001260504080530"))
        await rtu.send(wrong_centre)  # refused, dead-lettered; the connection stays
        await rtu.send(multi_station_report(5, SL_STATION, "0087654321", "0099999999"))
        down = sl651.decode(await rtu.answer(25))
        assert down.report is not None and down.report.serial == 5  # answered once, for the whole body
        for serial in range(6, 12):  # over a burst of 3 at 1 frame/s: the last ones are dropped
            await rtu.send(sl651_report(serial, "1.000"))
        meter = await Station.dial(receiver.port)
        bad = szy206_report("0.125", 1500)
        await meter.send(bad[:-2] + bytes([bad[-2] ^ 0x01, bad[-1]]))  # wrong CS: refused, the link stays
        await meter.send(szy206_report("0.130", 1501))
        await until(lambda: receiver.stats["ST-V01"].readings == 1)

    limits = Limits(rate_per_s=1.0, burst=3.0)
    receiver = with_receiver(tmp_path, mqtt_url, body, stations=STATIONS + IMPOSTOR, limits=limits)
    assert collector.wait_for(lambda: {p for p, _ in collector.readings()} >= {"L11-HEAD", "L12-HEAD"}, 15)
    collector.close()
    levels = {b.point: r.values["level"] for b in collector.batches for r in b.readings if "level" in r.values}
    assert levels["L11-HEAD"] == pytest.approx(1.1) and levels["L12-HEAD"] == pytest.approx(1.2)
    errors = receiver.stats["ST-L11"].errors
    assert errors["wrong_centre"] == 1 and errors["unknown_station"] == 1 and errors["rate_limited"] >= 3
    assert receiver.stats["ST-L12"].readings == 1
    assert receiver.stats["ST-V01"].errors == {"bad_cs": 1}
    reasons = [d["reason"] for d in receiver.deadletters.read()]
    assert sorted(reasons) == ["bad_cs", "unknown_station", "wrong_centre"]  # rate_limited: counted only


def test_the_receiver_asks_a_station_for_its_clock_once_per_connection(tmp_path: Path, mqtt_url: str) -> None:
    """Limits.clock_query: after the first frame, query 51 (ENQ, serial 0); the answer's send time is the
    station clock: one an hour off counts clock_skew and shows as clock_offset_s; the answer is confirmed."""
    async def body(receiver: StationReceiver) -> None:
        assert receiver.port is not None
        rtu = await Station.dial(receiver.port)
        now = dt.datetime.now(SHANGHAI).replace(tzinfo=None, microsecond=0)
        await rtu.send(sl651.encode(centre=1, station=SL_STATION, password=0x1234, function=0x2F,
                                    body=bytes.fromhex("0001") + bytes.fromhex(f"{now:%y%m%d%H%M%S}")))
        ask = sl651.decode(await rtu.answer(25))
        assert (ask.uplink, ask.function, ask.end_name, ask.station) == (False, 0x51, "ENQ", SL_STATION)
        assert ask.report is not None and ask.report.serial == 0
        assert abs((ask.report.sent - now).total_seconds()) < 5  # the receiver's time on the station's zone
        clock = now + dt.timedelta(hours=1)
        await rtu.send(sl651.encode(centre=1, station=SL_STATION, password=0x1234, function=0x51,
                                    body=sl651.encode_body(sl651.Report(0, clock, SL_STATION), 0x51)))
        confirm = sl651.decode(await rtu.answer(25))
        assert (confirm.function, confirm.end_name) == (0x51, "ESC")
        await rtu.send(sl651_report(3, "1.000"))
        assert sl651.decode(await rtu.answer(25)).function == 0x32  # asked once: the next frame is the answer
        assert await rtu.nothing_within(0.3)

    receiver = with_receiver(tmp_path, mqtt_url, body, limits=Limits(clock_query=True))
    stats = receiver.stats["ST-L11"]
    assert stats.errors["clock_skew"] == 1 and stats.clock_offset_s == pytest.approx(3600, abs=5)
    assert receiver.health()["ST-L11"]["clock_offset_s"] == stats.clock_offset_s
    table = _stations_table("online", {"ST-L11": receiver.health()["ST-L11"]}, receiver.health()["_receiver"])
    assert "clock" in table.splitlines()[1] and f"{stats.clock_offset_s:+.0f} s" in table.splitlines()[2]


def test_garbage_on_many_connections_does_not_disturb_a_station(tmp_path: Path, mqtt_url: str) -> None:
    """Random bytes and mutated frames on 60 connections at once: each is refused for a reason, the
    receiver goes on, and a station reporting meanwhile is answered and stored."""
    rng = random.Random(17)
    good = sl651_report(21, "0.500")

    def garbage(n: int) -> bytes:
        if n % 3 == 0:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        frame = bytearray(good if n % 3 == 1 else szy206_report("0.1", 10))
        for _ in range(rng.randrange(1, 4)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        return bytes(frame)

    async def noisy(port: int, n: int) -> None:
        conn = await Station.dial(port)
        with contextlib.suppress(ConnectionError):
            await conn.send(garbage(n))
            await conn.closed_by_centre(timeout=3)  # closed, or idle-closed
        conn.writer.close()

    async def body(receiver: StationReceiver) -> None:
        assert receiver.port is not None
        noise = [asyncio.create_task(noisy(receiver.port, n)) for n in range(60)]
        rtu = await Station.dial(receiver.port)
        await rtu.send(good)
        assert sl651.decode(await rtu.answer(25)).report.serial == 21  # type: ignore[union-attr]
        await asyncio.gather(*noise)
        assert receiver._server is not None and receiver._server.is_serving()

    receiver = with_receiver(tmp_path, mqtt_url, body, limits=Limits(first_frame_s=1.0, idle_s=1.0))
    assert receiver.stats["ST-L11"].readings == 1  # the good report (level and battery): once
    rejected = sum(receiver.unattributed.values()) + sum(sum(st.errors.values()) for st in receiver.stats.values())
    assert rejected >= 40
    reasons = set(receiver.unattributed) | {r for st in receiver.stats.values() for r in st.errors}
    assert reasons <= set(REASONS) | {"unknown_station", "wrong_password", "wrong_centre", "address_changed",
                                      "replayed", "rate_limited", "clock_skew", "idle", "silent"}
