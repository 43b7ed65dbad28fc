"""The agent on a locked-down broker (credentials from its config, the district's ACL), a config that
stands alone without the district file, and the buffer's declared policy when full."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from edge_testkit import DEMO, Collector, gateway_bus

from canalflow.clock import SimClock
from canalflow.contract import GatewayStatus, Reading, readings_filter, status_topic
from canalflow.credentials import generate_credentials, secret_file
from canalflow.district import load_district
from canalflow.mqtt import MqttTarget
from edge.agent import EdgeAgent
from edge.buffer import Buffer
from edge.config import load_edge_config
from testbed.services import Mosquitto


def test_agent_with_credentials_from_its_config_on_a_broker_with_acl(
    make_mosquitto: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    district = load_district(DEMO)
    meters = {p.id for p in district.points_of_gateway("GW-B1")}
    creds = tmp_path / "creds"
    generate_credentials(district, creds)
    broker = make_mosquitto(password_file=creds / "mosquitto.passwd", acl_file=creds / "mosquitto.acl")
    ingest = MqttTarget.from_url(broker.url, username="ingest", password_file=secret_file(creds, "ingest"))
    collector = Collector(broker.url, [readings_filter("demo"), status_topic("demo", "GW-B1")],
                          username="ingest", password=ingest.password)

    async def serve_and_run() -> None:
        bus = gateway_bus(district, "GW-B1")
        port = await bus.serve_tcp()
        config = tmp_path / "edge.yaml"
        config.write_text(yaml.safe_dump({
            "district": str(DEMO), "gateway": "GW-B1", "endpoint": {"host": "127.0.0.1", "port": port},
            "mqtt": {"url": broker.url, "username": "GW-B1", "password_file": str(secret_file(creds, "GW-B1"))},
        }))
        agent = EdgeAgent(None, config=load_edge_config(config), clock=SimClock.starting_at(1_772_323_200_000, 60),
                          buffer_path=tmp_path / "edge.db")
        task = asyncio.create_task(agent.run())
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and {p for p, _ in collector.readings()} != meters:
            await asyncio.sleep(0.05)
        agent.stop()
        await asyncio.wait_for(task, 10)
        await bus.close()

    asyncio.run(serve_and_run())
    collector.close()
    assert {p for p, _ in collector.readings()} == meters
    statuses = [GatewayStatus.model_validate(json.loads(p)) for t, p, _ in collector.raw if t.endswith("/status")]
    assert statuses and statuses[-1].state == "offline"


def test_wrong_password_is_named_and_readings_stay_buffered(
    make_mosquitto: Callable[..., Mosquitto], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    district = load_district(DEMO)
    creds = tmp_path / "creds"
    generate_credentials(district, creds)
    broker = make_mosquitto(password_file=creds / "mosquitto.passwd", acl_file=creds / "mosquitto.acl")
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)

    async def serve_and_run() -> EdgeAgent:
        bus = gateway_bus(district, "GW-B1")
        port = await bus.serve_tcp()
        from edge.config import EndpointSpec, edge_config_from_district

        config = edge_config_from_district(district, "GW-B1")
        config.endpoint = EndpointSpec(host="127.0.0.1", port=port)
        config.mqtt = config.mqtt.model_copy(update={"url": broker.url, "username": "GW-B1",
                                                     "password_file": str(wrong)})
        agent = EdgeAgent(None, config=config, clock=SimClock.starting_at(1_772_323_200_000, 60),
                          buffer_path=tmp_path / "edge.db")
        task = asyncio.create_task(agent.run())
        await asyncio.sleep(2.5)
        agent.stop()
        await asyncio.wait_for(task, 10)
        await bus.close()
        return agent

    agent = asyncio.run(serve_and_run())
    assert any("GW-B1" in r.getMessage() and "refused" in r.getMessage().lower() for r in caplog.records)
    assert "not-the-password" not in caplog.text
    assert agent.readings_taken >= 7
    assert Buffer(tmp_path / "edge.db").depth == agent.readings_taken  # nothing published, nothing lost


def test_stand_alone_config_needs_no_district_file(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({
        "district_id": "demo", "gateway": "GW-X", "endpoint": {"transport": "rtu", "device": "/dev/ttyUSB0"},
        "points": [{"id": "P1", "unit_id": 3, "profile": "radar-parshall",
                    "ratings": [{"type": "parshall", "throat_mm": 610}]}],
    }))
    loaded = load_edge_config(config)
    assert loaded.district is None and loaded.endpoint.target() == "/dev/ttyUSB0"
    assert [(p.point, p.unit, p.profile.name, p.ratings[0].throat_mm) for p in loaded.points] == [
        ("P1", 3, "radar-parshall", 610.0)]
    config.write_text(yaml.safe_dump({"gateway": "GW-X", "points": []}))
    with pytest.raises(ValueError, match="district"):
        load_edge_config(config)
    config.write_text("district_id: demo\ngateway: GW-X\nendpoint: {port: 502}\npoints:\n"
                      "  - {id: P1, unit_id: 3, profile: radar-parshal}\n")
    with pytest.raises(ValueError, match=r"edge.yaml:5: error: points\[0\].profile: unknown profile 'radar-parshal' \(hint: known: "):
        load_edge_config(config)


def _rows(n: int, start: int = 0) -> list[tuple[str, int, str]]:
    ts0 = 1_772_323_200_000
    return [("P", ts0 + i * 1000, Reading(ts=ts0 + i * 1000, values={"flow": 1.0}).model_dump_json())
            for i in range(start, start + n)]


def test_full_buffer_drops_oldest_by_default_and_counts_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Buffer(tmp_path / "a.db", max_rows=100) as buffer:
        buffer.add(_rows(80))
        buffer.add(_rows(50, start=80))
        assert buffer.depth == 100 and buffer.dropped == 30
        kept = [e["ts"] for e in buffer.export()]
        assert kept[0] == 1_772_323_200_000 + 30_000  # the 30 oldest went
    assert "dropped 30 oldest" in caplog.text
    with Buffer(tmp_path / "a.db", max_rows=100) as reopened:
        assert reopened.dropped == 30  # the count survives a restart


def test_full_buffer_can_drop_newest_and_expire_by_age(tmp_path: Path) -> None:
    with Buffer(tmp_path / "b.db", max_rows=100, when_full="drop_newest") as buffer:
        buffer.add(_rows(90))
        buffer.add(_rows(20, start=90))
        assert buffer.depth == 100 and buffer.dropped == 10
        assert max(e["ts"] for e in buffer.export()) == 1_772_323_200_000 + 99_000
    with Buffer(tmp_path / "c.db", max_age_s=60) as buffer:
        buffer.add(_rows(10))
        assert buffer.expire(now=time.time() + 30) == 0
        assert buffer.expire(now=time.time() + 120) == 10 and buffer.dropped == 10 and buffer.depth == 0


def test_sequence_numbers_keep_growing_across_restarts(tmp_path: Path) -> None:
    with Buffer(tmp_path / "s.db") as buffer:
        first = buffer.reserve_seq(100)
    with Buffer(tmp_path / "s.db") as buffer:
        assert buffer.reserve_seq(100) >= first + 100
