"""Consistent volumes at every charging point, for tests and benchmarks that feed the district a steady round.

Feeding every charging point the same volume breaks conservation as soon as a unit has sub-meters
(three meters of 10,000 m³ cannot sit behind one that measured 10,000). :func:`steady_share` gives
each meter on a canal the same volume and each sub-meter its entity's area share of the meter
above it, less a loss, so that the sub-meters behind a meter always add up to less than it measured.
"""

from __future__ import annotations

from canalflow.district import District

SUB_METER_LOSS = 0.1  # the part of a meter's volume lost before its sub-meters


def steady_share(district: District, volume_m3: float, loss: float = SUB_METER_LOSS) -> dict[str, float]:
    """Volume (m³) at each charging point: ``volume_m3`` on the canal, by area share and less ``loss`` below it."""
    out: dict[str, float] = {}
    for unit in district.root_units:
        for point_id in unit.charging_points:
            out[point_id] = volume_m3
        _below(district, unit.id, sum(out[p] for p in unit.charging_points), loss, out)
    return out


def _below(district: District, unit_id: str, metered_m3: float, loss: float, out: dict[str, float]) -> None:
    entities = district.below_of(unit_id)
    area = float(sum(u.area_mu for u in entities)) or 1.0
    for entity in entities:
        if not entity.charging_points:
            continue
        volume = metered_m3 * (1 - loss) * float(entity.area_mu) / area / len(entity.charging_points)
        for point_id in entity.charging_points:
            out[point_id] = volume
        _below(district, entity.id, volume * len(entity.charging_points), loss, out)
