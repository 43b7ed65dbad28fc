"""Charging-point volumes -> billing-unit volumes.

A unit's volume is the sum of its shares of its charging points. A point charging one unit gives
it all its volume; a point shared by several units (``allocation`` on the point) is split:

- ``area``: in proportion to the units' irrigated areas;
- ``metered``: in proportion to the units' own metered volumes at their other, unshared charging
  points (their sub-meters); when a sharing unit has no such meter, by area for all, with a note.

Point volumes are rounded to the allocation quantum (1 m3 by default) once, then split with the
largest-remainder method, so the allocations add up exactly to the point's volume.

Below a unit, the metering hierarchy (``parent:`` on entities, ``below:`` on sub-meters) passes
the unit's volume down (:func:`distribute`): a charged entity with its own sub-meter takes what it
measured; the loss below a meter (its volume minus the metered entities below it) is shared among
them by the parent's ``loss:`` method (metered volume, area, quota) or borne by the parent
(``parent``), as loss lines; entities without a meter share the rest of their parent's volume by
``share:`` (area or quota). Households are not charged: they get a statement, a share of their
parent's bill; a household with its own sub-meter is billed what it measured, and beside it the
rest of its parent's volume (loss included) stays on the parent's bill, which the other
households' statements split. :func:`conservation` proves, for every charging meter, that what is billed behind
it adds up to what it measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cached_property

from billing.notes import Note, note
from billing.tariff import class_quotas, split_exactly
from canalflow.district import BillingUnit, District

M3 = Decimal(1)


@dataclass(frozen=True)
class Allocation:
    """One unit's share of one charging point."""

    unit_id: str
    point_id: str
    volume_m3: Decimal
    method: str  # sole | area | metered
    weight: Decimal


@dataclass(frozen=True)
class LossShare:
    """An entity's share of the loss below a meter (or the loss a parent bears itself)."""

    unit_id: str
    below: str  # the entity whose meter the loss is below
    points: tuple[str, ...]  # that entity's charging points
    method: str  # metered | area | quota | parent
    weight: Decimal
    volume_m3: Decimal


@dataclass(frozen=True)
class EntityVolume:
    """Where a charged entity's billed water comes from: its own use, and its loss lines."""

    unit_id: str
    inflow_m3: Decimal  # measured at its meters (or its share of its parent's)
    own_m3: Decimal  # billed through its own tariff (0 when the entities below it take its water)
    source: str  # meter | share:<method> | passed down
    losses: tuple[LossShare, ...] = ()

    @property
    def loss_m3(self) -> Decimal:
        return sum((loss.volume_m3 for loss in self.losses), Decimal(0))

    @property
    def billed_m3(self) -> Decimal:
        return self.own_m3 + self.loss_m3


@dataclass(frozen=True)
class UnitVolumes:  # not slotted: cached_property needs __dict__
    by_unit: dict[str, Decimal]  # billed volume of each charged entity: own use + loss lines
    allocations: tuple[Allocation, ...]
    notes: tuple[Note, ...] = field(default=())
    entities: dict[str, EntityVolume] = field(default_factory=dict)

    def of(self, unit_id: str) -> list[Allocation]:
        return self._by_unit.get(unit_id, [])

    @cached_property
    def _by_unit(self) -> dict[str, list[Allocation]]:
        index: dict[str, list[Allocation]] = {}
        for a in self.allocations:
            index.setdefault(a.unit_id, []).append(a)
        return index


def quantize_volume(volume_m3: float, quantum: Decimal = M3) -> Decimal:
    """A float volume as a Decimal multiple of ``quantum`` (banker's rounding; negatives refused)."""
    value = Decimal(repr(volume_m3)).quantize(quantum, rounding=ROUND_HALF_EVEN)
    if value < 0:
        raise ValueError(f"negative volume {volume_m3} m3 at a charging point: reverse flow must be checked before billing")
    return value + 0  # normalise -0


def allocate(district: District, point_volumes: Mapping[str, float], quantum: Decimal = M3, season_kind: str | None = None) -> UnitVolumes:
    """Billed volumes from point volumes (m3, float) for every charged entity of the district.

    Raises :class:`ConservationError` when sub-meters measured more than the meter above them.
    """
    allocations: list[Allocation] = []
    notes: list[Note] = []
    sharing = units_by_point(district)
    exclusive = _exclusive_volumes(district, sharing, point_volumes, quantum)
    for point_id, units in sharing.items():
        if district.points[point_id].below is not None:
            continue  # a sub-meter: its entity's volume comes from the hierarchy below
        total = quantize_volume(point_volumes.get(point_id, 0.0), quantum)
        if len(units) == 1:
            allocations.append(Allocation(units[0].id, point_id, total, "sole", Decimal(1)))
            continue
        method = district.points[point_id].allocation
        weights = [u.area_mu for u in units]
        if method == "metered":
            metered = [exclusive.get(u.id) for u in units]
            if all(m is not None for m in metered):
                weights = [m for m in metered if m is not None]
            else:
                notes.append(note("allocation.metered_by_area", point=point_id))
                method = "area"
        parts = split_exactly(total, weights, quantum)
        allocations += [Allocation(u.id, point_id, v, method, w) for u, v, w in zip(units, parts, weights, strict=True)]
    inflow = {u.id: Decimal(0) for u in district.root_units}
    for a in allocations:
        inflow[a.unit_id] += a.volume_m3
    entities: dict[str, EntityVolume] = {}
    for unit in district.root_units:
        distribute(district, unit, inflow[unit.id], point_volumes, quantum, entities, season_kind=season_kind)
    by_unit = {u: e.billed_m3 for u, e in entities.items()}
    return UnitVolumes(by_unit, tuple(allocations), tuple(notes), entities)


class ConservationError(ValueError):
    """The meters below an entity measured more than its own meter: no loss can be shared."""


def distribute(
    district: District, unit: BillingUnit, inflow: Decimal, point_volumes: Mapping[str, float], quantum: Decimal,
    out: dict[str, EntityVolume], losses: tuple[LossShare, ...] = (), source: str = "meter", season_kind: str | None = None,
) -> None:
    """Pass an entity's inflow down its hierarchy into ``out`` (charged entities only)."""
    below = [u for u in district.below_of(unit.id) if district.is_charged(u.id)]
    if not below:
        out[unit.id] = EntityVolume(unit.id, inflow, inflow, source, losses)
        return
    if len(below) < len(district.below_of(unit.id)):  # metered households beside households sharing this bill
        _keep_rest(district, unit, below, inflow, point_volumes, quantum, out, losses, source, season_kind)
        return
    metered = [u for u in below if u.charging_points]
    shared = [u for u in below if not u.charging_points]
    measured = [_measured(u, point_volumes, quantum) for u in metered]
    rest = inflow - sum(measured, Decimal(0))
    if rest < 0:
        _too_much(unit, inflow, metered, measured)
    own_losses = losses
    loss_parts = [Decimal(0)] * len(metered)
    weights = measured if unit.loss in ("metered", "parent") else [weight_of(district, u, unit.loss, season_kind) for u in metered]
    if shared:  # the entities without a meter take the rest, loss included
        parts = split_exactly(rest, [weight_of(district, u, u.share or "area", season_kind) for u in shared], quantum)
        for sub, part in zip(shared, parts, strict=True):
            distribute(district, sub, part, point_volumes, quantum, out, source=f"share:{sub.share}", season_kind=season_kind)
    elif unit.loss == "parent":
        own_losses = (*losses, LossShare(unit.id, unit.id, unit.charging_points, "parent", Decimal(1), rest))
    elif metered:
        loss_parts = split_exactly(rest, weights, quantum)
    for sub, volume, loss, weight in zip(metered, measured, loss_parts, weights, strict=True):
        shares = (LossShare(sub.id, unit.id, unit.charging_points, unit.loss, weight, loss),) if loss else ()
        distribute(district, sub, volume, point_volumes, quantum, out, shares, season_kind=season_kind)
    out[unit.id] = EntityVolume(unit.id, inflow, Decimal(0), "passed down", own_losses)


def _keep_rest(
    district: District, unit: BillingUnit, metered: list[BillingUnit], inflow: Decimal, point_volumes: Mapping[str, float],
    quantum: Decimal, out: dict[str, EntityVolume], losses: tuple[LossShare, ...], source: str, season_kind: str | None,
) -> None:
    """Metered entities take what their meters measured; the rest, loss included, is this entity's own use,
    which the households sharing its bill split by their statements."""
    measured = [_measured(u, point_volumes, quantum) for u in metered]
    rest = inflow - sum(measured, Decimal(0))
    if rest < 0:
        _too_much(unit, inflow, metered, measured)
    for sub, volume in zip(metered, measured, strict=True):
        distribute(district, sub, volume, point_volumes, quantum, out, season_kind=season_kind)
    out[unit.id] = EntityVolume(unit.id, inflow, rest, source, losses)


def _measured(unit: BillingUnit, point_volumes: Mapping[str, float], quantum: Decimal) -> Decimal:
    return sum((quantize_volume(point_volumes.get(p, 0.0), quantum) for p in unit.charging_points), Decimal(0))


def _too_much(unit: BillingUnit, inflow: Decimal, metered: list[BillingUnit], measured: list[Decimal]) -> None:
    subs = ", ".join(f"{u.id} {m} m3 at {'+'.join(u.charging_points)}" for u, m in zip(metered, measured, strict=True))
    raise ConservationError(f"below {unit.id} ({'+'.join(unit.charging_points) or 'its share'}: {inflow} m3) the sub-meters measured more ({subs}): check the meters or estimate with VEE, then rerun")


def weight_of(district: District, unit: BillingUnit, method: str, season_kind: str | None) -> Decimal:
    """An entity's weight in a share: its irrigated area, or its season quota (area without a season)."""
    if method == "quota" and season_kind is not None:
        return sum((q for _, q in class_quotas(unit, district.crops, season_kind).values()), Decimal(0))
    return unit.area_mu


def conservation(district: District, volumes: UnitVolumes, point_volumes: Mapping[str, float], quantum: Decimal = M3) -> list[str]:
    """For every charging meter, what is billed behind it against what it measured; each mismatch, said where.

    A canal intake's volume is allocated in full to the units it charges; behind each charged
    entity, its own use, the loss it bears and the billed volumes of the entities below it add up
    to its inflow; a sub-metered entity's inflow is what its sub-meter measured.
    """
    problems: list[str] = []
    for point_id, units in units_by_point(district).items():
        measured = quantize_volume(point_volumes.get(point_id, 0.0), quantum)
        if district.points[point_id].below is not None:
            billed = sum((volumes.entities[u.id].inflow_m3 for u in units if u.id in volumes.entities), Decimal(0))
        else:
            billed = sum((a.volume_m3 for a in volumes.allocations if a.point_id == point_id), Decimal(0))
        if billed != measured:
            problems.append(f"meter {point_id} (charging {', '.join(u.id for u in units)}) measured {measured} m3 but {billed} m3 are billed behind it")
    for unit_id, entity in volumes.entities.items():
        behind = _billed_behind(district, unit_id, volumes) - _loss_from_above(volumes, unit_id)
        if behind != entity.inflow_m3:
            where = "+".join(district.units[unit_id].charging_points) or f"its share of {district.units[unit_id].parent}"
            problems.append(f"behind {unit_id} ({where}): {entity.inflow_m3} m3 came in but {behind} m3 are billed")
    return problems


def _billed_behind(district: District, unit_id: str, volumes: UnitVolumes) -> Decimal:
    own = volumes.entities[unit_id].billed_m3 if unit_id in volumes.entities else Decimal(0)
    return own + sum((_billed_behind(district, u.id, volumes) for u in district.below_of(unit_id)), Decimal(0))


def _loss_from_above(volumes: UnitVolumes, unit_id: str) -> Decimal:
    entity = volumes.entities.get(unit_id)
    return sum((loss.volume_m3 for loss in entity.losses if loss.below != unit_id), Decimal(0)) if entity else Decimal(0)


def units_by_point(district: District) -> dict[str, list[BillingUnit]]:
    """Charging point -> the units it charges, in the district file's order."""
    sharing: dict[str, list[BillingUnit]] = {}
    for unit in district.spec.units:
        for point_id in unit.charging_points:
            sharing.setdefault(point_id, []).append(district.units[unit.id])  # with its entities' crops
    return sharing


def _exclusive_volumes(
    district: District, sharing: Mapping[str, list[BillingUnit]], point_volumes: Mapping[str, float], quantum: Decimal
) -> dict[str, Decimal]:
    """Per unit, the metered volume at charging points that charge it alone."""
    out: dict[str, Decimal] = {}
    for unit in district.spec.units:
        own = [p for p in unit.charging_points if len(sharing[p]) == 1]
        if own:
            out[unit.id] = sum((quantize_volume(point_volumes.get(p, 0.0), quantum) for p in own), Decimal(0))
    return out
