"""Simulated stations of both protocols, driven by the hydraulic truth, through the receiver to the broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from telemetry_testkit import Collector, stations_district

from canalflow.clock import SimClock
from canalflow.contract import Flag, readings_filter
from canalflow.district import load_district
from edge.telemetry.receiver import Limits, StationReceiver
from edge.telemetry.simstation import Faults, SimStation, truth_values
from firmware_sim.truth import Truth

SPEED = 300.0  # 5 simulated minutes per wall second


def test_faulty_stations_still_deliver_the_truth(tmp_path: Path, mqtt_url: str) -> None:
    district = load_district(stations_district(tmp_path))
    truth = Truth(district)
    _, round_start, _ = truth.rounds[0]
    start = round_start + 86_400_000  # a day into the first round: water flows
    clock = SimClock.starting_at(start, speed=SPEED)
    collector = Collector(mqtt_url, [readings_filter("demo")])
    receiver = StationReceiver(district, "RX-1", mqtt_url=mqtt_url, buffer_path=tmp_path / "rx.db", clock=clock)
    receiver.config.publish.confirm = "broker"

    async def scenario() -> list[SimStation]:
        task = asyncio.create_task(receiver.run())
        await asyncio.wait_for(receiver.ready.wait(), 10)
        assert receiver.port is not None
        outage = (start + 600_000, start + 1_500_000)  # 15 minutes without a link: a backlog
        faults = {"ST-L11": Faults(bad_crc=0.3, duplicate=0.3, outages=(outage,)),
                  "ST-V01": Faults(duplicate=0.3, drop=0.3)}
        sims = [SimStation(station, truth_values(truth, station.point), host="127.0.0.1", port=receiver.port,
                           clock=clock, zone=district.tz, keepalive_s=900, faults=faults[station.id], seed=7,
                           answer_timeout_s=0.3)
                for station in district.stations.values()]
        runs = [asyncio.create_task(sim.run()) for sim in sims]
        await asyncio.sleep(2400 / SPEED)  # 40 simulated minutes: 8 reports each
        for sim in sims:
            sim.stop()
        await asyncio.gather(*runs)
        deadline = asyncio.get_running_loop().time() + 15
        while receiver.buffer is not None and receiver.buffer.depth:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        receiver.stop()
        await asyncio.wait_for(task, 30)
        return sims

    sims = asyncio.run(scenario())
    assert collector.wait_for(lambda: {p for p, _ in collector.readings()} >= {"L11-HEAD", "V01-IN"}, 10)
    collector.close()
    got: dict[str, dict[int, dict[str, float]]] = {}
    for batch in collector.batches:
        for reading in batch.readings:
            got.setdefault(batch.point, {})[reading.ts] = reading.values
    sl, szy = (next(s for s in sims if s.station.id == name) for name in ("ST-L11", "ST-V01"))
    assert len(sl.queue) <= 1 and sl.connects >= 2  # at most the report due as it stopped; redialled after the outage
    assert len(got["L11-HEAD"]) == sl.answered >= 7  # each answered once; the backlog came after the outage
    for ts, values in got["L11-HEAD"].items():
        assert values["level"] == pytest.approx(truth.state("L11-HEAD", ts).level_m, abs=0.0006)
    assert len(got["V01-IN"]) == szy.answered >= 7
    for ts, values in got["V01-IN"].items():
        assert values["totaliser"] == pytest.approx(truth.volume_m3("V01-IN", truth.epoch_ms, ts), abs=0.5)
        assert values["flow"] == pytest.approx(truth.flow_m3s("V01-IN", ts), abs=0.0006)
    errors = receiver.stats["ST-L11"].errors
    assert errors["bad_crc"] >= 1 and errors["replayed"] >= 1
    assert receiver.stats["ST-V01"].errors["replayed"] >= 1 and szy.connects >= 2


def test_a_receiver_sets_a_simulated_stations_clock(tmp_path: Path, mqtt_url: str) -> None:
    """--set-clock: a station 20.5 minutes fast answers the clock query (51) after its first keep-alive,
    is set (4A, twice: over 5 minutes off), and its reports carry the true time, none flagged clock_drift."""
    district = load_district(stations_district(tmp_path))
    truth = Truth(district)
    start = truth.rounds[0][1] + 86_400_000
    clock = SimClock.starting_at(start, speed=SPEED)
    collector = Collector(mqtt_url, [readings_filter("demo")])
    receiver = StationReceiver(district, "RX-1", mqtt_url=mqtt_url, buffer_path=tmp_path / "rx.db", clock=clock,
                               limits=Limits(clock_query=True, set_clock=True))
    receiver.config.publish.confirm = "broker"
    station = district.stations["ST-L11"]

    async def scenario() -> SimStation:
        task = asyncio.create_task(receiver.run())
        await asyncio.wait_for(receiver.ready.wait(), 10)
        assert receiver.port is not None
        sim = SimStation(station, truth_values(truth, station.point), host="127.0.0.1", port=receiver.port,
                         clock=clock, zone=district.tz, keepalive_s=900, faults=Faults(clock_skew_s=1230),
                         answer_timeout_s=0.5)
        run = asyncio.create_task(sim.run())
        await asyncio.sleep(1800 / SPEED)  # 30 simulated minutes: 6 reports
        sim.stop()
        await run
        while receiver.buffer is not None and receiver.buffer.depth:
            await asyncio.sleep(0.05)
        receiver.stop()
        await asyncio.wait_for(task, 30)
        return sim

    sim = asyncio.run(scenario())
    assert collector.wait_for(lambda: len(list(collector.readings())) >= 5, 10)
    collector.close()
    assert abs(sim.clock_skew_s) < 30 and receiver.stats["ST-L11"].errors["clock_skew"] == 1
    assert receiver.stats["ST-L11"].clock_offset_s == pytest.approx(1230, abs=30)
    readings = [r for b in collector.batches for r in b.readings]
    assert all(Flag.clock_drift not in r.flags for r in readings)
    assert all(abs((r.ts + 150_000) % 300_000 - 150_000) <= 60_000 for r in readings)  # on the 5-minute reports
    for r in readings:
        assert r.values["level"] == pytest.approx(truth.state("L11-HEAD", r.ts).level_m, abs=0.002)
