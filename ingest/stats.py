"""Self-metrics of an ingest worker: Prometheus ``/metrics`` and rows of ``M.ingest_stats``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from canalflow.contract import M, line

MESSAGES = Counter("canalflow_ingest_messages", "MQTT messages handled", ["result"])
READINGS = Counter("canalflow_ingest_readings", "readings written to InfluxDB")
DEAD_LETTERS = Counter("canalflow_ingest_dead_letters", "messages dead-lettered", ["reason"])
WRITE_SECONDS = Histogram(
    "canalflow_ingest_write_seconds", "time to write one batch to InfluxDB, retries included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BATCH_LINES = Histogram(
    "canalflow_ingest_batch_lines", "lines per InfluxDB write", buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000)
)
WRITE_RETRIES = Counter("canalflow_ingest_write_retries", "InfluxDB write attempts that failed and were retried")
LAG_SECONDS = Gauge("canalflow_ingest_lag_seconds", "newest live reading's age when written (reading time to write)")
PENDING = Gauge("canalflow_ingest_pending_messages", "messages received and not yet acknowledged")


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Serve Prometheus ``/metrics`` on ``addr:port`` in a daemon thread (port 0: do not serve)."""
    if port:
        start_http_server(port, addr=addr)


@dataclass
class WorkerStats:
    """Cumulative counts of one worker, for the progress log and the ``ingest_stats`` rows."""

    started: float = field(default_factory=time.monotonic)
    messages: int = 0
    readings: int = 0
    writes: int = 0
    write_lines: int = 0
    write_seconds: float = 0.0
    retries: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    last_lag_ms: int | None = None
    _last_report: tuple[float, int, int] = (0.0, 0, 0)

    def count_written(self, messages: int, readings: int, lines: int, seconds: float, retries: int) -> None:
        self.messages += messages
        self.readings += readings
        self.writes += 1 if lines else 0
        self.write_lines += lines
        self.write_seconds += seconds
        self.retries += retries
        MESSAGES.labels("written").inc(messages)
        READINGS.inc(readings)
        if lines:
            WRITE_SECONDS.observe(seconds)
            BATCH_LINES.observe(lines)
        if retries:
            WRITE_RETRIES.inc(retries)

    def count_dead(self, reason: str) -> None:
        self.messages += 1
        self.dead_letters[reason] = self.dead_letters.get(reason, 0) + 1
        MESSAGES.labels("dead_letter").inc()
        DEAD_LETTERS.labels(reason).inc()

    def note_lag(self, newest_live_ts_ms: int) -> None:
        self.last_lag_ms = max(0, int(time.time() * 1000) - newest_live_ts_ms)
        LAG_SECONDS.set(self.last_lag_ms / 1000)

    def rates(self) -> tuple[float, float]:
        """Messages/s and readings/s since the previous call."""
        now = time.monotonic()
        then, messages, readings = self._last_report
        self._last_report = (now, self.messages, self.readings)
        span = max(1e-9, now - (then or self.started))
        return (self.messages - messages) / span, (self.readings - readings) / span

    def progress(self, worker: str, msg_rate: float, reading_rate: float) -> str:
        dead = sum(self.dead_letters.values())
        per_write = (self.write_seconds / self.writes * 1000) if self.writes else 0.0
        lag = f"{self.last_lag_ms / 1000:.1f}s" if self.last_lag_ms is not None else "-"
        return (
            f"worker {worker}: {self.messages:,} msgs ({msg_rate:,.0f}/s), {self.readings:,} readings ({reading_rate:,.0f}/s), "
            f"{dead:,} dead letters, {self.writes:,} writes ({per_write:.1f} ms each), {self.retries} retries, lag {lag}"
        )

    def influx_line(self, district: str, worker: str, msg_rate: float, reading_rate: float) -> str:
        fields: dict[str, float | int | bool | str] = {
            "messages": self.messages,
            "readings": self.readings,
            "messages_per_s": float(msg_rate),
            "readings_per_s": float(reading_rate),
            "writes": self.writes,
            "retries": self.retries,
            "dead_letters": sum(self.dead_letters.values()),
            "write_ms_avg": (self.write_seconds / self.writes * 1000) if self.writes else 0.0,
            "batch_lines_avg": (self.write_lines / self.writes) if self.writes else 0.0,
        }
        if self.last_lag_ms is not None:
            fields["lag_ms"] = self.last_lag_ms
        for reason, count in sorted(self.dead_letters.items()):
            fields[f"dead_{reason}"] = count
        return line(M.ingest_stats, {"district": district, "worker": worker}, fields, int(time.time() * 1000))
