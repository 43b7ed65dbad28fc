"""The fleet over real sockets: a pymodbus client reads every meter and decodes it with its profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from canalflow import ratings
from canalflow.district import District
from canalflow.profiles import Profile
from firmware_sim.fleet import Fleet, read_manifest
from firmware_sim.truth import Truth


def read_meter(client: ModbusTcpClient, profile: Profile, unit_id: int) -> dict[str, float]:
    """Read every register of a meter block by block, as the edge does, and decode to SI."""
    values: dict[str, float] = {}
    for block in profile.read_blocks():
        read = client.read_holding_registers if profile.table == "holding" else client.read_input_registers
        response = read(block.start, count=block.count, device_id=unit_id)
        assert not response.isError(), (profile.name, unit_id, block.start, response)
        values |= block.decode(response.registers)
    return values


def metered_flow(district: District, point_id: str, values: dict[str, float], t_ms: int) -> float:
    profile = district.profile_of(point_id)
    if profile.kind != "level":
        return values["flow"]
    point = district.points[point_id]
    rating = ratings.rating_at(list(point.ratings), district.local_date(t_ms))
    return ratings.flow(rating, values["level"], values.get("downstream_level")).flow_m3s


def tolerance(district: District, point_id: str, values: dict[str, float], truth_flow: float) -> float:
    """The profile's accuracy, plus, for a level register, what its resolution (1 mm) can resolve."""
    profile = district.profile_of(point_id)
    tol = profile.accuracy_pct / 100 * abs(truth_flow)
    if profile.kind == "level" and values["level"] > 0:
        exponent = 1.6  # Parshall n <= 1.58, weir 1.5
        tol += exponent * 0.0005 / values["level"] * abs(truth_flow)
    return tol


def test_every_meter_reads_within_accuracy_of_truth(running_fleet: Fleet, demo: District, demo_truth: Truth) -> None:
    checked = 0
    # water meters carrying water now: a plot's sensors are read in test_plot_sensors, its inlet flows on its turn (tests/demo)
    plot_meters = {x for p in demo.spec.plots for x in (p.inlet, p.station, p.rain_gauge)}
    for gateway_id, endpoint in running_fleet.endpoints.items():
        with ModbusTcpClient(endpoint.host, port=endpoint.port, timeout=3) as client:
            for unit_id, point_id in endpoint.units.items():
                if point_id in plot_meters:
                    continue
                values = read_meter(client, demo.profile_of(point_id), unit_id)
                t_ms = running_fleet.clock.now_ms()
                truth_flow = demo_truth.flow_m3s(point_id, t_ms)
                assert truth_flow > 0, (gateway_id, point_id)
                flow = metered_flow(demo, point_id, values, t_ms)
                assert flow == pytest.approx(truth_flow, abs=tolerance(demo, point_id, values, truth_flow)), point_id
                assert values["battery"] > 3
                checked += 1
    assert checked == len(demo.points) - len(plot_meters)


def test_totaliser_counts_the_metered_volume(running_fleet: Fleet, demo: District, demo_truth: Truth) -> None:
    endpoint = running_fleet.endpoints["GW-B1"]
    unit_id = next(u for u, p in endpoint.units.items() if p == "V01-IN")
    profile = demo.profile_of("V01-IN")
    block = next(b for b in profile.read_blocks() if any(r.quantity == "totaliser" for r in b.registers))
    with ModbusTcpClient(endpoint.host, port=endpoint.port, timeout=3) as client:
        first = block.decode(client.read_holding_registers(block.start, count=block.count, device_id=unit_id).registers)
        t0 = running_fleet.clock.now_ms()
        meter = running_fleet.meters["V01-IN"]
        assert first["total"] == pytest.approx(meter.totaliser_m3(t0), abs=0.5)  # 0.01 m3 counts, ~1 s of flow
    # the totaliser is the integral of the metered flow: over any window, true volume x (1 + bias)
    t1 = t0 + 6 * 3_600_000
    counted = meter.totaliser_m3(t1) - meter.totaliser_m3(t0)
    assert counted == pytest.approx(demo_truth.volume_m3("V01-IN", t0, t1) * (1 + meter.bias), rel=1e-9)
    assert abs(meter.bias) <= profile.accuracy_pct / 100


def test_signature_identifies_each_model(running_fleet: Fleet, demo: District) -> None:
    seen = set()
    for endpoint in running_fleet.endpoints.values():
        with ModbusTcpClient(endpoint.host, port=endpoint.port, timeout=3) as client:
            for unit_id, point_id in endpoint.units.items():
                profile = demo.profile_of(point_id)
                read = client.read_holding_registers if profile.table == "holding" else client.read_input_registers
                response = read(profile.signature_address, count=len(profile.signature.words), device_id=unit_id)
                assert response.registers == profile.signature.words, point_id
                seen.add(profile.name)
    assert seen == {"em-pipe", "tuf2000m", "radar-parshall", "av-station", "soil-station", "rain-gauge"}


def test_modbus_errors_of_a_real_device(running_fleet: Fleet) -> None:
    endpoint = running_fleet.endpoints["GW-B1"]
    with ModbusTcpClient(endpoint.host, port=endpoint.port, timeout=3) as client:
        unmapped = client.read_holding_registers(100, count=2, device_id=11)  # em-pipe maps 0..9
        assert unmapped.isError() and unmapped.exception_code == 2
        block_on_radar = client.read_input_registers(1, count=2, device_id=1)  # radar: one register per request
        assert block_on_radar.isError() and block_on_radar.exception_code == 3
        wrong_table = client.read_holding_registers(1, count=1, device_id=1)  # radar keeps input registers
        assert wrong_table.isError() and wrong_table.exception_code == 1
        no_such_unit = client.read_holding_registers(0, count=1, device_id=99)
        assert no_such_unit.isError() and no_such_unit.exception_code == 0x0B


def test_manifest_describes_every_gateway(running_fleet: Fleet, demo: District, tmp_path: Path) -> None:
    path = running_fleet.write_manifest(tmp_path / "fleet.json")
    manifest = json.loads(path.read_text())
    assert manifest["district"] == "demo" and manifest["seed"] == 0 and manifest["scenario"] is None
    assert manifest["clock"]["speed"] == 1.0
    units = {p for g in manifest["gateways"].values() for p in g["units"].values()}
    assert units == set(demo.points)
    for gateway_id, entry in manifest["gateways"].items():
        assert entry["port"] == running_fleet.endpoints[gateway_id].port
        assert entry["transport"] == "tcp"
    view = read_manifest(path)
    assert view.clock == running_fleet.clock
    t = running_fleet.clock.now_ms()
    assert view.truth().flow_m3s("V01-IN", t) == running_fleet.truth.flow_m3s("V01-IN", t)
