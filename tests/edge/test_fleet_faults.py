"""The edge against the district's fleet simulator: every fault the fleet can play shows up as the
right quality flag (crc on an RTU gateway below; fouling late in its 10-day drift, below)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections import defaultdict
from pathlib import Path

from edge_testkit import DEMO

from canalflow.clock import SimClock
from canalflow.contract import Flag, Quality, Reading
from canalflow.district import load_district
from edge.config import PollOptions, QualityOptions, edge_config_from_district
from edge.modbus import ModbusLink
from edge.poller import BusPoller
from firmware_sim.fleet import Fleet
from firmware_sim.scenario import load_scenario

FAULTS = Path(DEMO).parent / "scenarios" / "faults.yaml"
START = dt.datetime(2026, 3, 10, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
SPEED = 7200.0  # 13 simulated hours in 6.5 s
POLL_S = 300.0

EXPECTED = {
    "V01-IN": Flag.comm_error,  # offline
    "V03-IN": Flag.comm_error,  # slow beyond the timeout
    "V0405-IN": Flag.device_exception,  # exception
    "V06-IN": Flag.stuck,  # stuck
    "V07-IN": Flag.totaliser_reset,  # totaliser_reset
    "WUA1-IN": Flag.totaliser_rollover,  # rollover
    "OP1-IN": Flag.reverse_flow,  # reverse_flow
    "V10-IN": Flag.comm_error,  # power_loss
    "V08-IN": Flag.clock_drift,  # clock_drift: its device_time is 900 s late
    "L32-HEAD": Flag.device_alarm,  # alarm: temperature_fault
    "L33-HEAD": Flag.low_battery,  # low_battery
}


def _poll_the_fleet(start: dt.datetime, sim_hours: float, gateways: list[str] | None = None) -> dict[str, list[Reading]]:
    """Every point of the demo district's gateways (or ``gateways``) polled by the edge for
    ``sim_hours`` simulated hours from ``start`` while the fleet plays faults.yaml."""
    district = load_district(DEMO)
    scenario = load_scenario(FAULTS, district)
    got: dict[str, list[Reading]] = defaultdict(list)

    async def scenario_run() -> None:
        clock = SimClock.starting_at(int(start.timestamp() * 1000), SPEED)
        fleet = Fleet(district, scenario=scenario, clock=clock, gateways=gateways)
        await fleet.start()
        pollers = []
        for gateway, endpoint in fleet.endpoints.items():
            config = edge_config_from_district(district, gateway)
            plans = [dataclasses.replace(p, fast_s=POLL_S, slow_s=POLL_S) for p in config.points]
            link = ModbusLink(f"tcp://{endpoint.host}:{endpoint.port}")
            pollers.append(BusPoller(gateway, link, plans, clock=clock,
                                     options=PollOptions(timeout_s=1.0, retries=0, breaker_cooldown_s=0.2,
                                                         breaker_max_cooldown_s=0.2),
                                     quality=QualityOptions(stuck_polls=5), device_tz=district.tz,
                                     on_reading=lambda point, reading: got[point].append(reading)))
        tasks = [asyncio.create_task(p.run()) for p in pollers]
        await asyncio.sleep(sim_hours * 3600 / SPEED)
        for poller in pollers:
            poller.stop()
        await asyncio.wait(tasks, timeout=10)
        await fleet.stop()

    asyncio.run(scenario_run())
    return got


def _flags(got: dict[str, list[Reading]]) -> dict[str, set[Flag]]:
    return {point: {f for r in readings for f in r.flags} for point, readings in got.items()}


def test_every_fleet_fault_produces_its_quality_flag() -> None:
    got = _poll_the_fleet(START, 13)
    flags = _flags(got)
    for point, flag in EXPECTED.items():
        assert flag in flags[point], f"{point}: expected {flag.value}, got {sorted(f.value for f in flags[point])}"
    drifted = [r for r in got["V08-IN"] if r.values]
    assert drifted and all(Flag.clock_drift in r.flags and r.quality is Quality.suspect for r in drifted)
    garbage = [r for r in got["V09-IN"] if r.quality is not Quality.good]
    assert garbage, "random register words were not flagged"
    # V11-IN fouls from 03-10 06:00 at 0.5 %/day: a day in, its signal is still fine
    assert Flag.low_signal not in flags["V11-IN"]
    healthy = got["V12-IN"]  # no fault: good all along
    assert healthy and all(r.quality is Quality.good for r in healthy)
    # a late clock only where the meter's clock is wrong: drifting, frozen with a stuck image, or random words
    assert {p for p, seen in flags.items() if Flag.clock_drift in seen} == {"V08-IN", "V06-IN", "V09-IN"}
    # no meter with a clean sensor is taken for a fouled one (V09-IN: random words in its signal register)
    assert {p for p, seen in flags.items() if Flag.low_signal in seen} <= {"V09-IN"}


def test_fouling_late_in_its_drift_is_low_signal_and_the_clock_drift_persists() -> None:
    """Nine days into V11-IN's fouling (4.5 % drift) its signal quality is under 60 and the meter raises
    poor_signal: every reading is low_signal. V08-IN's clock is still 900 s late; V12-IN stays good."""
    got = _poll_the_fleet(dt.datetime(2026, 3, 19, 6, 0, tzinfo=START.tzinfo), 2, gateways=["GW-B3"])
    fouled = got["V11-IN"]
    assert fouled and all(Flag.low_signal in r.flags and r.quality is Quality.suspect for r in fouled)
    assert all(r.values["signal_quality"] < 60 for r in fouled)
    assert got["V08-IN"] and all(Flag.clock_drift in r.flags for r in got["V08-IN"])
    healthy = got["V12-IN"]
    assert healthy and all(r.quality is Quality.good for r in healthy)


def test_rtu_gateway_of_the_fleet_at_9600_baud_and_its_crc_fault(tmp_path: Path) -> None:
    """The fleet's RTU bus (a pty pair with 9600-baud wire timing, pymodbus serial server) read by
    the edge's RTU framing; a meter answering with a corrupted CRC is a comm_error, its neighbours
    on the bus stay good."""
    text = Path(DEMO).read_text()
    text = "\n".join("  - {id: GW-B3, name: rtu, transport: rtu, serial: {port: /dev/ttyS9, baud: 9600}}"
                     if line.strip().startswith("- {id: GW-B3,") else line for line in text.splitlines())
    district_file = tmp_path / "district.yaml"
    district_file.write_text(text + "\n")
    scenario_file = tmp_path / "crc.yaml"
    scenario_file.write_text("version: 1\nname: crc\nhydraulics: {base_flow_m3s: 0.3}\nfaults:\n"
                             "  - {point: V08-IN, type: crc, start: 2026-03-10T00:00:00, end: 2026-03-12T00:00:00}\n")
    district = load_district(district_file)
    got: dict[str, list[Reading]] = defaultdict(list)

    async def scenario_run() -> None:
        clock = SimClock.starting_at(int(START.timestamp() * 1000), 60.0)
        fleet = Fleet(district, scenario=load_scenario(scenario_file, district), clock=clock, gateways=["GW-B3"])
        await fleet.start()
        endpoint = fleet.endpoints["GW-B3"]
        config = edge_config_from_district(district, "GW-B3")
        assert config.endpoint.transport == "rtu"
        link = ModbusLink(endpoint.path, baud=endpoint.baud or 9600)
        poller = BusPoller("GW-B3", link, config.points, clock=clock,
                           options=PollOptions(timeout_s=0.3, retries=0),
                           quality=QualityOptions(), device_tz=district.tz,
                           on_reading=lambda point, reading: got[point].append(reading))
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(3.0)
        poller.stop()
        await asyncio.wait([task], timeout=5)
        await fleet.stop()

    asyncio.run(scenario_run())
    assert got["V08-IN"] and all(Flag.comm_error in r.flags for r in got["V08-IN"])
    for point in ("V09-IN", "V10-IN", "L31-HEAD"):
        assert got[point] and all(r.quality is not Quality.bad for r in got[point]), point
