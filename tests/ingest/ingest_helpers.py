"""Helpers for the ingest tests: ingest workers and publishers as real processes, row counting.

Imported by module name (tests/ingest is on sys.path in pytest's default import mode).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from canalflow.influx import InfluxV1

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-district.yaml"
CANALFLOW = [sys.executable, "-m", "ingest.cli"]  # the ingest commands only: independent of other components


class IngestProcess:
    """``canalflow ingest run`` in its own process group; stopped with SIGTERM at teardown."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [*CANALFLOW, "ingest", "run", *args], stdout=self._out, stderr=subprocess.STDOUT,
            cwd=ROOT, start_new_session=True,
        )

    def wait_ready(self, workers: int = 1, timeout: float = 30.0) -> None:
        """Wait until ``workers`` workers have subscribed (messages published before that have no group to go to)."""
        deadline = time.monotonic() + timeout
        while self.output().count("subscribed (ready)") < workers:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"ingest not ready (exit code {self.proc.poll()}):\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        pids = [int(p) for p in children.read_text().split()] if children.exists() else []
        return [p for p in pids if _is_worker(p)]

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._out.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _is_worker(pid: int) -> bool:
    # multiprocessing's spawn also starts a resource tracker; the workers are the other children
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"spawn_main" in cmdline and b"resource_tracker" not in cmdline


def publish(mqtt_url: str, *args: str, timeout: float = 120) -> dict[str, float]:
    """Run the load generator in its own process (as an edge agent would be); return its summary."""
    done = subprocess.run(
        [sys.executable, "-m", "testbed.loadgen", "--mqtt", mqtt_url, *args], capture_output=True, text=True,
        timeout=timeout, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def publish_async(mqtt_url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "testbed.loadgen", "--mqtt", mqtt_url, *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )


def rows_per_point(influx: InfluxV1) -> dict[str, int]:
    rows = influx.query_points('SELECT COUNT("qcode") AS n FROM "reading" GROUP BY "point"')
    return {r["point"]: int(r["n"]) for r in rows}


def wait_for_rows(influx: InfluxV1, expected: int, timeout: float = 60.0, ingest: IngestProcess | None = None) -> int:
    deadline = time.monotonic() + timeout
    total = 0
    while time.monotonic() < deadline:
        total = sum(rows_per_point(influx).values())
        if total >= expected:
            return total
        if ingest is not None and ingest.proc.poll() is not None:
            raise AssertionError(f"ingest exited with {ingest.proc.returncode}:\n{ingest.output()[-3000:]}")
        time.sleep(0.25)
    tail = ingest.output()[-3000:] if ingest else ""
    raise AssertionError(f"only {total} of {expected} rows after {timeout}s\n{tail}")


def write_raw(path: Path, messages: list[tuple[str, bytes]]) -> Path:
    """A JSON-lines file for ``testbed.loadgen --raw``."""
    import base64

    with path.open("w") as handle:
        for topic, payload in messages:
            handle.write(json.dumps({"topic": topic, "payload_b64": base64.b64encode(payload).decode()}) + "\n")
    return path


def wait_for_dead_letters(store_path: Path, expected: int, timeout: float = 60.0, ingest: IngestProcess | None = None):
    """Wait until the store holds ``expected`` letters; return them."""
    from ingest.deadletter import DeadLetterStore

    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        if store_path.exists():
            store = DeadLetterStore(store_path)
            try:
                letters = store.list()
            finally:
                store.close()
            count = len(letters)
            if count >= expected:
                return letters
        time.sleep(0.2)
    tail = ingest.output()[-3000:] if ingest else ""
    raise AssertionError(f"only {count} of {expected} dead letters after {timeout}s\n{tail}")


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CANALFLOW, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
