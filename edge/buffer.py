"""The durable store-and-forward buffer: a SQLite database in WAL mode.

Every reading is committed here before it is published, and deleted only once ingest has confirmed
the message that carried it stored (or, with ``publish.confirm: broker``, once the broker has
acknowledged it with a QoS 1 PUBACK), so a crash, a kill -9 or a power cut loses nothing that was read. The buffer is bounded by rows and by age; when full it applies its
declared policy (``drop_oldest`` or ``drop_newest``), logs it and counts every dropped reading.

The per-gateway message sequence is persisted in the same file in blocks (hi-lo), so it keeps
increasing across restarts.

A full or read-only file system (an SD card on a field gateway) does not stop the agent: a write
that SQLite refuses with "database or disk is full", "readonly" or an I/O error is logged once as
an error saying what to do, the readings it carried are dropped under the declared policy and
counted (``drop_oldest`` first makes room by deleting the oldest rows, which frees pages inside the
file; when even that cannot be written, or under ``drop_newest``, the incoming readings go), and
:attr:`Buffer.storage_error` says why until a write succeeds again. Nothing else is lost: rows not
yet confirmed stay, and deleting confirmed rows is retried.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canalflow.errors import CanalflowError

log = logging.getLogger("canalflow.edge.buffer")


class BufferBusy(CanalflowError, RuntimeError):
    """Another process (a running agent) publishes from this buffer."""


class BufferUnwritable(CanalflowError, OSError):
    """The buffer file cannot be created or opened for writing where ``buffer.path`` puts it."""


def check_writable(path: Path | str) -> None:
    """Refuse a buffer whose directory this user cannot write (a read-only /etc, another user's dir)."""
    path = Path(path).absolute()
    directory = path.parent
    while not directory.exists():
        directory = directory.parent
    if not os.access(directory, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise _unwritable(path, "permission denied or a read-only file system")


_CANNOT_WRITE = {errno.EACCES, errno.EPERM, errno.EROFS}
_CANNOT_OPEN = {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM}


def _unwritable(path: Path, why: object) -> BufferUnwritable:
    return BufferUnwritable(f"buffer {path}: cannot write it ({why}): set buffer.path (or --buffer) to a file in a "
                            "directory this user can write; on a gateway /var/lib/canalflow, the unit's "
                            "StateDirectory (docs/edge.md)")


class BufferStorageError(RuntimeError):
    """The buffer's file system refused a write that cannot be dropped (a sequence block)."""


_STORAGE_PROBLEMS = {
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_READONLY: "the file system is read-only",
    sqlite3.SQLITE_IOERR: "the storage reported an I/O error",
}
REMIND_S = 60.0  # while the buffer cannot be written, the error is repeated this often (with counts)


def storage_problem(exc: BaseException) -> str | None:
    """What is wrong with the storage when SQLite refused a write for lack of space or permission, else None."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else _STORAGE_PROBLEMS.get(code & 0xFF)

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    point TEXT NOT NULL,
    ts INTEGER NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL,
    UNIQUE (point, ts)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
SEQ_BLOCK = 1000


@dataclass(frozen=True)
class Row:
    id: int
    point: str
    ts: int
    body: str  # the Reading as JSON
    created: float


def batch_payload(district: str, gateway: str, point: str, seq: int, rows: Sequence[Row], *,
                  historical: bool, sent_ms: int | None = None) -> bytes:
    """A contract ReadingBatch of buffered rows, oldest first. The readings were validated
    (contract.Reading) when stored, so their JSON is spliced in as is."""
    head: dict[str, object] = {"v": 1, "district": district, "gateway": gateway, "point": point, "seq": seq,
                               "historical": historical}
    if sent_ms is not None:
        head["sent_ms"] = sent_ms
    body = ",".join(r.body for r in sorted(rows, key=lambda r: r.ts))
    return f'{json.dumps(head)[:-1]}, "readings": [{body}]}}'.encode()


class Buffer:
    """Readings waiting until their delivery is confirmed (by ingest, or by the broker's PUBACK)."""

    def __init__(
        self,
        path: Path | str,
        *,
        max_rows: int = 2_000_000,
        max_age_s: float = 30 * 86400,
        when_full: str = "drop_oldest",
        synchronous: str = "FULL",
        exclusive: bool = False,
    ) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self.when_full = when_full
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = self._take_lock() if exclusive else None
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.OperationalError) as exc:
            if getattr(exc, "errno", None) in _CANNOT_WRITE or getattr(exc, "sqlite_errorcode", None) in _CANNOT_OPEN:
                raise _unwritable(self.path, exc) from None
            raise
        self.dropped = int(self._meta("dropped", "0"))
        self.storage_error: str | None = None  # why the last write failed, until one succeeds again
        self._failing_since = 0.0
        self._dropped_at_failure = 0
        self._reminded = 0.0
        self.duplicates = 0
        self._seq = int(self._meta("seq_hi", "0"))
        self._depth = self._count()
        self.last_id = self.max_id()  # highest row id stored (the publisher skips queries when nothing is new)

    def _take_lock(self) -> Any:
        """One publisher per buffer: the agent, or ``buffer replay`` while the agent is stopped."""
        handle = open(self.path.with_name(self.path.name + ".lock"), "a+")  # noqa: SIM115 (held while open)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise BufferBusy(f"{self.path} is in use by {owner}: a running agent replays its own backlog; "
                             "stop it first to replay or move the buffer by hand") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        return handle

    # ---- meta ------------------------------------------------------------------------------
    def _meta(self, key: str, default: str) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def reserve_seq(self, n: int = SEQ_BLOCK) -> int:
        """Reserve ``n`` message sequence numbers on disk; return the first (numbers never repeat).

        Raises :class:`BufferStorageError` when the file system refuses the write: a number not on
        disk could repeat after a restart, and ingest's confirmations are by number."""
        start = int(self._meta("seq_hi", "0"))
        try:
            self._set_meta("seq_hi", str(start + n))
        except sqlite3.Error as exc:
            problem = storage_problem(exc)
            if problem is None:
                raise
            self._failed(problem, exc)
            raise BufferStorageError(f"{self.path}: cannot reserve message numbers: {problem}") from exc
        self._seq = start + n
        return start

    # ---- writing ---------------------------------------------------------------------------
    def _count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM readings").fetchone()[0])

    @property
    def depth(self) -> int:
        return self._depth

    def add(self, readings: Iterable[tuple[str, int, str]]) -> int:
        """Store ``(point, ts, reading json)`` rows in one transaction; return how many were new.

        When the file system refuses the write, see the module doc: the readings are dropped
        under the declared policy and counted, and this returns how many were stored anyway."""
        rows = list(readings)
        if not rows:
            return 0
        room = self.max_rows - self._depth
        if len(rows) > room and self.when_full == "drop_newest":
            self._drop(len(rows) - max(room, 0), "newest (incoming)")
            rows = rows[: max(room, 0)]
        try:
            added = self._insert(rows)
        except sqlite3.Error as exc:
            problem = storage_problem(exc)
            if problem is None:
                raise
            self._failed(problem, exc)
            return self._add_on_full_storage(rows, problem)
        self._recovered()
        if self._depth > self.max_rows:
            self._delete_oldest(self._depth - self.max_rows, "oldest (buffer full)")
        return added

    def _insert(self, rows: list[tuple[str, int, str]], *, delete_oldest: int = 0) -> int:
        """One transaction: (delete the ``delete_oldest`` oldest rows and) insert ``rows``; rolled back on error."""
        now = time.time()
        try:
            self.db.execute("BEGIN")
            deleted = 0
            if delete_oldest:
                deleted = self.db.execute("DELETE FROM readings WHERE id IN (SELECT id FROM readings ORDER BY id LIMIT ?)",
                                          (delete_oldest,)).rowcount
            before = self.db.total_changes
            self.db.executemany(
                "INSERT OR IGNORE INTO readings (point, ts, body, created) VALUES (?, ?, ?, ?)",
                [(p, ts, body, now) for p, ts, body in rows],
            )
            added = self.db.total_changes - before
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self.last_id = self.max_id()
        self.duplicates += len(rows) - added
        self._depth += added - deleted
        if deleted:
            self._drop(deleted, "oldest (storage full)")
        return added

    def _rollback(self) -> None:
        if self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")

    def _add_on_full_storage(self, rows: list[tuple[str, int, str]], problem: str) -> int:
        """The declared policy when the file system refuses new rows: make room, or drop the incoming ones."""
        if self.when_full == "drop_oldest" and self._depth > 0:
            try:
                return self._insert(rows, delete_oldest=min(len(rows), self._depth))
            except sqlite3.Error as exc:
                if storage_problem(exc) is None:
                    raise
        self._drop(len(rows), f"newest (incoming; {problem})")
        return 0

    def _failed(self, problem: str, exc: BaseException) -> None:
        """Log a refused write: once as an error that says what to do, then a reminder every REMIND_S."""
        now = time.monotonic()
        first = self.storage_error is None
        self.storage_error = f"{problem} ({exc})"
        if first:
            self._failing_since, self._dropped_at_failure, self._reminded = now, self.dropped, now
            log.error("buffer %s: cannot write: %s. Free space on the file system holding %s (df -h %s), or make it "
                      "writable, or move buffer.path to a larger disk. Until then new readings are dropped under policy "
                      "%s and counted (status 'dropped', metric canalflow_edge_buffer_dropped); polling and publishing "
                      "go on", self.path, self.storage_error, self.path.parent, self.path.parent, self.when_full)
        elif now - self._reminded >= REMIND_S:
            self._reminded = now
            log.error("buffer %s: still cannot write (%s) for %.0f s: %d reading(s) dropped since", self.path, problem,
                      now - self._failing_since, self.dropped - self._dropped_at_failure)

    def _recovered(self) -> None:
        if self.storage_error is None:
            return
        log.warning("buffer %s: writable again after %.0f s; %d reading(s) were dropped meanwhile (%d in total)",
                    self.path, time.monotonic() - self._failing_since, self.dropped - self._dropped_at_failure, self.dropped)
        self.storage_error = None
        self._persist_dropped()

    def _drop(self, n: int, what: str) -> None:
        if n <= 0:
            return
        self.dropped += n
        self._persist_dropped()
        # while the storage refuses writes, _failed() reports the drops (once, then every REMIND_S)
        (log.debug if self.storage_error else log.warning)("buffer %s: dropped %d %s reading(s) under policy %s (max_rows %d, max_age %.0f s); "
                    "%d dropped in total", self.path, n, what, self.when_full, self.max_rows, self.max_age_s,
                    self.dropped)

    def _persist_dropped(self) -> None:
        """The count survives restarts; on a full disk it is kept in memory and saved once a write succeeds."""
        try:
            self._set_meta("dropped", str(self.dropped))
        except sqlite3.Error as exc:
            if storage_problem(exc) is None:
                raise

    def _delete_oldest(self, n: int, what: str) -> None:
        self.db.execute("DELETE FROM readings WHERE id IN (SELECT id FROM readings ORDER BY id LIMIT ?)", (n,))
        self._depth = self._count()
        self._drop(n, what)

    def expire(self, now: float | None = None) -> int:
        """Drop readings stored longer than max_age_s ago (counted and logged); return how many."""
        cutoff = (now or time.time()) - self.max_age_s
        try:
            cur = self.db.execute("DELETE FROM readings WHERE created < ?", (cutoff,))
        except sqlite3.Error as exc:
            if storage_problem(exc) is None:
                raise
            return 0  # tried again at the next expiry round
        if cur.rowcount:
            self._depth -= cur.rowcount
            self._drop(cur.rowcount, "expired")
        return cur.rowcount

    # ---- reading and acknowledging ----------------------------------------------------------
    def max_id(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM readings").fetchone()[0])

    def rows_after(self, after_id: int, limit: int, upto_id: int | None = None) -> list[Row]:
        """Rows with ``after_id < id (<= upto_id)``, oldest first."""
        if upto_id is None:
            cur = self.db.execute("SELECT id, point, ts, body, created FROM readings WHERE id > ? ORDER BY id LIMIT ?",
                                  (after_id, limit))
        else:
            cur = self.db.execute("SELECT id, point, ts, body, created FROM readings WHERE id > ? AND id <= ? "
                                  "ORDER BY id LIMIT ?", (after_id, upto_id, limit))
        return [Row(*r) for r in cur.fetchall()]

    def acknowledge(self, ids: Sequence[int]) -> bool:
        """Delete rows whose delivery is confirmed; False when the file system refused it (call again later)."""
        if not ids:
            return True
        try:
            self.db.execute("BEGIN")
            before = self.db.total_changes
            self.db.executemany("DELETE FROM readings WHERE id = ?", [(i,) for i in ids])
            removed = self.db.total_changes - before  # fewer than ids if the full-buffer policy dropped some
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            problem = storage_problem(exc)
            if problem is None:
                raise
            self._failed(problem, exc)
            return False
        self._depth = max(0, self._depth - removed)
        return True

    # ---- technician views -------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        oldest = self.db.execute("SELECT MIN(ts), MAX(ts), MIN(created) FROM readings").fetchone()
        per_point = self.db.execute("SELECT point, COUNT(*) FROM readings GROUP BY point ORDER BY point").fetchall()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.exists())
        return {
            "path": str(self.path), "depth": self._count(), "dropped": self.dropped, "bytes": size,
            "oldest_ts": oldest[0], "newest_ts": oldest[1],
            "oldest_age_s": None if oldest[2] is None else round(time.time() - oldest[2], 1),
            "max_rows": self.max_rows, "max_age_s": self.max_age_s, "when_full": self.when_full,
            "storage_error": self.storage_error,
            "next_seq": self._seq, "points": dict(per_point),
        }

    def export(self) -> Iterable[dict[str, object]]:
        for row in self.db.execute("SELECT point, ts, body FROM readings ORDER BY id"):
            yield {"point": row[0], "ts": row[1], "reading": json.loads(row[2])}

    def close(self) -> None:
        self.db.close()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def __enter__(self) -> Buffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
