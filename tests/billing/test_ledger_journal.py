"""The ledger as a journal, on SQLite and PostgreSQL: rows are only ever added; balances, paid and
unpaid, and the corrections waiting for a bill are sums of postings; a wrong payment or adjustment
is reversed, then entered again."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from billing_synth import fixed_run, issued
from sqlalchemy import create_engine, event

from billing.bills import PendingAdjustment
from billing.ledger import Ledger, LedgerError, open_ledger
from canalflow.district import District


def carried(ledger: Ledger, district: District) -> list[PendingAdjustment]:
    return [PendingAdjustment(a.id, a.unit_id, a.amount, a.reason, a.corrects_bill_id) for a in ledger.pending_adjustments(district.id)]


def test_the_ledger_never_updates_or_deletes_a_row(ledger_url: str, demo: District) -> None:
    """Every statement of a whole lifecycle is an INSERT or a SELECT, but for the SQLite lock's empty UPDATE."""
    open_ledger(ledger_url)
    ledger = Ledger(create_engine(ledger_url))
    changes: list[str] = []

    @event.listens_for(ledger.engine, "before_cursor_execute")
    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("UPDATE", "DELETE")):
            changes.append(" ".join(statement.split()))

    first = issued(ledger, fixed_run(demo, 0))
    bill = first.bill_of("V01").bill_id
    ledger.mark_paid(bill, "li")
    payment = next(p.id for p in ledger.postings("V01") if p.kind == "payment")
    ledger.reverse(payment, "li", "paid into the wrong account")
    ledger.mark_paid(bill, "li")
    ledger.add_adjustment(bill, Decimal("-5.00"), "over-read", "li")
    draft = fixed_run(demo, 1, adjustments=carried(ledger, demo))
    ledger.record_run(draft)
    rerun = fixed_run(demo, 1, volume_m3=1000.0, adjustments=carried(ledger, demo))
    issued(ledger, rerun)
    ledger.add_edit(demo.id, "V01-IN", first.t0_ms, first.t1_ms, 10.0, "li", "gate log")
    locks = set(changes)
    assert len(locks) <= 1 and all("WHERE 0 = 1" in c or "WHERE false" in c for c in locks), locks
    assert bool(locks) == ledger_url.startswith("sqlite")


def test_balances_paid_and_unpaid_are_sums_of_postings(ledger_url: str, demo: District) -> None:
    ledger = open_ledger(ledger_url)
    first = issued(ledger, fixed_run(demo, 0))
    v01 = first.bill_of("V01")
    assert v01.total > 0
    assert [(p.kind, p.amount, p.bill_id) for p in ledger.postings("V01")] == [("issue", v01.total, v01.bill_id)]
    assert ledger.balance("V01") == ledger.bill_balance(v01.bill_id) == v01.total and ledger.paid_at(v01.bill_id) is None
    assert "V01" in ledger.unpaid_units(demo.id, first.t1_ms) and "V01" not in ledger.unpaid_units(demo.id, first.t1_ms - 1)
    ledger.mark_paid(v01.bill_id, "li")
    assert ledger.balance("V01") == 0 and ledger.paid_at(v01.bill_id) is not None and "V01" not in ledger.unpaid_units(demo.id, first.t1_ms)
    # a payment recorded by mistake: reversed (the bill owes again), then the right one
    payment = ledger.postings("V01")[-1]
    assert (payment.kind, payment.amount, payment.who) == ("payment", -v01.total, "li")
    ledger.reverse(payment.id, "zhao", "recorded on the wrong bill")
    assert ledger.bill_balance(v01.bill_id) == v01.total and ledger.paid_at(v01.bill_id) is None and "V01" in ledger.unpaid_units(demo.id, first.t1_ms)
    ledger.mark_paid(v01.bill_id, "zhao")
    assert ledger.bill_balance(v01.bill_id) == 0
    trail = [(e.action, e.user) for e in ledger.events(first.run_id)]
    assert trail == [("created", "system"), ("approved", "li"), ("issued", "wang"), ("paid", "li"), ("reversal", "zhao"), ("paid", "zhao")]
    # a correction waits on the corrections account, then moves to the bill of the run that carries it when that run is issued
    adj = ledger.add_adjustment(v01.bill_id, Decimal("-5.00"), "meter over-read", "li")
    assert ledger.corrections_total("V01") == Decimal("-5.00") and ledger.balance("V01") == 0
    second = fixed_run(demo, 1, adjustments=carried(ledger, demo))
    ledger.record_run(second)
    ledger.advance(second.run_id, "approved", "li")
    assert ledger.corrections_total("V01") == Decimal("-5.00") and ledger.pending_adjustments(demo.id) == []
    ledger.advance(second.run_id, "issued", "wang")
    next_v01 = second.bill_of("V01")
    assert ledger.corrections_total("V01") == 0 and ledger.adjustment(adj).applied_run_id == second.run_id
    assert ledger.bill_balance(next_v01.bill_id) == next_v01.total and Decimal("-5.00") in [ln.amount for ln in next_v01.lines]
    assert ledger.balance("V01") == next_v01.total
    assert [p.kind for p in ledger.postings("V01")][-3:] == ["adjustment", "issue", "credit"]


def test_what_can_be_reversed(ledger_url: str, demo: District) -> None:
    ledger = open_ledger(ledger_url)
    first = issued(ledger, fixed_run(demo, 0))
    bill = first.bill_of("V01").bill_id
    issue = ledger.postings("V01")[0].id
    with pytest.raises(LedgerError, match=r"\(issue\) cannot be reversed: only payment and adjustment postings are"):
        ledger.reverse(issue, "li", "too high")
    with pytest.raises(LedgerError, match=r"^no posting #999999"):
        ledger.reverse(999_999, "li", "typo")
    wrong = ledger.add_adjustment(bill, Decimal("-50.00"), "over-read", "li")
    with pytest.raises(LedgerError, match="needs a reason"):
        ledger.reverse(wrong, "li", " ")
    draft = fixed_run(demo, 1, adjustments=carried(ledger, demo))
    ledger.record_run(draft)
    ledger.reverse(wrong, "li", "it was -5.00, not -50.00")
    with pytest.raises(LedgerError, match=f"already reversed by #{wrong + 1}"):
        ledger.reverse(wrong, "li", "again")
    assert ledger.pending_adjustments(demo.id) == [] and ledger.corrections_total("V01") == 0
    with pytest.raises(LedgerError, match="was reversed: rerun the window without it"):
        ledger.advance(draft.run_id, "approved", "wang")
    right = ledger.add_adjustment(bill, Decimal("-5.00"), "over-read", "li")
    rerun = fixed_run(demo, 1, adjustments=carried(ledger, demo))
    assert [a.id for a in ledger.pending_adjustments(demo.id)] == [right] and rerun.adjustment_ids == (right,)
    ledger.record_run(rerun)
    ledger.advance(rerun.run_id, "approved", "wang")
    with pytest.raises(LedgerError, match="is approved: record a new adjustment of the opposite amount instead"):
        ledger.reverse(right, "li", "changed my mind")
