"""Consistent volumes at every charging point, for tests and benchmarks that feed the district a steady round.

Feeding every charging point the same volume breaks conservation as soon as a unit has sub-meters
(three meters of 10,000 m³ cannot sit behind one that measured 10,000). :func:`steady_share` gives
each meter on a canal the same volume and :func:`below_meters` each sub-meter its entity's area
share of the meter above it, less a loss, so that the sub-meters behind a meter always add up to
less than it measured. Both are linear: pass flows (m³/s) instead of volumes and get flows.
"""

from __future__ import annotations

from collections.abc import Mapping

from canalflow.district import District

SUB_METER_LOSS = 0.1  # the part of a meter's volume lost before its sub-meters


def steady_share(district: District, volume_m3: float, loss: float = SUB_METER_LOSS) -> dict[str, float]:
    """Volume (m³) at each charging point: ``volume_m3`` at every meter on a canal, the sub-meters below by area share."""
    on_canal = {p: volume_m3 for u in district.root_units for p in u.charging_points}
    return on_canal | below_meters(district, on_canal, loss)


def below_meters(district: District, on_canal: Mapping[str, float], loss: float = SUB_METER_LOSS) -> dict[str, float]:
    """The sub-meters' volumes behind the meters on a canal (``on_canal``: point -> m³; missing points take 0)."""
    out: dict[str, float] = {}
    for unit in district.root_units:
        _below(district, unit.id, sum(on_canal.get(p, 0.0) for p in unit.charging_points), loss, out)
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


def steady_flows(district: District, flow_m3s: float) -> dict[str, float]:
    """A flow at every point of the district: ``flow_m3s``, except sub-meters (their share, :func:`below_meters`)."""
    return {p: flow_m3s for p in district.points} | below_meters(district, {p: flow_m3s for p in district.points})
