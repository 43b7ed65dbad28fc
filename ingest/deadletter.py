"""The durable dead-letter store: every message ingest could not write, with reason and raw payload.

One SQLite file (WAL mode) shared by all worker processes of a machine. A message is acknowledged
to the broker only after its dead letter is committed, so a crash never loses a rejected message.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    worker TEXT NOT NULL DEFAULT '',
    replayed_ms INTEGER,
    replay_note TEXT
);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters (reason);
"""


@dataclass(frozen=True)
class DeadLetter:
    id: int
    received_ms: int
    reason: str
    detail: str
    topic: str
    payload: bytes
    worker: str
    replayed_ms: int | None
    replay_note: str | None


@dataclass(frozen=True)
class NewDeadLetter:
    reason: str
    detail: str
    topic: str
    payload: bytes


class DeadLetterStore:
    """A SQLite dead-letter store at ``path`` (created with its directory if missing)."""

    def __init__(self, path: Path | str, *, worker: str = "") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.worker = worker
        # check_same_thread off: a worker opens the store on its main thread and writes from its writer thread (one at a time)
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add_many(self, letters: Iterable[NewDeadLetter]) -> int:
        """Store letters in one transaction; return how many. Durable when this returns."""
        now = int(time.time() * 1000)
        rows = [(now, d.reason, d.detail, d.topic, bytes(d.payload), self.worker) for d in letters]
        if not rows:
            return 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT INTO dead_letters (received_ms, reason, detail, topic, payload, worker) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return len(rows)

    def add(self, reason: str, detail: str, topic: str, payload: bytes) -> None:
        self.add_many([NewDeadLetter(reason, detail, topic, payload)])

    def list(self, *, reason: str | None = None, pending_only: bool = False, limit: int | None = None) -> list[DeadLetter]:
        return list(self.iter(reason=reason, pending_only=pending_only, limit=limit))

    def iter(
        self, *, reason: str | None = None, pending_only: bool = False, limit: int | None = None, ids: Iterable[int] | None = None
    ) -> Iterator[DeadLetter]:
        where, params = [], []
        if reason:
            where.append("reason = ?")
            params.append(reason)
        if pending_only:
            where.append("replayed_ms IS NULL")
        if ids is not None:
            id_list = [int(i) for i in ids]
            where.append(f"id IN ({','.join('?' * len(id_list)) or 'NULL'})")
            params.extend(id_list)
        sql = "SELECT * FROM dead_letters" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        for row in self._db.execute(sql, params):
            yield DeadLetter(*row)

    def get(self, letter_id: int) -> DeadLetter | None:
        return next(self.iter(ids=[letter_id]), None)

    def counts(self, *, pending_only: bool = False) -> dict[str, int]:
        sql = "SELECT reason, COUNT(*) FROM dead_letters"
        if pending_only:
            sql += " WHERE replayed_ms IS NULL"
        return dict(self._db.execute(sql + " GROUP BY reason ORDER BY reason").fetchall())

    def total(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])

    def mark_replayed(self, letter_id: int, note: str) -> None:
        self._db.execute(
            "UPDATE dead_letters SET replayed_ms = ?, replay_note = ? WHERE id = ?", (int(time.time() * 1000), note, letter_id)
        )

    def note_failed_replay(self, letter_id: int, note: str) -> None:
        self._db.execute("UPDATE dead_letters SET replay_note = ? WHERE id = ?", (note, letter_id))
