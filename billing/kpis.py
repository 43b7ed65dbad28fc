"""Billing KPIs for the dashboards: one ``billing`` row per unit and run (line protocol)."""

from __future__ import annotations

from decimal import Decimal

from billing.bills import BillingRun
from canalflow.contract import M, line


def billing_kpi_lines(run: BillingRun) -> list[str]:
    """Line protocol for Grafana, measurement ``billing``: one row per unit at the window's end.

    Money as float yuan for display only (the ledger holds the exact decimals).
    """
    lines = []
    for bill in run.bills:
        sums = {"charge_yuan": Decimal(0), "surcharge_yuan": Decimal(0), "subsidy_yuan": Decimal(0), "reward_yuan": Decimal(0), "adjustment_yuan": Decimal(0)}
        for item in bill.lines:
            key = {"subsidy": "subsidy_yuan", "reward": "reward_yuan", "adjustment": "adjustment_yuan"}.get(item.kind)
            key = key or ("charge_yuan" if not item.band else "surcharge_yuan")
            sums[key] += item.amount
        fields: dict[str, float | int | bool | str] = {k: float(v) for k, v in sums.items()}
        fields |= {"volume_m3": float(bill.volume_m3), "quota_m3": float(bill.quota_m3), "total_yuan": float(bill.total), "blocked": bill.blocked, "run": run.run_id[:12]}
        tags = {"district": run.district_id, "unit": bill.unit_id, "township": bill.township, "kind": bill.unit_kind, "season": bill.season_id}
        lines.append(line(M.billing, tags, fields, run.t1_ms))
    return lines
