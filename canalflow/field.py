"""The field coefficient (田间水利用系数) on typical plots: one set of rules for billing and the simulator.

domain.md section 2: for dry crops the net water one irrigation stores is 1000·H·(θ_after − θ_before)
mm over the plot, H the planned wetting depth and θ the volumetric water content averaged over H,
θ_after capped at field capacity (water above it drains below the root zone: a loss); the plot's
η_f = stored ÷ applied depth (plot inlet volume ÷ plot area). Rain and crop evapotranspiration
between the two soil-moisture readings are taken out of and put back into the change of storage
(rain is not irrigation water; the crop used water the irrigation stored). A district's η_f is
the mean of its plots by crop weighted by each crop's irrigated area; crops without a plot fall
back to the units' configured ``field_efficiency``, labelled as such.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from canalflow.district import District, Plot

M2_PER_MU = 10_000 / 15
NO_EFFECT_RAIN_MM = 5.0  # a day's rain below this wets the surface and evaporates: not effective
FULL_EFFECT_RAIN_MM = 50.0  # above this, a fifth of the excess runs off
RUNOFF_SHARE = 0.2


def effective_rain_mm(rain_mm: float) -> float:
    """The part of a day's rain that enters the root zone (a common piecewise rule)."""
    if rain_mm < NO_EFFECT_RAIN_MM:
        return 0.0
    return min(rain_mm, FULL_EFFECT_RAIN_MM) + (1 - RUNOFF_SHARE) * max(0.0, rain_mm - FULL_EFFECT_RAIN_MM)


def mm_per_m3(plot: Plot) -> float:
    """Depth over the plot (mm) of one m3 of water."""
    return 1000.0 / (float(plot.area_mu) * M2_PER_MU)


def theta_over_depth(plot: Plot, by_depth: Mapping[int, float]) -> float | None:
    """θ averaged over the wetting depth: each sensor stands for the layer between the midpoints to
    its neighbours, cut at H. None when a sensor within H has no reading."""
    h_cm = plot.wetting_depth_m * 100
    depths = sorted(d for d in plot.depths_cm if d <= h_cm)
    if any(d not in by_depth for d in depths):
        return None
    bounds = [0.0, *((a + b) / 2 for a, b in itertools.pairwise(depths)), h_cm]
    total = sum(by_depth[d] * (bounds[i + 1] - bounds[i]) for i, d in enumerate(depths))
    return total / h_cm


def stored_mm(plot: Plot, theta_before: float, theta_after: float, rain_mm: float, crop_et_mm: float) -> float:
    """Irrigation water stored in the root zone between two readings (mm), never below 0."""
    change = 1000.0 * plot.wetting_depth_m * (min(theta_after, plot.field_capacity) - theta_before)
    return max(0.0, change - effective_rain_mm(rain_mm) + crop_et_mm)


@dataclass(frozen=True)
class PlotIrrigation:
    """What a typical plot's meters read around one irrigation."""

    plot: str
    day: dt.date
    inlet_m3: float  # the plot inlet meter's volume
    theta_before: Mapping[int, float] | None  # soil-moisture station, start of the irrigation day, by depth (cm); None: no station
    theta_after: Mapping[int, float] | None  # and at the start of the next day
    rain_mm: float  # the plot's rain gauge over the irrigation day
    reference_et_mm: float  # reference ET of the day (weather station)
    missing: str = ""  # why this irrigation cannot be measured (a reading missing); "" when it can


@dataclass(frozen=True)
class PlotResult:
    plot: str
    irrigations: int
    applied_mm: float
    stored_mm: float
    eta: float | None  # None: a reading is missing
    note: str = ""


def measure_plot(plot: Plot, kc: float, irrigations: list[PlotIrrigation]) -> PlotResult:
    """η_f of a plot over its irrigations: Σ stored ÷ Σ applied, stored from θ before and after."""
    applied = stored = 0.0
    for irr in irrigations:
        applied += irr.inlet_m3 * mm_per_m3(plot)
        if irr.missing:
            return PlotResult(plot.id, len(irrigations), applied, stored, None, f"incomplete: {irr.missing}")
        before = theta_over_depth(plot, irr.theta_before) if irr.theta_before is not None else None
        after = theta_over_depth(plot, irr.theta_after) if irr.theta_after is not None else None
        if before is None or after is None:
            why = "no soil-moisture station" if plot.station is None else f"soil-moisture readings missing around {irr.day}"
            return PlotResult(plot.id, len(irrigations), applied, stored, None, f"incomplete: {why}")
        stored += stored_mm(plot, before, after, irr.rain_mm, kc * irr.reference_et_mm)
    if applied <= 0:
        return PlotResult(plot.id, len(irrigations), 0.0, 0.0, None, "incomplete: no irrigation in the window")
    return PlotResult(plot.id, len(irrigations), applied, stored, stored / applied)


@dataclass(frozen=True)
class FieldAggregate:
    """A district's field coefficient from its plots' η, weighted by each crop's irrigated area."""

    value: float | None
    measured_share: float  # of the irrigated area whose crop has a measured plot
    crops_measured: tuple[str, ...]
    crops_fallback: tuple[str, ...]  # crops with no plot: the units' field_efficiency stands in
    crop_eta: Mapping[str, float]
    unit_eta: Mapping[str, float]


def aggregate(district: District, plot_eta: Mapping[str, float]) -> FieldAggregate:
    """η_f per crop (plots' area-weighted mean), per unit and for the district (crop areas' weights)."""
    by_crop: dict[str, list[tuple[float, float]]] = {}
    for plot_id, eta in plot_eta.items():
        plot = district.plots[plot_id]
        by_crop.setdefault(plot.crop, []).append((float(plot.area_mu), eta))
    crop_eta = {c: sum(a * e for a, e in v) / sum(a for a, _ in v) for c, v in by_crop.items()}
    unit_eta: dict[str, float] = {}
    weighted = total = measured = 0.0
    fallback: set[str] = set()
    for unit in district.spec.units:
        if not unit.crops:
            continue  # its crops are those of the entities below it: their areas count there, once
        u_weighted = u_total = 0.0
        for crop in unit.crops:
            area = float(crop.area_mu)
            eta = crop_eta.get(crop.crop)
            if eta is None:
                fallback.add(crop.crop)
                eta = unit.field_efficiency
            else:
                measured += area
            u_weighted += area * eta
            u_total += area
        unit_eta[unit.id] = u_weighted / u_total
        weighted += u_weighted
        total += u_total
    return FieldAggregate(weighted / total if total > 0 and crop_eta else None, measured / total if total > 0 else 0.0,
                          tuple(sorted(crop_eta)), tuple(sorted(fallback)), crop_eta, unit_eta)
