"""Late-data tracking for the rollups, and the calendar helpers it needs (no numpy: workers import it).

After each write a worker records the (point, local day) pairs its readings can change; ``ingest
rollup --dirty`` recomputes exactly those and forgets them (see ingest/rollup.py).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from zoneinfo import ZoneInfo


def day_start(ts_ms: int, tz: ZoneInfo) -> int:
    local = dt.datetime.fromtimestamp(ts_ms / 1000, tz)
    return int(dt.datetime(local.year, local.month, local.day, tzinfo=tz).timestamp() * 1000)


def day_windows(start_ms: int, end_ms: int, tz: ZoneInfo) -> list[tuple[int, int]]:
    """Local calendar days overlapping [start_ms, end_ms) (DST-safe: each day ends at the next midnight)."""
    out = []
    t0 = day_start(start_ms, tz)
    while t0 < end_ms:
        local = dt.datetime.fromtimestamp(t0 / 1000, tz) + dt.timedelta(days=1, hours=2)
        t1 = day_start(int(local.timestamp() * 1000), tz)
        out.append((t0, t1))
        t0 = t1
    return out


class DirtyWindows:
    """(point, local day) pairs written since their rollup was computed; kept in a SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(Path(path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS dirty_windows (point TEXT NOT NULL, day_ms INTEGER NOT NULL, "
                         "PRIMARY KEY (point, day_ms))")

    def close(self) -> None:
        self._db.close()

    def mark(self, pairs: Iterable[tuple[str, int]]) -> None:
        rows = list(set(pairs))
        if not rows:
            return
        self._db.execute("BEGIN IMMEDIATE")  # one transaction (one fsync) per write, not one per row
        try:
            self._db.executemany("INSERT OR IGNORE INTO dirty_windows (point, day_ms) VALUES (?, ?)", rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def pending(self) -> dict[int, set[str]]:
        out: dict[int, set[str]] = {}
        for point, day in self._db.execute("SELECT point, day_ms FROM dirty_windows"):
            out.setdefault(int(day), set()).add(point)
        return out

    def clear(self, day_ms: int, points: Iterable[str]) -> None:
        self._db.executemany("DELETE FROM dirty_windows WHERE point = ? AND day_ms = ?", [(p, day_ms) for p in points])


def touched_days(oldest_ms: int, newest_ms: int, tz: ZoneInfo, margin_ms: int) -> list[int]:
    """Days whose windows readings in [oldest, newest] can change: theirs, and neighbours within ``margin_ms``
    (a window interpolates its edges from readings up to the maximum gap outside it)."""
    return [d0 for d0, _ in day_windows(oldest_ms - margin_ms, newest_ms + margin_ms + 1, tz)]
