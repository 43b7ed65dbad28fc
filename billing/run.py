"""Billing runs: stored readings -> point volumes -> unit volumes -> tariff -> bills -> ledger and files.

    district = load_district("examples/demo-district.yaml")
    with InfluxV1(url, "canalflow") as influx:
        run = run_billing(district, influx, t0_ms, t1_ms, out_dir=Path("out"), ledger_url="sqlite:///out/ledger.db")
    run.unit_volumes["V01"]          # Decimal m3
    run.bill_of("V01").lines         # tariff lines, Decimal money rounded to the fen
    run.bill_of("V01").total

A run is reproducible: its id is the SHA-256 of every input (district file hash, season, tariff
id and version, window, the point volumes computed from the readings, pending adjustments), and
the bill files contain nothing else, so the same inputs give the same bills byte for byte and
recording them again in the ledger is a no-op. The readings' as-of time is recorded in the run
manifest.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from billing.allocation import M3, Allocation, UnitVolumes, allocate
from billing.hydrometry import RatingUse, rerate
from billing.readings import fetch_rollup_volumes, fetch_series
from billing.tariff import Charge, Line, apply_tariff, to_fen
from billing.vee import Edit, Finding, VeeOutcome, apply_edits, estimate_from_balance, neighbours, validate_series
from canalflow.contract import M, line, policy_of
from canalflow.district import District, Season, Tariff
from canalflow.influx import InfluxV1
from canalflow.volume import Series, VolumeResult, window_volume

DAY_MS = 86_400_000


class BillingError(ValueError):
    """A billing run that cannot be made, with what to change."""


# ---------------------------------------------------------------------------------------------
# Windows and seasons


def season_window(district: District, season: Season) -> tuple[int, int]:
    """A season's window in epoch ms: local midnight of its start to local midnight after its end."""
    tz = ZoneInfo(district.spec.district.timezone)
    start = dt.datetime.combine(season.start, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(season.end + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def season_of_window(district: District, t0_ms: int, t1_ms: int) -> Season:
    """The season a window falls in (by its start, in the district's time zone)."""
    tz = ZoneInfo(district.spec.district.timezone)
    day = dt.datetime.fromtimestamp(t0_ms / 1000, tz).date()
    season = district.season_for(day)
    if season is None:
        known = ", ".join(f"{s.id} ({s.start}..{s.end})" for s in district.spec.seasons) or "none"
        raise BillingError(f"no season of district {district.id!r} covers {day}; known seasons: {known}. Add a season to the district file or pass --season")
    return season


def quota_share(district: District, season: Season, t0_ms: int, t1_ms: int) -> Decimal:
    """The part of a season's quota that applies to a window: the share of the season's irrigation
    rounds (by duration) inside it, or of the season's days when it defines no rounds. 1 for the
    whole season."""
    s0, s1 = season_window(district, season)
    if season.rounds:
        spans = [(int(r.start.timestamp() * 1000), int(r.start.timestamp() * 1000 + r.days * DAY_MS)) for r in season.rounds]
    else:
        spans = [(s0, s1)]
    total = sum(b - a for a, b in spans)
    inside = sum(max(0, min(b, t1_ms) - max(a, t0_ms)) for a, b in spans)
    return Decimal(1) if inside >= total or total <= 0 else (Decimal(inside) / Decimal(total)).quantize(Decimal("0.000001"))


def tariff_of(district: District, season: Season) -> Tariff:
    tariff = district.tariffs.get(season.tariff)
    if tariff is None:
        raise BillingError(f"season {season.id!r} names tariff {season.tariff!r}, which the district file does not define")
    return tariff


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class PointVolume:
    point_id: str
    result: VolumeResult
    monthly: tuple[tuple[str, float], ...] = ()  # (YYYY-MM local, m3) for charts; sums to the volume
    ratings: tuple[RatingUse, ...] = ()  # rating versions that turned levels into these flows

    def summary(self) -> dict[str, Any]:
        r = self.result
        return {
            "point": self.point_id,
            "volume_m3": round(r.volume_m3, 3),
            "method": r.method,
            "coverage": round(r.coverage, 4),
            "estimated_share": round(r.estimated_share, 4),
            "incomplete": r.incomplete,
            "n_readings": r.n_readings,
            "gaps": [list(g) for g in r.gaps],
            "flags": list(r.flags),
            "monthly_m3": {label: round(v, 3) for label, v in self.monthly},
            "ratings": [u.to_dict() for u in self.ratings],
        }


@dataclass(frozen=True)
class Bill:
    bill_id: str
    run_id: str
    unit_id: str
    unit_name: str
    unit_kind: str
    township: str
    season_id: str
    season_kind: str
    t0_ms: int
    t1_ms: int
    volume_m3: Decimal
    quota_m3: Decimal
    lines: tuple[Line, ...]
    allocations: tuple[Allocation, ...]
    sources: tuple[dict[str, Any], ...]
    notes: tuple[str, ...]
    blocked_reason: str = ""
    monthly_m3: tuple[tuple[str, float], ...] = ()  # the unit's use by month, for the chart
    charge: Charge | None = field(default=None, compare=False, repr=False)

    @property
    def blocked(self) -> bool:
        return bool(self.blocked_reason)

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))

    def line_id(self, n: int) -> str:
        return f"{self.bill_id}-L{n}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "bill_id": self.bill_id,
            "run_id": self.run_id,
            "unit": {"id": self.unit_id, "name": self.unit_name, "kind": self.unit_kind, "township": self.township},
            "season": {"id": self.season_id, "kind": self.season_kind},
            "window": {"t0_ms": self.t0_ms, "t1_ms": self.t1_ms},
            "volume_m3": str(self.volume_m3),
            "quota_m3": str(self.quota_m3),
            "lines": [{"id": self.line_id(n), **line.to_dict()} for n, line in enumerate(self.lines, start=1)],
            "total": str(self.total),
            "blocked": self.blocked,
            "blocked_reason": self.blocked_reason,
            "allocations": [
                {"point": a.point_id, "volume_m3": str(a.volume_m3), "method": a.method, "weight": str(a.weight)}
                for a in self.allocations
            ],
            "sources": list(self.sources),
            "notes": list(self.notes),
            "monthly_m3": {label: round(v, 1) for label, v in self.monthly_m3},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, indent=2) + "\n"


@dataclass(frozen=True)
class BillingRun:
    run_id: str
    district_id: str
    district_sha256: str
    season_id: str
    tariff_id: str
    tariff_version: int
    t0_ms: int
    t1_ms: int
    as_of_ms: int
    points: dict[str, PointVolume]
    bills: tuple[Bill, ...]
    unit_volumes: dict[str, Decimal]
    allocation_notes: tuple[str, ...] = ()
    adjustment_ids: tuple[int, ...] = ()
    vee: VeeOutcome = field(default_factory=VeeOutcome)
    unpaid_units: tuple[str, ...] = ()  # units refused the precise subsidy for unpaid fees
    quota_share: Decimal = Decimal(1)
    ledger_status: str = ""  # created | unchanged, when recorded

    def bill_of(self, unit_id: str) -> Bill:
        for bill in self.bills:
            if bill.unit_id == unit_id:
                return bill
        raise KeyError(f"no bill for unit {unit_id!r} in run {self.run_id[:12]}")

    @property
    def total(self) -> Decimal:
        return sum((b.total for b in self.bills), Decimal(0))

    def manifest(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "district": {"id": self.district_id, "sha256": self.district_sha256},
            "season": self.season_id,
            "tariff": {"id": self.tariff_id, "version": self.tariff_version},
            "window": {"t0_ms": self.t0_ms, "t1_ms": self.t1_ms},
            "as_of_ms": self.as_of_ms,
            "points": [self.points[p].summary() for p in sorted(self.points)],
            "bills": [{"bill_id": b.bill_id, "unit": b.unit_id, "volume_m3": str(b.volume_m3), "total": str(b.total), "blocked": b.blocked} for b in self.bills],
            "total": str(self.total),
            "allocation_notes": list(self.allocation_notes),
            "adjustments": list(self.adjustment_ids),
            "vee": self.vee.to_dict(),
            "unpaid_units": list(self.unpaid_units),
            "quota_share": str(self.quota_share),
        }


# ---------------------------------------------------------------------------------------------
# Computing


def month_windows(district: District, t0_ms: int, t1_ms: int) -> list[tuple[str, int, int]]:
    """The window cut at local month boundaries: [(YYYY-MM, start_ms, end_ms)]."""
    tz = ZoneInfo(district.spec.district.timezone)
    out = []
    start = t0_ms
    while start < t1_ms:
        local = dt.datetime.fromtimestamp(start / 1000, tz)
        first_next = (local.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=32)).replace(day=1)
        end = min(t1_ms, int(first_next.timestamp() * 1000))
        out.append((f"{local.year:04d}-{local.month:02d}", start, end))
        start = end
    return out


def compute_point_volumes(
    district: District, series: Mapping[str, Series], t0_ms: int, t1_ms: int, *, edits: Sequence[Edit] = ()
) -> dict[str, PointVolume]:
    tol = district.spec.tolerances
    max_gap = int(tol.max_gap_minutes * 60_000)
    months = month_windows(district, t0_ms, t1_ms)
    out: dict[str, PointVolume] = {}
    for point_id, raw in series.items():
        s, uses = rerate(district, point_id, raw)
        rollover = rollover_of(district, point_id)
        mine = [e for e in edits if e.point == point_id]
        if mine:
            result = apply_edits(s, mine, t0_ms, t1_ms, max_gap_ms=max_gap, rollover_m3=rollover, min_coverage=tol.min_coverage)
        else:
            result = window_volume(s, t0_ms, t1_ms, max_gap_ms=max_gap, rollover_m3=rollover, min_coverage=tol.min_coverage)
        if mine or len(months) == 1:
            monthly = tuple((label, result.volume_m3 * (b - a) / (t1_ms - t0_ms)) for label, a, b in months) if mine else ((months[0][0], result.volume_m3),)
        else:
            monthly = tuple((label, window_volume(s, a, b, max_gap_ms=max_gap, rollover_m3=rollover).volume_m3) for label, a, b in months)
        out[point_id] = PointVolume(point_id, result, monthly, tuple(uses))
    return out


def point_volumes_from(
    district: District, influx: InfluxV1, t0_ms: int, t1_ms: int, *, source: str, as_of_ms: int | None, edits: Sequence[Edit] = ()
) -> tuple[dict[str, PointVolume], VeeOutcome]:
    """Charging-point volumes after VEE: edits applied, incomplete points estimated from the balance.

    ``as_of_ms``: readings stamped later are not read (None: no limit)."""
    points = charging_points(district)
    if source == "rollups":
        months = month_windows(district, t0_ms, t1_ms)
        rollups = fetch_rollup_volumes(influx, district.id, points, t0_ms, t1_ms, min_coverage=district.spec.tolerances.min_coverage, months=months)
        volumes = {p: PointVolume(p, r, tuple(rollups.monthly.get(p, {}).items())) for p, r in rollups.results.items()}
        findings = [Finding(p, "gap", t0_ms, t1_ms, f"rollups cover {v.result.coverage:.0%} of the window") for p, v in volumes.items() if v.result.incomplete]

        def fetch_more(ids: list[str]) -> dict[str, VolumeResult]:
            return fetch_rollup_volumes(influx, district.id, ids, t0_ms, t1_ms, min_coverage=district.spec.tolerances.min_coverage).results
    elif source == "readings":
        max_gap = int(district.spec.tolerances.max_gap_minutes * 60_000)
        series = fetch_series(influx, district.id, points, t0_ms, t1_ms, margin_ms=max_gap, as_of_ms=as_of_ms)
        volumes = compute_point_volumes(district, series, t0_ms, t1_ms, edits=edits)
        findings = [f for p in points for f in validate_series(district, p, series[p], t0_ms, t1_ms, volumes[p].result)]

        def fetch_more(ids: list[str]) -> dict[str, VolumeResult]:
            more = fetch_series(influx, district.id, ids, t0_ms, t1_ms, margin_ms=max_gap, as_of_ms=as_of_ms)
            return {p: v.result for p, v in compute_point_volumes(district, more, t0_ms, t1_ms, edits=edits).items()}
    else:
        raise BillingError(f"unknown volume source {source!r}: use readings or rollups")
    volumes, estimates = estimate_incomplete(district, volumes, fetch_more, t0_ms, t1_ms)
    applied = tuple(e for e in edits if e.point in volumes and e.end_ms > t0_ms and e.start_ms < t1_ms)
    return volumes, VeeOutcome(tuple(findings), tuple(estimates), applied)


def estimate_incomplete(
    district: District, volumes: dict[str, PointVolume], fetch_more: Any, t0_ms: int, t1_ms: int
) -> tuple[dict[str, PointVolume], list[str]]:
    """Replace incomplete point volumes by balance estimates where the neighbours are complete."""
    incomplete = [p for p, v in volumes.items() if v.result.incomplete]
    if not incomplete:
        return volumes, []
    wanted = sorted({n for p in incomplete for n in neighbours(district, p)} - set(volumes))
    known = {p: v.result for p, v in volumes.items()} | (fetch_more(wanted) if wanted else {})
    out = dict(volumes)
    notes = []
    for p in incomplete:
        estimate = estimate_from_balance(district, p, known, t0_ms, t1_ms)
        if estimate is None:
            continue
        result, note = estimate
        measured = volumes[p]
        monthly = tuple((m, v / measured.result.volume_m3 * result.volume_m3) for m, v in measured.monthly) if measured.result.volume_m3 > 0 else ()
        out[p] = PointVolume(p, result, monthly, measured.ratings)
        notes.append(f"{note}: {result.volume_m3:.0f} m3 instead of the {measured.result.volume_m3:.0f} m3 measured at {measured.result.coverage:.0%} coverage")
    return out, notes


def rollover_of(district: District, point_id: str) -> float | None:
    """The totaliser's rollover modulus (m3) from the point's meter profile, if it wraps."""
    profile = district.profile_of(point_id)
    reg = profile.by_quantity("totaliser") if hasattr(profile, "by_quantity") else None
    return reg.rollover_modulus_si if reg is not None else None


def charging_points(district: District) -> list[str]:
    return sorted({p for u in district.spec.units for p in u.charging_points})


def run_id_of(inputs: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class PendingAdjustment:
    id: int
    unit_id: str
    amount: Decimal
    reason: str
    corrects_bill_id: str


def build_run(
    district: District,
    point_volumes: Mapping[str, PointVolume],
    t0_ms: int,
    t1_ms: int,
    *,
    season: Season,
    as_of_ms: int,
    adjustments: Iterable[PendingAdjustment] = (),
    unpaid_units: Iterable[str] = (),
    quantum: Decimal = M3,
    vee: VeeOutcome | None = None,
) -> BillingRun:
    """Bills from point volumes (pure: no I/O)."""
    tariff = tariff_of(district, season)
    adjustments = list(adjustments)
    unpaid = set(unpaid_units)
    volumes = allocate(district, {p: pv.result.volume_m3 for p, pv in point_volumes.items()}, quantum)
    inputs = {
        "district_sha256": district.sha256,
        "season": season.id,
        "tariff": [tariff.id, tariff.version],
        "window": [t0_ms, t1_ms],
        "quantum": str(quantum),
        "points": {p: point_volumes[p].summary() for p in sorted(point_volumes)},
        "adjustments": [[a.id, a.unit_id, str(a.amount)] for a in adjustments],
        "unpaid": sorted(unpaid),
        "edits": [e.id for e in vee.edits] if vee else [],
    }
    share = quota_share(district, season, t0_ms, t1_ms)
    inputs["quota_share"] = str(share)
    run_id = run_id_of(inputs)
    bills = tuple(
        _bill(district, run_id, unit_id, season, tariff, volumes, point_volumes, t0_ms, t1_ms,
              [a for a in adjustments if a.unit_id == unit_id], unit_id in unpaid, share)
        for unit_id in sorted(district.units)
    )
    return BillingRun(
        run_id, district.id, district.sha256, season.id, tariff.id, tariff.version, t0_ms, t1_ms, as_of_ms,
        dict(point_volumes), bills, dict(volumes.by_unit), volumes.notes, tuple(a.id for a in adjustments), vee or VeeOutcome(),
        tuple(sorted(unpaid)), share,
    )


def _bill(
    district: District, run_id: str, unit_id: str, season: Season, tariff: Tariff, volumes: UnitVolumes,
    point_volumes: Mapping[str, PointVolume], t0_ms: int, t1_ms: int, adjustments: list[PendingAdjustment], unpaid: bool,
    share: Decimal = Decimal(1),
) -> Bill:
    unit = district.units[unit_id]
    volume = volumes.by_unit[unit_id]
    sources = tuple(point_volumes[p].summary() for p in unit.charging_points if p in point_volumes)
    incomplete = [s for s in sources if s["incomplete"]]
    missing = [p for p in unit.charging_points if p not in point_volumes]
    charge = apply_tariff(district, unit_id, volume, season.kind, tariff, unpaid_fees=unpaid, quota_share=share)
    lines = list(charge.lines)
    lines += [Line("adjustment", "", "adjustment", None, Decimal(0), Decimal(0), to_fen(a.amount), f"#{a.id} corrects {a.corrects_bill_id}: {a.reason}") for a in adjustments]
    reason = ""
    if missing or incomplete:
        parts = [f"no readings queried for {p}" for p in missing]
        parts += [f"{s['point']} coverage {s['coverage']:.0%} below {district.spec.tolerances.min_coverage:.0%} ({len(s['gaps'])} gap(s))" for s in incomplete]
        reason = "; ".join(parts) + ": fill or estimate the gaps (VEE) and rerun"
        lines = []
    return Bill(
        bill_id=f"{run_id[:12]}-{unit_id}", run_id=run_id, unit_id=unit_id, unit_name=unit.name, unit_kind=unit.kind.value,
        township=unit.township, season_id=season.id, season_kind=season.kind, t0_ms=t0_ms, t1_ms=t1_ms,
        volume_m3=volume, quota_m3=charge.quota_m3, lines=tuple(lines), allocations=tuple(volumes.of(unit_id)),
        sources=sources, notes=charge.notes + ((f"quota for this window: {share:.2%} of the season quota (its share of the season's irrigation rounds)",) if share != 1 else ()),
        blocked_reason=reason, monthly_m3=_unit_monthly(volumes.of(unit_id), point_volumes), charge=charge,
    )


def _unit_monthly(allocations: Iterable[Allocation], point_volumes: Mapping[str, PointVolume]) -> tuple[tuple[str, float], ...]:
    """A unit's monthly use: its share of each charging point times the point's monthly volumes."""
    months: dict[str, float] = {}
    for a in allocations:
        pv = point_volumes.get(a.point_id)
        if pv is None or pv.result.volume_m3 <= 0:
            continue
        share = float(a.volume_m3) / pv.result.volume_m3
        for label, v in pv.monthly:
            months[label] = months.get(label, 0.0) + v * share
    return tuple(sorted(months.items()))


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
        from billing.ledger import open_ledger

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
    point_volumes, vee = point_volumes_from(district, influx, t0_ms, t1_ms, source=source, as_of_ms=as_of_ms, edits=edits)
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
        run = _with_status(run, status)
        say(f"ledger: run {status}")
    if write_kpis:
        influx.write_lines(billing_kpi_lines(run), rp=policy_of(M.billing))
        say(f"{len(run.bills)} billing KPI rows written to InfluxDB")
    return run


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


def _with_status(run: BillingRun, status: str) -> BillingRun:
    from dataclasses import replace

    return replace(run, ledger_status=status)


# ---------------------------------------------------------------------------------------------
# Files


BILL_COLUMNS = ("bill_id", "unit_id", "unit_name", "kind", "township", "season", "volume_m3", "quota_m3", "total_yuan", "blocked", "blocked_reason")
LINE_COLUMNS = ("line_id", "bill_id", "unit_id", "kind", "crop_class", "component", "band", "volume_m3", "rate", "amount_yuan", "note")


def write_outputs(run: BillingRun, out_dir: Path) -> list[Path]:
    """run.json, bills/<unit>.json, bills.csv, bill_lines.csv, townships.csv and bills.xlsx in ``out_dir``; returns the paths."""
    from billing.xlsx import write_xlsx

    bills_dir = out_dir / "bills"
    bills_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for bill in run.bills:
        path = bills_dir / f"{bill.unit_id}.json"
        path.write_text(bill.to_json(), encoding="utf-8")
        written.append(path)
    manifest = out_dir / "run.json"
    manifest.write_text(json.dumps(run.manifest(), sort_keys=True, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    written += [manifest, _write_bills_csv(run, out_dir / "bills.csv"), _write_lines_csv(run, out_dir / "bill_lines.csv"),
                _write_townships_csv(run, out_dir / "townships.csv")]
    written.append(write_xlsx(run, out_dir / "bills.xlsx"))
    return written


def write_pdfs(district: District, run: BillingRun, out_dir: Path, *, locale: str | None = None, workers: int = 2) -> list[Path]:
    """One PDF per bill in ``out_dir/pdf`` (Chinese by default for a zh district; ``locale="en"`` for English)."""
    from billing.pdf import render_bills_parallel

    return render_bills_parallel(district, run.bills, out_dir / "pdf", workers=workers, locale=locale, run=run)


def _write_bills_csv(run: BillingRun, path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(BILL_COLUMNS)
        for b in run.bills:
            writer.writerow([b.bill_id, b.unit_id, b.unit_name, b.unit_kind, b.township, b.season_id, b.volume_m3, b.quota_m3, b.total, int(b.blocked), b.blocked_reason])
    return path


TOWNSHIP_COLUMNS = ("township", "units", "volume_m3", "quota_m3", "total_yuan", "blocked_units")


def township_totals(run: BillingRun) -> list[tuple[str, int, Decimal, Decimal, Decimal, int]]:
    """Per township (乡镇): units, volume, quota and money summed from its units' bills."""
    sums: dict[str, list[Any]] = {}
    for b in run.bills:
        row = sums.setdefault(b.township, [0, Decimal(0), Decimal(0), Decimal(0), 0])
        row[0] += 1
        row[1] += b.volume_m3
        row[2] += b.quota_m3
        row[3] += b.total
        row[4] += int(b.blocked)
    return [(t, *values) for t, values in sorted(sums.items())]  # type: ignore[misc]


def _write_townships_csv(run: BillingRun, path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(TOWNSHIP_COLUMNS)
        writer.writerows(township_totals(run))
    return path


def _write_lines_csv(run: BillingRun, path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(LINE_COLUMNS)
        for b in run.bills:
            for n, line in enumerate(b.lines, start=1):
                d = line.to_dict()
                writer.writerow([b.line_id(n), b.bill_id, b.unit_id, d["kind"], d["crop_class"], d["component"], "" if d["band"] is None else d["band"], d["volume_m3"], d["rate"], d["amount"], d["note"]])
    return path
