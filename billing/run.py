"""Billing runs: the stages in order, from stored readings to bills, files, ledger and KPIs.

    district = load_district("examples/demo-district.yaml")
    with InfluxV1(url, "canalflow") as influx:
        run = run_billing(district, influx, t0_ms, t1_ms, out_dir=Path("out"), ledger_url="sqlite:///out/ledger.db")
    run.unit_volumes["V01"]          # Decimal m3
    run.bill_of("V01").lines         # tariff lines, Decimal money rounded to the fen
    run.bill_of("V01").total

window (:mod:`billing.window`) -> volume source and volumes (:mod:`billing.volumes`) -> VEE
(:mod:`billing.vee`) -> bills (:mod:`billing.bills`: allocation, tariff) -> files
(:mod:`billing.exports`) -> ledger (:mod:`billing.ledger`) -> KPIs (:mod:`billing.kpis`).

A run is reproducible: its id is the SHA-256 of every input (district file hash, season, tariff
id and version, window, the point volumes computed from the readings, pending adjustments), and
the bill files contain nothing else, so the same inputs give the same bills byte for byte and
recording them again in the ledger is a no-op. The readings' as-of time is recorded in the run
manifest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from billing.allocation import M3
from billing.bills import BillingRun, PendingAdjustment, build_run
from billing.edits import Edit
from billing.exports import write_outputs, write_pdfs
from billing.kpis import billing_kpi_lines
from billing.ledger import open_ledger
from billing.vee import vee_volumes
from billing.volumes import volume_source
from billing.window import BillingError, season_of_window
from canalflow.contract import M, policy_of
from canalflow.district import District
from canalflow.influx import InfluxV1


def run_billing(
    district: District,
    influx: InfluxV1,
    t0_ms: int,
    t1_ms: int,
    *,
    out_dir: Path | str | None = None,
    ledger_url: str | None = None,
    season_id: str | None = None,
    as_of_ms: int | None = None,
    quantum: Decimal = M3,
    user: str = "system",
    write_kpis: bool = False,
    source: str = "readings",
    pdf: bool = False,
    locale: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> BillingRun:
    """Read the window's readings from InfluxDB, bill every unit, write files and the ledger.

    ``progress`` receives one line per step (the CLI prints them to stderr with timings).

    ``write_kpis`` also writes one ``billing`` row per unit to InfluxDB for the dashboards.
    ``source``: ``readings`` (raw readings, any window) or ``rollups`` (the daily ``volume``
    rollups summed by InfluxDB: fast, for whole-day windows). ``pdf`` renders a PDF per bill
    into ``out_dir/pdf`` (``locale`` zh/en; default the district's).
    """
    if t1_ms <= t0_ms:
        raise BillingError(f"window end {t1_ms} is not after its start {t0_ms}")
    season = district.seasons[season_id] if season_id else season_of_window(district, t0_ms, t1_ms)
    as_of = as_of_ms if as_of_ms is not None else int(time.time() * 1000)
    ledger = None
    adjustments: list[PendingAdjustment] = []
    edits: list[Edit] = []
    unpaid: set[str] = set()
    if ledger_url:
        ledger = open_ledger(ledger_url)
        adjustments = [
            PendingAdjustment(a.id, a.unit_id, Decimal(a.amount), a.reason, a.corrects_bill_id)
            for a in ledger.pending_adjustments(district.id)
        ]
        edits = ledger.edits(district.id)
        unpaid = ledger.unpaid_units(district.id, t0_ms)
    # An explicit as-of cuts the readings; the default (now) is only recorded, so a simulated
    # clock running ahead of the wall clock still bills its readings.
    say = progress or (lambda _: None)
    point_volumes, vee = vee_volumes(district, volume_source(source, district, influx, as_of_ms=as_of_ms), t0_ms, t1_ms, edits=edits)
    incomplete = sum(1 for v in point_volumes.values() if v.result.incomplete)
    say(f"volumes of {len(point_volumes)} charging points from {source} ({incomplete} incomplete, {len(vee.estimates)} estimated)")
    run = build_run(district, point_volumes, t0_ms, t1_ms, season=season, as_of_ms=as_of, adjustments=adjustments, unpaid_units=unpaid, quantum=quantum, vee=vee)
    say(f"{len(run.bills)} bills ({sum(b.blocked for b in run.bills)} blocked), total {run.total} yuan, run {run.run_id[:12]}")
    if out_dir is not None:
        write_outputs(run, Path(out_dir))
        say(f"files written to {out_dir}")
        if pdf:
            write_pdfs(district, run, Path(out_dir), locale=locale)
            say(f"{len(run.bills)} PDF bills written to {Path(out_dir) / 'pdf'}")
    if ledger is not None:
        status = ledger.record_run(run, user=user)
        run = replace(run, ledger_status=status)
        say(f"ledger: run {status}")
    if write_kpis:
        influx.write_lines(billing_kpi_lines(run), rp=policy_of(M.billing))
        say(f"{len(run.bills)} billing KPI rows written to InfluxDB")
    return run
