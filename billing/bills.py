"""Bills of a window: allocation to billing units, the tariff, adjustments, one reproducible run.

    run = build_run(district, point_volumes, t0_ms, t1_ms, season=season, as_of_ms=as_of, vee=vee)
    run.bill_of("V01").lines     # tariff lines, Decimal money rounded to the fen
    run.bill_of("V01").total

:func:`build_run` is pure (no I/O): it takes the charging points' volumes after VEE
(:mod:`billing.vee`), allocates them to units (:mod:`billing.allocation`) and applies the
tariff in force (:mod:`billing.tariff`). A run's id is the SHA-256 of every input (district file
hash, season, tariff id and version, window, the point volumes, pending adjustments, unpaid
units, edits, quota share), so the same inputs give the same bills byte for byte.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from billing import schemas
from billing.allocation import (
    M3,
    Allocation,
    ConservationError,
    EntityVolume,
    LossShare,
    UnitVolumes,
    allocate,
    conservation,
    weight_of,
)
from billing.notes import Note, codes_of, note
from billing.tariff import (
    FEN,
    VOLUME_QUANTUM,
    Charge,
    Claim,
    Line,
    apply_tariff,
    fixed_lines,
    loss_lines,
    ration,
    split_exactly,
    to_fen,
)
from billing.vee import VeeOutcome
from billing.volumes import PointVolume
from billing.window import BillingError, quota_share, tariff_of
from canalflow.district import District, Season, Tariff


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
    notes: tuple[Note, ...]
    blocked_reason: str = ""
    monthly_m3: tuple[tuple[str, float], ...] = ()  # the unit's use by month, for the chart
    charge: Charge | None = field(default=None, compare=False, repr=False)
    parent: str | None = None  # the entity it sits below in the metering hierarchy
    own_m3: Decimal | None = None  # its own use (volume_m3 less its loss lines)
    losses: tuple[LossShare, ...] = ()
    entities: tuple[schemas.EntitySummary, ...] = ()  # the entities below it, as this bill lists them

    @property
    def blocked(self) -> bool:
        return bool(self.blocked_reason)

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))

    def line_id(self, n: int) -> str:
        return f"{self.bill_id}-L{n}"

    def document(self) -> schemas.BillDocument:
        """The bill's document: what the bill file, the ledger and the API hold (one model, :mod:`billing.schemas`)."""
        return schemas.BillDocument(
            bill_id=self.bill_id,
            run_id=self.run_id,
            unit=schemas.UnitRef(id=self.unit_id, name=self.unit_name, kind=self.unit_kind, township=self.township),
            season=schemas.SeasonRef(id=self.season_id, kind=self.season_kind),
            window=schemas.Window(t0_ms=self.t0_ms, t1_ms=self.t1_ms),
            volume_m3=self.volume_m3,
            quota_m3=self.quota_m3,
            lines=[schemas.BillLine(id=self.line_id(n), **line.to_dict()) for n, line in enumerate(self.lines, start=1)],
            total=self.total,
            blocked=self.blocked,
            blocked_reason=self.blocked_reason,
            allocations=[schemas.Allocation(point=a.point_id, volume_m3=a.volume_m3, method=a.method, weight=a.weight) for a in self.allocations],
            sources=[schemas.PointSummary.model_validate(s) for s in self.sources],
            notes=list(self.notes),
            parent=self.parent,
            own_m3=self.own_m3,
            losses=[schemas.LossShare(below=x.below, points=list(x.points), method=x.method, weight=x.weight, volume_m3=x.volume_m3) for x in self.losses],
            entities=list(self.entities),
            monthly_m3={label: round(v, 1) for label, v in self.monthly_m3},
            note_codes=codes_of((*self.notes, *(line.note for line in self.lines), self.blocked_reason)),
        )

    def to_dict(self) -> dict[str, Any]:
        return self.document().model_dump(mode="json")

    def to_json(self) -> str:
        """The bill file's text (``out/bills/<unit>.json``), which is also the ledger's stored document."""
        return schemas.document_json(self.document())


@dataclass(frozen=True)
class Statement:
    """A household's statement: its share (by area or quota) of every line of its parent's bill, or its own bill (method ``meter``)."""

    unit_id: str
    unit_name: str
    parent_id: str
    bill_id: str
    root_id: str  # the unit charged at the canal: statements are listed per village
    method: str
    weight: Decimal
    volume_m3: Decimal
    loss_m3: Decimal
    lines: tuple[Line, ...]

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))


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
    statements: tuple[Statement, ...] = ()  # households' shares of their parents' bills

    def bill_of(self, unit_id: str) -> Bill:
        for bill in self.bills:
            if bill.unit_id == unit_id:
                return bill
        raise KeyError(f"no bill for unit {unit_id!r} in run {self.run_id[:12]}")

    @property
    def total(self) -> Decimal:
        return sum((b.total for b in self.bills), Decimal(0))

    def document(self) -> schemas.RunManifest:
        """The run's manifest: ``run.json``, the ledger's manifest, the answer to ``POST /runs``."""
        return schemas.RunManifest(
            run_id=self.run_id,
            district=schemas.DistrictRef(id=self.district_id, sha256=self.district_sha256),
            season=self.season_id,
            tariff=schemas.TariffRef(id=self.tariff_id, version=self.tariff_version),
            window=schemas.Window(t0_ms=self.t0_ms, t1_ms=self.t1_ms),
            as_of_ms=self.as_of_ms,
            points=[schemas.PointSummary.model_validate(self.points[p].summary()) for p in sorted(self.points)],
            bills=[schemas.BillSummary(bill_id=b.bill_id, unit=b.unit_id, volume_m3=b.volume_m3, total=b.total, blocked=b.blocked) for b in self.bills],
            total=self.total,
            allocation_notes=list(self.allocation_notes),
            adjustments=list(self.adjustment_ids),
            vee=schemas.VeeOutcome.model_validate(self.vee.to_dict()),
            unpaid_units=list(self.unpaid_units),
            quota_share=self.quota_share,
            note_codes=codes_of((*self.allocation_notes, *self.vee.estimates)),
        )

    def manifest(self) -> dict[str, Any]:
        return self.document().model_dump(mode="json")


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
    measured = {p: pv.result.volume_m3 for p, pv in point_volumes.items()}
    try:
        volumes = allocate(district, measured, quantum, season.kind)
    except ConservationError as exc:
        raise BillingError(f"district {district.id}: {exc}") from exc
    unbalanced = conservation(district, volumes, measured, quantum)
    if unbalanced:
        raise BillingError("billed volumes do not add up to the charging meters, no bills made:\n  " + "\n  ".join(unbalanced))
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
    bills = _within_budgets(tariff, tuple(
        _bill(district, run_id, unit_id, season, tariff, volumes, point_volumes, t0_ms, t1_ms,
              [a for a in adjustments if a.unit_id == unit_id], unit_id in unpaid, share)
        for unit_id in sorted(volumes.entities)
    ))
    bills = _with_entities(district, bills, volumes)
    statements = household_statements(district, bills, season.kind)
    return BillingRun(
        run_id, district.id, district.sha256, season.id, tariff.id, tariff.version, t0_ms, t1_ms, as_of_ms,
        dict(point_volumes), bills, dict(volumes.by_unit), volumes.notes, tuple(a.id for a in adjustments), vee or VeeOutcome(),
        tuple(sorted(unpaid)), share, statements=statements,
    )


def tree_bills(district: District, run: BillingRun, unit_id: str) -> list[Bill]:
    """The bills of a unit and of the entities below it (households sharing a bill have none): together, its meter's water."""
    return [run.bill_of(u.id) for u in district.tree_of(unit_id) if district.is_charged(u.id)]


def _bill(
    district: District, run_id: str, unit_id: str, season: Season, tariff: Tariff, volumes: UnitVolumes,
    point_volumes: Mapping[str, PointVolume], t0_ms: int, t1_ms: int, adjustments: list[PendingAdjustment], unpaid: bool,
    share: Decimal = Decimal(1),
) -> Bill:
    unit = district.units[unit_id]
    entity = volumes.entities[unit_id]
    volume = entity.billed_m3
    behind = _points_up(district, unit_id)
    sources = tuple(point_volumes[p].summary() for p in behind if p in point_volumes)
    incomplete = [s for s in sources if s["incomplete"]]
    missing = [p for p in behind if p not in point_volumes]
    charge = apply_tariff(district, unit_id, entity.own_m3, season.kind, tariff, unpaid_fees=unpaid, quota_share=share)
    lines = list(charge.lines)
    for loss in entity.losses:
        lines += loss_lines(district, unit_id, loss.volume_m3, season.kind, tariff, _loss_note(loss))
    if entity.source != "passed down":  # an entity whose land is its blocks' pays no fixed charge of its own
        lines += fixed_lines(district.tariff_unit(unit_id), tariff, share)
    lines += [Line("adjustment", "", "adjustment", None, Decimal(0), Decimal(0), to_fen(a.amount), note("bills.adjustment", id=a.id, bill=a.corrects_bill_id, reason=a.reason))
              for a in adjustments]
    reason: Note | str = ""
    if missing or incomplete:
        parts = [note("bills.no_readings", point=p) for p in missing]
        parts += [note("bills.low_coverage", point=s["point"], coverage=f"{s['coverage']:.0%}", min=f"{district.spec.tolerances.min_coverage:.0%}", gaps=len(s["gaps"]))
                  for s in incomplete]
        reason = note("bills.blocked", reasons=parts)
        lines = []
    return Bill(
        bill_id=f"{run_id[:12]}-{unit_id}", run_id=run_id, unit_id=unit_id, unit_name=unit.name, unit_kind=unit.kind.value,
        township=unit.township, season_id=season.id, season_kind=season.kind, t0_ms=t0_ms, t1_ms=t1_ms,
        volume_m3=volume, quota_m3=charge.quota_m3, lines=tuple(lines), allocations=tuple(volumes.of(unit_id)),
        sources=sources, notes=charge.notes + ((note("bills.quota_share", share=f"{share:.2%}"),) if share != 1 else ()),
        blocked_reason=reason, monthly_m3=_unit_monthly(volumes.of(unit_id), point_volumes), charge=charge,
        parent=unit.parent, own_m3=entity.own_m3, losses=entity.losses,
    )


def _within_budgets(tariff: Tariff, bills: tuple[Bill, ...]) -> tuple[Bill, ...]:
    """Season budgets for subsidies and rewards: claims beyond a budget are cut by its rule, on each bill, said so."""
    for kind, budget in (("subsidy", tariff.subsidy.budget), ("reward", tariff.reward.budget)):
        if budget is None:
            continue
        claims = [Claim(b.unit_id, i, line) for b in bills if not b.blocked for i, line in enumerate(b.lines) if line.kind == kind]
        cuts, note = ration(claims, budget, kind)
        by_unit: dict[str, list[Line]] = {}
        for claim, cut in cuts:
            by_unit.setdefault(claim.unit_id, []).append(cut)
        bills = tuple(dataclasses.replace(b, lines=b.lines + tuple(by_unit[b.unit_id]), notes=(*b.notes, note)) if b.unit_id in by_unit else b for b in bills)
    return bills


def _points_up(district: District, unit_id: str) -> list[str]:
    """The charging points a bill depends on: its entity's and those of every entity above it."""
    points: list[str] = []
    unit = district.units[unit_id]
    while True:
        points += [p for p in unit.charging_points if p not in points]
        if unit.parent is None:
            return points
        unit = district.units[unit.parent]


def _loss_note(loss: LossShare) -> Note:
    where = "+".join(loss.points) or loss.below
    if loss.method == "parent":
        return note("bills.loss_parent", where=where, below=loss.below)
    return note("bills.loss_share", where=where, below=loss.below, method=loss.method, weight=loss.weight)


def _with_entities(district: District, bills: tuple[Bill, ...], volumes: UnitVolumes) -> tuple[Bill, ...]:
    """Each bill lists the entities directly below it: a village's bill its blocks, with what each is billed."""
    by_unit = {b.unit_id: b for b in bills}
    out = []
    for bill in bills:
        listed = []
        for sub in district.below_of(bill.unit_id):
            sub_bill, entity = by_unit.get(sub.id), volumes.entities.get(sub.id)
            if sub_bill is None or entity is None:
                continue  # households: their statements split this bill
            listed.append(_summary(sub_bill, entity))
        out.append(dataclasses.replace(bill, entities=tuple(listed)) if listed else bill)
    return tuple(out)


def _summary(bill: Bill, entity: EntityVolume) -> schemas.EntitySummary:
    return schemas.EntitySummary(unit=bill.unit_id, name=bill.unit_name, kind=bill.unit_kind, source=entity.source,
                                 inflow_m3=entity.inflow_m3, loss_m3=entity.loss_m3, billed_m3=entity.billed_m3, total=bill.total)


def household_statements(district: District, bills: Sequence[Bill], season_kind: str) -> tuple[Statement, ...]:
    """Statements of the households below each bill: every line split by their weights, to the fen and litre.

    Each line's parts add up to the line, so a bill's statements add up to the bill.
    """
    out: list[Statement] = []
    for bill in bills:
        if bill.unit_kind == "household":  # a household with its own meter: its statement is its bill
            out.append(Statement(bill.unit_id, bill.unit_name, bill.parent or "", bill.bill_id, district.root_of(bill.unit_id).id, "meter",
                                 Decimal(1), bill.volume_m3, sum((x.volume_m3 for x in bill.losses), Decimal(0)), bill.lines))
            continue
        households = [u for u in district.below_of(bill.unit_id) if not district.is_charged(u.id)]
        if not households:
            continue
        method = households[0].share or "area"
        weights = [weight_of(district, h, method, season_kind) for h in households]
        split = [_split_line(line, weights) for line in bill.lines]
        volumes = split_exactly(bill.volume_m3.quantize(VOLUME_QUANTUM), weights)
        losses = split_exactly(sum((x.volume_m3 for x in bill.losses), Decimal(0)).quantize(VOLUME_QUANTUM), weights)
        root = district.root_of(bill.unit_id).id
        for i, household in enumerate(households):
            out.append(Statement(household.id, household.name, bill.unit_id, bill.bill_id, root, method, weights[i],
                                 volumes[i], losses[i], tuple(parts[i] for parts in split)))
    return tuple(out)


def _split_line(line: Line, weights: Sequence[Decimal]) -> list[Line]:
    sign = Decimal(-1) if line.amount < 0 else Decimal(1)
    amounts = split_exactly(abs(line.amount), weights, FEN)
    volumes = split_exactly(line.volume_m3.quantize(VOLUME_QUANTUM), weights)
    return [dataclasses.replace(line, volume_m3=v, amount=sign * a) for v, a in zip(volumes, amounts, strict=True)]


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
