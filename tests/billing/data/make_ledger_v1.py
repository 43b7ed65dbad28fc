"""Make ``ledger_v1.db``, a ledger of schema version 1 written by canalflow's own code of commit
9916721 (before the journal), and ``ledger_v1.expected.json``: what that code reported about it.

tests/billing/test_ledger_migration.py migrates a copy and checks the new code reports the same.
Run it with the old code first on the path (it refuses to run with the journal ledger):

    rm -rf /tmp/cf-v1 && mkdir /tmp/cf-v1 && git archive 9916721 | tar -x -C /tmp/cf-v1
    PYTHONPATH=/tmp/cf-v1 python tests/billing/data/make_ledger_v1.py tests/billing/data

The ledger: the demo district's spring season, one-day runs. Run 1 issued, two of its bills paid;
run 2 issued carrying adjustment #1, one bill paid; adjustment #2 carried by a draft and then by
its rerun (two drafts over day 3); run 4 approved carrying adjustment #3; adjustment #4 pending
and carried by nothing; a draft with a blocked bill; two manual edits (one finer than a litre).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select

import billing.ledger as old
from billing.run import BillingRun, PendingAdjustment, PointVolume, build_run, charging_points, season_window
from canalflow.district import District, load_district
from canalflow.volume import VolumeResult

DAY_MS = 86_400_000
DEMO = Path(old.__file__).resolve().parents[1] / "examples" / "demo-district.yaml"


def day_run(district: District, day: int, volume_m3: float, adjustments: list[PendingAdjustment] = (), blocked: str | None = None) -> BillingRun:
    t0 = season_window(district, district.seasons["2026-spring"])[0] + day * DAY_MS
    volumes = {p: PointVolume(p, VolumeResult(volume_m3, 1.0, 0.0, "flow", [], False, 99)) for p in charging_points(district)}
    if blocked:
        volumes[blocked] = PointVolume(blocked, VolumeResult(volume_m3 / 2, 0.5, 0.0, "flow", [(t0, t0 + DAY_MS // 2)], True, 40))
    return build_run(district, volumes, t0, t0 + DAY_MS, season=district.seasons["2026-spring"], as_of_ms=t0 + DAY_MS, adjustments=adjustments)


def carried(ledger: old.Ledger, district: District, *ids: int) -> list[PendingAdjustment]:
    return [PendingAdjustment(a.id, a.unit_id, Decimal(a.amount), a.reason, a.corrects_bill_id) for a in ledger.pending_adjustments(district.id) if a.id in ids]


def build(ledger: old.Ledger, d: District) -> None:
    r1 = day_run(d, 0, 250_000.0)
    ledger.record_run(r1, user="clerk-li")
    ledger.advance(r1.run_id, "approved", "manager-wang", note="checked against the gate logs")
    ledger.advance(r1.run_id, "issued", "manager-wang")
    ledger.mark_paid(r1.bill_of("V01").bill_id, "clerk-zhao")
    ledger.mark_paid(r1.bill_of("V02").bill_id, "clerk-li")
    a1 = ledger.add_adjustment(r1.bill_of("V01").bill_id, Decimal("-5.00"), "meter over-read", "clerk-li")
    a2 = ledger.add_adjustment(r1.bill_of("V03").bill_id, Decimal("12.34"), "meter under-read", "clerk-li", volume_m3=Decimal("1.5"))
    r2 = day_run(d, 1, 180_000.0, carried(ledger, d, a1))
    ledger.record_run(r2)
    ledger.advance(r2.run_id, "approved", "manager-wang")
    ledger.advance(r2.run_id, "issued", "manager-zhou")
    ledger.mark_paid(r2.bill_of("V01").bill_id, "clerk-zhao")
    draft = day_run(d, 2, 90_000.0, carried(ledger, d, a2))
    ledger.record_run(draft)
    ledger.record_run(day_run(d, 2, 95_000.0, carried(ledger, d, a2)), user="api")  # a rerun: it carries #2 now
    a3 = ledger.add_adjustment(r2.bill_of("V04").bill_id, Decimal("-120.00"), "double-counted gate", "clerk-zhao")
    r4 = day_run(d, 3, 60_000.0, carried(ledger, d, a3))
    ledger.record_run(r4)
    ledger.advance(r4.run_id, "approved", "manager-wang")
    ledger.add_adjustment(r2.bill_of("V05").bill_id, Decimal("-0.01"), "rounding complaint", "clerk-li")
    ledger.record_run(day_run(d, 5, 70_000.0, blocked="V06-IN"))
    t0 = season_window(d, d.seasons["2026-spring"])[0]
    ledger.add_edit(d.id, "V01-IN", t0 + 4 * DAY_MS, t0 + 5 * DAY_MS, 1234.5, "clerk-li", "gate log")
    ledger.add_edit(d.id, "V02-IN", t0 + 4 * DAY_MS, t0 + 5 * DAY_MS, 12.3456789, "clerk-li", "flume reading")


def report(ledger: old.Ledger, d: District) -> dict[str, Any]:
    """What the version 1 code says: runs, events, bills, paid, unpaid, adjustments, water use, edits."""
    runs = ledger.runs(limit=100)
    with ledger.session() as s:
        paid = {b.id: b.paid_at for b in s.scalars(select(old.BillRow))}
        applied = {a.id: a.applied_run_id for a in s.scalars(select(old.AdjustmentRow))}
        adjustments = [{"id": a.id, "unit": a.unit_id, "bill_id": a.corrects_bill_id, "amount": a.amount, "volume_m3": a.volume_m3}
                       for a in s.scalars(select(old.AdjustmentRow).order_by(old.AdjustmentRow.id))]
    return {
        "district": d.id,
        "runs": [{"id": r.id, "status": r.status, "t0_ms": r.t0_ms, "t1_ms": r.t1_ms, "created_at": r.created_at} for r in runs],
        "events": {r.id: [[e.action, e.user, e.at, e.note] for e in ledger.events(r.id)] for r in runs},
        "bills": {b["bill_id"]: _bill_facts(ledger, b) for r in runs for b in ledger.bills_of_run(r.id, limit=1000)},
        "paid_at": paid,
        "unpaid_units": sorted(ledger.unpaid_units(d.id, 2**62)),
        "applied_run_id": {str(k): v for k, v in applied.items()},
        "adjustments": adjustments,
        "pending": [{"id": a.id, "unit": a.unit_id, "bill_id": a.corrects_bill_id, "amount": a.amount, "volume_m3": a.volume_m3,
                     "reason": a.reason, "by": a.created_by, "at": a.created_at} for a in ledger.pending_adjustments(d.id)],
        "water_use": {u: ledger.water_use(u) for u in sorted(d.units)},
        "edits": [[e.id, e.point, e.start_ms, e.end_ms, e.volume_m3, e.user, e.reason] for e in ledger.edits(d.id)],
    }


def _bill_facts(ledger: old.Ledger, document: dict[str, Any]) -> dict[str, Any]:
    """A bill as version 1 answers it: its money and volumes, and the SHA-256 of its whole document."""
    answer = ledger.bill(document["bill_id"])
    canonical = json.dumps({k: v for k, v in answer.items() if k != "status"}, sort_keys=True, ensure_ascii=False)
    return {"run_id": answer["run_id"], "unit": answer["unit"]["id"], "status": answer["status"], "total": answer["total"],
            "volume_m3": answer["volume_m3"], "quota_m3": answer["quota_m3"], "lines": [ln["amount"] for ln in answer["lines"]],
            "sha256": hashlib.sha256(canonical.encode()).hexdigest()}


def main(out: Path) -> int:
    if not hasattr(old, "AdjustmentRow"):
        print("make_ledger_v1.py: billing.ledger is not the version 1 ledger; put a checkout of commit 9916721 first on PYTHONPATH", file=sys.stderr)
        return 2
    db = out / "ledger_v1.db"
    db.unlink(missing_ok=True)
    district = load_district(DEMO)
    ledger = old.open_ledger(f"sqlite:///{db}")
    build(ledger, district)
    ledger.engine.dispose()
    with sqlite3.connect(db) as conn:
        conn.execute("VACUUM")
    ledger = old.open_ledger(f"sqlite:///{db}")
    expected = report(ledger, district)
    (out / "ledger_v1.expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {db} ({len(expected['runs'])} runs) and {out / 'ledger_v1.expected.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)))
