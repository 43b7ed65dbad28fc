"""The one restart rule of every long-running part: a background loop (an edge agent's task, an
ingest worker process, ingest's rollup loop, a fleet's answer) that fails is logged with its
traceback and started again; one that fails ``MAX_FAILURES_PER_MINUTE`` times within a minute
stops its process with exit status 1, so that its service manager (systemd, compose) restarts it
and the failure is visible there, instead of a loop that dies silently or restarts forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable

RESTART_DELAY_S = 1.0
MAX_FAILURES_PER_MINUTE = 5
WINDOW_S = 60.0


class RestartBudget:
    """Counts the failures of one supervised loop; ``exhausted`` once too many fell within the window."""

    def __init__(self, limit: int = MAX_FAILURES_PER_MINUTE, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._failures: list[float] = []

    def failed(self) -> int:
        """Count a failure now; return how many fell within the window (this one included)."""
        now = self._clock()
        self._failures = [t for t in self._failures if t > now - self.window_s] + [now]
        return len(self._failures)

    @property
    def exhausted(self) -> bool:
        return len(self._failures) >= self.limit

    def verdict(self, name: str, last: object) -> str:
        """The sentence a give-up is logged and reported with."""
        return f"the {name} failed {len(self._failures)} times within a minute, last with {last}"
