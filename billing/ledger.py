"""The billing ledger in SQL (SQLAlchemy 2): runs, bills and a journal of postings in integer fen.

SQLite by default (``sqlite:///out/ledger.db``), PostgreSQL by URL
(``postgresql+psycopg://user@host/db``). The tables are in :mod:`billing.ledger_schema`; money is
integer fen and volumes integer litres there, so they are exact on every backend.

Lifecycle of a run: ``draft`` -> ``approved`` -> ``issued``, each step an event with its user and
time (a run's status is its latest event). A draft may be replaced by a rerun; an issued run is
never edited: corrections are ``adjustment`` postings that the next run of the unit carries as
adjustment lines. Nothing is updated or deleted: issuing posts each bill's total, paying posts a
payment, a correction of a payment or adjustment is a ``reversal`` posting (then a new one);
balances, paid/unpaid and pending adjustments are sums and queries over the postings.

Writers that check the ledger before changing it (record, approve, issue, pay, reverse) hold a
per-district lock for their transaction (:meth:`Ledger._lock_district`), so two processes doing
them at once queue instead of both passing the checks. Both backends behave the same: text cannot
hold NUL characters (PostgreSQL cannot store them), ids sort by code point, whatever the server's
locale. An existing ledger of schema version 1 (money as text) is migrated when it is opened
(:mod:`billing.ledger_migrate`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, false, func, insert, literal, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from billing.edits import Edit
from billing.ledger_migrate import prepare_schema
from billing.ledger_schema import (
    ACCOUNT_OF,
    FINE_PLACES,
    NEXT_STATUS,
    REVERSIBLE,
    STATUSES,
    BillRow,
    CarriedRow,
    EditRow,
    EventRow,
    LedgerError,
    LineRow,
    PostingRow,
    RunRow,
    fen,
    has_event,
    litres,
    m3,
    now,
    scaled,
    yuan,
)

SYSTEM_USER = "system"  # who records a run that no person started (cron, the demo)


class FourEyesError(LedgerError):
    """Whoever recorded a run tried to approve it: the API's and the workbench's 403."""


__all__ = ["STATUSES", "Adjustment", "BillRow", "Event", "FourEyesError", "Ledger", "LedgerError", "LineRow", "Posting", "RunRow", "open_ledger"]


@dataclass(frozen=True)
class Adjustment:
    """A correction of an issued bill (an ``adjustment`` posting) and the run that carries it, if any."""

    id: int
    unit_id: str
    corrects_bill_id: str
    amount: Decimal
    volume_m3: Decimal
    reason: str
    created_by: str
    created_at: str
    applied_run_id: str | None


@dataclass(frozen=True)
class Event:
    """One line of a run's audit trail: who did what, when."""

    action: str  # created | approved | issued | adjustment | paid | reversal
    user: str
    at: str
    note: str


@dataclass(frozen=True)
class Posting:
    id: int
    kind: str
    account: str
    unit_id: str
    bill_id: str | None
    run_id: str | None
    amount: Decimal
    volume_m3: Decimal
    who: str
    at: str
    reason: str
    ref_id: int | None


def _findable(key: str) -> bool:
    """False for a key that cannot be stored, so is in no table (PostgreSQL refuses even to compare with NUL)."""
    return "\x00" not in key


def _refuse_nul(**fields: str) -> None:
    for name, value in fields.items():
        if "\x00" in value:
            raise LedgerError(f"the {name} contains a NUL character, which the ledger cannot store")


def _not_reversed() -> Any:
    """SQL: no reversal posting cancels the PostingRow in the query."""
    reversal = aliased(PostingRow)
    return ~select(reversal.id).where(reversal.kind == "reversal", reversal.ref_id == PostingRow.id).exists()


def _non_draft_carrier() -> Any:
    """SQL: an approved or issued run carries the adjustment PostingRow in the query."""
    return select(CarriedRow.id).where(CarriedRow.adjustment_id == PostingRow.id, has_event(CarriedRow.run_id, "approved", "issued")).exists()


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
    def record_run(self, run: Any, user: str = SYSTEM_USER) -> str:
        """Store a computed run as a draft (idempotent: the same run id is stored once).

        The run id is a hash of every input, so recording the same inputs twice is a no-op.
        Returns ``"created"`` or ``"unchanged"``.
        """
        _refuse_nul(user=user)
        bills, lines = _bill_rows(run)  # before the lock: a value the ledger cannot keep is refused up front
        try:
            return self._record_run(run, user, bills, lines)
        except IntegrityError:
            # The same run recorded at the same moment by another process, in a district with no run
            # yet to lock (see _lock_district): its insert won.
            if self._has_run(run.run_id):
                return "unchanged"
            raise

    def _has_run(self, run_id: str) -> bool:
        with self.session() as s:
            return s.get(RunRow, run_id) is not None

    def _record_run(self, run: Any, user: str, bills: list[dict[str, Any]], lines: list[dict[str, Any]]) -> str:
        with self.session() as s:
            self._lock_district(s, run.district_id)
            if s.get(RunRow, run.run_id) is not None:
                return "unchanged"
            self._refuse_rebilling(s, run.district_id, run.t0_ms, run.t1_ms, run.run_id)
            s.add(RunRow(
                id=run.run_id, district_id=run.district_id, district_sha256=run.district_sha256,
                season_id=run.season_id, tariff_id=run.tariff_id, tariff_version=run.tariff_version,
                t0_ms=run.t0_ms, t1_ms=run.t1_ms, as_of_ms=run.as_of_ms,
                created_at=now(), manifest=json.dumps(run.manifest(), sort_keys=True, ensure_ascii=False),
            ))
            s.flush()
            # Bulk inserts (executemany): a district run has tens of thousands of bills and lines.
            if bills:
                s.execute(insert(BillRow), bills)
            if lines:
                s.execute(insert(LineRow), lines)
            # A draft that carried an adjustment is superseded by this run (a rerun): the newest
            # carrier carries it, and only that run may be approved with it (see _carrier_of).
            known = set(s.scalars(select(PostingRow.id).where(PostingRow.id.in_(run.adjustment_ids), PostingRow.kind == "adjustment")))
            for adj_id in run.adjustment_ids:
                if adj_id in known:
                    s.add(CarriedRow(run_id=run.run_id, adjustment_id=adj_id))
            s.add(EventRow(run_id=run.run_id, action="created", user=user, at=now(), note=""))
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
        """Move a run one step along draft -> approved -> issued; return the new status.

        Issuing posts each bill's total to its unit (``issue``) and takes the adjustments the run
        carries off the corrections account (``credit``): from then on they are on its bills.
        """
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
                self._refuse_own_approval(s, row, user)
                self._refuse_superseded_adjustments(s, row)
            if to_status == "approved" and any(b.blocked for b in row.bills):
                blocked = ", ".join(b.unit_id for b in row.bills if b.blocked)
                raise LedgerError(f"run {row.id[:12]} has blocked bills ({blocked}): fix the data gaps (VEE) and rerun before approving")
            at = now()
            s.add(EventRow(run_id=row.id, action=to_status, user=user, at=at, note=note))
            if to_status == "issued":
                self._post_issue(s, row, user, at)
            return to_status

    @staticmethod
    def _refuse_own_approval(s: Session, row: RunRow, user: str) -> None:
        """Four eyes: whoever recorded a run may not approve it (a run recorded by the system may be)."""
        creator = s.scalar(select(EventRow.user).where(EventRow.run_id == row.id, EventRow.action == "created").order_by(EventRow.id).limit(1))
        if creator == user and user != SYSTEM_USER:
            raise FourEyesError(f"run {row.id[:12]} was recorded by {user}: another approver must approve it (four eyes)")

    def creator(self, run_id: str) -> str | None:
        """Who recorded the run."""
        with self.session() as s:
            row = self._find_run(s, run_id)
            return s.scalar(select(EventRow.user).where(EventRow.run_id == row.id, EventRow.action == "created").order_by(EventRow.id).limit(1))

    def previous_run(self, run_id: str) -> RunRow | None:
        """The run of the same district and window recorded last before this one (by the ledger's own
        order of records: two runs may be recorded in the same second)."""
        with self.session() as s:
            row = self._find_run(s, run_id)
            recorded = (select(EventRow.run_id, func.min(EventRow.id).label("n")).where(EventRow.action == "created")
                        .group_by(EventRow.run_id).subquery())
            mine = s.scalar(select(recorded.c.n).where(recorded.c.run_id == row.id))
            if mine is None:
                return None
            previous = s.scalars(select(RunRow).join(recorded, recorded.c.run_id == RunRow.id)
                                 .where(RunRow.district_id == row.district_id, RunRow.t0_ms == row.t0_ms, RunRow.t1_ms == row.t1_ms,
                                        recorded.c.n < mine)
                                 .order_by(recorded.c.n.desc()).limit(1)).first()
            if previous is not None:
                s.expunge(previous)
            return previous

    @staticmethod
    def _post_issue(s: Session, row: RunRow, user: str, at: str) -> None:
        # one INSERT ... SELECT: a district run has tens of thousands of bills
        issue = _posting("issue", row.district_id, "", 0, user, at)
        columns = ("kind", "account", "district_id", "who", "at", "reason")
        s.execute(insert(PostingRow).from_select(
            [*columns, "unit_id", "bill_id", "run_id", "amount_fen", "volume_l"],
            select(*(literal(issue[c]) for c in columns), BillRow.unit_id, BillRow.id, BillRow.run_id, BillRow.total_fen, BillRow.volume_l)
            .where(BillRow.run_id == row.id).order_by(BillRow.unit_id),
        ))
        carried = list(s.scalars(select(PostingRow).join(CarriedRow, CarriedRow.adjustment_id == PostingRow.id).where(CarriedRow.run_id == row.id)))
        bill_of_unit = dict(s.execute(select(BillRow.unit_id, BillRow.id).where(BillRow.run_id == row.id, BillRow.unit_id.in_({a.unit_id for a in carried}))).all())
        credits = [_posting("credit", row.district_id, a.unit_id, -a.amount_fen, user, at, bill_id=bill_of_unit.get(a.unit_id),
                            run_id=row.id, reason=f"#{a.id} on this run's bill", ref_id=a.id) for a in carried]
        if credits:
            s.execute(insert(PostingRow), credits)

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
            s.execute(update(RunRow.__table__).where(false()).values(id=RunRow.__table__.c.id))
        else:
            s.execute(select(RunRow.id).where(RunRow.district_id == district_id).order_by(RunRow.id).with_for_update())

    @staticmethod
    def _carriers(s: Session, adj_ids: Iterable[int]) -> dict[int, str]:
        """The run that carries each adjustment: the approved or issued one, else the newest recorded."""
        rows = s.execute(
            select(CarriedRow.adjustment_id, CarriedRow.run_id, has_event(CarriedRow.run_id, "approved", "issued"))
            .where(CarriedRow.adjustment_id.in_(list(adj_ids))).order_by(CarriedRow.id)
        ).all()
        carrier: dict[int, str] = {}
        final: set[int] = set()
        for adj_id, run_id, beyond_draft in rows:
            if adj_id not in final:
                carrier[adj_id] = run_id
            if beyond_draft:
                final.add(adj_id)
        return carrier

    @classmethod
    def _refuse_superseded_adjustments(cls, s: Session, row: RunRow) -> None:
        """A run whose adjustments a newer run now carries would apply them twice if both were issued."""
        mine = list(s.scalars(select(CarriedRow.adjustment_id).where(CarriedRow.run_id == row.id).order_by(CarriedRow.adjustment_id)))
        for adj_id, carrier in cls._carriers(s, mine).items():
            if carrier != row.id:
                raise LedgerError(f"adjustment #{adj_id} is carried by the newer run {carrier[:12]}: approve that run instead of {row.id[:12]}")
        withdrawn = s.scalars(select(PostingRow.ref_id).where(PostingRow.kind == "reversal", PostingRow.ref_id.in_(mine))).first()
        if withdrawn is not None:
            raise LedgerError(f"adjustment #{withdrawn} carried by run {row.id[:12]} was reversed: rerun the window without it")

    @staticmethod
    def _refuse_rebilling(s: Session, district_id: str, t0_ms: int, t1_ms: int, run_id: str) -> None:
        """An issued run's window is billed for good: another run over any of it would bill the water twice."""
        clash = s.scalars(select(RunRow).where(
            RunRow.district_id == district_id, has_event(RunRow.id, "issued"), RunRow.id != run_id,
            RunRow.t0_ms < t1_ms, t0_ms < RunRow.t1_ms,
        ).limit(1)).first()
        if clash is not None:
            raise LedgerError(f"run {clash.id[:12]} is issued and already bills part of this window ({clash.t0_ms}..{clash.t1_ms} ms): "
                              "an issued run is never billed again; record corrections as adjustments on its bills")

    def events(self, run_id: str) -> list[Event]:
        """The run's audit trail: its lifecycle, then the payments, adjustments and reversals on its bills."""
        with self.session() as s:
            trail = [Event(e.action, e.user, e.at, e.note)
                     for e in s.scalars(select(EventRow).where(EventRow.run_id == run_id).order_by(EventRow.id))]
            postings = s.scalars(select(PostingRow).where(PostingRow.run_id == run_id, PostingRow.kind.in_(("payment", "adjustment", "reversal")))
                                 .order_by(PostingRow.id))
            return trail + [_event_of(p) for p in postings]

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
        """Record that an issued bill was paid in full (until then its unit gets no precise subsidy)."""
        _refuse_nul(user=user)
        with self.session() as s:
            bill = self._find_bill(s, bill_id)
            self._lock_district(s, bill.run.district_id)
            s.expire_all()  # read it again under the lock: another clerk may just have recorded the payment
            if bill.run.status != "issued":
                raise LedgerError(f"bill {bill_id} is in a {bill.run.status} run; only issued bills are paid")
            paid = self._payment(s, bill_id)
            if paid is not None:
                raise LedgerError(f"bill {bill_id} was already paid at {paid.at}")
            s.add(PostingRow(**_posting("payment", bill.run.district_id, bill.unit_id, -self._balance(s, PostingRow.bill_id == bill_id), user,
                                        now(), bill_id=bill_id, run_id=bill.run_id)))

    @staticmethod
    def _payment(s: Session, bill_id: str) -> PostingRow | None:
        return s.scalars(select(PostingRow).where(PostingRow.bill_id == bill_id, PostingRow.kind == "payment", _not_reversed())
                         .order_by(PostingRow.id.desc()).limit(1)).first()

    @staticmethod
    def _balance(s: Session, *where: Any, account: str = "receivable") -> int:
        return int(s.scalar(select(func.coalesce(func.sum(PostingRow.amount_fen), 0)).where(PostingRow.account == account, *where)) or 0)

    def bill_balance(self, bill_id: str) -> Decimal:
        """Yuan still owed on a bill: its issued total less what was paid (0 for a bill not issued)."""
        with self.session() as s:
            self._find_bill(s, bill_id)
            return yuan(self._balance(s, PostingRow.bill_id == bill_id))

    def paid_at(self, bill_id: str) -> str | None:
        """When the bill's payment (not reversed) was recorded, or None."""
        with self.session() as s:
            self._find_bill(s, bill_id)
            paid = self._payment(s, bill_id)
            return paid.at if paid else None

    def balance(self, unit_id: str) -> Decimal:
        """Yuan a unit owes on its issued bills, less payments (corrections count once they are on a bill)."""
        if not _findable(unit_id):
            return yuan(0)
        with self.session() as s:
            return yuan(self._balance(s, PostingRow.unit_id == unit_id))

    def corrections_total(self, unit_id: str) -> Decimal:
        """Yuan of a unit's adjustments not yet on an issued bill (the corrections account)."""
        if not _findable(unit_id):
            return yuan(0)
        with self.session() as s:
            return yuan(self._balance(s, PostingRow.unit_id == unit_id, account="corrections"))

    def postings(self, unit_id: str) -> list[Posting]:
        """A unit's journal, oldest first."""
        if not _findable(unit_id):
            return []
        with self.session() as s:
            rows = s.scalars(select(PostingRow).where(PostingRow.unit_id == unit_id).order_by(PostingRow.id))
            return [Posting(p.id, p.kind, p.account, p.unit_id, p.bill_id, p.run_id, yuan(p.amount_fen), m3(p.volume_l), p.who, p.at, p.reason, p.ref_id)
                    for p in rows]

    def unpaid_units(self, district_id: str, before_ms: int) -> set[str]:
        """Units with an issued bill still owing money, for a window that ended by ``before_ms`` (fees owed)."""
        with self.session() as s:
            rows = s.scalars(
                select(PostingRow.unit_id).join(RunRow, RunRow.id == PostingRow.run_id)
                .where(PostingRow.account == "receivable", PostingRow.district_id == district_id, RunRow.t1_ms <= before_ms)
                .group_by(PostingRow.bill_id, PostingRow.unit_id).having(func.sum(PostingRow.amount_fen) != 0)
            ).all()
            return set(rows)

    # --- adjustments --------------------------------------------------------------------------
    def add_adjustment(self, bill_id: str, amount: Decimal, reason: str, user: str, volume_m3: Decimal = Decimal(0)) -> int:
        """Record a correction of an issued bill; it appears as a line on the unit's next run."""
        if not reason.strip():
            raise LedgerError("an adjustment needs a reason")
        _check_money(amount)
        volume_l = litres(volume_m3, "adjustment volume")
        _refuse_nul(reason=reason, user=user)
        with self.session() as s:
            bill = self._find_bill(s, bill_id)
            if bill.run.status != "issued":
                raise LedgerError(f"bill {bill_id} is in a {bill.run.status} run: rerun the draft instead of adjusting it")
            row = PostingRow(**_posting("adjustment", bill.run.district_id, bill.unit_id, fen(amount), user, now(), bill_id=bill_id,
                                        run_id=bill.run_id, volume_l=volume_l, reason=reason))
            s.add(row)
            s.flush()
            return row.id

    def pending_adjustments(self, district_id: str) -> list[Adjustment]:
        """Adjustments not reversed and carried by no approved or issued run (a draft may carry them)."""
        with self.session() as s:
            return self._adjustments(s, PostingRow.district_id == district_id, _not_reversed(), ~_non_draft_carrier())

    def adjustment(self, adj_id: int) -> Adjustment:
        """One adjustment, with the run that carries it (``applied_run_id``), whatever its state."""
        with self.session() as s:
            found = self._adjustments(s, PostingRow.id == adj_id)
            if not found:
                raise LedgerError(f"no adjustment #{adj_id} in the ledger")
            return found[0]

    def _adjustments(self, s: Session, *where: Any) -> list[Adjustment]:
        rows = list(s.scalars(select(PostingRow).where(PostingRow.kind == "adjustment", *where).order_by(PostingRow.id)))
        carriers = self._carriers(s, [r.id for r in rows])
        return [Adjustment(r.id, r.unit_id, r.bill_id or "", yuan(r.amount_fen), m3(r.volume_l), r.reason, r.who, r.at, carriers.get(r.id))
                for r in rows]

    def reverse(self, posting_id: int, user: str, reason: str) -> int:
        """Cancel a payment, or an adjustment no approved or issued run carries, by a reversal posting.

        The correction of a wrong entry is its reversal and then the right entry (pay again, or a
        new adjustment). Returns the reversal's id.
        """
        if not reason.strip():
            raise LedgerError("a reversal needs a reason")
        _refuse_nul(reason=reason, user=user)
        with self.session() as s:
            target = s.get(PostingRow, posting_id)
            if target is None:
                raise LedgerError(f"no posting #{posting_id} in the ledger")
            self._lock_district(s, target.district_id)
            s.expire_all()
            if target.kind not in REVERSIBLE:
                raise LedgerError(f"posting #{posting_id} ({target.kind}) cannot be reversed: only {' and '.join(REVERSIBLE)} postings are; "
                                  "an issued bill is corrected by an adjustment")
            done = s.scalars(select(PostingRow.id).where(PostingRow.kind == "reversal", PostingRow.ref_id == posting_id)).first()
            if done is not None:
                raise LedgerError(f"posting #{posting_id} was already reversed by #{done}")
            carrier = self._carriers(s, [posting_id]).get(posting_id)
            if target.kind == "adjustment" and carrier is not None and self._find_run(s, carrier).status != "draft":
                raise LedgerError(f"adjustment #{posting_id} is on run {carrier[:12]}, which is {self._find_run(s, carrier).status}: "
                                  "record a new adjustment of the opposite amount instead")
            row = PostingRow(**_posting("reversal", target.district_id, target.unit_id, -target.amount_fen, user, now(), bill_id=target.bill_id,
                                        run_id=target.run_id, volume_l=-target.volume_l, reason=reason, ref_id=target.id, account=target.account))
            s.add(row)
            s.flush()
            return row.id

    # --- manual edits (VEE) ---------------------------------------------------------------------
    def add_edit(self, district_id: str, point: str, start_ms: int, end_ms: int, volume_m3: float, user: str, reason: str) -> int:
        """Record a manual volume edit; later runs covering the stretch use it instead of the readings."""
        if end_ms <= start_ms:
            raise LedgerError("an edit's end must be after its start")
        volume_l = litres(repr(float(volume_m3)), "edited volume")
        if volume_l < 0:
            raise LedgerError("an edited volume cannot be negative")
        if not reason.strip() or not user.strip():
            raise LedgerError("an edit needs a named user and a reason")
        _refuse_nul(point=point, user=user, reason=reason)
        with self.session() as s:
            row = EditRow(district_id=district_id, point=point, start_ms=start_ms, end_ms=end_ms, volume_l=volume_l,
                          user=user, reason=reason, created_at=now())
            s.add(row)
            s.flush()
            return row.id

    def edits(self, district_id: str) -> list[Edit]:
        with self.session() as s:
            rows = s.scalars(select(EditRow).where(EditRow.district_id == district_id).order_by(EditRow.id)).all()
            return [Edit(r.id, r.point, r.start_ms, r.end_ms, float(m3(r.volume_l)), r.user, r.reason) for r in rows]

    # --- water-use ledger (用水台账) ------------------------------------------------------------
    def water_use(self, unit_id: str) -> list[dict[str, Any]]:
        """Per issued bill of a unit (its ``issue`` postings): window, volume, quota, amount."""
        if not _findable(unit_id):
            return []
        with self.session() as s:
            rows = s.execute(
                select(RunRow.id, RunRow.season_id, RunRow.t0_ms, RunRow.t1_ms, PostingRow.bill_id, PostingRow.volume_l, BillRow.quota_l,
                       PostingRow.amount_fen)
                .join(PostingRow, PostingRow.run_id == RunRow.id).join(BillRow, BillRow.id == PostingRow.bill_id)
                .where(PostingRow.unit_id == unit_id, PostingRow.kind == "issue").order_by(RunRow.t0_ms)
            ).all()
            return [
                {"run_id": run_id, "season": season, "t0_ms": t0, "t1_ms": t1, "bill_id": bill_id,
                 "volume_m3": str(m3(volume)), "quota_m3": str(m3(quota)), "total": str(yuan(amount))}
                for run_id, season, t0, t1, bill_id, volume, quota, amount in rows
            ]


def _posting(kind: str, district_id: str, unit_id: str, amount_fen: int, who: str, at: str, *, bill_id: str | None = None,
             run_id: str | None = None, volume_l: int = 0, reason: str = "", ref_id: int | None = None, account: str | None = None) -> dict[str, Any]:
    return {"kind": kind, "account": account or ACCOUNT_OF[kind], "district_id": district_id, "unit_id": unit_id, "bill_id": bill_id,
            "run_id": run_id, "amount_fen": amount_fen, "volume_l": volume_l, "who": who, "at": at, "reason": reason, "ref_id": ref_id}


def _event_of(p: PostingRow) -> Event:
    if p.kind == "payment":
        return Event("paid", p.who, p.at, p.bill_id or "")
    if p.kind == "adjustment":
        return Event("adjustment", p.who, p.at, f"#{p.id} {yuan(p.amount_fen)} on {p.bill_id}: {p.reason}")
    return Event(p.kind, p.who, p.at, f"#{p.id} reverses #{p.ref_id}: {p.reason}")


def _bill_rows(run: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A run's bills and lines as rows of integers (fen, litres, 10^-9 yuan); LedgerError names what cannot be kept."""
    bills, lines = [], []
    for b in run.bills:
        bills.append({"id": b.bill_id, "run_id": run.run_id, "unit_id": b.unit_id, "volume_l": litres(b.volume_m3, f"bill {b.bill_id} volume"),
                      "quota_l": litres(b.quota_m3, f"bill {b.bill_id} quota"), "total_fen": fen(b.total, f"bill {b.bill_id} total"),
                      "blocked": int(b.blocked), "document": b.to_json()})
        for n, line in enumerate(b.lines, start=1):
            where = f"line {b.line_id(n)}"
            lines.append({"id": b.line_id(n), "bill_id": b.bill_id, "n": n, "kind": line.kind, "crop_class": line.crop_class,
                          "component": line.component, "band": line.band, "volume_e9": scaled(line.volume_m3, FINE_PLACES, f"{where} volume"),
                          "rate_e9": scaled(line.rate, FINE_PLACES, f"{where} rate"), "amount_fen": fen(line.amount, f"{where} amount"),
                          "note": line.note})
    return bills, lines


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
    """Open the ledger at a SQLAlchemy URL: create its tables, or migrate an older schema (a SQLite file's folder is created).

    One engine, so one connection pool, per URL and process: the API opens the ledger on every
    request, and a pool per call would leave idle PostgreSQL connections until the collector ran."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            parsed = make_url(url)
            if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, future=True)
            try:
                prepare_schema(engine)
            except Exception:
                engine.dispose()
                raise
            _ENGINES[url] = engine
    return Ledger(engine)
