"""The fleet manifest's life cycle (canalflow.manifest): `fleet run` removes a stale manifest and
writes its own atomically; `fleet ready` (the compose healthcheck) exits 0 only for a whole manifest
whose fleet still runs and answers; an edge agent refuses a missing or stale one with a clear error
after a bounded wait. Real `canalflow` processes, no mocks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from canalflow.clock import SimClock
from canalflow.district import District
from canalflow.manifest import readiness, write_manifest
from firmware_sim.fleet import FleetThread
from tests.firmware_sim.manifest_kit import stale_manifest, write_from_an_exited_process

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-district.yaml"
CANALFLOW = [sys.executable, "-m", "canalflow.cli"]


def canalflow(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CANALFLOW, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)


def start_fleet(manifest: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*CANALFLOW, "fleet", "run", "--district", str(DEMO), "--speed", "60", "--manifest",
                             str(manifest), "--progress", "60s"], stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)


def test_ready_exit_codes_through_a_fleets_life(tmp_path: Path) -> None:
    manifest = tmp_path / "run" / "fleet.json"
    missing = canalflow("fleet", "ready", "--manifest", str(manifest))
    assert missing.returncode == 1 and f"{manifest}: no fleet manifest yet" in missing.stderr

    first = start_fleet(manifest, tmp_path / "first.log")
    try:
        up = canalflow("fleet", "ready", "--manifest", str(manifest), "--wait", "60", timeout=90)
        assert up.returncode == 0 and "ready: 4 gateway(s)" in up.stdout, up.stderr
        # a second fleet on the same manifest must not take it from the one serving it
        second = canalflow("fleet", "run", "--district", str(DEMO), "--manifest", str(manifest))
        assert second.returncode == 1 and "stop that fleet" in second.stderr
        assert json.loads(manifest.read_text())["writer"]["pid"] == first.pid
    finally:
        first.kill()  # as a crash or a killed container: the manifest stays behind
        first.wait(10)
    assert manifest.exists()
    stale = canalflow("fleet", "ready", "--manifest", str(manifest))
    assert stale.returncode == 1 and f"its fleet (pid {first.pid}) is no longer running" in stale.stderr

    third = start_fleet(manifest, tmp_path / "third.log")
    try:
        assert canalflow("fleet", "ready", "--manifest", str(manifest), "--wait", "60", timeout=90).returncode == 0
        assert json.loads(manifest.read_text())["writer"]["pid"] == third.pid
        assert f"removed the stale manifest {manifest}" in (tmp_path / "third.log").read_text()
    finally:
        third.send_signal(signal.SIGTERM)
        assert third.wait(20) == 0


def test_a_stale_manifest_whose_ports_answer_again_is_still_stale(tmp_path: Path, demo: District) -> None:
    """Another fleet now listens where the old manifest points (district ports reused): the writer decides."""
    with FleetThread(demo, clock=SimClock.starting_at(1_773_100_800_000, 60)) as fleet:
        fresh = fleet.write_manifest(tmp_path / "fresh.json")
        assert readiness(fresh).ready
        old = tmp_path / "old.json"
        write_from_an_exited_process(old, json.loads(fresh.read_text()))
        state = readiness(old)
        assert not state.ready and "is no longer running" in state.reason


def test_a_half_written_manifest_is_not_ready(tmp_path: Path, demo: District) -> None:
    with FleetThread(demo, clock=SimClock.starting_at(1_773_100_800_000, 60)) as fleet:
        whole = fleet.write_manifest(tmp_path / "fleet.json")
        text = whole.read_text()
        half = tmp_path / "half.json"
        half.write_text(text[: len(text) // 2])
        assert canalflow("fleet", "ready", "--manifest", str(whole)).returncode == 0  # the same file, whole: ready
        result = canalflow("fleet", "ready", "--manifest", str(half))
        assert result.returncode == 1 and f"{half}: not a whole fleet manifest" in result.stderr
        assert "Traceback" not in result.stderr


def test_readers_never_see_half_a_manifest(tmp_path: Path) -> None:
    """Rewritten 300 times while read as fast as possible: every read is a whole document."""
    path = tmp_path / "fleet.json"
    big = {"clock": {}, "gateways": {f"GW-{i}": {"transport": "tcp", "host": "127.0.0.1", "port": i, "units": {
        str(u): f"P{i}-{u}" for u in range(200)}} for i in range(40)}}
    done = threading.Event()

    def rewrite() -> None:
        for n in range(300):
            write_manifest(path, big | {"n": n})
        done.set()

    writer = threading.Thread(target=rewrite)
    writer.start()
    reads = 0
    while not done.is_set():
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        assert json.loads(text)["gateways"]["GW-39"]["units"]["199"] == "P39-199"
        reads += 1
    writer.join()
    assert reads > 10 and not list(tmp_path.glob(".fleet.json.*.tmp"))


def test_an_edge_agent_refuses_a_missing_or_stale_manifest_after_a_bounded_wait(tmp_path: Path, demo: District) -> None:
    stale = tmp_path / "stale.json"
    old = stale_manifest(stale, demo)
    missing = tmp_path / "missing.json"
    for path, why in ((missing, "no fleet manifest yet"), (stale, f"stale: its fleet (pid {old['writer']['pid']}) is no longer running")):
        began = time.monotonic()
        result = canalflow("edge", "run", "--district", str(DEMO), "--gateway", "GW-B1", "--mqtt", "mqtt://127.0.0.1:1",
                           "--endpoints", str(path), "--clock-from", str(path), "--buffer", str(tmp_path / "edge.db"),
                           "--manifest-wait", "1.5")
        assert result.returncode == 1, result.stderr
        assert f"canalflow edge run: error: {path}: {why}" in result.stderr and "(waited 1.5 s)" in result.stderr
        assert f"hint: start `canalflow fleet run --manifest {path}` first" in result.stderr
        assert "Traceback" not in result.stderr and 1.5 <= time.monotonic() - began < 30
    assert not (tmp_path / "edge.db").exists()  # nothing started on the old endpoints and clock
