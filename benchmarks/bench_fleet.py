"""Fleet benchmark (issue 3): 10,000 simulated meters in one process, RSS and register-block reads/s.

The fleet runs as ``python -m firmware_sim run`` on a synthetic district (firmware_sim.synth: 10,000
meters on 41 gateways, since a Modbus bus holds at most 247 unit ids); this process polls 40 of the
gateways at once, one request in flight per gateway like a real poller, each request one register
block of a meter (its first read block). The raw ceiling is the same client against a bare pymodbus
server (static SimDevice registers, no computing on read) on 40 ports, measured in the same run.
The client is a minimal asyncio Modbus TCP client, so the figure measures the server, not pymodbus's
client (which tops out near 4,000 requests/s in one process here).

    python -m benchmarks fleet
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import stop_process, wait_for_manifest

METERS = 10_000
GATEWAYS_POLLED = 40
MEASURE_S = 8.0
STARTUP_TIMEOUT_S = 600.0
ROOT = Path(__file__).resolve().parents[1]


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def _poll(targets: list[tuple[str, int, list[tuple[int, int, int, int]]]], seconds: float) -> tuple[int, int]:
    """Poll every target gateway for ``seconds``; returns (good reads, failed reads).

    A minimal Modbus TCP client on asyncio streams (one request in flight per connection), so the
    client costs little next to the server being measured; answers are checked for transaction id,
    unit, function and byte count.
    """
    counts = [0, 0]
    stop_at = time.monotonic() + seconds

    async def one(host: str, port: int, reads: list[tuple[int, int, int, int]]) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        transaction = 0
        try:
            while time.monotonic() < stop_at:
                for unit, fc, address, count in reads:
                    transaction = (transaction + 1) & 0xFFFF
                    writer.write(struct.pack(">HHHBBHH", transaction, 0, 6, unit, fc, address, count))
                    header = await asyncio.wait_for(reader.readexactly(7), timeout=5)
                    tid, _, length, answered = struct.unpack(">HHHB", header)
                    body = await reader.readexactly(length - 1)
                    good = tid == transaction and answered == unit and body[0] == fc and body[1] == 2 * count
                    counts[0 if good else 1] += 1
                    if time.monotonic() >= stop_at:
                        break
        finally:
            writer.close()

    await asyncio.gather(*(one(h, p, r) for h, p, r in targets))
    return counts[0], counts[1]


def _fleet_targets(manifest: dict[str, Any], district_path: Path) -> list[tuple[str, int, list[tuple[int, int, int, int]]]]:
    from canalflow.profiles import load_profiles

    profiles = load_profiles()
    import yaml

    spec = yaml.load(district_path.read_text(), Loader=yaml.CSafeLoader)
    profile_of = {p["id"]: profiles[p["profile"]] for p in spec["points"]}
    targets = []
    for gateway in list(manifest["gateways"].values())[:GATEWAYS_POLLED]:
        reads = []
        for unit, point in gateway["units"].items():
            profile = profile_of[point]
            block = profile.read_blocks("fast")[0]
            reads.append((int(unit), profile.function_code, block.start, block.count))
        targets.append((gateway["host"], gateway["port"], reads))
    return targets


BARE_SERVER = """
import asyncio, json, sys
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

async def main(count, out):
    servers = []
    for _ in range(count):
        device = SimDevice(id=1, simdata=[SimData(address=0, count=16, values=0x1234, datatype=DataType.REGISTERS)])
        server = ModbusTcpServer([device], address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        servers.append(server.transport.sockets[0].getsockname()[1])
    with open(out, "w") as handle:
        json.dump(servers, handle)
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""


def _bare_ceiling(tmp: Path) -> float:
    ports_file = tmp / "bare.json"
    process = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(GATEWAYS_POLLED), str(ports_file)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ports_file.exists() or not ports_file.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("bare pymodbus server did not start")
            time.sleep(0.1)
        time.sleep(0.2)
        ports = json.loads(ports_file.read_text())
        targets = [("127.0.0.1", port, [(1, 3, 2, 4)]) for port in ports]
        good, _ = asyncio.run(_poll(targets, MEASURE_S))
        return good / MEASURE_S
    finally:
        stop_process(process)


def run() -> list[dict[str, Any]]:
    from firmware_sim.synth import write_synthetic_district

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp_name:
        tmp = Path(tmp_name)
        district = write_synthetic_district(tmp / "district.yaml", METERS)
        scenario = tmp / "scenario.yaml"
        scenario.write_text("version: 1\nname: benchmark\nhydraulics: {repeat_years: 1}\n")
        manifest_path = tmp / "fleet.json"
        command = [sys.executable, "-m", "firmware_sim", "run", "--district", str(district), "--scenario", str(scenario),
                   "--start", "2026-03-11T06:00:00+08:00", "--manifest", str(manifest_path), "--progress", "5s"]
        began = time.monotonic()
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            manifest = wait_for_manifest(manifest_path, process, STARTUP_TIMEOUT_S)
            startup = time.monotonic() - began
            meters = sum(len(g["units"]) for g in manifest["gateways"].values())
            targets = _fleet_targets(manifest, district)
            good, failed = asyncio.run(_poll(targets, MEASURE_S))
            rss, peak = _rss_mb(process.pid)
        finally:
            stop_process(process)
        ceiling = _bare_ceiling(tmp)
    rate = good / MEASURE_S
    rows.append({"name": "meters served in one process", "value": meters, "unit": "meters", "goal": ">= 10000",
                 "note": f"{len(manifest['gateways'])} gateways"})
    rows.append({"name": "fleet RSS (peak)", "value": peak, "unit": "MB", "goal": "<= 1024",
                 "note": f"current {rss:.0f} MB while serving"})
    rows.append({"name": "register-block reads/s, 40 gateways", "value": rate, "unit": "reads/s",
                 "ratio": rate / ceiling if ceiling else None, "goal": ">= 3000",
                 "note": f"{failed} failed; ratio to bare pymodbus"})
    rows.append({"name": "bare pymodbus server reads/s, 40 ports", "value": ceiling, "unit": "reads/s",
                 "note": "raw ceiling, same client, same run"})
    rows.append({"name": "fleet startup (load district, truth, 41 servers)", "value": startup, "unit": "s"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
