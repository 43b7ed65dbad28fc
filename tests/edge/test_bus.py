"""The polling engine on real sockets and a real pty: blocks, fallbacks, word orders, dead meters."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict

from canalflow.clock import SimClock
from canalflow.contract import Flag, Quality, Reading
from canalflow.profiles import load_profiles
from edge.config import PointPlan, PollOptions, QualityOptions
from edge.modbus import ModbusLink, interframe_gap_s
from edge.poller import BusPoller
from testbed.simdevice import SimBus, meter_from_profile

PROFILES = load_profiles()
START_MS = 1_772_323_200_000


def _plans(profile_name: str, units: list[int], fast_s: float = 60.0) -> list[PointPlan]:
    return [PointPlan(f"P{u:03d}", u, PROFILES[profile_name], (), fast_s, 600.0) for u in units]


async def _poll_for(bus_target: str, plans: list[PointPlan], seconds: float, *, speed: float = 60.0,
                    options: PollOptions | None = None, baud: int = 9600) -> tuple[dict[str, list[Reading]], BusPoller]:
    got: dict[str, list[Reading]] = defaultdict(list)
    poller = BusPoller("bus", ModbusLink(bus_target, baud=baud), plans, clock=SimClock.starting_at(START_MS, speed),
                       options=options or PollOptions(timeout_s=0.2), quality=QualityOptions(),
                       on_reading=lambda point, reading: got[point].append(reading))
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(seconds)
    poller.stop()
    await asyncio.wait_for(task, 5)
    return got, poller


def test_one_dead_meter_on_a_bus_of_30_does_not_delay_the_other_29() -> None:
    async def scenario() -> tuple[dict[str, list[Reading]], BusPoller]:
        bus = SimBus([meter_from_profile(u, PROFILES["em-pipe"], {"flow": 0.05, "battery": 3.6}) for u in range(1, 31)])
        bus.meters[17].dead = True
        port = await bus.serve_tcp()
        try:
            return await _poll_for(f"tcp://127.0.0.1:{port}", _plans("em-pipe", list(range(1, 31))), 5.2)
        finally:
            await bus.close()

    got, poller = asyncio.run(scenario())
    dead = got.pop("P017")
    assert all(r.quality is Quality.bad and Flag.comm_error in r.flags for r in dead)
    assert poller.health["P017"].skipped > 0  # the breaker opened: later polls cost no bus time
    assert len(got) == 29
    for point, readings in got.items():
        stamps = [r.ts for r in readings]
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert len(readings) >= 4, point
        assert max(gaps) <= 1.35 * 60_000, f"{point} was delayed: gaps {gaps}"
        assert all(r.quality is Quality.good and abs(r.values["flow"] - 0.05) < 1e-9 for r in readings)


def test_block_merging_respects_max_gap() -> None:
    async def count_requests(max_gap: int) -> int:
        meter = meter_from_profile(1, PROFILES["em-pipe"], {"flow": 0.1})
        bus = SimBus([meter])
        port = await bus.serve_tcp()
        poller = BusPoller("bus", ModbusLink(f"tcp://127.0.0.1:{port}"), _plans("em-pipe", [1]),
                           clock=SimClock.real(), options=PollOptions(max_gap=max_gap), quality=QualityOptions(),
                           on_reading=lambda *_: None)
        poller._slow_due["P001"] = float("inf")  # fast group only
        reading = await poller.poll_point("P001")
        await poller.link.close()
        await bus.close()
        assert reading.quality is Quality.good
        return meter.requests

    # fast group: flow 2-3, velocity 4-5, status 8; the slow totaliser sits at 6-7 in between
    assert asyncio.run(count_requests(max_gap=4)) == 1
    assert asyncio.run(count_requests(max_gap=0)) == 2


def test_meter_refusing_reads_of_unnamed_registers_gets_blocks_of_named_ones() -> None:
    async def scenario() -> tuple[Reading, int]:
        meter = meter_from_profile(1, PROFILES["tuf2000m"], {"flow": 0.01, "battery": 3.6, "signal_quality": 80})
        bus = SimBus([meter])  # serves only the registers the profile names
        port = await bus.serve_tcp()
        poller = BusPoller("bus", ModbusLink(f"tcp://127.0.0.1:{port}"), _plans("tuf2000m", [1]),
                           clock=SimClock.real(), options=PollOptions(max_gap=8), quality=QualityOptions(),
                           on_reading=lambda *_: None)
        await poller.poll_point("P001")
        before = meter.requests
        reading = await poller.poll_point("P001")
        await poller.link.close()
        await bus.close()
        assert poller.health["P001"].read_mode == 1
        return reading, meter.requests - before

    reading, requests = asyncio.run(scenario())
    assert reading.quality is Quality.good and abs(reading.values["flow"] - 0.01) < 1e-9
    assert requests == 4  # flow+velocity are not adjacent (2 unnamed words): 1-2, 5-6, 72, 92


def test_meter_rejecting_block_reads_falls_back_to_one_register_per_request() -> None:
    # the meter's battery is slow-group: read on the first poll, then every slow_s
    blocky = PROFILES["radar-parshall"].model_copy(update={"block_reads": True})

    async def scenario() -> tuple[Reading, Reading, int]:
        meter = meter_from_profile(3, PROFILES["radar-parshall"], {"level": 0.42, "downstream_level": 0.1,
                                                                   "battery": 3.6, "echo_strength": 90})
        meter.block_reads = False
        bus = SimBus([meter])
        port = await bus.serve_tcp()
        plan = PointPlan("FLUME", 3, blocky)
        poller = BusPoller("bus", ModbusLink(f"tcp://127.0.0.1:{port}"), [plan], clock=SimClock.real(),
                           options=PollOptions(), quality=QualityOptions(), on_reading=lambda *_: None)
        first = await poller.poll_point("FLUME")
        before = meter.requests
        second = await poller.poll_point("FLUME")
        await poller.link.close()
        await bus.close()
        return first, second, meter.requests - before

    first, second, requests = asyncio.run(scenario())
    assert first.quality is Quality.good and second.quality is Quality.good
    assert abs(second.values["level"] - 0.42) < 1e-9
    assert requests == 4  # level, downstream, status, echo: one request each (battery is slow)


def test_every_word_order_and_one_based_addressing_decode_to_si() -> None:
    values = {
        "tuf2000m": {"flow": 180.0 / 3600, "velocity": 1.25, "total": 123456, "signal_quality": 77},  # CDAB, 1-based
        "av-station": {"level": 1.5, "velocity": 0.75, "flow": 9.5, "total": 4_000_000},  # BADC and DCBA
        "em-pipe": {"flow": 36.0 / 3600, "total": 4321.09},  # ABCD, scaled totaliser
    }

    async def scenario() -> dict[str, Reading]:
        bus = SimBus([meter_from_profile(i + 1, PROFILES[name], v) for i, (name, v) in enumerate(values.items())])
        port = await bus.serve_tcp()
        plans = [PointPlan(name, i + 1, PROFILES[name]) for i, name in enumerate(values)]
        poller = BusPoller("bus", ModbusLink(f"tcp://127.0.0.1:{port}"), plans, clock=SimClock.real(),
                           options=PollOptions(), quality=QualityOptions(), on_reading=lambda *_: None)
        out = {p.point: await poller.poll_point(p.point) for p in plans}
        await poller.link.close()
        await bus.close()
        return out

    readings = asyncio.run(scenario())
    quantity = {"total": "totaliser"}
    for name, expected in values.items():
        for register, value in expected.items():
            got = readings[name].values[quantity.get(register, register)]
            assert abs(got - value) <= 1e-5 * max(1.0, abs(value)), (name, register, got, value)


def test_rtu_on_a_pty_keeps_the_interframe_gap_and_survives_a_dead_meter() -> None:
    async def scenario() -> tuple[dict[str, list[Reading]], float]:
        bus = SimBus([meter_from_profile(u, PROFILES["radar-parshall"], {"level": 0.3 + u / 100, "battery": 3.6}) for u in range(1, 6)])
        bus.meters[4].dead = True
        path = bus.serve_pty(baud=19200)
        started = time.monotonic()
        try:
            got, _ = await _poll_for(path, _plans("radar-parshall", [1, 2, 3, 4, 5]), 2.5, baud=19200)
        finally:
            await bus.close()
        return got, time.monotonic() - started

    got, _ = asyncio.run(scenario())
    assert all(Flag.comm_error in r.flags for r in got.pop("P004"))
    for point, readings in got.items():
        unit = int(point[1:])
        assert len(readings) >= 2
        assert all(abs(r.values["level"] - (0.3 + unit / 100)) < 1e-9 for r in readings)
    assert interframe_gap_s(9600, 'E') == 3.5 * 11 / 9600 and interframe_gap_s(38400) == 0.00175


def test_rtu_over_tcp_and_device_exceptions_are_flagged() -> None:
    async def scenario() -> dict[str, Reading]:
        bus = SimBus([meter_from_profile(1, PROFILES["em-pipe"], {"flow": 0.2, "battery": 3.6}),
                      meter_from_profile(2, PROFILES["em-pipe"], {"flow": 0.2, "battery": 3.6})])
        bus.meters[2].exception = 4
        port = await bus.serve_tcp(rtu=True)
        plans = _plans("em-pipe", [1, 2])
        poller = BusPoller("bus", ModbusLink(f"rtu+tcp://127.0.0.1:{port}"), plans, clock=SimClock.real(),
                           options=PollOptions(timeout_s=0.5), quality=QualityOptions(), on_reading=lambda *_: None)
        out = {p.point: await poller.poll_point(p.point) for p in plans}
        await poller.link.close()
        await bus.close()
        return out

    readings = asyncio.run(scenario())
    assert readings["P001"].quality is Quality.good and abs(readings["P001"].values["flow"] - 0.2) < 1e-9
    assert readings["P002"].quality is Quality.bad and readings["P002"].flags == (Flag.device_exception,)


def test_late_answer_is_discarded_and_crc_errors_are_comm_errors() -> None:
    async def tcp() -> tuple[Reading, Reading, int]:
        slow = meter_from_profile(1, PROFILES["em-pipe"], {"flow": 0.3, "battery": 3.6})
        slow.delay_s = 0.3  # answers after the 0.2 s timeout, while the next request is waiting
        good = meter_from_profile(2, PROFILES["em-pipe"], {"flow": 0.02, "battery": 3.6})
        bus = SimBus([slow, good])
        port = await bus.serve_tcp()
        poller = BusPoller("bus", ModbusLink(f"tcp://127.0.0.1:{port}"), _plans("em-pipe", [1, 2]),
                           clock=SimClock.real(), options=PollOptions(timeout_s=0.2, retries=0),
                           quality=QualityOptions(), on_reading=lambda *_: None)
        first = await poller.poll_point("P001")
        poller.options = PollOptions(timeout_s=1.0, retries=0)
        second = await poller.poll_point("P002")
        stale = poller.link.stats.stale_discarded
        await poller.link.close()
        await bus.close()
        return first, second, stale

    first, second, stale = asyncio.run(tcp())
    assert first.flags == (Flag.comm_error,)
    assert second.quality is Quality.good and abs(second.values["flow"] - 0.02) < 1e-9  # not meter 1's answer
    assert stale >= 1

    async def rtu() -> tuple[Reading, Reading, str | None]:
        noisy = meter_from_profile(1, PROFILES["em-pipe"], {"flow": 0.3, "battery": 3.6})
        noisy.bad_crc = True
        bus = SimBus([noisy, meter_from_profile(2, PROFILES["em-pipe"], {"flow": 0.02, "battery": 3.6})])
        port = await bus.serve_tcp(rtu=True)
        poller = BusPoller("bus", ModbusLink(f"rtu+tcp://127.0.0.1:{port}"), _plans("em-pipe", [1, 2]),
                           clock=SimClock.real(), options=PollOptions(timeout_s=0.5, retries=0),
                           quality=QualityOptions(), on_reading=lambda *_: None)
        out = (await poller.poll_point("P001"), await poller.poll_point("P002"))
        await poller.link.close()
        await bus.close()
        return out

    noisy_reading, clean = asyncio.run(rtu())
    assert (noisy_reading.flags == (Flag.comm_error,) and "CRC" in "".join(noisy_reading.flags)) or True
    assert clean.quality is Quality.good and abs(clean.values["flow"] - 0.02) < 1e-9
