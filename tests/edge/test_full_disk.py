"""A field gateway's SD card fills up (or turns read-only) under the edge buffer, mid-run, and recovers.

The buffer lives on a 2 MB tmpfs mounted for the test (root only); where mounting is not allowed,
SQLite's ``PRAGMA max_page_count`` caps the file at its current size instead (the same
"database or disk is full" error). Polling and publishing go on, the drops are counted under the
declared policy and shown in the log, the retained status and ``/metrics``, nothing else is lost,
and the agent stores readings again once space returns. A task that keeps failing stops the agent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from edge_testkit import DEMO, Collector, gateway_bus

from canalflow.clock import SimClock
from canalflow.contract import readings_filter, status_topic
from canalflow.district import District, load_district
from edge.agent import AgentFailed, EdgeAgent
from edge.config import EndpointSpec, edge_config_from_district
from testbed.services import Mosquitto

GATEWAY = "GW-B1"


class TmpfsFill:
    """A 2 MB tmpfs; ``fill()`` takes every free byte with a ballast file, ``free()`` deletes it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ballast = root / "ballast"

    def fill(self, _agent: EdgeAgent) -> None:
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass  # ENOSPC: the file system is full
        finally:
            os.close(fd)

    def free(self, _agent: EdgeAgent) -> None:
        self.ballast.unlink()


class PageCap:
    """No mount allowed: cap the SQLite file at its current page count, then lift the cap."""

    def fill(self, agent: EdgeAgent) -> None:
        assert agent.buffer is not None
        db = agent.buffer.db
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")

    def free(self, agent: EdgeAgent) -> None:
        assert agent.buffer is not None
        agent.buffer.db.execute("PRAGMA max_page_count = 1073741823")


@pytest.fixture(params=["tmpfs", "max_page_count"])
def full_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    if request.param == "max_page_count":
        yield tmp_path / "buffer", PageCap()
        return
    mount = tmp_path / "sdcard"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the max_page_count case covers it")
    try:
        yield mount, TmpfsFill(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(f'{name}{{gateway="{GATEWAY}"'))


async def _agent(district: District, broker: Mosquitto, buffer: Path, **publish: Any) -> tuple[Any, EdgeAgent]:
    """GW-B1's simulated meters on a socket, and an agent for them (not started) at 120x simulated time."""
    bus = gateway_bus(district, GATEWAY)
    port = await bus.serve_tcp()
    config = edge_config_from_district(district, GATEWAY)
    config.endpoint = EndpointSpec(host="127.0.0.1", port=port)
    config.mqtt = config.mqtt.model_copy(update={"url": broker.url})
    config.publish = config.publish.model_copy(update=publish)
    agent = EdgeAgent(None, config=config, clock=SimClock.starting_at(1_772_323_200_000, 120), buffer_path=buffer,
                      metrics_port=0)
    return bus, agent


async def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        await asyncio.sleep(0.05)
    return predicate()


def test_full_disk_under_the_buffer_counts_drops_reports_them_and_recovers(
    mosquitto: Mosquitto, full_disk: tuple[Path, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="canalflow.edge")
    where, disk = full_disk
    district = load_district(DEMO)
    collector = Collector(mosquitto.url, [readings_filter("demo"), status_topic("demo", GATEWAY)])
    seen: dict[str, Any] = {}

    async def scenario() -> EdgeAgent:
        # nobody confirms (no ingest): every reading stays buffered, so the file must grow
        bus, agent = await _agent(district, mosquitto, where / "edge.db", status_interval_s=0.3, confirm="ingest")
        task = asyncio.create_task(agent.run())
        assert await _until(lambda: agent.buffer is not None and agent.buffer.depth >= 20, 20)
        await agent._in_db(disk.fill, agent)
        assert await _until(lambda: agent.buffer.dropped >= 20, 30), "the full disk was never noticed"
        assert agent.buffer.storage_error and "full" in agent.buffer.storage_error
        seen["published_while_full"] = len(collector.readings())
        assert await _until(lambda: any(b"buffer_error" in p for t, p, _ in collector.raw if t.endswith("/status")), 10)
        assert agent.metrics_port is not None
        seen["writable_while_full"] = _metric(agent.metrics_port, "canalflow_edge_buffer_writable")
        seen["dropped_metric"] = _metric(agent.metrics_port, "canalflow_edge_buffer_dropped")
        polls_while_full = agent.polls
        await asyncio.sleep(1.0)
        seen["polled_on"] = agent.polls > polls_while_full
        await agent._in_db(disk.free, agent)
        depth = agent.buffer.depth
        assert await _until(lambda: agent.buffer.storage_error is None and agent.buffer.depth > depth + 7, 20)
        seen["writable_after"] = _metric(agent.metrics_port, "canalflow_edge_buffer_writable")
        seen["published_after"] = await _until(lambda: len(collector.readings()) > seen["published_while_full"], 10)
        agent.stop()
        await asyncio.wait_for(task, 15)
        await bus.close()
        return agent

    agent = asyncio.run(scenario())
    collector.close()
    buffer_path = where / "edge.db"
    from edge.buffer import Buffer

    with Buffer(buffer_path) as reopened:
        stored, dropped = reopened.depth, reopened.dropped
    # nothing lost but what was counted: every reading taken is in the buffer or counted dropped
    assert stored + dropped == agent.readings_taken, (stored, dropped, agent.readings_taken)
    assert dropped >= 20 and seen["dropped_metric"] >= 20
    assert seen["writable_while_full"] == 0 and seen["writable_after"] == 1
    assert seen["polled_on"] and seen["published_after"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("cannot write" in m and "Free space on the file system" in m and "df -h" in m for m in errors), errors
    assert any("writable again" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.CRITICAL or "task failed" in r.getMessage()]
    statuses = [json.loads(p) for t, p, _ in collector.raw if t.endswith("/status")]
    assert any(s.get("buffer_error") for s in statuses) and statuses[-1]["state"] == "offline"


def test_a_task_that_keeps_failing_stops_the_agent_for_its_service_manager(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    district = load_district(DEMO)

    async def scenario() -> None:
        bus, agent = await _agent(district, mosquitto, tmp_path / "edge.db")
        task = asyncio.create_task(agent.run())
        assert await _until(lambda: agent.buffer is not None and agent.buffer.depth > 0, 20)
        await agent._in_db(agent.buffer.db.close)  # the store loop now fails on every round
        try:
            with pytest.raises(AgentFailed, match="failed 5 times within a minute"):
                await asyncio.wait_for(task, 30)
        finally:
            await bus.close()

    asyncio.run(scenario())
    restarts = [r for r in caplog.records if "task failed; restarting it" in r.getMessage()]
    assert len(restarts) >= 4 and all(r.exc_info for r in restarts)  # each failure logged with its traceback
    assert any(r.levelno == logging.CRITICAL and "stopping the agent" in r.getMessage() for r in caplog.records)


def test_a_read_only_buffer_drops_and_counts_new_readings_keeps_the_rest_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite's read-only error (here ``PRAGMA query_only``, as a file system remounted read-only
    answers): new readings are dropped and counted, confirmed ones stay until the delete can be
    written, and storing resumes once writes are allowed again."""
    from edge.buffer import Buffer

    t0 = 1_772_323_200_000
    rows = [("V01-IN", t0 + i * 1000, f'{{"ts": {t0 + i * 1000}, "values": {{"flow": 1.0}}}}') for i in range(10)]
    with Buffer(tmp_path / "edge.db") as buffer:
        assert buffer.add(rows[:5]) == 5
        buffer.db.execute("PRAGMA query_only = ON")
        assert buffer.add(rows[5:8]) == 0 and buffer.dropped == 3
        assert buffer.storage_error and "read-only" in buffer.storage_error
        assert buffer.acknowledge([1, 2]) is False and buffer.depth == 5  # tried again later, nothing lost
        buffer.db.execute("PRAGMA query_only = OFF")
        assert buffer.add(rows[8:]) == 2 and buffer.storage_error is None
        assert buffer.acknowledge([1, 2]) is True and buffer.depth == 5
    with Buffer(tmp_path / "edge.db") as reopened:
        assert reopened.dropped == 3 and reopened.status()["storage_error"] is None  # the count was saved on recovery
    assert any("cannot write: the file system is read-only" in r.getMessage() for r in caplog.records)
