"""Simulated time that the fleet, the edge, ingest and tests all follow.

A clock maps wall time to simulated time: ``sim = sim_start + (wall - wall_start) * speed``.
The fleet writes its clock to a small JSON file; every other process reads that file, so in an
accelerated run a season passes in minutes and all parts agree on what time it is.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class SimClock:
    sim_start_ms: int
    wall_start_s: float
    speed: float = 1.0

    @classmethod
    def real(cls) -> SimClock:
        now = time.time()
        return cls(int(now * 1000), now, 1.0)

    @classmethod
    def starting_at(cls, sim_start_ms: int, speed: float = 1.0) -> SimClock:
        if speed <= 0:
            raise ValueError("speed must be positive")
        return cls(sim_start_ms, time.time(), speed)

    def now_ms(self) -> int:
        return self.sim_start_ms + int((time.time() - self.wall_start_s) * self.speed * 1000)

    def wall_seconds(self, sim_seconds: float) -> float:
        """How many wall-clock seconds pass while ``sim_seconds`` of simulated time pass."""
        return sim_seconds / self.speed

    def wall_time_of(self, sim_ms: int) -> float:
        return self.wall_start_s + (sim_ms - self.sim_start_ms) / 1000 / self.speed

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> SimClock:
        return cls(**json.loads(Path(path).read_text()))


def wall_to_utc(wall_s: float, tz: dt.tzinfo) -> int:
    """A local wall-clock time (epoch seconds as if the wall clock were UTC, as a meter's calendar
    register reads) -> true UTC epoch seconds in time zone ``tz``."""
    wall = dt.datetime.fromtimestamp(int(wall_s), dt.UTC).replace(tzinfo=tz)
    return int(wall.timestamp())


def utc_to_wall(utc_s: float, tz: dt.tzinfo) -> int:
    """UTC epoch seconds -> the wall-clock time of ``tz`` as epoch seconds read as if UTC."""
    local = dt.datetime.fromtimestamp(int(utc_s), tz)
    return int(local.replace(tzinfo=dt.UTC).timestamp())


def parse_iso_ms(text: str, *, naive_tz: dt.tzinfo = dt.UTC, what: str = "time") -> int:
    """ISO 8601 (``2026-03-01``, ``2026-03-01T08:00:00Z``, with an offset) -> epoch ms; a time
    without an offset is in ``naive_tz``. ValueError names ``what`` (e.g. the option) and the text."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{what} {text!r} is not ISO 8601: write e.g. 2026-04-15T12:00:00+08:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=naive_tz)
    return int(moment.timestamp() * 1000)
