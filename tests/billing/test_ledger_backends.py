"""The ledger on both backends we deploy, SQLite and a real PostgreSQL: exact decimals, 64-bit ms
timestamps, code-point order of ids, text PostgreSQL cannot store, and writers racing each other.

Every test takes ``ledger_url`` (tests/billing/conftest.py), so runs once per backend. The races
are made deterministic: one writer is held just before its COMMIT while a second one runs until it
waits for a lock (or is about to commit too), then the first commits; at most one may pass the checks.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from billing_synth import DEMO, fixed_run, issued
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.pool import NullPool

from billing.api import ApiConfig, Principal, ServiceConfig, create_app
from billing.bills import PendingAdjustment
from billing.ledger import BillRow, Ledger, LedgerError, LineRow, RunRow, open_ledger
from billing.ledger_schema import m3, unscaled, yuan
from canalflow.credentials import hash_api_token
from canalflow.district import District, load_district

DAY_MS = 86_400_000
WAIT = 20.0  # seconds; generous for a loaded 2-core machine
LAST_MS_OF_9999 = 253_402_300_799_999  # far beyond 32 bits: the ledger's ms columns must be 64-bit


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


def test_money_and_volumes_round_trip_exactly(ledger_url: str, demo: District) -> None:
    ledger = open_ledger(ledger_url)
    first = issued(ledger, fixed_run(demo, 0, as_of_ms=LAST_MS_OF_9999))
    for bill in first.bills:
        assert ledger.bill(bill.bill_id) == bill.to_dict() | {"status": "issued"}
    with ledger.session() as s:
        stored = {b.unit_id: (m3(b.volume_l), m3(b.quota_l), yuan(b.total_fen)) for b in s.scalars(select(BillRow).where(BillRow.run_id == first.run_id))}
        lines = {ln.id: (unscaled(ln.volume_e9, 9), unscaled(ln.rate_e9, 9), yuan(ln.amount_fen))
                 for ln in s.scalars(select(LineRow).join(BillRow).where(BillRow.run_id == first.run_id))}
    assert stored == {b.unit_id: (b.volume_m3, b.quota_m3, b.total) for b in first.bills}
    assert lines == {b.line_id(n): (ln.volume_m3, ln.rate, ln.amount) for b in first.bills for n, ln in enumerate(b.lines, 1)}
    assert any(rate.as_tuple().exponent < -2 for _, rate, _ in lines.values())  # rates finer than the fen survive
    # adjustments: the smallest credit, and the largest amount the API accepts (14 digits)
    amounts = [Decimal("-0.01"), Decimal("123456789012.34")]
    ids = [ledger.add_adjustment(first.bill_of("V01").bill_id, a, "meter over-read", "li", volume_m3=Decimal("0.001")) for a in amounts]
    pending = ledger.pending_adjustments(demo.id)
    assert [(a.id, a.amount, a.volume_m3) for a in pending] == [(i, a, Decimal("0.001")) for i, a in zip(ids, amounts, strict=True)]
    assert [str(a.amount) for a in pending] == ["-0.01", "123456789012.34"]
    assert ledger.corrections_total("V01") == sum(amounts)
    carried = [PendingAdjustment(a.id, a.unit_id, a.amount, a.reason, a.corrects_bill_id) for a in pending]
    second = fixed_run(demo, 1, adjustments=carried)
    ledger.record_run(second)
    on_bill = [ln["amount"] for ln in ledger.bill(second.bill_of("V01").bill_id)["lines"] if ln["kind"] == "adjustment"]
    assert on_bill == ["-0.01", "123456789012.34"]
    water = ledger.water_use("V01")
    assert [(w["t0_ms"], w["t1_ms"], w["total"]) for w in water] == [(first.t0_ms, first.t1_ms, str(first.bill_of("V01").total))]


def test_millisecond_timestamps_are_64_bit(ledger_url: str, demo: District) -> None:
    ledger = open_ledger(ledger_url)
    run = fixed_run(demo, 0, as_of_ms=LAST_MS_OF_9999)
    ledger.record_run(run)
    row = ledger.run(run.run_id)
    assert (row.t0_ms, row.t1_ms, row.as_of_ms) == (run.t0_ms, run.t1_ms, LAST_MS_OF_9999)
    edit_id = ledger.add_edit(demo.id, "V01-IN", LAST_MS_OF_9999 - DAY_MS, LAST_MS_OF_9999, 0.1, "li", "gate log")
    [edit] = ledger.edits(demo.id)
    assert (edit.id, edit.start_ms, edit.end_ms, edit.volume_m3) == (edit_id, LAST_MS_OF_9999 - DAY_MS, LAST_MS_OF_9999, 0.1)


def test_bills_sort_by_unit_id_code_point_whatever_the_database_locale(ledger_url: str, tmp_path: Path) -> None:
    """Unit ids in mixed case and punctuation: pages of bills come in code point order on every
    backend (an en_US PostgreSQL database would sort v02 between V01 and V03, and V_7 before V-12)."""
    renamed = {"V02": "v02", "V07": "V_7", "V12": "V-12"}
    text = DEMO.read_text(encoding="utf-8")
    for old, new in renamed.items():
        text = re.sub(rf"\b{old}\b", new, text)
    (tmp_path / "district.yaml").write_text(text, encoding="utf-8")
    district = load_district(tmp_path / "district.yaml")
    assert set(renamed.values()) <= set(district.units)
    run = fixed_run(district, 0)
    ledger = open_ledger(ledger_url)
    ledger.record_run(run)
    code_point_order = sorted(u for u in district.units if district.is_charged(u))  # households sharing a bill have none
    assert [b.unit_id for b in run.bills] == code_point_order
    pages = [ledger.bills_of_run(run.run_id, offset=offset, limit=4) for offset in range(0, len(code_point_order), 4)]
    assert [b["unit"]["id"] for page in pages for b in page] == code_point_order
    with ledger.session() as s:  # the run's bills relationship too
        assert [b.unit_id for b in s.get_one(RunRow, run.run_id).bills] == code_point_order


# ---------------------------------------------------------------------------------------------
# Text PostgreSQL cannot store, or that SQLite would store whatever its length
# ---------------------------------------------------------------------------------------------


def test_ids_with_nul_are_not_found_and_text_with_nul_is_refused(ledger_url: str, demo: District) -> None:
    ledger = open_ledger(ledger_url)
    run = issued(ledger, fixed_run(demo, 0))
    bill = run.bill_of("V01").bill_id
    for call in (lambda: ledger.run(run.run_id[:12] + "\x00"), lambda: ledger.advance("\x00", "approved", "li")):
        with pytest.raises(LedgerError, match=r"^no billing run"):
            call()
    for call in (lambda: ledger.bill(bill + "\x00"), lambda: ledger.mark_paid("\x00", "li"),
                 lambda: ledger.add_adjustment("x\x00", Decimal(1), "over-read", "li")):
        with pytest.raises(LedgerError, match=r"^no bill"):
            call()
    assert ledger.water_use("V01\x00") == []
    draft = fixed_run(demo, 1)
    ledger.record_run(draft)
    refused = [
        lambda: ledger.add_adjustment(bill, Decimal(1), "over\x00read", "li"),
        lambda: ledger.advance(draft.run_id, "approved", "li", note="checked\x00"),
        lambda: ledger.advance(draft.run_id, "approved", "l\x00i"),
        lambda: ledger.add_edit(demo.id, "V01-IN", run.t0_ms, run.t1_ms, 1.0, "li", "gate\x00log"),
        lambda: ledger.record_run(fixed_run(demo, 2), user="sys\x00tem"),
    ]
    for call in refused:
        with pytest.raises(LedgerError, match="NUL character"):
            call()
    assert ledger.run(draft.run_id).status == "draft" and ledger.count_runs() == 2
    assert ledger.pending_adjustments(demo.id) == [] and ledger.edits(demo.id) == []


def test_long_user_names_are_kept(ledger_url: str, demo: District) -> None:
    ledger = open_ledger(ledger_url)
    user = "张" * 40 + "-district-office-clerk-on-the-night-shift"
    run = fixed_run(demo, 0)
    approver = "李" * 40 + "-district-office-approver-on-the-night-shift"
    ledger.record_run(run, user=user)
    ledger.advance(run.run_id, "approved", approver, note="n" * 2000)  # four eyes: not the run's recorder
    ledger.advance(run.run_id, "issued", user)
    ledger.add_adjustment(run.bill_of("V01").bill_id, Decimal("-1.00"), "over-read", user)
    ledger.add_edit(demo.id, "V01-IN", run.t1_ms, run.t1_ms + DAY_MS, 1.0, user, "gate log")
    assert {e.user for e in ledger.events(run.run_id)} == {user, approver}
    assert [a.created_by for a in ledger.pending_adjustments(demo.id)] == [user]
    assert [e.user for e in ledger.edits(demo.id)] == [user]


@pytest.mark.parametrize(("amount", "message"), [
    ("1" * 40, "beyond the ledger's"), ("NaN", "not a number of yuan"), ("Infinity", "not a number of yuan"),
    ("1.001", "fractions of a fen"), ("0.00", "changes nothing"),
])
def test_an_amount_the_ledger_cannot_keep_exactly_is_refused(ledger_url: str, demo: District, amount: str,
                                                             message: str) -> None:
    """The CLI takes any --amount: the ledger itself refuses what it cannot keep (to the fen)."""
    ledger = open_ledger(ledger_url)
    run = issued(ledger, fixed_run(demo, 0))
    with pytest.raises(LedgerError, match=message):
        ledger.add_adjustment(run.bill_of("V01").bill_id, Decimal(amount), "over-read", "li")
    assert ledger.pending_adjustments(demo.id) == []


def test_hostile_ids_and_nul_text_over_http_are_4xx_and_change_nothing(ledger_url: str, demo: District) -> None:
    ledger = open_ledger(ledger_url)
    run = issued(ledger, fixed_run(demo, 0))
    bill = run.bill_of("V01").bill_id
    tokens = {hash_api_token("c-token"): Principal("li", "clerk"), hash_api_token("m-token"): Principal("wang", "admin")}
    clerk, manager = ({"Authorization": f"Bearer {t}"} for t in ("c-token", "m-token"))
    client = TestClient(create_app(ApiConfig(ServiceConfig(ledger_url), tokens)), raise_server_exceptions=False)
    for hostile in ("%00", "V01%00", "x" * 5000, "%25", "_"):
        for method, path in (("GET", "/runs/{}"), ("GET", "/runs/{}/bills"), ("GET", "/bills/{}"), ("GET", "/lines/{}-L1/explain"),
                             ("POST", "/runs/{}/approve"), ("POST", "/bills/{}/paid"), ("GET", "/units/{}/water-use")):
            answer = client.request(method, path.format(hostile), headers=manager)
            assert answer.status_code in (404, 200), f"{method} {path.format(hostile)[:40]}: {answer.status_code} {answer.text[:200]}"
            if path.startswith("/units"):
                assert answer.json()["items"] == []
    nul_reason = client.post(f"/bills/{bill}/adjustments", json={"amount": "-1.00", "reason": "over\u0000read"}, headers=clerk)
    assert nul_reason.status_code == 409 and "NUL character" in nul_reason.json()["detail"]
    assert ledger.pending_adjustments(demo.id) == [] and [e.action for e in ledger.events(run.run_id)] == ["created", "approved", "issued"]


# ---------------------------------------------------------------------------------------------
# Writers racing each other
# ---------------------------------------------------------------------------------------------


class Writer:
    """One ledger call in a thread, on its own engine (own connections, as another process would have).

    Its transactions stop right before COMMIT, their work done, until ``release()``: ``holding`` is
    set then (or when the call has ended). ``writing`` is set at its first write or lock statement.
    """

    def __init__(self, url: str, call: Callable[[Ledger], Any]) -> None:
        open_ledger(url)  # the tables
        self.ledger = Ledger(create_engine(url))  # not open_ledger's shared engine: its own pool and listeners
        self.call = call
        self.result: Any = None
        self.error: Exception | None = None
        self.holding, self.writing, self._released = threading.Event(), threading.Event(), threading.Event()
        event.listen(self.ledger.engine, "commit", self._hold)
        event.listen(self.ledger.engine, "before_cursor_execute", self._see_write)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _hold(self, _conn: Any) -> None:
        self.holding.set()
        self._released.wait(WAIT)

    def _see_write(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")) or "FOR UPDATE" in statement.upper():
            self.writing.set()

    def _run(self) -> None:
        try:
            self.result = self.call(self.ledger)
        except Exception as exc:  # reported to the test
            self.error = exc
        finally:
            self.writing.set()
            self.holding.set()

    def release_and_finish(self) -> None:
        self._released.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "a writer is stuck"


def race(url: str, first: Callable[[Ledger], Any], second: Callable[[Ledger], Any]) -> tuple[Writer, Writer]:
    """``first`` does its work and waits to commit; ``second`` runs until it waits for a lock or
    is about to commit too; then ``first`` commits, and ``second`` goes on."""
    a, b = Writer(url, first), Writer(url, second)
    a.thread.start()
    assert a.holding.wait(WAIT)
    b.thread.start()
    assert _checked_or_waiting(url, b), "the second writer neither finished its work nor waited for a lock"
    a.release_and_finish()
    b.release_and_finish()
    return a, b


def _checked_or_waiting(url: str, b: Writer) -> bool:
    if url.startswith("sqlite"):
        # a writer holds SQLite's write lock (the first, uncommitted): any write of the second waits for it
        return b.writing.wait(WAIT)
    watcher = create_engine(url, poolclass=NullPool)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if b.holding.is_set():
            return True
        with watcher.connect() as conn:
            if conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")):
                return True
        time.sleep(0.01)
    return False


def test_two_managers_approving_the_same_run_at_once(ledger_url: str, demo: District) -> None:
    run = fixed_run(demo, 0)
    open_ledger(ledger_url).record_run(run)
    a, b = race(ledger_url, lambda led: led.advance(run.run_id, "approved", "wang"), lambda led: led.advance(run.run_id, "approved", "zhao"))
    assert a.error is None and a.result == "approved"
    assert isinstance(b.error, LedgerError) and "is approved; it can only become issued" in str(b.error)
    assert [(e.action, e.user) for e in open_ledger(ledger_url).events(run.run_id)] == [("created", "system"), ("approved", "wang")]


def test_two_runs_over_the_same_days_issued_at_once_bill_the_water_once(ledger_url: str, demo: District) -> None:
    ledger = open_ledger(ledger_url)
    one, twin = fixed_run(demo, 0, days=2), fixed_run(demo, 1, days=2, volume_m3=99_000.0)  # overlapping windows
    for run in (one, twin):
        ledger.record_run(run)
        ledger.advance(run.run_id, "approved", "wang")
    a, b = race(ledger_url, lambda led: led.advance(one.run_id, "issued", "wang"), lambda led: led.advance(twin.run_id, "issued", "zhao"))
    assert a.error is None
    assert isinstance(b.error, LedgerError) and "already bills part of this window" in str(b.error)
    assert [ledger.run(r.run_id).status for r in (one, twin)] == ["issued", "approved"]


def test_the_same_run_recorded_twice_at_once_is_stored_once(ledger_url: str, demo: District) -> None:
    run = fixed_run(demo, 0)
    a, b = race(ledger_url, lambda led: led.record_run(run), lambda led: led.record_run(run, user="api"))
    assert (a.error, b.error) == (None, None) and (a.result, b.result) == ("created", "unchanged")
    ledger = open_ledger(ledger_url)
    assert ledger.count_runs() == 1 and ledger.count_bills(run.run_id) == len(run.bills)
    assert [e.action for e in ledger.events(run.run_id)] == ["created"]


def test_a_rerun_recorded_while_its_draft_is_approved_never_carries_an_adjustment_twice(ledger_url: str, demo: District) -> None:
    ledger = open_ledger(ledger_url)
    first = issued(ledger, fixed_run(demo, 0))
    adj_id = ledger.add_adjustment(first.bill_of("V01").bill_id, Decimal("-5.00"), "over-read", "li")
    carried = [PendingAdjustment(adj_id, "V01", Decimal("-5.00"), "over-read", first.bill_of("V01").bill_id)]
    draft, rerun = fixed_run(demo, 1, adjustments=carried), fixed_run(demo, 1, days=2, adjustments=carried)
    ledger.record_run(draft)
    a, b = race(ledger_url, lambda led: led.advance(draft.run_id, "approved", "wang"), lambda led: led.record_run(rerun))
    assert (a.error, b.error, b.result) == (None, None, "created")
    # the approved draft keeps the adjustment; the rerun, which also has its line, can never be approved
    assert ledger.pending_adjustments(demo.id) == []  # carried by the approved draft
    assert ledger.adjustment(adj_id).applied_run_id == draft.run_id
    with pytest.raises(LedgerError, match="carried by the newer run"):
        ledger.advance(rerun.run_id, "approved", "wang")


def test_a_bill_paid_by_two_clerks_at_once_is_paid_once(ledger_url: str, demo: District) -> None:
    ledger = open_ledger(ledger_url)
    run = issued(ledger, fixed_run(demo, 0))
    bill = run.bill_of("V01").bill_id
    a, b = race(ledger_url, lambda led: led.mark_paid(bill, "li"), lambda led: led.mark_paid(bill, "zhao"))
    assert a.error is None and isinstance(b.error, LedgerError) and "already paid" in str(b.error)
    assert [(e.action, e.user) for e in ledger.events(run.run_id) if e.action == "paid"] == [("paid", "li")]


def test_a_payment_reversed_by_two_clerks_at_once_is_reversed_once(ledger_url: str, demo: District) -> None:
    ledger = open_ledger(ledger_url)
    run = issued(ledger, fixed_run(demo, 0))
    bill = run.bill_of("V01")
    ledger.mark_paid(bill.bill_id, "li")
    payment = ledger.postings("V01")[-1].id
    a, b = race(ledger_url, lambda led: led.reverse(payment, "li", "bounced"), lambda led: led.reverse(payment, "zhao", "bounced"))
    assert a.error is None and isinstance(b.error, LedgerError) and "already reversed" in str(b.error)
    assert [p.kind for p in ledger.postings("V01")] == ["issue", "payment", "reversal"] and ledger.bill_balance(bill.bill_id) == bill.total


def test_processes_opening_a_new_ledger_at_once_all_succeed(ledger_url: str) -> None:
    barrier = threading.Barrier(4)
    errors: list[Exception] = []

    def open_it() -> None:
        barrier.wait(WAIT)
        try:
            open_ledger(ledger_url).count_runs()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert errors == []


def test_opening_the_ledger_again_reuses_its_connection_pool(ledger_url: str) -> None:
    """The API opens the ledger on every request: one pool per URL, not one per call, or idle
    PostgreSQL connections pile up towards its limit."""
    first = open_ledger(ledger_url)
    for _ in range(30):
        again = open_ledger(ledger_url)
        again.runs()
    assert again.engine is first.engine
    if first.engine.dialect.name == "postgresql":
        with first.engine.connect() as conn:
            sessions = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"))
            assert sessions.scalar_one() <= 2


def test_whoever_recorded_a_run_may_not_approve_it(ledger_url: str, demo: District) -> None:
    ledger = open_ledger(ledger_url)
    run = fixed_run(demo, 0)
    ledger.record_run(run, user="wang")
    with pytest.raises(LedgerError, match="four eyes"):
        ledger.advance(run.run_id, "approved", "wang")
    assert ledger.run(run.run_id).status == "draft" and ledger.creator(run.run_id) == "wang"
    ledger.advance(run.run_id, "approved", "zhao")
    ledger.advance(run.run_id, "issued", "wang")  # issuing an approved run is not approving it
    assert ledger.run(run.run_id).status == "issued"
