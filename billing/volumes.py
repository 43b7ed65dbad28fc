"""Charging-point volumes of a window, from one of two sources behind one protocol.

    source = volume_source("readings", district, influx, as_of_ms=None)   # or "rollups"
    measured = source.measure(charging_points(district), t0_ms, t1_ms, edits=edits)
    measured.volumes["V01-IN"].result.volume_m3

- ``readings``: the raw ``reading`` series, re-rated with the rating in force
  (:mod:`billing.hydrometry`), integrated by :func:`canalflow.volume.window_volume` with the
  district's tolerances and the meter's totaliser rollover, manual edits applied; any window.
- ``rollups``: the daily ``volume`` rollups ingest wrote, summed by InfluxDB; whole days only,
  fast for a season of many points. Edits and ``as_of`` are not applied to rollups.

Billing (through VEE, :mod:`billing.vee`) and the efficiency report take their volumes from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from billing.edits import Edit, apply_edits
from billing.hydrometry import RatingUse, rerate
from billing.readings import fetch_rollup_volumes, fetch_series
from billing.window import BillingError, month_windows
from canalflow.district import District
from canalflow.influx import InfluxV1
from canalflow.profiles import Profile
from canalflow.volume import Series, VolumeResult, window_volume


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
class Measured:
    """What a source hands to VEE: the points' volumes and the raw series behind them (none for rollups)."""

    volumes: dict[str, PointVolume]
    series: Mapping[str, Series] = field(default_factory=dict)

    def results(self) -> dict[str, VolumeResult]:
        return {p: v.result for p, v in self.volumes.items()}


class VolumeSource(Protocol):
    def measure(
        self, point_ids: Sequence[str], t0_ms: int, t1_ms: int, *, edits: Sequence[Edit] = (), by_month: bool = True,
        lag_ms: Mapping[str, int] | None = None,
    ) -> Measured:
        """Volumes of ``point_ids`` over [t0, t1); ``by_month`` also cuts them at local months;
        ``lag_ms`` shifts each point's window (the water's travel time from the headworks)."""
        ...


def rollover_of(district: District, point_id: str) -> float | None:
    """The totaliser's rollover modulus (m3) from the point's meter profile, if it wraps."""
    profile: Profile = district.profile_of(point_id)
    reg = profile.by_quantity("totaliser")
    return reg.rollover_modulus_si if reg is not None else None


def charging_points(district: District) -> list[str]:
    return sorted({p for u in district.spec.units for p in u.charging_points})


def compute_point_volumes(
    district: District, series: Mapping[str, Series], t0_ms: int, t1_ms: int, *, edits: Sequence[Edit] = (),
    by_month: bool = True, lag_ms: Mapping[str, int] | None = None,
) -> dict[str, PointVolume]:
    """Each series' window volume: re-rated, with the district's tolerances and the meter's rollover."""
    lag = lag_ms or {}
    out: dict[str, PointVolume] = {}
    for point_id, raw in series.items():
        shift = lag.get(point_id, 0)
        out[point_id] = point_volume(district, point_id, raw, t0_ms + shift, t1_ms + shift, edits=edits, by_month=by_month)
    return out


def point_volume(
    district: District, point_id: str, raw: Series, t0_ms: int, t1_ms: int, *, edits: Sequence[Edit] = (), by_month: bool = True
) -> PointVolume:
    tol = district.spec.tolerances
    max_gap = int(tol.max_gap_minutes * 60_000)
    s, uses = rerate(district, point_id, raw)
    rollover, cap = rollover_of(district, point_id), district.capacity_m3s(point_id)
    mine = [e for e in edits if e.point == point_id]
    if mine:
        result = apply_edits(s, mine, t0_ms, t1_ms, max_gap_ms=max_gap, rollover_m3=rollover, min_coverage=tol.min_coverage, max_flow_m3s=cap)
    else:
        result = window_volume(s, t0_ms, t1_ms, max_gap_ms=max_gap, rollover_m3=rollover, min_coverage=tol.min_coverage, max_flow_m3s=cap)
    months = month_windows(district, t0_ms, t1_ms) if by_month else []
    if not months:
        monthly: tuple[tuple[str, float], ...] = ()
    elif mine:  # edited volumes are not located in time: spread over the months by duration
        monthly = tuple((label, result.volume_m3 * (b - a) / (t1_ms - t0_ms)) for label, a, b in months)
    elif len(months) == 1:
        monthly = ((months[0][0], result.volume_m3),)
    else:
        monthly = tuple((label, window_volume(s, a, b, max_gap_ms=max_gap, rollover_m3=rollover, max_flow_m3s=cap).volume_m3) for label, a, b in months)
    return PointVolume(point_id, result, monthly, tuple(uses))


@dataclass(frozen=True)
class ReadingsSource:
    """Volumes integrated from the raw readings; ``as_of_ms``: readings stamped later are not read."""

    district: District
    influx: InfluxV1
    as_of_ms: int | None = None

    def measure(
        self, point_ids: Sequence[str], t0_ms: int, t1_ms: int, *, edits: Sequence[Edit] = (), by_month: bool = True,
        lag_ms: Mapping[str, int] | None = None,
    ) -> Measured:
        max_gap = int(self.district.spec.tolerances.max_gap_minutes * 60_000)
        latest = max((lag_ms or {}).values(), default=0)
        series = fetch_series(self.influx, self.district.id, point_ids, t0_ms, t1_ms + latest, margin_ms=max_gap, as_of_ms=self.as_of_ms)
        return Measured(compute_point_volumes(self.district, series, t0_ms, t1_ms, edits=edits, by_month=by_month, lag_ms=lag_ms), series)


@dataclass(frozen=True)
class RollupsSource:
    """Volumes summed by InfluxDB from the daily rollups (whole days as ingest aligned them)."""

    district: District
    influx: InfluxV1
    as_of_ms: int | None = None  # not applied: a rollup has no per-reading arrival time

    def measure(
        self, point_ids: Sequence[str], t0_ms: int, t1_ms: int, *, edits: Sequence[Edit] = (), by_month: bool = True,
        lag_ms: Mapping[str, int] | None = None,
    ) -> Measured:
        if lag_ms:
            raise BillingError("--travel-time needs raw readings: daily rollups cannot be shifted by minutes")
        covering = [e for e in edits if e.point in point_ids and e.end_ms > t0_ms and e.start_ms < t1_ms]
        if covering:
            which = ", ".join(f"#{e.id} {e.point}" for e in covering)
            raise BillingError(f"manual edits {which} cover this window, and daily rollups cannot apply an edit: "
                               "bill this window with --source readings")
        months = month_windows(self.district, t0_ms, t1_ms) if by_month else []
        min_coverage = self.district.spec.tolerances.min_coverage
        rollups = fetch_rollup_volumes(self.influx, self.district.id, point_ids, t0_ms, t1_ms, min_coverage=min_coverage, months=months)
        return Measured({p: PointVolume(p, r, tuple(rollups.monthly.get(p, {}).items())) for p, r in rollups.results.items()})


SOURCES: dict[str, type[ReadingsSource] | type[RollupsSource]] = {"readings": ReadingsSource, "rollups": RollupsSource}


def volume_source(name: str, district: District, influx: InfluxV1, *, as_of_ms: int | None = None) -> VolumeSource:
    """The source called ``name`` (``readings`` or ``rollups``)."""
    kind = SOURCES.get(name)
    if kind is None:
        raise BillingError(f"unknown volume source {name!r}: use readings or rollups")
    return kind(district, influx, as_of_ms)
