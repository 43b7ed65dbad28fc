"""Run the whole pipeline as it is deployed: fleet, edge agents and ingest as separate processes.

Used by ``canalflow demo``, the end-to-end tests and the season benchmark, so all three exercise
the same start-up order and command lines an operator would use:

    broker + InfluxDB (services.ServiceStack)
    canalflow fleet run   --district F --speed S --start T --manifest M
    canalflow ingest run  --district F --mqtt URL --influx URL --db DB
    canalflow edge run    --district F --gateway G --mqtt URL --endpoints M   (one per gateway)
    canalflow edge receive / edge simstations --district F --gateway G ...     (a gateway of stations)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from canalflow.clock import SimClock
from canalflow.district import District
from canalflow.errors import CanalflowError
from canalflow.influx import InfluxV1
from canalflow.manifest import readiness
from edge.agent import edge_client_id
from ingest.worker import ingest_client_id
from testbed.services import Influxd, Mosquitto, end_mqtt_session, free_port

CANALFLOW = [sys.executable, "-m", "canalflow.cli"]
INGEST_READY = "subscribed (ready)"  # what an ingest worker logs once its subscription is in place


class PipelineError(CanalflowError, RuntimeError):
    pass


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        self.log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 20.0) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self.log.close()
        return self.popen.returncode

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(5)


@dataclass
class Pipeline:
    """The running parts of one pipeline; stop() tears down in reverse order of start."""

    district: District
    workdir: Path
    mosquitto: Mosquitto
    influxd: Influxd
    database: str
    procs: dict[str, Proc] = field(default_factory=dict)
    manifest_path: Path | None = None
    ingest_sessions: list[str] = field(default_factory=list)  # MQTT client ids of the ingest workers started

    @property
    def ingest_group(self) -> str:
        """This pipeline's shared-subscription group. Tests share one broker: with the default group
        and instance, every pipeline's worker 0 would take over the persistent session of the one
        before, with the backlog of everything published since (other tests' readings included)."""
        return f"pipeline-{self.database}"

    @property
    def mqtt_url(self) -> str:
        return self.mosquitto.url

    @property
    def influx(self) -> InfluxV1:
        return InfluxV1(self.influxd.url, self.database)

    def spawn(self, name: str, args: Sequence[str]) -> Proc:
        log_path = self.workdir / f"{name}.log"
        log = log_path.open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        popen = subprocess.Popen([*CANALFLOW, *args], stdout=log, stderr=subprocess.STDOUT, env=env)
        proc = Proc(name, popen, log_path, log)
        self.procs[name] = proc
        return proc

    def check_alive(self) -> None:
        for proc in self.procs.values():
            if not proc.alive():
                raise PipelineError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")

    # --- the parts ---
    def start_fleet(self, start: dt.datetime, speed: float, seed: int = 0, scenario: Path | None = None) -> SimClock:
        self.manifest_path = self.workdir / "fleet-manifest.json"
        args = ["fleet", "run", "--district", str(self.district.path), "--speed", str(speed),
                "--start", start.isoformat(), "--seed", str(seed), "--manifest", str(self.manifest_path)]
        if scenario is not None:
            args += ["--scenario", str(scenario)]
        proc = self.spawn("fleet", args)
        wait_for(lambda: bool(readiness(self.manifest_path)) or not proc.alive(), 60, "fleet manifest")  # as `fleet ready`
        self.check_alive()
        return self.clock()

    def clock(self) -> SimClock:
        if self.manifest_path is None:
            raise PipelineError("the fleet is not running")
        return SimClock(**json.loads(self.manifest_path.read_text())["clock"])

    def start_ingest(self, workers: int = 1) -> Proc:
        """Start ingest and wait until every worker has subscribed: the broker drops messages
        published to a shared-subscription group before its first member joins."""
        instance = "testbed"
        proc = self.spawn("ingest", [
            "ingest", "run", "--district", str(self.district.path), "--mqtt", self.mqtt_url,
            "--influx", self.influxd.url, "--db", self.database, "--workers", str(workers),
            "--deadletter", str(self.workdir / "deadletter.db"), "--group", self.ingest_group, "--instance", instance,
        ])
        self.ingest_sessions += [ingest_client_id(self.district.id, self.ingest_group, instance, i) for i in range(workers)]

        def subscribed() -> bool:
            self.check_alive()
            return proc.log_path.read_text(errors="replace").count(INGEST_READY) >= workers

        wait_for(subscribed, 60, f"{workers} ingest worker(s) to subscribe")
        return proc

    def start_edge(self, gateway: str) -> Proc:
        if self.manifest_path is None:
            raise PipelineError("start the fleet before the edge agents")
        return self.spawn(f"edge-{gateway}", [
            "edge", "run", "--district", str(self.district.path), "--gateway", gateway,
            "--mqtt", self.mqtt_url, "--endpoints", str(self.manifest_path), "--clock-from", str(self.manifest_path),
            "--buffer", str(self.workdir / f"edge-{gateway}.sqlite"),
        ])

    def start_receiver(self, gateway: str) -> Proc:
        """``edge receive`` for a gateway whose points are fed by dial-in stations, and the simulated
        stations (``edge simstations``) dialling it, both on the fleet's clock."""
        if self.manifest_path is None:
            raise PipelineError("start the fleet before the receivers")
        listen = f"127.0.0.1:{free_port()}"
        clock = ["--clock-from", str(self.manifest_path)]
        receiver = self.spawn(f"edge-{gateway}", [
            "edge", "receive", "--district", str(self.district.path), "--gateway", gateway, "--listen", listen,
            "--mqtt", self.mqtt_url, "--buffer", str(self.workdir / f"edge-{gateway}.sqlite"), *clock,
        ])
        self.spawn(f"edge-stations-{gateway}", [
            "edge", "simstations", "--district", str(self.district.path), "--gateway", gateway, "--connect", listen,
            *clock,
        ])
        return receiver

    def start_all(
        self, start: dt.datetime, speed: float, seed: int = 0, scenario: Path | None = None, ingest_workers: int = 1
    ) -> SimClock:
        """Start fleet, ingest and one edge agent per gateway (a receiver and its simulated stations
        for a gateway of stations); return once every point has reported.

        The edges start only once ingest has subscribed (see :meth:`start_ingest`), each on a fresh
        MQTT session: on a broker shared between tests, a gateway's session left by an earlier test
        holds confirmations of other runs' sequence numbers."""
        run_canalflow("ingest", "setup", "--influx", self.influxd.url, "--db", self.database)
        for gateway in self.district.gateways:
            end_mqtt_session(self.mqtt_url, edge_client_id(self.district.id, gateway))
        clock = self.start_fleet(start, speed, seed, scenario)
        self.start_ingest(ingest_workers)
        received = {self.district.points[s.point].gateway for s in self.district.spec.stations}
        for gateway in self.district.gateways:
            if gateway in received:
                self.start_receiver(gateway)
            else:
                self.start_edge(gateway)
        self.wait_for_every_point()
        return clock

    def run_once(self, start: dt.datetime, speed: float, sim_seconds: float, seed: int = 0) -> tuple[int, int]:
        """Start everything, run ``sim_seconds`` of simulated time, stop the edges, let ingest drain
        and stop the rest; return the simulated (began, ended) ms. On failure, print each part's log tail."""
        try:
            clock = self.start_all(start, speed, seed=seed)
            began = clock.now_ms()
            self.run_for_sim(sim_seconds)
            ended = clock.now_ms()
            self.stop_edges()
            self.drain()
        except Exception:
            for proc in self.procs.values():
                print(f"--- {proc.name}\n{proc.tail()}")
            raise
        finally:
            self.stop()
        return began, ended

    def points_reporting(self) -> set[str]:
        from canalflow.contract import M, source_of

        rows = self.influx.query(f'SELECT count("qcode") FROM {source_of(M.readings)} GROUP BY "point"')
        return {row["tags"]["point"] for row in rows}

    def wait_for_every_point(self, timeout: float = 90.0) -> None:
        """Processes take seconds of wall time to start, which is minutes of accelerated simulated
        time: callers measure from the moment every meter's readings are arriving."""
        wanted = set(self.district.points)

        def all_reporting() -> bool:
            self.check_alive()
            return wanted <= self.points_reporting()

        wait_for(all_reporting, timeout, f"readings from all {len(wanted)} metering points")

    def run_for_sim(self, sim_seconds: float, progress: Callable[[float], None] | None = None) -> None:
        """Let the pipeline run for ``sim_seconds`` of simulated time, checking that all parts live."""
        clock = self.clock()
        end_ms = clock.now_ms() + int(sim_seconds * 1000)
        while (now := clock.now_ms()) < end_ms:
            self.check_alive()
            if progress:
                progress(1 - (end_ms - now) / (sim_seconds * 1000))
            time.sleep(min(0.5, max(0.05, clock.wall_seconds((end_ms - now) / 1000))))
        if progress:
            progress(1.0)

    def stop_edges(self) -> None:
        for name in [n for n in self.procs if n.startswith("edge-")]:
            self.procs.pop(name).stop()

    def drain(self, quiet_s: float = 2.0, timeout: float = 60) -> None:
        """Wait until ingest has written everything: the row count stops changing for ``quiet_s``."""
        last, since = -1, time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.count_readings()
            if current != last:
                last, since = current, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.3)

    def count_readings(self) -> int:
        """Stored raw readings of all points."""
        from canalflow.contract import M, source_of

        rows = self.influx.query(f'SELECT count("qcode") FROM {source_of(M.readings)}')
        return int(rows[0]["values"][0][1]) if rows else 0

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.procs.pop(name).stop()
        if self.mosquitto.running:
            for client_id in self.ingest_sessions:
                end_mqtt_session(self.mqtt_url, client_id)
        self.ingest_sessions.clear()


def run_canalflow(*args: str) -> str:
    """Run a one-shot ``canalflow`` command; raise :class:`PipelineError` with its output if it fails."""
    result = subprocess.run([*CANALFLOW, *args], check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(f"`canalflow {' '.join(args)}` failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise PipelineError(f"timed out after {timeout:.0f} s waiting for {what}")
