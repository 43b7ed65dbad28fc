"""Modbus RTU on a pseudo-terminal (with the baud rate's wire timing) and RTU framing over TCP."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerType

from canalflow.clock import SimClock
from canalflow.district import District, load_district
from firmware_sim.fleet import FleetThread
from firmware_sim.rtu import char_time_s
from firmware_sim.scenario import load_scenario
from firmware_sim.truth import Truth

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-district.yaml"


@pytest.fixture(scope="module")
def serial_district(tmp_path_factory: pytest.TempPathFactory) -> District:
    """The demo district with GW-B3 on an RS-485 bus (9600 baud) and GW-B2 as an RTU-over-TCP converter."""
    text = DEMO.read_text()
    text = text.replace("{id: GW-B3,   name: 三分干管理段, transport: tcp, host: 127.0.0.1, port: 5023}",
                        "{id: GW-B3, name: 三分干管理段, transport: rtu, serial: {port: pty, baud: 9600}}")
    text = text.replace("{id: GW-B2,   name: 二分干管理段, transport: tcp,", "{id: GW-B2, name: 二分干管理段, transport: rtu_over_tcp,")
    assert "transport: rtu," in text and "rtu_over_tcp" in text
    path = tmp_path_factory.mktemp("serial") / "district.yaml"
    path.write_text(text)
    return load_district(path)


def test_rtu_bus_on_a_pty_with_wire_timing(serial_district: District, tmp_path: Path) -> None:
    truth = Truth(serial_district)
    scenario_file = tmp_path / "crc.yaml"
    scenario_file.write_text("version: 1\nfaults:\n  - {point: V12-IN, type: crc, start: 2026-03-10T00:00:00,"
                             " end: 2026-03-20T00:00:00}\n")
    scenario = load_scenario(scenario_file, serial_district)
    clock = SimClock.starting_at(truth.rounds[0][1] + 6 * 3_600_000, 1.0)
    with FleetThread(serial_district, scenario=scenario, clock=clock, truth=truth) as fleet:
        endpoint = fleet.endpoints["GW-B3"]
        assert endpoint.transport == "rtu" and endpoint.path and endpoint.path.startswith("/dev/pts/")
        assert fleet.manifest()["gateways"]["GW-B3"] == {
            "transport": "rtu", "path": endpoint.path, "baud": 9600, "parity": "N", "stopbits": 1, "bytesize": 8,
            "units": {str(u): p for u, p in sorted(endpoint.units.items())}}
        units = {p: u for u, p in endpoint.units.items()}
        profile = serial_district.profile_of("V08-IN")
        flow = profile.register_named("flow")
        client = ModbusSerialClient(endpoint.path, framer=FramerType.RTU, baudrate=9600, timeout=1, retries=0)
        assert client.connect()
        try:
            began = time.monotonic()
            words = client.read_holding_registers(flow.wire_address, count=2, device_id=units["V08-IN"]).registers
            elapsed = time.monotonic() - began
            # request 8 bytes + response 9 bytes, 10 bits each at 9600 baud
            assert elapsed >= 17 * char_time_s(9600) * 0.95
            assert flow.decode(words) == pytest.approx(truth.flow_m3s("V08-IN", clock.now_ms()), rel=0.01)
            with pytest.raises(ModbusIOException):  # broken CRC: the client discards the frame
                client.read_holding_registers(flow.wire_address, count=2, device_id=units["V12-IN"])
            with pytest.raises(ModbusIOException):  # nobody at unit 99 on this bus: silence
                client.read_holding_registers(0, count=1, device_id=99)
            level = serial_district.profile_of("L31-HEAD").register_named("level")
            answer = client.read_input_registers(level.wire_address, count=1, device_id=units["L31-HEAD"])
            assert not answer.isError() and answer.registers[0] > 0
        finally:
            client.close()


def test_rtu_over_tcp(serial_district: District) -> None:
    truth = Truth(serial_district)
    clock = SimClock.starting_at(truth.rounds[0][1] + 6 * 3_600_000, 1.0)
    with FleetThread(serial_district, clock=clock, truth=truth, gateways=["GW-B2"]) as fleet:
        endpoint = fleet.endpoints["GW-B2"]
        assert endpoint.transport == "rtu_over_tcp"
        units = {p: u for u, p in endpoint.units.items()}
        flow = serial_district.profile_of("V06-IN").register_named("flow")
        with ModbusTcpClient(endpoint.host, port=endpoint.port, framer=FramerType.RTU, timeout=2) as client:
            words = client.read_holding_registers(flow.wire_address, count=2, device_id=units["V06-IN"]).registers
        assert flow.decode(words) == pytest.approx(truth.flow_m3s("V06-IN", clock.now_ms()), rel=0.01)
