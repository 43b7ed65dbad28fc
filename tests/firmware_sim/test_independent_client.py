"""Standard Modbus, proven: pyModbusTCP (not pymodbus) reads every meter model; the words are decoded
here with plain ``struct`` per the documented word orders, independently of canalflow.codec."""

from __future__ import annotations

import calendar
import struct
from collections.abc import Iterator

import pytest
from pyModbusTCP.client import ModbusClient

from canalflow import ratings
from canalflow.clock import SimClock
from canalflow.district import District
from canalflow.profiles import RegisterDef
from firmware_sim.fleet import Fleet, FleetThread
from firmware_sim.truth import Truth

UNIT_TO_SI = {"m3/h": 1 / 3600, "m3/s": 1.0, "m": 1.0, "mm": 0.001, "m/s": 1.0, "m3": 1.0, "V": 1.0, "%": 1.0, "vol%": 0.01, None: 1.0}


def to_bytes(words: list[int], order: str) -> bytes:
    """Register words -> the value's big-endian bytes A B C D, for each documented order."""
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    if order == "ABCD":
        return raw
    if order == "CDAB":  # words swapped
        return raw[2:4] + raw[0:2]
    if order == "BADC":  # bytes swapped inside each word
        return bytes([raw[1], raw[0], raw[3], raw[2]])
    return raw[::-1]  # DCBA: little-endian


def plain_decode(reg: RegisterDef, words: list[int]) -> float:
    if reg.type == "bcd_datetime":  # TUF-2000M calendar: BCD bytes SS MM hh DD MO YY, in ABCD order
        assert reg.order == "ABCD"
        raw = b"".join(w.to_bytes(2, "big") for w in words)
        second, minute, hour, day, month, year = (int(f"{b:02x}") for b in raw)
        return calendar.timegm((2000 + year, month, day, hour, minute, second))
    fmt = {"float32": ">f", "uint32": ">I", "int32": ">i", "uint16": ">H", "int16": ">h"}[reg.type]
    data = to_bytes(words, reg.order or "ABCD") if len(words) == 2 else words[0].to_bytes(2, "big")
    (raw,) = struct.unpack(fmt, data)
    return raw * reg.scale * UNIT_TO_SI[reg.unit]


@pytest.fixture(scope="module")
def frozen_fleet(demo: District, demo_truth: Truth) -> Iterator[Fleet]:
    """A fleet whose clock barely moves (1 µs per second), so every client sees the same instant."""
    clock = SimClock.starting_at(demo_truth.rounds[0][1] + 30 * 3_600_000, 1e-6)
    with FleetThread(demo, clock=clock, truth=demo_truth) as fleet:
        yield fleet


def test_pymodbustcp_reads_every_meter_model(frozen_fleet: Fleet, demo: District, demo_truth: Truth) -> None:
    t_ms = frozen_fleet.clock.now_ms()
    models = set()
    for endpoint in frozen_fleet.endpoints.values():
        for unit_id, point_id in endpoint.units.items():
            profile = demo.profile_of(point_id)
            client = ModbusClient(host=endpoint.host, port=endpoint.port, unit_id=unit_id, timeout=3, auto_open=True)
            read = client.read_holding_registers if profile.table == "holding" else client.read_input_registers
            decoded: dict[str, float] = {}
            for reg in profile.registers:
                words = read(reg.wire_address, reg.word_count)
                assert words is not None, (point_id, reg.name, client.last_error_as_txt, client.last_except_as_txt)
                expected = frozen_fleet.meters[point_id].words(t_ms)
                assert words == [expected[reg.wire_address + i] for i in range(reg.word_count)], (point_id, reg.name)
                decoded[reg.name] = plain_decode(reg, words)
                assert decoded[reg.name] == pytest.approx(reg.decode(words), rel=1e-12), (point_id, reg.name)
                if reg.type == "bcd_datetime":  # the meter's calendar keeps Beijing time (UTC+8)
                    assert decoded[reg.name] == t_ms // 1000 + 8 * 3600, point_id
            client.close()
            models.add(profile.name)
            if profile.kind in ("soil_moisture", "rain_gauge"):  # no flow: their values in test_plot_sensors
                continue
            truth_flow = demo_truth.flow_m3s(point_id, t_ms)
            accuracy = profile.accuracy_pct / 100
            if profile.kind == "level":
                point = demo.points[point_id]
                rating = demo_truth.rating_at(point, t_ms)
                flow = ratings.flow(rating, decoded["level"], decoded["downstream_level"]).flow_m3s
                assert not ratings.flow(rating, decoded["level"], decoded["downstream_level"]).submerged
                accuracy += 1.6 * 0.0005 / decoded["level"]  # 1 mm register resolution
            else:
                flow = decoded["flow"]
            assert flow == pytest.approx(truth_flow, rel=accuracy), point_id
    assert models == {"em-pipe", "tuf2000m", "radar-parshall", "av-station", "soil-station", "rain-gauge"}
    orders = {r.order for name in models for r in demo.profiles[name].registers if r.order}
    assert orders == {"ABCD", "CDAB", "BADC", "DCBA"}
