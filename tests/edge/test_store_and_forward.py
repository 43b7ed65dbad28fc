"""Store-and-forward with the real broker and the fleet simulator, each in its own process as deployed:
outages, broker restarts and kill -9 of the agent lose no reading.

The subscriber is a plain persistent one (not ingest), so the agents run with ``--confirm broker``:
a row leaves the buffer on the PUBACK. The end-to-end confirmation is tested in test_confirm.py."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from edge_testkit import DEMO, AgentProcess, Collector, FleetProcess, gaps_ok

from canalflow.contract import readings_filter
from edge.buffer import Buffer
from testbed.services import Mosquitto

SPEED = 600.0  # a 60 s poll every 0.1 s of wall time; an hour in 6 s
INTERVAL_MS = 60_000


def _start(tmp_path: Path, broker: Mosquitto, *extra: str) -> tuple[FleetProcess, Path, AgentProcess]:
    fleet = FleetProcess(tmp_path, speed=SPEED)
    manifest = fleet.manifest
    args = ["--district", str(DEMO), "--gateway", "GW-B1", "--mqtt", broker.url, "--endpoints", str(manifest),
            "--clock-from", str(manifest), "--buffer", str(tmp_path / "edge.db"), "--status-interval", "1",
            "--confirm", "broker", *extra]  # a plain subscriber here, no ingest to confirm: rows go on PUBACK
    return fleet, manifest, AgentProcess(tmp_path, args)


def test_broker_down_for_a_simulated_hour_every_reading_arrives_exactly_once(
    make_mosquitto: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    broker = make_mosquitto()
    collector = Collector(broker.url, [readings_filter("demo")], client_id="collector-restart")
    fleet, _, agent = _start(tmp_path, broker, "--replay-rate", "150")
    try:
        time.sleep(1.5)
        broker.stop()
        time.sleep(3600 / SPEED)  # one simulated hour without a broker
        broker.start()
        time.sleep(1.0)
        assert collector.wait_for(lambda: len(collector.readings()) >= 7 * 85, 20), agent.output()[-3000:]
        assert agent.terminate() == 0
    finally:
        if agent.proc.poll() is None:
            agent.kill9()
        fleet.stop()
    collector.wait_for(lambda: False, 1.0)  # late deliveries
    collector.close()
    received = collector.readings()
    # The agent sends each (point, ts) in exactly one message (one seq). QoS 1 may deliver that message
    # to a subscriber twice around a broker restart (same seq, DUP flag); ingest keys rows on (point, ts).
    sent_in = Counter((b.point, r.ts) for b in {(b.seq): b for b in collector.batches}.values() for r in b.readings)
    assert [k for k, n in sent_in.items() if n > 1] == [], "the agent sent a reading twice"
    assert set(sent_in) == set(received)
    taken = int(re.search(r"(\d+) readings taken", agent.output()).group(1))  # type: ignore[union-attr]
    assert len(set(received)) == taken, "readings taken by the agent never arrived"
    for point in {p for p, _ in received}:
        stamps = [ts for p, ts in received if p == point]
        assert gaps_ok(stamps, INTERVAL_MS, factor=2.5) == [], f"{point}: polls stopped"
        assert len(stamps) >= 60
    historical = [b for b in collector.batches if b.historical]
    replayed = sum(len(b.readings) for b in historical)
    assert replayed >= 7 * 50  # the hour of backlog came marked historical
    # ... at the replay rate (150 readings/s), not in one burst
    replay_wall_s = (max(b.sent_ms for b in historical) - min(b.sent_ms for b in historical)) / 1000 / SPEED
    assert replay_wall_s >= 0.7 * (replayed - 150) / 150
    # live data was not starved by the replay: live batches arrived between the first and last backlog ones
    order = [b.historical for b in collector.batches]
    first, last = order.index(True), len(order) - 1 - order[::-1].index(True)
    assert not all(order[first:last + 1])
    assert Buffer(tmp_path / "edge.db").depth == 0
    assert "DISCONNECTED" in agent.output()


def test_kill_9_mid_publish_loses_no_buffered_reading(make_mosquitto: Callable[..., Mosquitto], tmp_path: Path) -> None:
    broker = make_mosquitto()
    collector = Collector(broker.url, [readings_filter("demo")], client_id="collector-kill")
    fleet, manifest, agent = _start(tmp_path, broker, "--replay-rate", "100")
    try:
        time.sleep(1.0)
        broker.stop()
        time.sleep(3.0)  # a backlog of ~30 polls per point
        broker.start()
        assert collector.wait_for(lambda: any(b.historical for b in collector.batches), 10)
        agent.kill9()  # in the middle of the replay
        time.sleep(0.5)  # messages the broker already acknowledged reach the collector
        before_kill = set(collector.readings())
        with Buffer(tmp_path / "edge.db") as buffer_rows:
            waiting = {(e["point"], e["ts"]) for e in buffer_rows.export()}
        assert waiting, "the kill came after the replay finished: nothing to prove"
        again = AgentProcess(tmp_path, agent.proc.args[3:])
        assert collector.wait_for(lambda: waiting <= set(collector.readings()), 20), again.output()[-3000:]
        assert again.terminate() == 0
    finally:
        for proc in (agent, locals().get("again")):
            if proc is not None and proc.proc.poll() is None:
                proc.kill9()
        fleet.stop()
    collector.close()
    received = set(collector.readings())
    assert waiting <= received
    # before the kill, polls were continuous: nothing fell between the poll and the buffer
    for point in {p for p, _ in before_kill | waiting}:
        stamps = [ts for p, ts in (before_kill | waiting) if p == point]
        assert gaps_ok(stamps, INTERVAL_MS, factor=2.5) == [], f"{point}: readings lost before the kill"
    del manifest
