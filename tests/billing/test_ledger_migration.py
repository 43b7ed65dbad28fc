"""A ledger made by the version 1 code (commit 9916721, money as text, state updated in place)
migrates when it is opened and reports what the old code reported; on SQLite and PostgreSQL.

The fixture ``data/ledger_v1.db`` and what the old code said about it, ``data/ledger_v1.expected.json``,
were made by ``data/make_ledger_v1.py`` (its docstring says how to make them again). On
PostgreSQL the test first copies the fixture's version 1 tables into the fresh database.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import BigInteger, MetaData, String, create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from billing.ledger import LedgerError, open_ledger
from billing.ledger_migrate import prepare_schema, schema_version
from billing.ledger_schema import SCHEMA_VERSION, PostingRow, SchemaRow

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "ledger_v1.db"
EXPECTED: dict[str, Any] = json.loads((DATA / "ledger_v1.expected.json").read_text(encoding="utf-8"))
EDIT_ROUNDED = {2: 12.346}  # the v1 edit of 12.3456789 m3, kept to the litre


def load_v1(url: str) -> None:
    """Put the version 1 fixture at ``url``, as the old code left it."""
    if url.startswith("sqlite"):
        shutil.copy(FIXTURE, make_url(url).database)
        return
    source, target = create_engine(f"sqlite:///{FIXTURE}", poolclass=NullPool), create_engine(url, poolclass=NullPool)
    tables = MetaData()
    tables.reflect(source)
    with source.connect() as src, target.begin() as dst:
        tables.create_all(dst)
        for table in tables.sorted_tables:
            rows = [dict(r._mapping) for r in src.execute(table.select())]
            if rows:
                dst.execute(table.insert(), rows)


def contents(url: str) -> dict[str, Any]:
    """Every table's columns (name, type) and rows, for comparing a database before and after."""
    engine = create_engine(url, poolclass=NullPool)
    tables = MetaData()
    tables.reflect(engine)
    with engine.connect() as conn:
        return {t.name: ([(c.name, str(c.type)) for c in t.columns], sorted(repr(tuple(r)) for r in conn.execute(t.select())))
                for t in tables.sorted_tables}


@pytest.fixture
def migrated(ledger_url: str) -> str:
    load_v1(ledger_url)
    open_ledger(ledger_url)
    return ledger_url


def test_the_migrated_ledger_reports_what_version_1_reported(migrated: str) -> None:
    ledger = open_ledger(migrated)
    district = EXPECTED["district"]
    assert {r.id: r.status for r in ledger.runs(limit=100)} == {r["id"]: r["status"] for r in EXPECTED["runs"]}
    for run_id, events in EXPECTED["events"].items():  # the same who, what, when (lifecycle first, then payments and adjustments)
        assert sorted([e.action, e.user, e.at, e.note] for e in ledger.events(run_id)) == sorted(events), run_id
    for bill_id, old in EXPECTED["bills"].items():
        answer = ledger.bill(bill_id)
        document = json.dumps({k: v for k, v in answer.items() if k != "status"}, sort_keys=True, ensure_ascii=False)
        assert hashlib.sha256(document.encode()).hexdigest() == old["sha256"], bill_id
        assert (answer["status"], answer["total"], [ln["amount"] for ln in answer["lines"]]) == (old["status"], old["total"], old["lines"])
        assert ledger.paid_at(bill_id) == EXPECTED["paid_at"][bill_id]
        owed = Decimal(0) if old["status"] != "issued" or EXPECTED["paid_at"][bill_id] else Decimal(old["total"])
        assert ledger.bill_balance(bill_id) == owed, bill_id
    owed_by_unit: dict[str, Decimal] = defaultdict(Decimal)
    for bill_id, old in EXPECTED["bills"].items():
        owed_by_unit[old["unit"]] += ledger.bill_balance(bill_id)
    assert {u: ledger.balance(u) for u in owed_by_unit} == owed_by_unit
    assert sum(owed_by_unit.values()) > 0 and any(v == 0 for v in owed_by_unit.values())  # paid and unpaid bills both there
    assert sorted(ledger.unpaid_units(district, 2**62)) == EXPECTED["unpaid_units"]
    pending = [{"id": a.id, "unit": a.unit_id, "bill_id": a.corrects_bill_id, "amount": str(a.amount), "volume_m3": a.volume_m3,
                "reason": a.reason, "by": a.created_by, "at": a.created_at} for a in ledger.pending_adjustments(district)]
    assert pending == [p | {"volume_m3": Decimal(p["volume_m3"])} for p in EXPECTED["pending"]]
    assert {str(a["id"]): ledger.adjustment(a["id"]).applied_run_id for a in EXPECTED["adjustments"]} == EXPECTED["applied_run_id"]
    for unit, entries in EXPECTED["water_use"].items():
        assert [_exact(w) for w in ledger.water_use(unit)] == [_exact(w) for w in entries], unit
    edits = [[e.id, e.point, e.start_ms, e.end_ms, e.volume_m3, e.user, e.reason] for e in ledger.edits(district)]
    assert edits == [[*e[:4], EDIT_ROUNDED.get(e[0], e[4]), *e[5:]] for e in EXPECTED["edits"]]


def _exact(entry: dict[str, Any]) -> dict[str, Any]:
    """A water-use entry with its decimals as numbers (version 1 gave '90000', version 2 '90000.000')."""
    return entry | {k: Decimal(entry[k]) for k in ("volume_m3", "quota_m3", "total")}


def test_corrections_are_on_the_corrections_account_until_a_run_carrying_them_is_issued(migrated: str) -> None:
    ledger = open_ledger(migrated)
    issued = {r["id"] for r in EXPECTED["runs"] if r["status"] == "issued"}
    waiting: dict[str, Decimal] = defaultdict(Decimal)
    for a in EXPECTED["adjustments"]:
        if EXPECTED["applied_run_id"][str(a["id"])] not in issued:
            waiting[a["unit"]] += Decimal(a["amount"])
    assert {u: ledger.corrections_total(u) for u in ("V01", "V03", "V04", "V05")} == {"V01": 0, **waiting}
    kinds = [p.kind for p in ledger.postings("V01")]
    assert kinds.count("issue") == 2 and kinds.count("payment") == 2 and kinds.count("adjustment") == 1 and kinds.count("credit") == 1


def test_the_migrated_schema_is_the_schema_of_a_new_ledger_with_no_money_as_text(migrated: str, tmp_path: Path) -> None:
    fresh = f"sqlite:///{tmp_path}/fresh.db"
    open_ledger(fresh)
    migrated_tables, fresh_tables = contents(migrated), contents(fresh)
    assert set(migrated_tables) == set(fresh_tables)
    assert {t: [c for c, _ in cols] for t, (cols, _) in migrated_tables.items()} == {t: [c for c, _ in cols] for t, (cols, _) in fresh_tables.items()}
    engine = create_engine(migrated, poolclass=NullPool)
    for table in inspect(engine).get_table_names():
        for column in inspect(engine).get_columns(table):
            name, kind = column["name"], column["type"]
            if name.endswith(("_fen", "_l", "_e9")):
                assert isinstance(kind, BigInteger), f"{table}.{name} is {kind}"
            assert not (isinstance(kind, String) and name in ("amount", "total", "volume_m3", "quota_m3", "rate", "status", "paid_at", "applied_run_id")), f"{table}.{name}"
    with engine.connect() as conn:
        [(version, note)] = conn.execute(select(SchemaRow.version, SchemaRow.note)).all()
        assert version == SCHEMA_VERSION == schema_version(conn) and note.startswith("migrated from version 1: 6 runs, 84 bills, 4 adjustments")
        assert "#2 12.3456789 -> 12.346 m3" in note


def test_opening_a_migrated_ledger_again_changes_nothing(migrated: str) -> None:
    before = contents(migrated)
    prepare_schema(create_engine(migrated, poolclass=NullPool))  # what another process opening it does
    assert contents(migrated) == before


def test_the_migrated_ledger_goes_on_with_the_lifecycle(migrated: str) -> None:
    ledger = open_ledger(migrated)
    status = {r["id"]: r["status"] for r in EXPECTED["runs"]}
    approved = next(run_id for run_id, s in status.items() if s == "approved")
    newer = EXPECTED["applied_run_id"]["2"]  # the rerun of day 3, which carries adjustment #2
    older = next(r["id"] for r in EXPECTED["runs"] if r["status"] == "draft" and r["id"] != newer and r["t0_ms"] == _run(newer)["t0_ms"])
    blocked = next(r["id"] for r in EXPECTED["runs"] if r["status"] == "draft" and r["id"] not in (older, newer))
    with pytest.raises(LedgerError, match="carried by the newer run"):
        ledger.advance(older, "approved", "wang")
    with pytest.raises(LedgerError, match="blocked bills"):
        ledger.advance(blocked, "approved", "wang")
    issued_before = next(r["id"] for r in EXPECTED["runs"] if r["status"] == "issued")
    with pytest.raises(LedgerError, match="already bills part of this window"):
        ledger.record_run(_Rerun(_run(issued_before)))
    ledger.advance(approved, "issued", "wang")  # it carries adjustment #3 of V04
    v04 = f"{approved[:12]}-V04"
    assert ledger.corrections_total("V04") == 0 and any(ln["amount"] == "-120.00" for ln in ledger.bill(v04)["lines"])
    assert ledger.bill_balance(v04) == Decimal(ledger.bill(v04)["total"])
    owed = ledger.balance("V04")
    ledger.mark_paid(v04, "li")
    assert ledger.bill_balance(v04) == 0 and ledger.balance("V04") == owed - Decimal(ledger.bill(v04)["total"])
    for step in ("approved", "issued"):
        ledger.advance(newer, step, "wang")
    assert ledger.corrections_total("V03") == 0 and ledger.pending_adjustments(EXPECTED["district"])[0].id == 4
    # ids go on after the migrated ones (PostgreSQL's sequences were moved past them)
    with ledger.session() as s:
        last = s.scalar(select(func.max(PostingRow.id)))
    assert ledger.add_adjustment(v04, Decimal("1.00"), "late fee", "li") == last + 1
    assert ledger.add_edit(EXPECTED["district"], "V01-IN", 1, 2, 1.0, "li", "gate log") == 3


def _run(run_id: str) -> dict[str, Any]:
    return next(r for r in EXPECTED["runs"] if r["id"] == run_id)


class _Rerun:
    """Just enough of a BillingRun for record_run: a new run over an issued run's window."""

    def __init__(self, run: dict[str, Any]) -> None:
        self.run_id, self.district_id, self.district_sha256 = "f" * 64, EXPECTED["district"], "0" * 64
        self.season_id, self.tariff_id, self.tariff_version, self.as_of_ms = "2026-spring", "t", 1, run["t1_ms"]
        self.t0_ms, self.t1_ms = run["t0_ms"], run["t1_ms"]
        self.bills, self.adjustment_ids = (), ()

    def manifest(self) -> dict[str, Any]:
        return {"run_id": self.run_id}


def test_a_migration_that_cannot_convert_a_value_leaves_the_old_ledger_as_it_was(ledger_url: str) -> None:
    load_v1(ledger_url)
    engine = create_engine(ledger_url, poolclass=NullPool)
    bill = next(iter(EXPECTED["bills"]))
    with engine.begin() as conn:
        conn.execute(text("UPDATE bills SET total = '1.001' WHERE id = :id"), {"id": bill})
    before = contents(ledger_url)
    with pytest.raises(LedgerError, match=rf"bills row '{bill}' total 1.001 has fractions of a fen"):
        open_ledger(ledger_url)
    assert contents(ledger_url) == before
    with engine.connect() as conn:
        assert schema_version(conn) == 1


def test_a_ledger_of_a_newer_schema_is_refused(ledger_url: str) -> None:
    open_ledger(ledger_url)
    with create_engine(ledger_url, poolclass=NullPool).begin() as conn:
        conn.execute(SchemaRow.__table__.insert(), {"version": SCHEMA_VERSION + 1, "applied_at": "2030-01-01T00:00:00+00:00", "note": ""})
    with pytest.raises(LedgerError, match="newer than this canalflow's"):
        prepare_schema(create_engine(ledger_url, poolclass=NullPool))


def test_any_command_opening_a_version_1_ledger_migrates_it(ledger_url: str) -> None:
    load_v1(ledger_url)
    listed = subprocess.run([sys.executable, "-m", "canalflow.cli", "billing", "ledger", "runs", "--ledger", ledger_url],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert sorted(line.split()[:2] for line in listed.stdout.splitlines()) == sorted([r["id"][:12], r["status"]] for r in EXPECTED["runs"])
    with create_engine(ledger_url, poolclass=NullPool).connect() as conn:
        assert schema_version(conn) == SCHEMA_VERSION


def test_processes_opening_a_version_1_ledger_at_once_migrate_it_once(ledger_url: str) -> None:
    load_v1(ledger_url)
    barrier, errors = threading.Barrier(3), []

    def open_it() -> None:
        engine = create_engine(ledger_url, poolclass=NullPool)  # its own connections, as another process has
        barrier.wait(20)
        try:
            prepare_schema(engine)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with create_engine(ledger_url, poolclass=NullPool).connect() as conn:
        assert conn.execute(select(SchemaRow.version)).scalars().all() == [SCHEMA_VERSION]
    assert [a.id for a in open_ledger(ledger_url).pending_adjustments(EXPECTED["district"])] == [p["id"] for p in EXPECTED["pending"]]
