"""The thin path: simulated meters over Modbus TCP -> EdgeAgent -> SQLite -> real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from edge_testkit import DEMO, Collector, gateway_bus

from canalflow.clock import SimClock
from canalflow.contract import (
    Flag,
    GatewayStatus,
    Quality,
    cmd_result_topic,
    cmd_topic,
    readings_filter,
    status_topic,
)
from canalflow.district import load_district
from edge.agent import EdgeAgent
from edge.buffer import Buffer
from edge.config import EdgeConfig, EndpointSpec, edge_config_from_district

COMMANDS = [
    {"id": "r", "command": "read_now", "point": "V01-IN"},
    {"id": "i", "command": "set_interval", "point": "V02-IN", "group": "fast", "seconds": 30},
    {"id": "s", "command": "status"},
    {"id": "x", "command": "explode"},
    {"id": "p", "command": "read_now", "point": "NOPE"},
]


def _results(collector: Collector) -> list[dict[str, object]]:
    with collector.lock:
        return [json.loads(p) for t, p, _ in collector.raw if t.endswith("/cmd/result")]


def _scrape(port: int | None) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_agent_publishes_every_point_decoded_in_si_and_answers_commands(mqtt_url: str, tmp_path: Path) -> None:
    district = load_district(DEMO)
    collector = Collector(mqtt_url, [readings_filter("demo"), status_topic("demo", "GW-B1"),
                                     cmd_result_topic("demo", "GW-B1")])

    async def scenario() -> EdgeAgent:
        bus = gateway_bus(district, "GW-B1")
        port = await bus.serve_tcp()
        clock = SimClock.starting_at(1_772_323_200_000, speed=60.0)  # 60 s polls every wall second
        agent = EdgeAgent(district, "GW-B1", mqtt_url=mqtt_url, buffer_path=tmp_path / "edge.db", clock=clock,
                          endpoints=EndpointSpec(host="127.0.0.1", port=port), metrics_port=0)
        agent.config.publish.confirm = "broker"  # no ingest here: rows leave the buffer on the PUBACK
        task = asyncio.create_task(agent.run())
        points = {p.id for p in district.points_of_gateway("GW-B1")}
        for _ in range(100):
            await asyncio.sleep(0.05)
            if points <= {p for p, _ in collector.readings()}:
                break
        for command in COMMANDS:
            collector.client.publish(cmd_topic("demo", "GW-B1"), json.dumps(command), qos=1)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if len(_results(collector)) == len(COMMANDS):
                break
        metrics.append(await asyncio.to_thread(_scrape, agent.metrics_port))

        def fewer_points() -> EdgeConfig:
            config = edge_config_from_district(district, "GW-B1")
            config.endpoint = EndpointSpec(host="127.0.0.1", port=port)
            config.points = config.points[:3]
            return config

        agent.reloader = fewer_points
        collector.client.publish(cmd_topic("demo", "GW-B1"), json.dumps({"id": "reload", "command": "reload"}), qos=1)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if len(_results(collector)) > len(COMMANDS):
                break
        reloaded.append(len(agent.config.points))
        agent.stop()
        await asyncio.wait_for(task, 10)
        await bus.close()
        return agent

    metrics: list[str] = []
    reloaded: list[int] = []
    agent = asyncio.run(scenario())
    collector.close()
    results = {r["id"]: r for r in _results(collector)}
    assert results["r"]["ok"] and results["r"]["result"]["values"]["flow"] == pytest.approx(0.05)
    assert results["i"] == {"id": "i", "ok": True, "result": {"point": "V02-IN", "group": "fast", "seconds": 30.0}}
    assert not results["x"]["ok"] and "unknown command 'explode'" in results["x"]["error"]
    assert not results["p"]["ok"] and "no point 'NOPE'" in results["p"]["error"]
    assert results["s"]["result"]["health"]["V01-IN"]["good"] >= 1
    assert 'canalflow_edge_readings_total{gateway="GW-B1",point="V01-IN",quality="good"}' in metrics[0]
    assert results["reload"] == {"id": "reload", "ok": True, "result": {"meters": 3, "buses": 1}}
    assert reloaded == [3]
    assert "canalflow_edge_buffer_depth" in metrics[0] and "canalflow_edge_publish_latency_seconds" in metrics[0]
    by_point = {b.point: b for b in collector.batches}
    assert set(by_point) == {p.id for p in district.points_of_gateway("GW-B1")}
    pipe = by_point["V01-IN"].readings[0]
    assert abs(pipe.values["flow"] - 0.05) < 1e-6  # m3/h on the wire -> m3/s
    assert pipe.quality is Quality.good
    flume = by_point["L11-HEAD"].readings[0]
    assert abs(flume.values["level"] - 0.35) < 1e-9  # mm -> m
    assert Flag.rated in flume.flags
    assert abs(flume.values["flow"] - 1.428 * 0.35**1.550) < 1e-9  # 610 mm Parshall, SI table
    seqs = [b.seq for b in collector.batches]
    assert len(set(seqs)) == len(seqs)
    statuses = [GatewayStatus.model_validate(json.loads(p)) for t, p, _ in collector.raw if t.endswith("/status")]
    assert statuses[0].state == "online" and statuses[0].meters == len(district.points_of_gateway("GW-B1"))
    assert statuses[-1].state == "offline"
    # everything acknowledged left the buffer
    assert Buffer(tmp_path / "edge.db").depth == 0
    assert agent.published_readings >= 7
