"""``canalflow ingest run``: start N worker processes, restart any that dies, stop all on SIGTERM/SIGINT."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import signal
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from canalflow.supervise import RESTART_DELAY_S, RestartBudget
from ingest.worker import IngestWorker, WorkerConfig

if TYPE_CHECKING:
    from canalflow.district import District

log = logging.getLogger("canalflow.ingest")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(stream=sys.stderr, level=level, format=LOG_FORMAT)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise


def worker_main(config: WorkerConfig, log_level: int = logging.INFO) -> int:
    """Entry point of a worker process: run until SIGTERM/SIGINT."""
    setup_logging(log_level)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("worker %s: signal %d, stopping", config.name, signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return IngestWorker(config, stop).run()


def _run_in_process(config: WorkerConfig, log_level: int) -> None:
    sys.exit(worker_main(config, log_level))


class Supervisor:
    """Keeps ``workers`` worker processes running; worker i gets index i and so its own MQTT session.

    A worker that exits is restarted (canalflow.supervise's rule): one that exits too often within a
    minute, or a rollup loop that died, stops ingest with exit status 1 for its service manager."""

    def __init__(self, config: WorkerConfig, workers: int, *, log_level: int = logging.INFO, rollup_every_s: float = 0.0) -> None:
        if workers < 1:
            raise ValueError("--workers must be at least 1")
        self.rollup_every_s = rollup_every_s
        self.config = config
        self.workers = workers
        self.log_level = log_level
        self.stop = threading.Event()
        self._context = multiprocessing.get_context("spawn")
        self._procs: dict[int, BaseProcess] = {}
        self._budgets = {index: RestartBudget() for index in range(workers)}
        self._rollup: threading.Thread | None = None

    def _config_for(self, index: int) -> WorkerConfig:
        # Only the first worker subscribes to gateway status (a plain, not shared, subscription).
        metrics = self.config.metrics_port + index if self.config.metrics_port else 0
        return dataclasses.replace(
            self.config, index=index, subscribe_status=self.config.subscribe_status and index == 0, metrics_port=metrics
        )

    def _start(self, index: int) -> None:
        proc = self._context.Process(
            target=_run_in_process, args=(self._config_for(index), self.log_level), name=f"ingest-{index}", daemon=False
        )
        proc.start()
        self._procs[index] = proc
        log.info("started worker %d (pid %s)", index, proc.pid)

    def run(self) -> int:
        for index in range(self.workers):
            self._start(index)
        if self.rollup_every_s > 0:
            from canalflow.district import load_district

            district = load_district(self.config.district)  # here, not in the thread: a bad file fails the start
            self._rollup = threading.Thread(target=self._rollup_loop, args=(district,), name="rollup", daemon=True)
            self._rollup.start()
        try:
            while not self.stop.wait(0.5):
                failure = self._check()
                if failure:
                    log.critical("%s; stopping ingest (exit 1) so that its service manager restarts it", failure)
                    return 1
        finally:
            self._stop_all()
        return 0

    def _check(self) -> str | None:
        """Restart the workers that exited; return why ingest must stop, if it must."""
        if self._rollup is not None and not self._rollup.is_alive() and not self.stop.is_set():
            return "the rollup loop died (its traceback is above)"
        for index, proc in list(self._procs.items()):
            if proc.is_alive() or self.stop.is_set():
                continue
            budget = self._budgets[index]
            budget.failed()
            if budget.exhausted:
                return budget.verdict(f"worker {index}", f"exit code {proc.exitcode}")
            log.error("worker %d (pid %s) exited with code %s; restarting it", index, proc.pid, proc.exitcode)
            time.sleep(RESTART_DELAY_S)
            self._start(index)
        return None

    def _rollup_loop(self, district: District) -> None:
        """Recompute the rollup windows that the workers' writes touched, every ``rollup_every_s``.

        A failed round is logged and tried again at the next one (InfluxDB down is the usual cause)."""
        from canalflow.influx import InfluxError, InfluxV1
        from ingest.rollup import DirtyWindows, run_dirty

        while not self.stop.wait(self.rollup_every_s):
            try:
                with InfluxV1(self.config.influx_url, self.config.db, token=self.config.token, timeout=60) as client:
                    dirty = DirtyWindows(self.config.deadletter)
                    try:
                        log.info("rollup: %s", run_dirty(district, client, dirty))
                    finally:
                        dirty.close()
            except (InfluxError, OSError, ValueError) as exc:
                log.warning("rollup failed, will retry in %.0fs: %s", self.rollup_every_s, exc)
            except Exception:  # anything else: logged with its traceback, and the loop goes on (never dies silently)
                log.exception("rollup failed unexpectedly, will retry in %.0fs", self.rollup_every_s)

    def _stop_all(self, timeout: float = 20.0) -> None:
        for proc in self._procs.values():
            if proc.is_alive() and proc.pid:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for index, proc in self._procs.items():
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("worker %d did not stop in %.0fs; killing it", index, timeout)
                proc.kill()
                proc.join(5)


def run_supervised(config: WorkerConfig, workers: int, *, log_level: int = logging.INFO, rollup_every_s: float = 0.0) -> int:
    """Run ``workers`` processes until SIGTERM/SIGINT; with 1 worker, still in a child (same shape as N)."""
    supervisor = Supervisor(config, workers, log_level=log_level, rollup_every_s=rollup_every_s)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping %d worker(s)", signum, workers)
        supervisor.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return supervisor.run()
