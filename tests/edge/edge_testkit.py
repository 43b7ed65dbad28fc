"""Helpers for the edge tests: a simulated gateway for a district's points, and an MQTT collector."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from canalflow.contract import ReadingBatch, parse_batch
from canalflow.district import District
from testbed.simdevice import SimBus, meter_from_profile

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-district.yaml"

# plausible values per profile kind, SI
VALUES = {
    "em-pipe": {"flow": 0.05, "velocity": 1.2, "total": 1234.5, "battery": 3.6},
    "tuf2000m": {"flow": 0.04, "velocity": 1.1, "total": 5000, "signal_quality": 80, "battery": 3.6},
    "radar-parshall": {"level": 0.35, "downstream_level": 0.10, "battery": 3.6, "echo_strength": 90},
    "av-station": {"level": 1.2, "velocity": 0.8, "flow": 9.0, "total": 100000, "battery": 12.5},
    "soil-station": {**{f"vwc_{d}cm": 0.22 for d in (10, 20, 40, 60, 80, 100)}, "battery": 3.7},
    "rain-gauge": {"rainfall": 0.0123, "battery": 3.6},
}


def gateway_bus(district: District, gateway: str) -> SimBus:
    """Simulated meters for every point of a district gateway, at plausible values."""
    bus = SimBus()
    for point in district.points_of_gateway(gateway):
        profile = district.profile_of(point.id)
        bus.add(meter_from_profile(point.unit_id, profile, VALUES[profile.name]))
    return bus


class BusThread:
    """Run a SimBus on its own event loop in a thread (so a test can drive a subprocess agent)."""

    def __init__(self, bus: SimBus) -> None:
        self.bus = bus
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start_tcp(self) -> int:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self.bus.serve_tcp(), self.loop).result(5)

    def call(self, func: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return func()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.bus.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Collector:
    """A persistent-session subscriber that parses every readings batch it receives."""

    def __init__(self, url: str, topics: list[str], *, client_id: str | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        host, port = url.split("://")[1].split(":")
        self.batches: list[ReadingBatch] = []
        self.raw: list[tuple[str, bytes, bool]] = []
        self.dups = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"collector-{uuid.uuid4().hex[:8]}", clean_session=False)
        self.topics = topics
        self.connected = threading.Event()
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect(host, int(port))
        self.client.loop_start()
        if not self.connected.wait(10):
            raise RuntimeError("collector could not connect")

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        for topic in self.topics:
            client.subscribe(topic, qos=1)
        self.connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.raw.append((msg.topic, msg.payload, msg.retain))
            self.dups += int(msg.dup)
            if msg.topic.endswith("/readings"):
                self.batches.append(parse_batch(msg.payload))

    def readings(self) -> list[tuple[str, int]]:
        with self.lock:
            return [(b.point, r.ts) for b in self.batches for r in b.readings]

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class AgentProcess:
    """``canalflow edge run`` as a child process (a separate process, as deployed)."""

    def __init__(self, workdir: Path, args: list[str]) -> None:
        import subprocess
        import sys

        self.log = workdir / f"agent-{uuid.uuid4().hex[:6]}.log"
        self._out = self.log.open("wb")
        exe = Path(sys.executable).with_name("canalflow")
        self.proc = subprocess.Popen([str(exe), "edge", "run", *args], stdout=self._out, stderr=subprocess.STDOUT)

    def terminate(self, timeout: float = 15) -> int:
        self.proc.terminate()
        return self._wait(timeout)

    def kill9(self) -> int:
        self.proc.kill()
        return self._wait(5)

    def _wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            self._out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def gaps_ok(stamps: list[int], interval_ms: int, factor: float = 1.6) -> list[tuple[int, int]]:
    """Consecutive timestamps further apart than ``factor`` intervals (a lost reading leaves one)."""
    ordered = sorted(stamps)
    return [(a, b) for a, b in itertools.pairwise(ordered) if b - a > factor * interval_ms]


class FleetProcess:
    """``canalflow fleet run`` (the district's simulator) as a child process; ``manifest`` once it serves."""

    def __init__(self, workdir: Path, *, speed: float, start: str = "2026-03-11T06:00:00+08:00") -> None:
        import subprocess
        import sys

        self.manifest = workdir / "fleet.json"
        self.log = (workdir / "fleet.log").open("wb")
        exe = Path(sys.executable).with_name("canalflow")
        self.proc = subprocess.Popen([str(exe), "fleet", "run", "--district", str(DEMO), "--speed", str(speed),
                                      "--start", start, "--manifest", str(self.manifest), "--progress", "60s"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.manifest.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the fleet did not start: {(workdir / 'fleet.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        terminate(self.proc, 20)
        self.log.close()


class IngestRun:
    """``canalflow ingest run`` as a child process, ready once its worker has subscribed."""

    def __init__(self, workdir: Path, district: Path, mqtt_url: str, influx_url: str, database: str) -> None:
        import subprocess
        import sys

        self.log = workdir / f"ingest-{uuid.uuid4().hex[:6]}.log"
        self.deadletter = workdir / "deadletter.sqlite"
        self._out = self.log.open("wb")
        exe = Path(sys.executable).with_name("canalflow")
        self.proc = subprocess.Popen(
            [str(exe), "ingest", "run", "--district", str(district), "--mqtt", mqtt_url, "--influx", influx_url,
             "--db", database, "--deadletter", str(self.deadletter), "--group", f"g{uuid.uuid4().hex[:6]}",
             "--instance", "edge-test", "--stats-interval", "1"],
            stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "subscribed (ready)" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ingest did not subscribe:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        terminate(self.proc, 30)
        self._out.close()


def terminate(proc: Any, timeout: float) -> None:
    """SIGTERM a child process, SIGKILL it if it has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except Exception:
            proc.kill()
            proc.wait(5)
