"""Ingest throughput, end to end, against the raw limits of its parts measured in the same run.

Everything runs as deployed, each in its own process: publisher processes (testbed.loadgen, batches
of readings as edge agents send them) -> Debian's Mosquitto -> ingest workers (``canalflow ingest
run``) -> Debian's InfluxDB 1.6. Figures:

- raw MQTT: the same publishers to bare QoS 1 subscribers (shared group of 2), readings/s;
- raw InfluxDB: pre-built line protocol in gzip batches of 5,000 from 1 and from 2 concurrent
  clients, points/s (the better of the two is the ceiling the ratios use);
- end to end with 1 and 2 workers: readings/s from the first publish until every row is in
  InfluxDB (so acknowledged), with the ratio to each raw limit, and the peak RSS per worker;
- where the CPU of an end-to-end run goes: CPU µs per reading of InfluxDB, Mosquitto, the
  publishers and the ingest workers (the machine's cores are what these share).

    python -m benchmarks ingest          # BENCH_INGEST_MESSAGES=200 messages per point by default
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from canalflow.contract import M, ReadingBatch, reading_lines, readings_filter, source_of
from canalflow.district import load_district
from canalflow.influx import InfluxV1
from ingest.admin import setup_database
from ingest.validate import LINES_RP
from testbed.loadgen import batches
from testbed.services import ServiceStack, free_port

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo-district.yaml"
READINGS_PER_MESSAGE = 50
MESSAGES_PER_POINT = int(os.environ.get("BENCH_INGEST_MESSAGES", "200"))
PUBLISHERS = 2
GOAL_READINGS_PER_S = 50_000
GOAL_RATIO = 0.5
GOAL_RSS_MB = 200


def _py(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, text=True, **kwargs)  # type: ignore[call-overload]


def _start_publishers(mqtt_url: str, start_at: float) -> list[subprocess.Popen[str]]:
    points = list(load_district(DEMO).points)
    groups = [points[i::PUBLISHERS] for i in range(PUBLISHERS)]
    return [
        _py("-m", "testbed.loadgen", "--mqtt", mqtt_url, "--district", str(DEMO), "--points", ",".join(group),
            "--messages", str(MESSAGES_PER_POINT), "--readings", str(READINGS_PER_MESSAGE), "--start-at", str(start_at),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for group in groups
    ]


def _total_readings() -> int:
    return len(load_district(DEMO).points) * MESSAGES_PER_POINT * READINGS_PER_MESSAGE


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 300) -> list[dict]:
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{proc.args} failed: {stderr[-2000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def raw_mqtt(stack: ServiceStack) -> float:
    """Readings/s through Mosquitto alone: publishers to two bare subscribers in a shared group."""
    subscribers = [
        _py("-m", "testbed.loadgen", "--mqtt", stack.mqtt_url, "--subscribe", readings_filter("demo"), "--group", "rawbench",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for sub in subscribers:
        assert sub.stdout is not None
        sub.stdout.readline()  # {"ready": true}
    start_at = time.time() + 3.0
    _finish(_start_publishers(stack.mqtt_url, start_at))
    results = _finish(subscribers)
    messages = sum(r["messages"] for r in results)
    expected = _total_readings() // READINGS_PER_MESSAGE
    if messages != expected:
        raise RuntimeError(f"raw MQTT: subscribers got {messages} of {expected} messages")
    return _total_readings() / (max(r["last_wall"] for r in results) - start_at)


def raw_influx(stack: ServiceStack, writers: int = 1) -> float:
    """Points/s written as pre-built line protocol in gzip batches of 5,000 by ``writers`` concurrent clients."""
    district = load_district(DEMO)
    lines: list[str] = []
    for _topic, payload, _n in batches(district.id, [(p.gateway, p.id) for p in district.spec.points],
                                       MESSAGES_PER_POINT, READINGS_PER_MESSAGE, 1_772_323_200_000, 1000):
        batch = ReadingBatch.model_validate_json(payload)
        point = district.points[batch.point]
        lines.extend(reading_lines(batch, point.canal, point.role.value))
    chunks = [lines[i : i + 5000] for i in range(0, len(lines), 5000)]
    db = f"rawbench{writers}"
    clients = [InfluxV1(stack.influx_url, db) for _ in range(writers)]
    setup_database(clients[0])  # as production: `canalflow ingest setup`

    def write_share(index: int) -> None:
        for chunk in chunks[index::writers]:
            clients[index].write_lines(chunk, rp=LINES_RP)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=writers) as pool:
        list(pool.map(write_share, range(writers)))
    seconds = time.monotonic() - started
    clients[0].drop_database()
    for client in clients:
        client.close()
    return len(lines) / seconds


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _worker_pids(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children")
    pids = [int(p) for p in children.read_text().split()] if children.exists() else []
    return [p for p in pids if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds a live process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def end_to_end(stack: ServiceStack, workers: int, workdir: Path, writes_in_flight: int = 2,
               cpu: dict[str, float] | None = None) -> tuple[float, float]:
    """(readings/s, peak RSS MB of one worker) with ``workers`` ingest workers; ``cpu`` (if given)
    gets the CPU µs per reading of each part."""
    db = f"e2e{workers}w{writes_in_flight}"
    with InfluxV1(stack.influx_url, db) as client:
        setup_database(client)
        log = (workdir / f"ingest-{db}.log").open("w")
        metrics_port = free_port()
        ingest = _py("-m", "ingest.cli", "ingest", "run", "--district", str(DEMO), "--mqtt", stack.mqtt_url,
                     "--influx", stack.influx_url, "--db", db, "--workers", str(workers), "--group", f"bench-{db}",
                     "--deadletter", str(workdir / f"{db}.sqlite"), "--no-status", "--stats-interval", "5",
                     "--writes-in-flight", str(writes_in_flight),
                     "--metrics-port", str(metrics_port),
                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_subscribed(workdir / f"ingest-{db}.log", workers)
            servers = {"InfluxDB": stack.influxd.pid, "Mosquitto": stack.mosquitto.pid}
            before = {name: _cpu_s(pid) for name, pid in servers.items()}
            before["ingest workers"] = sum(_cpu_s(pid) for pid in _worker_pids(ingest.pid))
            start_at = time.time() + 3.0
            publishers = _start_publishers(stack.mqtt_url, start_at)
            expected = _total_readings()
            peak = 0.0
            while True:
                for pid in _worker_pids(ingest.pid):
                    peak = max(peak, _rss_mb(pid))
                # the workers' own count of acknowledged readings: cheaper than COUNT(*) on a growing database
                written = sum(_metric(metrics_port + i, "canalflow_ingest_readings_total") for i in range(workers))
                if written >= expected:
                    used = {name: _cpu_s(pid) for name, pid in servers.items()}
                    used["ingest workers"] = sum(_cpu_s(pid) for pid in _worker_pids(ingest.pid))
                    break
                if time.time() > start_at + 300 or ingest.poll() is not None:
                    raise RuntimeError(f"end to end ({workers} workers) did not finish: {written} of {expected}")
                time.sleep(0.05)
            seconds = time.time() - start_at
            children = _children_cpu_s()
            _finish(publishers)
            if cpu is not None:
                cpu |= {name: 1e6 * (used[name] - before[name]) / expected for name in used}
                cpu["publishers"] = 1e6 * (_children_cpu_s() - children) / expected
            rows = client.query_points(f'SELECT COUNT("qcode") AS n FROM {source_of(M.readings)}')
            if not rows or rows[0]["n"] != expected:
                raise RuntimeError(f"end to end ({workers} workers): {rows} rows in InfluxDB, expected {expected}")
        finally:
            ingest.terminate()
            ingest.wait(30)
            log.close()
        client.drop_database()
    return expected / seconds, peak


def _metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _wait_subscribed(log: Path, workers: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text().count("subscribed (ready)") < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"ingest workers did not subscribe: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def run() -> list[dict]:
    with ServiceStack() as stack:
        workdir = stack.workdir
        mqtt_limit = raw_mqtt(stack)
        influx_one = raw_influx(stack, 1)
        influx_two = raw_influx(stack, 2)
        influx_limit = max(influx_one, influx_two)  # the ceiling: whichever way the server took more
        rows: list[dict] = [
            {"name": "raw MQTT (2 publishers -> 2 bare subscribers)", "value": mqtt_limit, "unit": "readings/s",
             "note": f"{READINGS_PER_MESSAGE} readings/message"},
            {"name": "raw InfluxDB write (1 client, gzip batches of 5000)", "value": influx_one, "unit": "points/s"},
            {"name": "raw InfluxDB write (2 concurrent clients)", "value": influx_two, "unit": "points/s"},
        ]
        limit = min(mqtt_limit, influx_limit)
        one_at_a_time, _ = end_to_end(stack, 1, workdir, writes_in_flight=1)
        rows.append({"name": "end to end, 1 worker, 1 write in flight", "value": one_at_a_time, "unit": "readings/s",
                     "ratio": round(one_at_a_time / limit, 3), "note": "before two writes in flight: the comparison"})
        cpu: dict[str, float] = {}
        for workers in (1, 2):
            rate, rss = end_to_end(stack, workers, workdir, cpu=cpu if workers == 1 else None)
            rows.append({"name": f"end to end, {workers} worker(s)", "value": rate, "unit": "readings/s",
                         "ratio": round(rate / limit, 3),
                         "goal": f">= {GOAL_READINGS_PER_S:,} and >= {GOAL_RATIO}" if workers == 2 else f">= {GOAL_RATIO}",
                         "note": f"ratio to min(raw MQTT, best raw InfluxDB); to MQTT {rate / mqtt_limit:.2f}, to InfluxDB {rate / influx_limit:.2f}"})
            rows.append({"name": f"peak RSS per worker, {workers} worker(s)", "value": rss, "unit": "MB",
                         "goal": f"<= {GOAL_RSS_MB}"})
        total = sum(cpu.values())
        for part, micros in sorted(cpu.items(), key=lambda item: -item[1]):
            rows.append({"name": f"CPU per reading, 1 worker: {part}", "value": micros, "unit": "µs",
                         "note": f"{micros / total:.0%} of the run's {total:.1f} µs on {os.cpu_count()} cores"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
