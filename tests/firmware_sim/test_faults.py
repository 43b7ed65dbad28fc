"""Every fault type of a scenario, on the meters directly and, where the wire matters, over TCP."""

from __future__ import annotations

import datetime as dt
import socket
import struct
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from canalflow.clock import SimClock, utc_to_wall, wall_to_utc
from canalflow.district import District
from firmware_sim.fleet import FleetThread
from firmware_sim.meters import Meter
from firmware_sim.scenario import Scenario, load_scenario
from firmware_sim.truth import Truth

SHANGHAI = ZoneInfo("Asia/Shanghai")
HOUR_MS = 3_600_000


def at(text: str) -> int:
    return round(dt.datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp() * 1000)


@pytest.fixture(scope="module")
def faults(demo: District, scenarios_dir: Path) -> Scenario:
    return load_scenario(scenarios_dir / "faults.yaml", demo)


@pytest.fixture(scope="module")
def truth(demo: District, faults: Scenario) -> Truth:
    return Truth(demo, faults, seed=0)


def meter(demo: District, truth: Truth, scenario: Scenario, point_id: str) -> Meter:
    return Meter(demo.points[point_id], demo.profile_of(point_id), truth, seed=0, faults=scenario.faults_of(point_id))


def healthy(demo: District, truth: Truth, point_id: str) -> Meter:
    return Meter(demo.points[point_id], demo.profile_of(point_id), truth, seed=0)


def test_every_fault_type_is_in_the_example(faults: Scenario) -> None:
    kinds = {f.type for f in faults.spec.faults}
    assert kinds == {"offline", "slow", "exception", "stuck", "totaliser_reset", "rollover", "reverse_flow",
                     "clock_drift", "garbage", "power_loss", "fouling", "alarm", "low_battery"}  # crc: tests/firmware_sim/test_rtu.py


def test_offline_and_power_loss_are_silent(demo: District, truth: Truth, faults: Scenario) -> None:
    assert meter(demo, truth, faults, "V01-IN").respond(3, 2, 2, at("2026-03-11T01:00")).silent
    assert not meter(demo, truth, faults, "V01-IN").respond(3, 2, 2, at("2026-03-11T07:00")).silent
    assert meter(demo, truth, faults, "V10-IN").respond(3, 0, 2, at("2026-03-11T01:00")).silent


def test_power_loss_keeps_the_totaliser_but_counts_nothing(demo: District, truth: Truth, faults: Scenario) -> None:
    m, ok = meter(demo, truth, faults, "V10-IN"), healthy(demo, truth, "V10-IN")
    start, end = at("2026-03-11T00:00"), at("2026-03-11T04:00")
    assert m.totaliser_m3(end) == pytest.approx(m.totaliser_m3(start))
    lost = ok.totaliser_m3(end) - ok.totaliser_m3(start)
    assert lost > 0
    later = end + 5 * HOUR_MS
    assert ok.totaliser_m3(later) - m.totaliser_m3(later) == pytest.approx(lost)


def test_exception_slow_and_stuck(demo: District, truth: Truth, faults: Scenario) -> None:
    t = at("2026-03-11T01:00")
    assert meter(demo, truth, faults, "V0405-IN").respond(3, 2, 2, t).exception == 2
    assert meter(demo, truth, faults, "V02-IN").respond(3, 2, 2, t).delay_s == 0.3
    stuck = meter(demo, truth, faults, "V06-IN")
    assert stuck.words(t) == stuck.words(t + 5 * HOUR_MS)
    assert stuck.words(t) != stuck.words(at("2026-03-12T01:00"))


def test_totaliser_reset_and_rollover(demo: District, truth: Truth, faults: Scenario) -> None:
    reset = meter(demo, truth, faults, "V07-IN")
    t_reset = at("2026-03-11T12:00")
    assert reset.totaliser_m3(t_reset - 1) > 1000
    assert reset.totaliser_m3(t_reset + HOUR_MS) == pytest.approx(truth.volume_m3("V07-IN", t_reset, t_reset + HOUR_MS) * (1 + reset.bias))
    roll = meter(demo, truth, faults, "WUA1-IN")
    register = demo.profile_of("WUA1-IN").register_named("total")
    before, after = at("2026-03-11T02:00") - 60_000, at("2026-03-11T02:00") + 60_000

    def decoded(t: int) -> float:
        words = roll.words(t)
        return register.decode([words[register.wire_address], words[register.wire_address + 1]])

    assert decoded(before) > register.rollover_modulus_si - 100
    assert decoded(after) < 100


def test_reverse_flow_reads_negative_and_counts_negative_total(demo: District, truth: Truth, faults: Scenario) -> None:
    rev = meter(demo, truth, faults, "OP1-IN")
    t = at("2026-03-11T00:30")
    assert rev.values(t)["flow"] < 0 < truth.flow_m3s("OP1-IN", t)
    assert rev.values(at("2026-03-11T02:00"))["flow"] > 0


def test_clock_drift_lags_the_values(demo: District, truth: Truth, faults: Scenario) -> None:
    drift = meter(demo, truth, faults, "V08-IN")
    round_start = at("2026-03-10T06:00")
    assert truth.flow_m3s("V08-IN", round_start + 10 * 60_000) > 0
    assert drift.values(round_start + 10 * 60_000)["flow"] == 0  # 15 min behind: the round has not begun
    assert drift.values(round_start + 20 * 60_000)["flow"] > 0


def test_clock_drift_sets_the_device_clock_back(demo: District, truth: Truth, faults: Scenario) -> None:
    """The meter's real-time clock (register device_time: the TUF-2000M's BCD calendar in the district's
    local time) is late by drift_s over the wire."""
    t = at("2026-03-12T10:00")
    reg = demo.profile_of("V08-IN").register_named("device_time")
    assert reg.wall_clock and demo.spec.district.timezone == "Asia/Shanghai"
    for point, late_s in (("V08-IN", 900), ("V12-IN", 0)):
        words = meter(demo, truth, faults, point).respond(3, reg.wire_address, reg.word_count, t).words
        assert words is not None
        assert reg.decode(words) == t // 1000 - late_s + 8 * 3600, point  # wall clock, UTC+8
        assert wall_to_utc(reg.decode(words), demo.tz) == t // 1000 - late_s, point
    after = at("2026-03-21T00:00")  # the fault is over: the clock is right again
    assert meter(demo, truth, faults, "V08-IN").values(after, [reg])["device_time"] == utc_to_wall(after // 1000, demo.tz)


def test_fouling_degrades_signal_quality_until_the_meter_raises_its_alarm(
        demo: District, truth: Truth, faults: Scenario) -> None:
    fouled, clean = meter(demo, truth, faults, "V11-IN"), healthy(demo, truth, "V11-IN")
    errors = demo.profile_of("V11-IN").register_named("errors")
    poor = 1 << next(bit for bit, name in (errors.bits or {}).items() if name == "poor_signal")
    start, day = at("2026-03-10T06:00"), 86_400_000
    base = clean.values(start)["signal_quality"]
    for days in (1, 4, 9):
        seen = fouled.values(start + days * day)
        assert seen["signal_quality"] == pytest.approx(max(0.0, base - 10.0 * 0.5 * days))  # 10 points per % drift
        assert int(seen["errors"]) & poor == (poor if seen["signal_quality"] < 60 else 0)
        assert clean.values(start + days * day)["signal_quality"] == base
    assert int(fouled.values(start + 9 * day)["errors"]) & poor  # 4.5 % drift: 45 points under 80..99
    assert fouled.values(at("2026-03-21T00:00"))["signal_quality"] == base  # cleaned at the end of the fault
    em = Meter(demo.points["V01-IN"], demo.profile_of("V01-IN"), truth, seed=0, faults=[
        f.model_copy(update={"point": "V01-IN"}) for f in faults.faults_of("V11-IN")])
    coating = 1 << 5  # em-pipe: electrode_coating
    assert int(em.values(start + day)["status"]) & coating == 0
    assert int(em.values(start + 9 * day)["status"]) & coating


def test_garbage_and_fouling(demo: District, truth: Truth, faults: Scenario) -> None:
    t = at("2026-03-11T00:10")
    flow = demo.profile_of("V09-IN").register_named("flow")
    garbage = meter(demo, truth, faults, "V09-IN").respond(3, flow.wire_address, 2, t).words
    assert garbage is not None
    assert garbage != healthy(demo, truth, "V09-IN").respond(3, flow.wire_address, 2, t).words
    fouled, clean = meter(demo, truth, faults, "V11-IN"), healthy(demo, truth, "V11-IN")
    four_days = at("2026-03-14T06:00")
    assert fouled.values(four_days)["flow"] / clean.values(four_days)["flow"] == pytest.approx(1.02, rel=1e-6)
    # the totaliser counts the drifting reading: over a day of steady flow, the mean drift of that day
    day = 86_400_000
    extra = (fouled.totaliser_m3(four_days + day) - fouled.totaliser_m3(four_days)) / (
        clean.totaliser_m3(four_days + day) - clean.totaliser_m3(four_days))
    assert extra == pytest.approx(1 + 0.005 * 4.5, rel=1e-9)


def test_alarm_and_low_battery_raise_status_bits(demo: District, truth: Truth, faults: Scenario) -> None:
    t = at("2026-03-11T01:00")
    alarm = meter(demo, truth, faults, "L32-HEAD")
    status = demo.profile_of("L32-HEAD").register_named("status")
    assert alarm.values(t)["status"] == 1 << 2  # temperature_fault
    assert alarm.values(at("2026-03-11T07:00"))["status"] == 0
    weak = meter(demo, truth, faults, "L33-HEAD")
    assert weak.values(t)["battery"] == pytest.approx(3.05)
    assert weak.values(t)["status"] == 1 << 3  # low_battery
    assert status.bits is not None and status.bits[3] == "low_battery"
    assert healthy(demo, truth, "L33-HEAD").values(t)["battery"] > 3.4


def test_faults_on_the_wire(demo: District, faults: Scenario, truth: Truth) -> None:
    clock = SimClock.starting_at(at("2026-03-11T01:00"), 1.0)
    with FleetThread(demo, scenario=faults, clock=clock, truth=truth) as fleet:
        endpoint = fleet.endpoints["GW-B1"]
        units = {p: u for u, p in endpoint.units.items()}
        with (
            ModbusTcpClient(endpoint.host, port=endpoint.port, timeout=0.3, retries=0) as client,
            pytest.raises(ModbusIOException, match="No response"),
        ):
            client.read_holding_registers(2, count=2, device_id=units["V01-IN"])
        with ModbusTcpClient(endpoint.host, port=endpoint.port, timeout=3, retries=0) as client:
            failing = client.read_holding_registers(2, count=2, device_id=units["V0405-IN"])
            assert failing.isError() and failing.exception_code == 2
            began = time.monotonic()
            slow = client.read_holding_registers(2, count=2, device_id=units["V02-IN"])
            assert not slow.isError() and time.monotonic() - began >= 0.28
        assert fleet.stats.silent >= 1 and fleet.stats.exceptions >= 1


def test_a_fault_injected_while_running(demo: District, truth: Truth) -> None:
    clock = SimClock.starting_at(at("2026-03-12T01:00"), 1.0)
    with FleetThread(demo, clock=clock, truth=truth) as fleet:
        endpoint = fleet.endpoints["GW-B1"]
        units = {p: u for u, p in endpoint.units.items()}
        with ModbusTcpClient(endpoint.host, port=endpoint.port, timeout=3, retries=0) as client:
            assert not client.read_holding_registers(2, count=2, device_id=units["V03-IN"]).isError()
            now = clock.now_ms()
            fleet.inject_fault("V03-IN", "exception", now, now + HOUR_MS, code=6)
            busy = client.read_holding_registers(2, count=2, device_id=units["V03-IN"])
            assert busy.isError() and busy.exception_code == 6
        with pytest.raises(ValueError, match="melted"):
            fleet.inject_fault("V03-IN", "melted", now, now + HOUR_MS)


def test_a_late_answer_keeps_its_own_transaction_id(demo: District, truth: Truth) -> None:
    """A poller that timed out moves on; the slow meter's late answer must not pose as the next one's."""
    clock = SimClock.starting_at(at("2026-03-12T01:00"), 1.0)
    with FleetThread(demo, clock=clock, truth=truth) as fleet:
        now = clock.now_ms()
        fleet.inject_fault("V02-IN", "slow", now, now + HOUR_MS, delay_s=0.6)
        endpoint = fleet.endpoints["GW-B1"]
        units = {p: u for u, p in endpoint.units.items()}
        with socket.create_connection((endpoint.host, endpoint.port), timeout=3) as link:
            link.sendall(struct.pack(">HHHBBHH", 1, 0, 6, units["V02-IN"], 3, 2, 2))
            time.sleep(0.2)  # the master gives up on V02 and asks V03
            link.sendall(struct.pack(">HHHBBHH", 2, 0, 6, units["V03-IN"], 3, 2, 2))
            answers = [_mbap_answer(link), _mbap_answer(link)]
    assert [(tid, unit) for tid, unit, _ in answers] == [(2, units["V03-IN"]), (1, units["V02-IN"])]


def _mbap_answer(link: socket.socket) -> tuple[int, int, bytes]:
    header = _exactly(link, 7)
    tid, _, length, unit = struct.unpack(">HHHB", header)
    return tid, unit, _exactly(link, length - 1)


def _exactly(link: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = link.recv(size - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data
