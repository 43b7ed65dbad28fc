"""`canalflow billing run|efficiency|approve|issue|ledger` as an operator runs them, on a real InfluxDB."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from billing_synth import DEMO, MIN, network_volumes, write_constant_flows

from canalflow.contract import M, source_of

CLI = [sys.executable, "-m", "canalflow.cli"]
T0 = int(dt.datetime(2026, 3, 12, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp() * 1000)
T1 = T0 + 86_400_000
DELIVERIES = {"V01-IN": 20_000, "V02-IN": 15_000, "V03-IN": 25_000, "V0405-IN": 30_000, "V06-IN": 18_000, "V07-IN": 12_000,
              "WUA1-IN": 40_000, "OP1-IN": 50_000, "V08-IN": 16_000, "V09-IN": 14_000, "V10-IN": 22_000, "V11-IN": 10_000, "V12-IN": 20_000}
ETA = {"main": 0.93, "branch": 0.88, "lateral": 0.86}


def canalflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "billing", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def day_of_water(influx, demo):
    def eta(canal_id, reach_id):
        canal = demo.canals[canal_id]
        return ETA[canal.level.value] if reach_id == canal.reach_list[0].id else 1.0

    true = network_volumes(demo, DELIVERIES, eta, {"M1-TAIL": 3_000.0, "B2-TAIL": 500.0, "B3-TAIL": 800.0})
    write_constant_flows(influx, demo, true, T0, T1, margin_ms=2 * 60 * MIN)
    return influx, true


def source(influx, to: str = "2026-03-13T00:00:00+08:00") -> list[str]:
    return ["--district", str(DEMO), "--influx", influx.url, "--db", influx.database, "--from", "2026-03-12T00:00:00+08:00", "--to", to]


def test_efficiency_json_and_kpis(day_of_water, demo):
    influx, _ = day_of_water
    done = canalflow("efficiency", *source(influx), "--json", "--write-kpis")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for level, eta in ETA.items():
        assert report["levels"][level]["value"] == pytest.approx(eta, rel=1e-6)
    for reach in report["reaches"]:
        assert not reach["incomplete"]
    assert report["system"]["level_product"]["flags"] == ["skip_level"]
    assert report["system"]["graph"]["value"] > report["system"]["level_product"]["value"]
    rows = influx.query_points(f'SELECT eta FROM {source_of(M.efficiency)} WHERE scope = \'level\' GROUP BY "level"')
    assert {r["level"]: r["eta"] for r in rows} == pytest.approx(ETA, rel=1e-6)
    system = influx.query_points(f'SELECT last(eta) AS eta FROM {source_of(M.efficiency)} WHERE scope = \'system\'')
    assert system[0]["eta"] == pytest.approx(report["canal_system"]["value"])  # the official figure is the headline KPI
    assert report["canal_system"]["value"] == pytest.approx(report["system"]["official"]["value"])


def test_efficiency_text_report(day_of_water):
    influx, _ = day_of_water
    done = canalflow("efficiency", *source(influx))
    assert done.returncode == 0, done.stderr
    assert "level_product" in done.stdout and "skip-level" in done.stdout and "M1/M1-R1" in done.stdout


def test_run_approve_issue_and_ledger(day_of_water, tmp_path: Path, ledger_url: str):
    """The operator's commands end to end, on the SQLite default and on PostgreSQL (``--ledger postgresql+psycopg://...``)."""
    influx, _ = day_of_water
    ledger = ledger_url
    args = [*source(influx, to="2026-03-12T23:59:59+08:00"), "--out", str(tmp_path / "out"), "--ledger", ledger, "--as-of", "2026-03-14T00:00:00+08:00"]
    first = canalflow("run", *args, "--json")
    assert first.returncode == 0, first.stderr
    manifest = json.loads(first.stdout)
    assert "charging points from readings" in first.stderr and "ledger: run created" in first.stderr  # progress on stderr
    volumes = {b["unit"]: float(b["volume_m3"]) for b in manifest["bills"]}
    assert volumes["V01"] == pytest.approx(20_000, abs=2)  # one second short of the day, rounded to the m3
    again = canalflow("run", *args)
    assert again.returncode == 0 and "unchanged" in again.stdout
    run_id = manifest["run_id"][:12]
    assert canalflow("issue", run_id, "--user", "wang", "--ledger", ledger).returncode == 1
    assert canalflow("approve", run_id, "--user", "li", "--ledger", ledger).returncode == 0
    assert canalflow("issue", run_id, "--user", "wang", "--ledger", ledger).returncode == 0
    runs = canalflow("ledger", "runs", "--ledger", ledger)
    assert run_id in runs.stdout and "issued" in runs.stdout
    water = canalflow("ledger", "water-use", "V01", "--ledger", ledger)
    assert json.loads(water.stdout.splitlines()[0])["bill_id"] == f"{run_id}-V01"
    assert (tmp_path / "out" / "bills" / "V01.json").exists()
    # paid, a mistaken payment reversed: the unit's postings and balance say so
    assert canalflow("paid", f"{run_id}-V01", "--user", "li", "--ledger", ledger).returncode == 0
    postings = canalflow("ledger", "postings", "V01", "--ledger", ledger)
    *entries, summary = postings.stdout.splitlines()
    assert [json.loads(e)["kind"] for e in entries] == ["issue", "payment"] and "owes 0.00 yuan" in summary
    payment = json.loads(entries[1])["id"]
    reversed_ = canalflow("reverse", str(payment), "--reason", "cheque bounced", "--user", "li", "--ledger", ledger)
    assert reversed_.returncode == 0 and f"posting #{payment} reversed" in reversed_.stdout
    again = canalflow("reverse", str(payment), "--reason", "cheque bounced", "--user", "li", "--ledger", ledger)
    assert again.returncode == 1 and "already reversed" in again.stderr
    total = json.loads(entries[0])["amount"]
    assert f"owes {total} yuan" in canalflow("ledger", "postings", "V01", "--ledger", ledger).stdout


def test_errors_name_the_problem(tmp_path: Path, influx):
    bad = tmp_path / "broken.yaml"
    bad.write_text(DEMO.read_text(encoding="utf-8").replace("tariff: TARIFF-2026", "tariff: NO-SUCH", 1), encoding="utf-8")
    done = canalflow("run", "--district", str(bad), "--season", "2026-spring", "--influx", influx.url, "--db", influx.database)
    assert done.returncode == 1 and "broken.yaml" in done.stderr and "NO-SUCH" in done.stderr
    done = canalflow("run", "--district", str(DEMO), "--from", "2026-13-01", "--to", "2026-03-02")
    assert done.returncode == 1 and "canalflow billing run: error: --from '2026-13-01' is not ISO 8601" in done.stderr
    done = canalflow("run", "--district", str(DEMO), "--from", "2027-08-01", "--to", "2027-08-02", "--influx", influx.url, "--db", influx.database)
    assert done.returncode == 1 and "no season" in done.stderr


def test_sigterm_stops_a_batch_like_ctrl_c():
    import os
    import signal

    from billing.cli import stop_on_sigterm

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), stop_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
