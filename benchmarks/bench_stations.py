"""Telemetry receiver: station connections held by one process, and frames decoded per second.

Both the receiver (``canalflow edge receive``) and the bare asyncio server it is compared with run
as their own processes; the stations are raw sockets of this process. Every station sends a
keep-alive (it identifies the connection) and a timed report as soon as it is connected, answered
once stored; the decode rate
is a burst of keep-alives then one report per connection, timed to the last answer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import stop_process

ROOT = Path(__file__).resolve().parents[1]
STATIONS = int(os.environ.get("CANALFLOW_BENCH_STATIONS", "10000"))
BURST_CONNECTIONS, BURST_FRAMES = 200, 50
ANSWER = 25  # bytes of an SL 651 confirmation of a single-packet report

BARE_SERVER = """
import asyncio, sys
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readexactly(13)
            length = int.from_bytes(head[11:13]) & 0x0FFF
            await reader.readexactly(length + 4)
            if head[10] == 0x32:
                writer.write(bytes(25))
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def _address(index: int) -> str:
    return f"{index + 1:010d}"


def _district(tmp: Path, stations: int) -> Path:
    from firmware_sim.synth import synthetic_district

    data = synthetic_district(stations + 1 + 40 + 320)
    data["gateways"].append({"id": "RX-1", "name": "telemetry centre"})
    intakes = [p for p in data["points"] if p["role"] == "intake"][:stations]
    data["stations"] = []
    for index, point in enumerate(intakes):
        point["gateway"] = "RX-1"
        data["stations"].append({"id": f"ST{index:05d}", "protocol": "sl651", "address": _address(index),
                                 "centre": 1, "password": "1234", "point": point["id"],
                                 "elements": {"flow": "27", "totaliser": "FF01"}})
    path = tmp / "stations.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def _frames(index: int) -> tuple[bytes, bytes]:
    from edge.telemetry import sl651

    now = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).replace(tzinfo=None, microsecond=0)
    station = _address(index)
    keep_alive = sl651.encode(centre=1, station=station, password=0x1234, function=0x2F,
                              body=(1).to_bytes(2) + bytes.fromhex(now.strftime("%y%m%d%H%M%S")))
    report = sl651.Report(2, now, station, 0x49, now.replace(second=0), (
        sl651.Element(0x27, 5, 3, value=Decimal("0.125"), observed=now.replace(second=0)),
        sl651.Element(0xFF01, 6, 2, value=Decimal(1000 + index), observed=now.replace(second=0))))
    return keep_alive, sl651.encode(centre=1, station=station, password=0x1234, function=0x32,
                                    body=sl651.encode_body(report, 0x32))


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _wait_listening(port: int, process: subprocess.Popen[Any], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{process.args[:4]} did not listen on {port}") from None
            time.sleep(0.2)


async def _connect_all(port: int, frames: list[bytes]) -> tuple[list[Any], float]:
    """One connection per frame string, written as soon as it is open; (connections, seconds to the last answer)."""
    gate = asyncio.Semaphore(200)
    start = time.perf_counter()

    async def one(data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            await writer.drain()
        await asyncio.wait_for(reader.readexactly(ANSWER), 300)
        return reader, writer

    conns = await asyncio.gather(*(one(data) for data in frames))
    return list(conns), time.perf_counter() - start


async def _send_and_answer(conns: list[Any], frames: list[bytes]) -> float:
    """Write each connection its frames (ending with a report), wait for every answer; seconds taken."""
    start = time.perf_counter()
    for (_, writer), data in zip(conns, frames, strict=True):
        writer.write(data)
    await asyncio.gather(*(writer.drain() for _, writer in conns))
    await asyncio.gather(*(asyncio.wait_for(reader.readexactly(ANSWER), 120) for reader, _ in conns))
    return time.perf_counter() - start


def _burst() -> list[bytes]:
    return [(keep * BURST_FRAMES) + report for keep, report in (_frames(i) for i in range(BURST_CONNECTIONS))]


async def _hold(port: int, pid: int, count: int) -> dict[str, float]:
    before = _rss_kb(pid)
    conns, seconds = await _connect_all(port, [b"".join(_frames(i)) for i in range(count)])
    await asyncio.sleep(1.0)
    after = _rss_kb(pid)
    burst_s = await _send_and_answer(conns[:BURST_CONNECTIONS], _burst())
    for _, writer in conns:
        writer.close()
    return {"connections": count, "kb_per_conn": (after - before) / count, "rss_mb": after / 1024,
            "reports_per_s": count / seconds, "frames_per_s": BURST_CONNECTIONS * (BURST_FRAMES + 1) / burst_s}


async def _bare(port: int) -> float:
    conns, _ = await _connect_all(port, [_frames(i)[1] for i in range(BURST_CONNECTIONS)])
    seconds = await _send_and_answer(conns, _burst())
    for _, writer in conns:
        writer.close()
    return BURST_CONNECTIONS * (BURST_FRAMES + 1) / seconds


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run() -> list[dict[str, Any]]:
    from testbed.services import Mosquitto

    with tempfile.TemporaryDirectory(prefix="bench-stations-") as tmp_name:
        tmp = Path(tmp_name)
        broker = Mosquitto(tmp / "mqtt").start()
        district = _district(tmp, STATIONS)
        port, bare_port = _free_port(), _free_port()
        exe = Path(sys.executable).with_name("canalflow")
        receiver = subprocess.Popen([str(exe), "edge", "receive", "--district", str(district), "--gateway", "RX-1",
                                     "--listen", f"127.0.0.1:{port}", "--mqtt", broker.url, "--buffer",
                                     str(tmp / "rx.db"), "--confirm", "broker"], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=(tmp / "receiver.log").open("wb"))
        bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_port)], cwd=ROOT)
        try:
            _wait_listening(port, receiver)
            _wait_listening(bare_port, bare)
            ceiling_before = asyncio.run(_bare(bare_port))
            held = asyncio.run(_hold(port, receiver.pid, STATIONS))
            ceiling_after = asyncio.run(_bare(bare_port))
        finally:
            stop_process(receiver)
            stop_process(bare)
            broker.stop()
    ceiling = (ceiling_before + ceiling_after) / 2
    return [
        {"name": "station connections held by one receiver", "value": held["connections"], "unit": "connections",
         "goal": ">= 10000", "note": f"each identified by a keep-alive and answered a stored report; receiver RSS "
                                     f"{held['rss_mb']:.0f} MB"},
        {"name": "receiver memory per station connection", "value": held["kb_per_conn"], "unit": "KB",
         "note": "RSS growth over the connections (includes each station's state and its buffered reading)"},
        {"name": "station reports stored and answered", "value": held["reports_per_s"], "unit": "reports/s",
         "note": "one report per connection, all connections at once; answered after the SQLite commit"},
        {"name": "SL 651 frames decoded, receiver", "value": held["frames_per_s"], "unit": "frames/s",
         "ratio": held["frames_per_s"] / ceiling, "note": f"{BURST_CONNECTIONS} connections x {BURST_FRAMES} "
                                                          "keep-alives + 1 report; ratio to the bare server"},
        {"name": "SL 651 frames read, bare asyncio server", "value": ceiling, "unit": "frames/s",
         "note": f"same frames, same run; before {ceiling_before:.0f}, after {ceiling_after:.0f}"},
    ]
