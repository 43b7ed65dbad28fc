"""End-to-end confirmation: a reading leaves the edge buffer only when ingest has stored it.

Real parts: simulated meters over Modbus TCP, the agent, a private Mosquitto, `canalflow ingest run`
as a process and InfluxDB. The loss being guarded against is reproduced without a broker restart:
messages published to ingest's shared subscription before ingest subscribes are acknowledged by
the broker and dropped (the same thing happens after a Mosquitto restart, tests/proof).
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from edge_testkit import DEMO, VALUES, Collector, IngestRun, gateway_bus

from canalflow.clock import SimClock
from canalflow.contract import Confirmation, M, Reading, readings_filter
from canalflow.district import load_district
from canalflow.influx import InfluxV1
from canalflow.mqtt import MqttTarget
from edge.agent import EdgeAgent
from edge.buffer import Buffer
from edge.config import EndpointSpec, load_edge_config
from edge.outstanding import Outstanding
from edge.replay import ReplayError, replay_buffer
from testbed.services import Mosquitto
from testbed.simdevice import meter_from_profile

START_MS = 1_772_323_200_000


def stored(influx: InfluxV1) -> Counter[tuple[str, int]]:
    """(point, ts) rows of InfluxDB (epoch ms), counted: a count above 1 would be a duplicate."""
    rows = influx.query(f'SELECT "qcode" FROM "{M.readings}" GROUP BY "point"', epoch="ms")
    return Counter((row["tags"]["point"], int(v[0])) for row in rows for v in row["values"])


def oldest_row(path: Path) -> float:
    """Lowest row id still in a running agent's buffer (a second connection: WAL lets it read)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (low,) = db.execute("SELECT MIN(id) FROM readings").fetchone()
    finally:
        db.close()
    return math.inf if low is None else low


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def test_rows_wait_for_ingest_and_what_the_broker_dropped_is_published_again(
    make_mosquitto: Callable[..., Mosquitto], influx: InfluxV1, tmp_path: Path
) -> None:
    broker = make_mosquitto()
    district = load_district(DEMO)
    sent = Collector(broker.url, [readings_filter("demo")])  # everything the agent publishes, copies included

    async def scenario() -> tuple[EdgeAgent, int, int]:
        bus = gateway_bus(district, "GW-B1")
        port = await bus.serve_tcp()
        agent = EdgeAgent(district, "GW-B1", mqtt_url=broker.url, buffer_path=tmp_path / "edge.db",
                          clock=SimClock.starting_at(START_MS, speed=60.0),
                          endpoints=EndpointSpec(host="127.0.0.1", port=port))
        agent.config.publish.confirm_timeout_s = 1.0
        task = asyncio.create_task(agent.run())
        ingest = None
        try:
            # No ingest yet: the broker acknowledges every message and has nobody to give it to.
            await until(lambda: agent.outstanding.unconfirmed >= 14, 20, "PUBACKed readings")
            await until(lambda: agent.buffer is not None and not agent._pending, 5, "the buffer to be written")
            assert agent.buffer is not None and agent.buffer.depth >= agent.outstanding.unconfirmed
            before_ingest = agent.outstanding.unconfirmed
            assert agent.outstanding.resent == 0  # nobody confirms anything: no reason to think these lost
            ingest = await asyncio.to_thread(IngestRun, tmp_path, DEMO, broker.url, influx.url, influx.database)
            await asyncio.sleep(0.5)
            mark = agent.buffer.last_id  # published after ingest subscribed
            # ingest confirms what it now receives; what it never got is published again, until nothing
            # stored before the mark waits in the buffer
            await until(lambda: oldest_row(tmp_path / "edge.db") > mark, 30, "the dropped readings to be resent")
        finally:
            agent.stop()
            await task
            await bus.close()
            if ingest is not None:
                await asyncio.to_thread(ingest.stop)
        return agent, before_ingest, agent.outstanding.resent

    agent, dropped_by_broker, resent = asyncio.run(scenario())
    sent.close()
    published = Counter(sent.readings())
    rows = stored(influx)
    assert set(rows) == set(published), "every reading the agent published is in InfluxDB"
    assert max(rows.values()) == 1
    assert Buffer(tmp_path / "edge.db").depth == 0, "all confirmed by the time the agent stopped"
    assert agent.readings_taken == len(rows)
    copies = sum(n - 1 for n in published.values())
    assert copies >= dropped_by_broker and resent >= dropped_by_broker
    assert agent.outstanding.dead == 0 and agent.outstanding.confirmed >= agent.readings_taken


def test_a_point_ingest_does_not_know_is_dead_lettered_confirmed_and_counted(
    make_mosquitto: Callable[..., Mosquitto], influx: InfluxV1, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A technician commissioned a meter on the gateway but nobody added it to the district file:
    ingest dead-letters its readings (unknown_point) and says so; the agent stops resending them."""
    broker = make_mosquitto()
    district = load_district(DEMO)
    config_file = tmp_path / "edge.yaml"
    config_file.write_text(f"district: {DEMO}\ngateway: GW-B1\n"
                           "points:\n  - {id: V99-NEW, unit_id: 99, profile: em-pipe}\n")
    config = load_edge_config(config_file)

    async def scenario() -> EdgeAgent:
        bus = gateway_bus(district, "GW-B1")
        bus.add(meter_from_profile(99, district.profiles["em-pipe"], VALUES["em-pipe"]))
        port = await bus.serve_tcp()
        ingest = await asyncio.to_thread(IngestRun, tmp_path, DEMO, broker.url, influx.url, influx.database)
        config.endpoint = EndpointSpec(host="127.0.0.1", port=port)
        config.mqtt = config.mqtt.model_copy(update={"url": broker.url})
        agent = EdgeAgent(None, config=config, buffer_path=tmp_path / "edge.db",
                          clock=SimClock.starting_at(START_MS, speed=60.0))
        task = asyncio.create_task(agent.run())
        try:
            await until(lambda: agent.outstanding.dead >= 3, 30, "dead-lettered readings to be confirmed")
        finally:
            agent.stop()
            await task
            await bus.close()
            await asyncio.to_thread(ingest.stop)
        return agent

    caplog.set_level("WARNING", logger="canalflow.edge.agent")
    agent = asyncio.run(scenario())
    assert Buffer(tmp_path / "edge.db").depth == 0  # the readings are kept in ingest's dead-letter store instead
    assert agent.outstanding.resent == 0
    assert "ingest dead-lettered" in caplog.text and "canalflow ingest deadletter list" in caplog.text
    points = {p for p, _ in stored(influx)}
    assert "V99-NEW" not in points and "V01-IN" in points
    from ingest.deadletter import DeadLetterStore

    store = DeadLetterStore(tmp_path / "deadletter.sqlite", worker="test")
    letters = store.list(limit=1000)
    store.close()
    assert letters and {letter.reason for letter in letters} == {"unknown_point"}


def _fill(path: Path, n: int) -> None:
    with Buffer(path) as buffer:
        buffer.add(("V01-IN", START_MS + i * 60_000,
                    Reading(ts=START_MS + i * 60_000, values={"flow": 0.05}).model_dump_json()) for i in range(n))


def test_buffer_replay_removes_only_what_ingest_confirmed(
    make_mosquitto: Callable[..., Mosquitto], influx: InfluxV1, tmp_path: Path
) -> None:
    broker = make_mosquitto()
    target = MqttTarget.from_url(broker.url)
    db = tmp_path / "edge.db"
    _fill(db, 1200)
    with pytest.raises(ReplayError, match="ingest did not confirm 1200 published reading"):
        replay_buffer(db, target, "demo", "GW-B1", timeout_s=2.0)  # nobody to confirm: nothing removed
    assert Buffer(db).depth == 1200
    ingest = IngestRun(tmp_path, DEMO, broker.url, influx.url, influx.database)
    try:
        assert replay_buffer(db, target, "demo", "GW-B1", timeout_s=30.0) == 1200
    finally:
        ingest.stop()
    assert Buffer(db).depth == 0
    assert len(stored(influx)) == 1200


def test_the_confirmation_timeout_adapts_to_ingest_and_waits_for_proof_of_loss() -> None:
    out = Outstanding(end_to_end=True, timeout_s=1.0, resend_s=60.0)
    out.published(mid=1, seq=10, ids=[1, 2], now=0.0)
    out.published(mid=2, seq=11, ids=[3], now=0.0)
    assert out.puback([1, 2], now=0.1).ids == []  # PUBACK alone removes nothing end to end
    assert out.unconfirmed == 3 and out.in_flight == 0
    assert out.due(now=30.0) == []  # ingest confirms nothing at all: no evidence of loss, no flood
    out.published(mid=3, seq=12, ids=[4], now=30.0)
    out.puback([3], now=30.0)
    settled = out.confirm(Confirmation(written=(12,)), now=30.2)  # ingest works, 10 and 11 never came
    assert settled.ids == [4]
    assert sorted(out.due(now=30.3)) == [1, 2, 3] and out.resent == 3 and out.unconfirmed == 0
    out.published(mid=4, seq=13, ids=[9], now=31.0)
    out.puback([4], now=31.0)
    assert out.due(now=35.0) == []  # nothing the broker took after it was confirmed: maybe just slow
    # slow confirmations stretch the timeout (smoothed delay + 4 deviations), never below the floor
    for k in range(20):
        out.published(mid=100 + k, seq=100 + k, ids=[100 + k], now=40.0 + k)
        out.puback([100 + k], now=40.0 + k)
        out.confirm(Confirmation(written=(100 + k,)), now=40.0 + k + 3.0)
    assert 3.0 <= out.timeout_s < 6.0
    assert Outstanding(end_to_end=True, timeout_s=1.0).timeout_s == 1.0
    out.confirm(Confirmation(written=(13,)), now=60.0)
    # a confirmation may overtake the PUBACK; dead-lettered seqs are settled and counted
    out.published(mid=7, seq=200, ids=[7, 8], now=70.0)
    settled = out.confirm(Confirmation(dead=(200,)), now=70.1)
    assert settled.ids == [7, 8] and settled.dead_readings == 2 and out.dead == 2
    assert out.puback([7], now=70.2).acked_readings == 0 and not out
    # broker mode: the PUBACK settles
    broker = Outstanding(end_to_end=False)
    broker.published(mid=1, seq=1, ids=[5], now=0.0)
    assert broker.puback([1], now=0.1).ids == [5] and broker.due(now=1e6) == []
    # a message the broker never acknowledged (it lost the session) is not held forever
    broker.published(mid=2, seq=2, ids=[6], now=0.0)
    assert broker.due(now=599.0) == [] and broker.due(now=601.0) == [6] and broker.in_flight == 0
