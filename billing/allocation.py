"""Charging-point volumes -> billing-unit volumes.

A unit's volume is the sum of its shares of its charging points. A point charging one unit gives
it all its volume; a point shared by several units (``allocation`` on the point) is split:

- ``area``: in proportion to the units' irrigated areas;
- ``metered``: in proportion to the units' own metered volumes at their other, unshared charging
  points (their sub-meters); when a sharing unit has no such meter, by area for all, with a note.

Point volumes are rounded to the allocation quantum (1 m3 by default) once, then split with the
largest-remainder method, so the allocations add up exactly to the point's volume.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cached_property

from billing.tariff import split_exactly
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
class UnitVolumes:  # not slotted: cached_property needs __dict__
    by_unit: dict[str, Decimal]
    allocations: tuple[Allocation, ...]
    notes: tuple[str, ...] = field(default=())

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


def allocate(district: District, point_volumes: Mapping[str, float], quantum: Decimal = M3) -> UnitVolumes:
    """Unit volumes from point volumes (m3, float) for every unit of the district."""
    allocations: list[Allocation] = []
    notes: list[str] = []
    sharing = units_by_point(district)
    exclusive = _exclusive_volumes(district, sharing, point_volumes, quantum)
    for point_id, units in sharing.items():
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
                notes.append(f"point {point_id}: allocation 'metered' but not every sharing unit has its own meter; split by area")
                method = "area"
        parts = split_exactly(total, weights, quantum)
        allocations += [Allocation(u.id, point_id, v, method, w) for u, v, w in zip(units, parts, weights, strict=True)]
    by_unit = {u: Decimal(0) for u in district.units}
    for a in allocations:
        by_unit[a.unit_id] += a.volume_m3
    return UnitVolumes(by_unit, tuple(allocations), tuple(notes))


def units_by_point(district: District) -> dict[str, list[BillingUnit]]:
    """Charging point -> the units it charges, in the district file's order."""
    sharing: dict[str, list[BillingUnit]] = {}
    for unit in district.spec.units:
        for point_id in unit.charging_points:
            sharing.setdefault(point_id, []).append(unit)
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
