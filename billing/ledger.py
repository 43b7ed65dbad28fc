"""The billing ledger in SQL (SQLAlchemy 2): runs, bills, lines, adjustments, and their audit trail.

SQLite by default (``sqlite:///out/ledger.db``), PostgreSQL by URL
(``postgresql+psycopg://user@host/db``). Money and volumes are stored as decimal *strings*, so
they round-trip exactly on every backend.

Lifecycle of a run: ``draft`` -> ``approved`` -> ``issued``. A draft may be replaced by a rerun;
an issued run is never edited: corrections are :class:`AdjustmentRow` entries that the next run
of the unit carries as adjustment lines.

Writers that check the ledger before changing it (record, approve, issue, pay) hold a per-district
lock for their transaction (:meth:`Ledger._lock_district`), so two processes doing them at once
queue instead of both passing the checks. Both backends behave the same: text cannot hold NUL
characters (PostgreSQL cannot store them), ids sort by code point, whatever the server's locale.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    false,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from billing.edits import Edit
from canalflow.errors import CanalflowError

STATUSES = ("draft", "approved", "issued")
NEXT_STATUS = {"draft": "approved", "approved": "issued"}
_SCHEMA_LOCK = 0x63616E616C666C6F  # PostgreSQL advisory lock key ("canalflo") held while creating the tables


def _code_point_order(length: int) -> String:
    """A string column that sorts by code point on every backend, as SQLite does.

    A PostgreSQL database sorts by its locale (en_US.UTF-8 in the postgres image): 'v02' would
    come between 'V01' and 'V03', and '_' before '-'. Collation "C" is code point order.
    """
    return String(length).with_variant(String(length, collation="C"), "postgresql")


class LedgerError(CanalflowError, ValueError):
    """A ledger operation that the lifecycle does not allow (with what to do instead)."""


class Base(DeclarativeBase):
    pass


class RunRow(Base):
    __tablename__ = "billing_runs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    district_sha256: Mapped[str] = mapped_column(String(64))
    season_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tariff_id: Mapped[str] = mapped_column(String(64))
    tariff_version: Mapped[int] = mapped_column(Integer)
    t0_ms: Mapped[int] = mapped_column(BigInteger)
    t1_ms: Mapped[int] = mapped_column(BigInteger)
    as_of_ms: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="draft")
    created_at: Mapped[str] = mapped_column(String(40))
    manifest: Mapped[str] = mapped_column(Text)
    bills: Mapped[list[BillRow]] = relationship(back_populates="run", cascade="all, delete-orphan", order_by="BillRow.unit_id")


class BillRow(Base):
    __tablename__ = "bills"
    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("billing_runs.id"), index=True)
    unit_id: Mapped[str] = mapped_column(_code_point_order(64), index=True)
    volume_m3: Mapped[str] = mapped_column(String(32))
    quota_m3: Mapped[str] = mapped_column(String(32))
    total: Mapped[str] = mapped_column(String(32))
    blocked: Mapped[int] = mapped_column(Integer, default=0)
    paid_at: Mapped[str | None] = mapped_column(String(40), nullable=True)  # set when an issued bill is paid
    document: Mapped[str] = mapped_column(Text)  # the bill's canonical JSON
    run: Mapped[RunRow] = relationship(back_populates="bills")
    lines: Mapped[list[LineRow]] = relationship(back_populates="bill", cascade="all, delete-orphan", order_by="LineRow.n")


class LineRow(Base):
    __tablename__ = "bill_lines"
    id: Mapped[str] = mapped_column(String(112), primary_key=True)
    bill_id: Mapped[str] = mapped_column(ForeignKey("bills.id"), index=True)
    n: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    crop_class: Mapped[str] = mapped_column(String(16))
    component: Mapped[str] = mapped_column(String(16))
    band: Mapped[int | None] = mapped_column(Integer, nullable=True)
    volume_m3: Mapped[str] = mapped_column(String(32))
    rate: Mapped[str] = mapped_column(String(32))
    amount: Mapped[str] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(Text, default="")
    bill: Mapped[BillRow] = relationship(back_populates="lines")


class AdjustmentRow(Base):
    __tablename__ = "adjustments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    unit_id: Mapped[str] = mapped_column(String(64), index=True)
    corrects_bill_id: Mapped[str] = mapped_column(ForeignKey("bills.id"))
    amount: Mapped[str] = mapped_column(String(32))
    volume_m3: Mapped[str] = mapped_column(String(32), default="0")
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(Text)  # a user name: free text, like reason
    created_at: Mapped[str] = mapped_column(String(40))
    applied_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class EditRow(Base):
    """A manual edit (VEE): a point's volume over a stretch of time replaced, by a named user, with a reason."""

    __tablename__ = "volume_edits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    point: Mapped[str] = mapped_column(String(64))
    start_ms: Mapped[int] = mapped_column(BigInteger)
    end_ms: Mapped[int] = mapped_column(BigInteger)
    volume_m3: Mapped[str] = mapped_column(String(32))
    user: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[str] = mapped_column(String(40))


class EventRow(Base):
    """Audit trail: who did what to a run, when."""

    __tablename__ = "billing_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32))
    user: Mapped[str] = mapped_column(Text)
    at: Mapped[str] = mapped_column(String(40))
    note: Mapped[str] = mapped_column(Text, default="")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _findable(key: str) -> bool:
    """False for a key that cannot be stored, so is in no table (PostgreSQL refuses even to compare with NUL)."""
    return "\x00" not in key


def _refuse_nul(**fields: str) -> None:
    for name, value in fields.items():
        if "\x00" in value:
            raise LedgerError(f"the {name} contains a NUL character, which the ledger cannot store")


class Ledger:
    """Access to one ledger database; create with :func:`open_ledger`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except DataError as exc:  # PostgreSQL checks what SQLite stores as given (lengths, ranges)
            raise LedgerError(f"the ledger cannot store a value: {str(exc.orig).splitlines()[0]}") from exc

    # --- runs ---------------------------------------------------------------------------------
    def record_run(self, run: Any, user: str = "system") -> str:
        """Store a computed run as a draft (idempotent: the same run id is stored once).

        The run id is a hash of every input, so recording the same inputs twice is a no-op.
        Returns ``"created"`` or ``"unchanged"``.
        """
        _refuse_nul(user=user)
        try:
            return self._record_run(run, user)
        except IntegrityError:
            # The same run recorded at the same moment by another process, in a district with no run
            # yet to lock (see _lock_district): its insert won.
            if self._has_run(run.run_id):
                return "unchanged"
            raise

    def _has_run(self, run_id: str) -> bool:
        with self.session() as s:
            return s.get(RunRow, run_id) is not None

    def _record_run(self, run: Any, user: str) -> str:
        with self.session() as s:
            self._lock_district(s, run.district_id)
            existing = s.get(RunRow, run.run_id)
            if existing is not None:
                return "unchanged"
            self._refuse_rebilling(s, run.district_id, run.t0_ms, run.t1_ms, run.run_id)
            s.add(RunRow(
                id=run.run_id, district_id=run.district_id, district_sha256=run.district_sha256,
                season_id=run.season_id, tariff_id=run.tariff_id, tariff_version=run.tariff_version,
                t0_ms=run.t0_ms, t1_ms=run.t1_ms, as_of_ms=run.as_of_ms, status="draft",
                created_at=_now(), manifest=json.dumps(run.manifest(), sort_keys=True, ensure_ascii=False),
            ))
            s.flush()
            # Bulk inserts (executemany): a district run has tens of thousands of bills and lines.
            bills = [
                {"id": b.bill_id, "run_id": run.run_id, "unit_id": b.unit_id, "volume_m3": str(b.volume_m3), "quota_m3": str(b.quota_m3),
                 "total": str(b.total), "blocked": int(b.blocked), "document": b.to_json()}
                for b in run.bills
            ]
            lines = [
                {"id": f"{b.bill_id}-L{n}", "bill_id": b.bill_id, "n": n, **line.to_dict()}
                for b in run.bills for n, line in enumerate(b.lines, start=1)
            ]
            if bills:
                s.execute(insert(BillRow), bills)
            if lines:
                s.execute(insert(LineRow), lines)
            for adj_id in run.adjustment_ids:
                adj = s.get(AdjustmentRow, adj_id)
                # A draft that carried the adjustment is superseded by this run (a rerun): the newest
                # run carries it, and only that run may be approved with it.
                if adj is not None and (adj.applied_run_id is None or self._is_draft(s, adj.applied_run_id)):
                    adj.applied_run_id = run.run_id
            s.add(EventRow(run_id=run.run_id, action="created", user=user, at=_now(), note=""))
            return "created"

    def run(self, run_id: str) -> RunRow:
        with self.session() as s:
            row = self._find_run(s, run_id)
            s.expunge(row)
            return row

    def _find_run(self, s: Session, run_id: str) -> RunRow:
        """The run with this id, else the one run whose id starts with it."""
        row = s.get(RunRow, run_id) if _findable(run_id) else None
        return row or self._by_prefix(s, run_id)

    def _by_prefix(self, s: Session, prefix: str) -> RunRow:
        found = select(RunRow).where(RunRow.id.startswith(prefix, autoescape=True))
        rows = s.scalars(found).all() if _findable(prefix) else []
        if len(rows) != 1:
            raise LedgerError(f"no billing run {prefix!r} in the ledger" if not rows else f"run id prefix {prefix!r} is ambiguous; give more characters")
        return rows[0]

    def runs(self, *, offset: int = 0, limit: int = 50) -> list[RunRow]:
        with self.session() as s:
            rows = s.scalars(select(RunRow).order_by(RunRow.created_at.desc(), RunRow.id).offset(offset).limit(limit)).all()
            for r in rows:
                s.expunge(r)
            return list(rows)

    def count_runs(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(RunRow)) or 0

    def count_bills(self, run_id: str) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(BillRow).where(BillRow.run_id == run_id)) or 0

    def advance(self, run_id: str, to_status: str, user: str, note: str = "") -> str:
        """Move a run one step along draft -> approved -> issued; return the new status."""
        _refuse_nul(user=user, note=note)
        with self.session() as s:
            row = self._find_run(s, run_id)
            self._lock_district(s, row.district_id)
            s.expire_all()  # read it again under the lock: another process may just have advanced it
            expected = NEXT_STATUS.get(row.status)
            if to_status != expected:
                raise LedgerError(f"run {row.id[:12]} is {row.status}; it can only become {expected or 'nothing (issued is final)'}; corrections go in adjustments")
            self._refuse_rebilling(s, row.district_id, row.t0_ms, row.t1_ms, row.id)
            if to_status == "approved":
                self._refuse_superseded_adjustments(s, row)
            if to_status == "approved" and any(b.blocked for b in row.bills):
                blocked = ", ".join(b.unit_id for b in row.bills if b.blocked)
                raise LedgerError(f"run {row.id[:12]} has blocked bills ({blocked}): fix the data gaps (VEE) and rerun before approving")
            row.status = to_status
            s.add(EventRow(run_id=row.id, action=to_status, user=user, at=_now(), note=note))
            return to_status

    @staticmethod
    def _lock_district(s: Session, district_id: str) -> None:
        """Make this transaction the only ledger writer of the district until it ends.

        Approving, issuing and recording check other rows first (no issued run over the window,
        adjustments not carried by a newer run, the run's own status): two transactions checking
        at once would both pass and, say, issue two runs over the same water. PostgreSQL: lock the
        district's runs (in id order, so lockers queue instead of deadlocking). SQLite has one
        writer at a time: an empty UPDATE takes the database's write lock now rather than at the
        first real write, after the checks.
        """
        if s.get_bind().dialect.name == "sqlite":
            s.execute(update(RunRow.__table__).where(false()).values(status=RunRow.__table__.c.status))
        else:
            s.execute(select(RunRow.id).where(RunRow.district_id == district_id).order_by(RunRow.id).with_for_update())

    @staticmethod
    def _is_draft(s: Session, run_id: str) -> bool:
        run = s.get(RunRow, run_id)
        return run is not None and run.status == "draft"

    @staticmethod
    def _refuse_superseded_adjustments(s: Session, row: RunRow) -> None:
        """A run whose adjustments a newer run now carries would apply them twice if both were issued."""
        for adj_id in json.loads(row.manifest).get("adjustments", []):
            adj = s.get(AdjustmentRow, adj_id)
            if adj is not None and adj.applied_run_id not in (None, row.id):
                raise LedgerError(f"adjustment #{adj_id} is carried by the newer run {adj.applied_run_id[:12]}: "
                                  f"approve that run instead of {row.id[:12]}")

    @staticmethod
    def _refuse_rebilling(s: Session, district_id: str, t0_ms: int, t1_ms: int, run_id: str) -> None:
        """An issued run's window is billed for good: another run over any of it would bill the water twice."""
        clash = s.scalars(select(RunRow).where(
            RunRow.district_id == district_id, RunRow.status == "issued", RunRow.id != run_id,
            RunRow.t0_ms < t1_ms, t0_ms < RunRow.t1_ms,
        ).limit(1)).first()
        if clash is not None:
            raise LedgerError(f"run {clash.id[:12]} is issued and already bills part of this window ({clash.t0_ms}..{clash.t1_ms} ms): "
                              "an issued run is never billed again; record corrections as adjustments on its bills")

    def events(self, run_id: str) -> list[EventRow]:
        with self.session() as s:
            rows = s.scalars(select(EventRow).where(EventRow.run_id == run_id).order_by(EventRow.id)).all()
            for r in rows:
                s.expunge(r)
            return list(rows)

    # --- bills --------------------------------------------------------------------------------
    @staticmethod
    def _find_bill(s: Session, bill_id: str) -> BillRow:
        row = s.get(BillRow, bill_id) if _findable(bill_id) else None
        if row is None:
            raise LedgerError(f"no bill {bill_id!r} in the ledger")
        return row

    def bill(self, bill_id: str) -> dict[str, Any]:
        with self.session() as s:
            row = self._find_bill(s, bill_id)
            return json.loads(row.document) | {"status": row.run.status}

    def bills_of_run(self, run_id: str, *, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.scalars(select(BillRow).where(BillRow.run_id == run_id).order_by(BillRow.unit_id).offset(offset).limit(limit)).all()
            return [json.loads(r.document) for r in rows]

    def mark_paid(self, bill_id: str, user: str) -> None:
        """Record that an issued bill was paid (until then its unit gets no precise subsidy)."""
        _refuse_nul(user=user)
        with self.session() as s:
            bill = self._find_bill(s, bill_id)
            self._lock_district(s, bill.run.district_id)
            s.expire_all()  # read it again under the lock: another clerk may just have recorded the payment
            if bill.run.status != "issued":
                raise LedgerError(f"bill {bill_id} is in a {bill.run.status} run; only issued bills are paid")
            if bill.paid_at is not None:
                raise LedgerError(f"bill {bill_id} was already paid at {bill.paid_at}")
            bill.paid_at = _now()
            s.add(EventRow(run_id=bill.run_id, action="paid", user=user, at=bill.paid_at, note=bill_id))

    def unpaid_units(self, district_id: str, before_ms: int) -> set[str]:
        """Units with an issued, unpaid bill for a window that ended by ``before_ms`` (fees owed)."""
        with self.session() as s:
            rows = s.scalars(
                select(BillRow.unit_id).join(RunRow, RunRow.id == BillRow.run_id)
                .where(RunRow.district_id == district_id, RunRow.status == "issued", RunRow.t1_ms <= before_ms,
                       BillRow.paid_at.is_(None), BillRow.total != "0", BillRow.total != "0.00")
            ).all()
            return set(rows)

    # --- adjustments --------------------------------------------------------------------------
    def add_adjustment(self, bill_id: str, amount: Decimal, reason: str, user: str, volume_m3: Decimal = Decimal(0)) -> int:
        """Record a correction of an issued bill; it appears as a line on the unit's next run."""
        if not reason.strip():
            raise LedgerError("an adjustment needs a reason")
        _check_money(amount)
        _refuse_nul(reason=reason, user=user)
        with self.session() as s:
            bill = self._find_bill(s, bill_id)
            if bill.run.status != "issued":
                raise LedgerError(f"bill {bill_id} is in a {bill.run.status} run: rerun the draft instead of adjusting it")
            row = AdjustmentRow(unit_id=bill.unit_id, corrects_bill_id=bill_id, amount=str(amount), volume_m3=str(volume_m3),
                                reason=reason, created_by=user, created_at=_now())
            s.add(row)
            s.flush()
            s.add(EventRow(run_id=bill.run_id, action="adjustment", user=user, at=_now(), note=f"#{row.id} {amount} on {bill_id}: {reason}"))
            return row.id

    def pending_adjustments(self, district_id: str) -> list[AdjustmentRow]:
        with self.session() as s:
            rows = s.scalars(
                select(AdjustmentRow).join(BillRow, BillRow.id == AdjustmentRow.corrects_bill_id)
                .join(RunRow, RunRow.id == BillRow.run_id)
                .where(
                    AdjustmentRow.applied_run_id.is_(None) | AdjustmentRow.applied_run_id.in_(
                        select(RunRow.id).where(RunRow.status == "draft")
                    ),
                    RunRow.district_id == district_id,
                )
                .order_by(AdjustmentRow.id)
            ).all()
            for r in rows:
                s.expunge(r)
            return list(rows)

    # --- manual edits (VEE) ---------------------------------------------------------------------
    def add_edit(self, district_id: str, point: str, start_ms: int, end_ms: int, volume_m3: float, user: str, reason: str) -> int:
        """Record a manual volume edit; later runs covering the stretch use it instead of the readings."""
        if end_ms <= start_ms:
            raise LedgerError("an edit's end must be after its start")
        if volume_m3 < 0:
            raise LedgerError("an edited volume cannot be negative")
        if not reason.strip() or not user.strip():
            raise LedgerError("an edit needs a named user and a reason")
        _refuse_nul(point=point, user=user, reason=reason)
        with self.session() as s:
            row = EditRow(district_id=district_id, point=point, start_ms=start_ms, end_ms=end_ms, volume_m3=repr(float(volume_m3)),
                          user=user, reason=reason, created_at=_now())
            s.add(row)
            s.flush()
            return row.id

    def edits(self, district_id: str) -> list[Edit]:
        with self.session() as s:
            rows = s.scalars(select(EditRow).where(EditRow.district_id == district_id).order_by(EditRow.id)).all()
            return [Edit(r.id, r.point, r.start_ms, r.end_ms, float(r.volume_m3), r.user, r.reason) for r in rows]

    # --- water-use ledger (用水台账) ------------------------------------------------------------
    def water_use(self, unit_id: str) -> list[dict[str, Any]]:
        """Per issued run of a unit: window, volume, quota, amount — the unit's water-use ledger."""
        if not _findable(unit_id):
            return []
        with self.session() as s:
            rows = s.execute(
                select(RunRow, BillRow).join(BillRow, BillRow.run_id == RunRow.id)
                .where(BillRow.unit_id == unit_id, RunRow.status == "issued").order_by(RunRow.t0_ms)
            ).all()
            return [
                {"run_id": r.id, "season": r.season_id, "t0_ms": r.t0_ms, "t1_ms": r.t1_ms, "bill_id": b.id,
                 "volume_m3": b.volume_m3, "quota_m3": b.quota_m3, "total": b.total}
                for r, b in rows
            ]


FEN = Decimal("0.01")
MAX_YUAN = Decimal("1e12")  # 14 digits with the fen, as the API's AdjustmentRequest allows


def _check_money(amount: Decimal) -> None:
    """An amount of yuan the ledger can keep exactly: finite, whole fen, under a trillion."""
    if not amount.is_finite():
        raise LedgerError(f"amount {amount} is not a number of yuan (e.g. -12.50)")
    if abs(amount) >= MAX_YUAN:
        raise LedgerError(f"amount {amount} is beyond the ledger's {MAX_YUAN:,.0f} yuan: check the figure")
    if amount != amount.quantize(FEN):
        raise LedgerError(f"amount {amount} has fractions of a fen: money is kept to 0.01 yuan")
    if amount == 0:
        raise LedgerError("an adjustment of 0 yuan changes nothing")


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def open_ledger(url: str) -> Ledger:
    """Open (and create the tables of) the ledger at a SQLAlchemy URL (a SQLite file's folder is created).

    One engine, so one connection pool, per URL and process: the API opens the ledger on every
    request, and a pool per call would leave idle PostgreSQL connections until the collector ran."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            parsed = make_url(url)
            if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, future=True)
            _create_tables(engine)
            _ENGINES[url] = engine
    return Ledger(engine)


def _create_tables(engine: Engine) -> None:
    """Create the missing tables. Processes opening a new ledger at once (the API and a CLI run)
    take turns: otherwise both would create a table and one of them would fail."""
    if set(Base.metadata.tables) <= set(inspect(engine).get_table_names()):
        return
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the database's write lock, before create_all looks
        elif conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        Base.metadata.create_all(conn)
