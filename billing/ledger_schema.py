"""The ledger's tables (schema version 2) and its exact units: money in integer fen, volumes in litres.

Facts written once and never changed: runs, their bills and lines, the adjustments a run
carries, manual volume edits, lifecycle events (created, approved, issued) and the journal of
postings. Nothing is updated in place: a run's status is the latest lifecycle event it has, a
bill's balance the sum of its postings, an adjustment's carrying run the newest run that carries
it (or the approved or issued one). See docs/billing.md "The ledger".

Why integers: fen (0.01 yuan) and litres (0.001 m3) are what the tariff rounds money and volumes
to, so integers hold every amount exactly on every backend (SQLite has no exact decimal type; its
NUMERIC is a float), add up exactly in SQL ``sum()``, and compare as numbers, never as text.
Bills are to the litre; a line's volume is a share of a quota band (quota x a fraction, finer
than the litre) and its rate finer than the fen (yuan per m3): both are integers of 10^-9.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Exists,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    exists,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column, relationship

from canalflow.errors import CanalflowError

SCHEMA_VERSION = 2
STATUSES = ("draft", "approved", "issued")
NEXT_STATUS = {"draft": "approved", "approved": "issued"}
LIFECYCLE = ("created", "approved", "issued")  # the actions of billing_events

# Posting kinds and the account each books to. ``receivable``: what a unit owes on its issued bills.
# ``corrections``: adjustments of issued bills not yet on a bill. A reversal books to the account
# of the posting it reverses.
ACCOUNT_OF = {"issue": "receivable", "payment": "receivable", "adjustment": "corrections", "credit": "corrections"}
REVERSIBLE = ("payment", "adjustment")  # an issue is final; a credit goes with its run's issue

FEN_PLACES, LITRE_PLACES, FINE_PLACES = 2, 3, 9  # fen, litres, and 10^-9 (line volumes and rates)


class LedgerError(CanalflowError, ValueError):
    """A ledger operation that the lifecycle does not allow (with what to do instead)."""


def _code_point_order(length: int) -> String:
    """A string column that sorts by code point on every backend, as SQLite does.

    A PostgreSQL database sorts by its locale (en_US.UTF-8 in the postgres image): 'v02' would
    come between 'V01' and 'V03', and '_' before '-'. Collation "C" is code point order.
    """
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def scaled(value: Decimal | str, places: int, what: str) -> int:
    """``value`` in units of 10^-places as an exact integer, or a LedgerError naming ``what``."""
    number = Decimal(value)
    if not number.is_finite():
        raise LedgerError(f"{what} {value} is not a number")
    units = number.scaleb(places)
    if units != units.to_integral_value():
        raise LedgerError(f"{what} {value} has fractions of {_FINEST.get(places, f'10^-{places}')}")
    return int(units)


_FINEST = {FEN_PLACES: "a fen: money is kept to 0.01 yuan", LITRE_PLACES: "a litre: volumes are kept to 0.001 m3",
           FINE_PLACES: "10^-9: line volumes and rates are kept to 10^-9 m3 and yuan per m3"}


def now() -> str:
    """The time a row is written: UTC, ISO 8601 to the second (as every ``at`` and ``created_at``)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def unscaled(units: int, places: int) -> Decimal:
    """The inverse of :func:`scaled`: 1234 fen -> Decimal('12.34')."""
    return Decimal(units).scaleb(-places)


def fen(amount: Decimal | str, what: str = "amount") -> int:
    return scaled(amount, FEN_PLACES, what)


def yuan(fen_: int) -> Decimal:
    return unscaled(fen_, FEN_PLACES)


def litres(volume_m3: Decimal | str, what: str = "volume") -> int:
    return scaled(volume_m3, LITRE_PLACES, what)


def m3(litres_: int) -> Decimal:
    return unscaled(litres_, LITRE_PLACES)


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
    created_at: Mapped[str] = mapped_column(String(40))
    manifest: Mapped[str] = mapped_column(Text)
    bills: Mapped[list[BillRow]] = relationship(back_populates="run", cascade="all, delete-orphan", order_by="BillRow.unit_id")


class BillRow(Base):
    __tablename__ = "bills"
    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("billing_runs.id"), index=True)
    unit_id: Mapped[str] = mapped_column(_code_point_order(64), index=True)
    volume_l: Mapped[int] = mapped_column(BigInteger)
    quota_l: Mapped[int] = mapped_column(BigInteger)
    total_fen: Mapped[int] = mapped_column(BigInteger)
    blocked: Mapped[int] = mapped_column(Integer, default=0)
    document: Mapped[str] = mapped_column(Text)  # the bill's canonical JSON, as issued (never read for money)
    run: Mapped[RunRow] = relationship(back_populates="bills")
    lines: Mapped[list[LineRow]] = relationship(back_populates="bill", cascade="all, delete-orphan", order_by="LineRow.n")

    @property
    def total(self) -> Decimal:
        return yuan(self.total_fen)

    @property
    def volume_m3(self) -> Decimal:
        return m3(self.volume_l)

    @property
    def quota_m3(self) -> Decimal:
        return m3(self.quota_l)


class LineRow(Base):
    __tablename__ = "bill_lines"
    id: Mapped[str] = mapped_column(String(112), primary_key=True)
    bill_id: Mapped[str] = mapped_column(ForeignKey("bills.id"), index=True)
    n: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    crop_class: Mapped[str] = mapped_column(String(16))
    component: Mapped[str] = mapped_column(String(16))
    band: Mapped[int | None] = mapped_column(Integer, nullable=True)
    volume_e9: Mapped[int] = mapped_column(BigInteger)  # m3 x 10^9
    rate_e9: Mapped[int] = mapped_column(BigInteger)  # yuan per m3 x 10^9
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(Text, default="")
    bill: Mapped[BillRow] = relationship(back_populates="lines")


class PostingRow(Base):
    """One entry of the journal: money in fen booked to a unit's account, by whom, when, why.

    ``issue``: an issued bill's total (bill, run). ``payment``: minus what was paid on a bill.
    ``adjustment``: a clerk's correction of an issued bill (``bill_id`` the bill it corrects),
    waiting for the unit's next issued bill. ``credit``: that correction taken off the corrections
    account when the run carrying it is issued (``bill_id`` the carrying bill, ``ref_id`` the
    adjustment); the carrying bill's issue includes it. ``reversal``: cancels the posting
    ``ref_id`` (same account, bill and run, opposite amount).
    """

    __tablename__ = "ledger_postings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    account: Mapped[str] = mapped_column(String(16))
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    unit_id: Mapped[str] = mapped_column(_code_point_order(64), index=True)
    bill_id: Mapped[str | None] = mapped_column(ForeignKey("bills.id"), nullable=True, index=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("billing_runs.id"), nullable=True, index=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    volume_l: Mapped[int] = mapped_column(BigInteger, default=0)
    who: Mapped[str] = mapped_column(Text)  # a user name: free text, like reason
    at: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text, default="")
    ref_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_postings.id"), nullable=True, index=True)


class CarriedRow(Base):
    """An adjustment that a recorded run carries as a line (its id orders the carriers: newest last)."""

    __tablename__ = "run_adjustments"
    __table_args__ = (UniqueConstraint("run_id", "adjustment_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("billing_runs.id"), index=True)
    adjustment_id: Mapped[int] = mapped_column(ForeignKey("ledger_postings.id"), index=True)


class EditRow(Base):
    """A manual edit (VEE): a point's volume over a stretch of time replaced, by a named user, with a reason."""

    __tablename__ = "volume_edits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    district_id: Mapped[str] = mapped_column(String(64), index=True)
    point: Mapped[str] = mapped_column(String(64))
    start_ms: Mapped[int] = mapped_column(BigInteger)
    end_ms: Mapped[int] = mapped_column(BigInteger)
    volume_l: Mapped[int] = mapped_column(BigInteger)
    user: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[str] = mapped_column(String(40))


class EventRow(Base):
    """A run's lifecycle: who recorded, approved and issued it, when (payments and adjustments are postings)."""

    __tablename__ = "billing_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32))
    user: Mapped[str] = mapped_column(Text)
    at: Mapped[str] = mapped_column(String(40))
    note: Mapped[str] = mapped_column(Text, default="")


class SchemaRow(Base):
    """One row per schema version the ledger reached (the highest is its version)."""

    __tablename__ = "ledger_schema"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    applied_at: Mapped[str] = mapped_column(String(40))
    note: Mapped[str] = mapped_column(Text, default="")


def has_event(run_id: Any, *actions: str) -> Exists:
    """SQL: the run (a column or value) has a lifecycle event among ``actions``."""
    return exists(select(EventRow.id).where(EventRow.run_id == run_id, EventRow.action.in_(actions)))


# A run's status is derived from its events, in SQL, so queries can filter on it.
RunRow.status = column_property(case(
    (has_event(RunRow.id, "issued"), "issued"), (has_event(RunRow.id, "approved"), "approved"), else_="draft",
))
