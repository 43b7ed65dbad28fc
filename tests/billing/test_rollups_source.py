"""Daily rollups as a billing source refuse what they cannot honour, instead of billing around it."""

from __future__ import annotations

import pytest

from billing.ledger import open_ledger
from billing.run import run_billing
from billing.window import DAY_MS, BillingError, season_window
from canalflow.contract import M, line, policy_of


def test_a_manual_edit_is_never_silently_ignored_by_the_rollups_source(influx, demo, tmp_path):
    t0, _ = season_window(demo, demo.seasons["2026-spring"])
    t1 = t0 + 2 * DAY_MS
    p = demo.points["V01-IN"]
    tags = {"district": demo.id, "point": p.id, "canal": p.canal, "role": p.role.value, "interval": "1d"}
    influx.write_lines([line(M.volume, tags, {"volume_m3": 1000.0, "coverage": 1.0, "estimated_share": 0.0}, t0 + d * DAY_MS) for d in range(2)], rp=policy_of(M.volume))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url).add_edit(demo.id, "V01-IN", t0, t0 + DAY_MS, 400.0, "clerk", "meter flooded")

    with pytest.raises(BillingError, match=r"#\d+ V01-IN.*--source readings"):
        run_billing(demo, influx, t0, t1, ledger_url=url, source="rollups", as_of_ms=t1)
    run = run_billing(demo, influx, t0, t1, source="rollups", as_of_ms=t1)  # no edit: the rollups bill as before
    assert run.points["V01-IN"].result.volume_m3 == pytest.approx(2000.0)
