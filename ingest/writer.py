"""Writing line protocol to InfluxDB so that nothing is lost and one bad line stalls nothing.

- 5xx, 429 and connection errors: retry the same batch with exponential back-off (jittered,
  capped), honouring ``Retry-After``. The caller does not acknowledge meanwhile: that is the
  back-pressure, the broker holds the backlog.
- 413 (body too large): split the batch in halves and write each.
- 400/422 (a line refused, e.g. a field type conflict or a point beyond the retention policy):
  InfluxDB 1.x writes the good lines and refuses the others, without saying reliably which. The
  batch is bisected (rewriting is harmless: same series + same timestamp = same row) down to the
  single refused lines, which are returned so that their messages can be dead-lettered.
- Any other status (404 database not found, 401/403, 500 retention policy not found) is an
  operator problem, not the data's: retry at the back-off cap, logging each attempt, until fixed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from canalflow.influx import InfluxUnavailable, InfluxV1, InfluxWriteError

log = logging.getLogger("canalflow.ingest.writer")


class WriterStopped(RuntimeError):
    """The writer was asked to stop while a batch was still unwritten (do not acknowledge it)."""


@dataclass(frozen=True)
class RefusedLine:
    index: int  # position in the batch given to write()
    line: str
    error: str


@dataclass
class WriteReport:
    refused: list[RefusedLine]
    requests: int
    retries: int
    seconds: float


class ResilientWriter:
    """Write batches through an :class:`InfluxV1` client with retries, splitting and isolation."""

    def __init__(
        self,
        client: InfluxV1,
        *,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        stop: threading.Event | None = None,
        rp: str | None = None,
        sleep: Callable[[float], bool] | None = None,
    ) -> None:
        self.client = client
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.stop = stop or threading.Event()
        self.rp = rp
        self._wait = sleep or self.stop.wait
        self._requests = 0
        self._retries = 0

    def write(self, lines: list[str]) -> WriteReport:
        """Write every line, returning the ones InfluxDB refused; block while it is unavailable.

        Raises :class:`WriterStopped` when ``stop`` is set before the batch is written.
        """
        self._requests = self._retries = 0
        started = time.monotonic()
        refused = self._write_part(lines, 0)
        return WriteReport(refused, self._requests, self._retries, time.monotonic() - started)

    def _write_part(self, lines: list[str], offset: int) -> list[RefusedLine]:
        if not lines:
            return []
        delay = self.backoff_initial_s
        attempt = 0
        while True:
            if self.stop.is_set():
                raise WriterStopped(f"stopped with {len(lines)} line(s) unwritten")
            self._requests += 1
            try:
                self.client.write_lines(lines, rp=self.rp)
                return []
            except InfluxUnavailable as exc:
                problem, wait = str(exc), delay
            except InfluxWriteError as exc:
                if exc.status == 413 and len(lines) > 1:
                    log.info("InfluxDB said 413 for %d lines: splitting the batch", len(lines))
                    return self._split(lines, offset)
                if exc.status in (400, 422):
                    if len(lines) == 1:
                        return [RefusedLine(offset, lines[0], str(exc))]
                    return self._split(lines, offset)
                problem = str(exc)
                if exc.retryable and exc.retry_after is not None:
                    wait = exc.retry_after
                else:
                    wait = delay if exc.retryable else self.backoff_max_s
            attempt += 1
            self._retries += 1
            level = logging.WARNING if attempt in (1, 10) or attempt % 50 == 0 else logging.DEBUG
            log.log(level, "write of %d line(s) failed (attempt %d), retrying in %.2fs: %s", len(lines), attempt, wait, problem)
            self._wait(wait * random.uniform(0.9, 1.1) if wait else 0)
            delay = min(self.backoff_max_s, delay * 2)

    def _split(self, lines: list[str], offset: int) -> list[RefusedLine]:
        middle = len(lines) // 2
        return self._write_part(lines[:middle], offset) + self._write_part(lines[middle:], offset + middle)
