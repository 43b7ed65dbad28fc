"""Edge agent benchmark (issue 4): bus throughput against the fleet, meters kept on a 10 s interval,
RTU efficiency at 9600 baud, and the agent's memory.

Everything runs against the real fleet simulator (``python -m firmware_sim run``) on a synthetic
district (firmware_sim.synth, 244 meters per gateway since a bus holds at most 247 unit ids), with a
real Mosquitto for the agent's output. Figures:

- **reads/s, one gateway**: the agent (``canalflow edge run``, its own process, polling as fast as
  the bus allows: buffer, MQTT and all) against a bare pymodbus async loop reading the same register
  blocks of the same gateway in the same run, one request in flight each. Ratio goal >= 0.7.
- **meters kept on a 10 s interval**: one agent polling N meters spread over the fleet's gateways
  (one bus each), sim clock x6 so a 60 s poll is 10 s of wall time; kept = no poll started more than
  an interval late after the first interval, readings/s ~ N/10, buffer not growing. Goal >= 5,000.
- **RSS with 2,000 meters**: peak resident memory of that agent process. Goal <= 100 MB.
- **RTU at 9600 baud**: the agent's Modbus link polling a fleet RTU gateway (a pty pair with the
  wire timing of 9600 baud) as fast as it can; ratio = wire-time limit of the frames exchanged
  (request + answer + a 3.5-character silence before each) / elapsed time. Goal >= 0.9.

    python -m benchmarks edge
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import stop_process, wait_for_manifest

ROOT = Path(__file__).resolve().parents[1]
FLEET_METERS = 5_400  # 23 gateways of the synthetic district
SPEED = 6.0  # fleet clock: 60 simulated s = 10 wall s
MEASURE_S = 6.0
CAPACITY_STEPS = (2_000, 5_000)


# ---- processes ---------------------------------------------------------------------------------

def _rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _start_fleet(district: Path, tmp: Path, name: str) -> tuple[subprocess.Popen[Any], dict[str, Any]]:
    manifest = tmp / f"{name}.json"
    command = [sys.executable, "-m", "firmware_sim", "run", "--district", str(district), "--speed", str(SPEED),
               "--start", "2026-03-11T06:00:00+08:00", "--manifest", str(manifest), "--progress", "60s"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, wait_for_manifest(manifest, process, 600)


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("canalflow_edge_") and " " in line:
            name = line.split("{")[0].split(" ")[0]
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def _edge_config(tmp: Path, district: Path, manifest: dict[str, Any], gateways: list[str], meters: int,
                 fast_s: float, mqtt_url: str, metrics_port: int) -> Path:
    """A stand-alone edge config (no district file: a gateway holds only its own meters)."""
    spec = yaml.load(district.read_text(), Loader=yaml.CSafeLoader)
    profile_of = {p["id"]: p["profile"] for p in spec["points"]}
    points = []
    for gateway in gateways:
        entry = manifest["gateways"][gateway]
        endpoint = {"transport": "tcp", "host": entry["host"], "port": entry["port"]}
        for unit, point in entry["units"].items():
            points.append({"id": point, "unit_id": int(unit), "profile": profile_of[point], "fast_s": fast_s,
                           "slow_s": 600.0, "endpoint": endpoint})
    first = manifest["gateways"][gateways[0]]
    config = {
        "district_id": spec["district"]["id"], "gateway": gateways[0],
        "endpoint": {"transport": "tcp", "host": first["host"], "port": first["port"]},
        "mqtt": {"url": mqtt_url}, "buffer": {"path": str(tmp / f"edge-{meters}.db"), "synchronous": "NORMAL"},
        # no ingest in this benchmark to confirm: rows leave the buffer on the PUBACK
        "poll": {"timeout_s": 2.0}, "publish": {"status_interval_s": 2.0, "confirm": "broker"}, "metrics_port": metrics_port,
        "points": points[:meters],
    }
    path = tmp / f"edge-{meters}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _start_agent(config: Path, manifest_path: Path, tmp: Path, name: str) -> subprocess.Popen[Any]:
    log = (tmp / f"{name}.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(config),
                             "--clock-from", str(manifest_path)], cwd=ROOT, stdout=log, stderr=log)


def _wait_metrics(port: int, process: subprocess.Popen[Any], timeout: float = 300) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"edge agent exited with {process.returncode}")
        try:
            return _metrics(port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# ---- measurements ------------------------------------------------------------------------------

async def _bare_pymodbus(host: str, port: int, reads: list[tuple[int, int, int, int]], seconds: float) -> float:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient(host, port=port, timeout=2, retries=0)
    await client.connect()
    done = 0
    stop_at = time.monotonic() + seconds
    try:
        while time.monotonic() < stop_at:
            for unit, function, address, count in reads:
                read = client.read_holding_registers if function == 3 else client.read_input_registers
                response = await read(address, count=count, device_id=unit)
                done += not response.isError()
    finally:
        client.close()
    return done / seconds


def _fast_reads(district: Path, manifest: dict[str, Any], gateway: str) -> list[tuple[int, int, int, int]]:
    from canalflow.profiles import load_profiles
    from edge.config import PollOptions
    from edge.poller import read_plan

    profiles = load_profiles()
    spec = yaml.safe_load(district.read_text())
    profile_of = {p["id"]: profiles[p["profile"]] for p in spec["points"]}
    reads = []
    for unit, point in manifest["gateways"][gateway]["units"].items():
        profile = profile_of[point]
        reads += [(int(unit), profile.function_code, b.start, b.count) for b in read_plan(profile, "fast", PollOptions())]
    return reads


def _agent_run(tmp: Path, district: Path, manifest: dict[str, Any], manifest_path: Path, gateways: list[str],
               meters: int, fast_s: float, mqtt_url: str, name: str, settle_s: float, measure_s: float) -> dict[str, Any]:
    from testbed.services import free_port

    port = free_port()
    config = _edge_config(tmp, district, manifest, gateways, meters, fast_s, mqtt_url, port)
    process = _start_agent(config, manifest_path, tmp, name)
    try:
        _wait_metrics(port, process)
        time.sleep(settle_s)
        before, t0 = _metrics(port), time.monotonic()
        time.sleep(measure_s)
        after, t1 = _metrics(port), time.monotonic()
        rss, peak = _rss_mb(process.pid)
    finally:
        stop_process(process)
    elapsed = t1 - t0

    def rate(name: str) -> float:
        return (after.get(name, 0.0) - before.get(name, 0.0)) / elapsed

    return {
        "requests_per_s": rate("canalflow_edge_modbus_requests"),
        "readings_per_s": rate("canalflow_edge_readings_total"),
        "published_per_s": rate("canalflow_edge_published_readings_total"),
        "late": after.get("canalflow_edge_polls_late", 0.0) - before.get("canalflow_edge_polls_late", 0.0),
        "depth_before": before.get("canalflow_edge_buffer_depth", 0.0),
        "depth_after": after.get("canalflow_edge_buffer_depth", 0.0),
        "rss": rss, "peak": peak,
    }


async def _rtu_efficiency(path: str, baud: int, reads: list[tuple[int, int, int, int]], seconds: float) -> tuple[float, float]:
    from edge.modbus import ModbusLink, char_time_s

    link = ModbusLink(path, baud=baud)
    stop_at = time.monotonic() + seconds
    started = time.monotonic()
    try:
        while time.monotonic() < stop_at:
            for unit, function, address, count in reads:
                await link.read_registers(unit, address, count, function=function, timeout_s=2.0)
    finally:
        await link.close()
    elapsed = time.monotonic() - started
    stats = link.stats
    char = char_time_s(baud)
    limit_s = (stats.tx_bytes + stats.rx_bytes) * char + stats.requests * 2 * 3.5 * char
    return stats.requests / elapsed, limit_s / elapsed


def _rtu_district(tmp: Path) -> Path:
    text = (ROOT / "examples" / "demo-district.yaml").read_text()
    lines = []
    for line in text.splitlines():
        if line.strip().startswith("- {id: GW-B3,"):
            line = "  - {id: GW-B3, name: rtu, transport: rtu, serial: {port: /dev/ttyS9, baud: 9600}}"
        lines.append(line)
    path = tmp / "rtu-district.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- the rows ---------------------------------------------------------------------------------

def run() -> list[dict[str, Any]]:
    from firmware_sim.synth import write_synthetic_district
    from testbed.services import Mosquitto

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp_name:
        tmp = Path(tmp_name)
        broker = Mosquitto(tmp / "mqtt").start()
        district = write_synthetic_district(tmp / "district.yaml", FLEET_METERS)
        fleet, manifest = _start_fleet(district, tmp, "fleet")
        try:
            gateways = list(manifest["gateways"])
            first = gateways[0]
            entry = manifest["gateways"][first]
            reads = _fast_reads(district, manifest, first)
            bare = asyncio.run(_bare_pymodbus(entry["host"], entry["port"], reads, MEASURE_S))
            one = _agent_run(tmp, district, manifest, tmp / "fleet.json", [first], len(entry["units"]), 0.001,
                             broker.url, "one-gateway", 2.0, MEASURE_S)
            bare_after = asyncio.run(_bare_pymodbus(entry["host"], entry["port"], reads, MEASURE_S))
            ceiling = (bare + bare_after) / 2
            rows.append({"name": "reads/s, one gateway, agent (buffer+MQTT)", "value": one["requests_per_s"],
                         "unit": "reads/s", "ratio": one["requests_per_s"] / ceiling, "goal": "ratio >= 0.7",
                         "note": f"backlog {one['depth_before']:.0f} -> {one['depth_after']:.0f} readings; "
                                 f"{one['published_per_s']:.0f} readings/s acknowledged"})
            rows.append({"name": "reads/s, one gateway, bare pymodbus loop", "value": ceiling, "unit": "reads/s",
                         "note": f"same blocks, same fleet; before {bare:.0f}, after {bare_after:.0f}"})
            for meters in CAPACITY_STEPS:
                cap = _agent_run(tmp, district, manifest, tmp / "fleet.json", gateways, meters, 60.0, broker.url,
                                 f"capacity-{meters}", 20.0, 12.0)
                kept = cap["late"] == 0 and cap["readings_per_s"] >= 0.9 * meters / 10
                rows.append({"name": f"{meters} meters on a 10 s interval", "value": cap["readings_per_s"],
                             "unit": "readings/s", "ratio": cap["readings_per_s"] / (meters / 10),
                             "goal": ">= 5000 meters kept",
                             "note": f"{'kept' if kept else 'NOT kept'}: late polls {cap['late']:.0f}, backlog "
                                     f"{cap['depth_before']:.0f} -> {cap['depth_after']:.0f}"})
                if meters == 2_000:
                    rows.append({"name": "agent RSS with 2000 meters (peak)", "value": cap["peak"], "unit": "MB",
                                 "goal": "<= 100", "note": f"current {cap['rss']:.0f} MB"})
        finally:
            stop_process(fleet)
        rtu_district = _rtu_district(tmp)
        fleet, manifest = _start_fleet(rtu_district, tmp, "rtu-fleet")
        try:
            entry = manifest["gateways"]["GW-B3"]
            reads = _fast_reads(rtu_district, manifest, "GW-B3")
            rate, efficiency = asyncio.run(_rtu_efficiency(entry["path"], entry.get("baud") or 9600, reads, MEASURE_S))
        finally:
            stop_process(fleet)
            broker.stop()
        rows.append({"name": "RTU 9600 baud reads/s over the fleet's pty", "value": rate, "unit": "reads/s",
                     "ratio": efficiency, "goal": "ratio >= 0.9", "note": "ratio to the wire-time limit of the frames"})
    return rows


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    for row in run():
        print(row)
