"""A daily root-zone water balance of each typical plot: sensor readings and ground truth.

Each day of a season, in this order: effective rain (canalflow.field.effective_rain_mm) and, on the
plot's turn in each round (``TURN_DAY`` days after the round opens, once the canals run steady), the
irrigation enter the root zone; water above field capacity drains
below it (deep percolation, a loss, charged to the irrigation first: it came on top); the crop
then takes kc × reference ET, down to the wilting point. A plot's irrigation depth is its crop's
season quota (the unit's method and zone) × the round's share of the season × ``demand_factor``,
as the hydraulic model's demand. θ is uniform over the wetting depth (sensors deeper read the
water content below it, which stays at its start).

Truth per irrigation: applied depth and stored depth (applied − the percolation it caused). The
readings a station would give: θ at each sensor depth at the start of each day (noise ±0.0005),
the rain gauge's tipping-bucket total (0.1 mm per count), the plot inlet meter's volume (±0.3 %).
The plot's inlet point carries the irrigation as a true flow from ``IRRIGATION_START`` for
``IRRIGATION_HOURS`` (:meth:`RootZone.inlet_flow`), which the fleet's meter reads with its own error.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from functools import cached_property

from canalflow.district import District, Plot, best_quota_rule
from canalflow.field import M2_PER_MU, PlotIrrigation, effective_rain_mm
from firmware_sim.hydraulics import round_windows
from firmware_sim.scenario import Scenario
from firmware_sim.stepfn import StepFn

THETA_NOISE = 0.0005
TIP_MM = 0.1  # the XM9505 gauge counts 0.1 mm (canalflow/profiles/rain-gauge.yaml)
INLET_ERROR = 0.003
TURN_DAY = 2  # a plot's turn comes on the round's third day
IRRIGATION_START = dt.time(8, 0)  # local time the plot's inlet opens on its turn
IRRIGATION_HOURS = 8


@dataclass(frozen=True)
class Irrigation:
    """One irrigation of a plot: the truth, and what its meters read (``observed``)."""

    applied_mm: float
    stored_mm: float
    observed: PlotIrrigation

    @property
    def eta(self) -> float:
        return self.stored_mm / self.applied_mm


class RootZone:
    """Typical plots of a district under a scenario's weather and demand (deterministic for a seed)."""

    def __init__(self, district: District, scenario: Scenario | None = None, seed: int = 0) -> None:
        self.district = district
        self.scenario = scenario or Scenario.default()
        self.seed = seed

    @cached_property
    def irrigations(self) -> dict[str, list[Irrigation]]:
        """Every plot's irrigations in the first year of the district's seasons."""
        self._theta: dict[str, dict[dt.date, float]] = {}
        return {plot.id: self._simulate(plot) for plot in self.district.spec.plots}

    def theta(self, plot_id: str, day: dt.date) -> float:
        """The plot's true θ (uniform over its wetting depth) at the start of local ``day``; outside the
        seasons, the θ it starts each season with."""
        plot = self.district.plots[plot_id]
        self.irrigations  # noqa: B018  # fills self._theta
        return self._theta[plot_id].get(day, self._start_theta(plot))

    def sensor_value(self, point_id: str, quantity: str, t_ms: int) -> float:
        """What the soil-moisture station or rain gauge ``point_id`` reads at ``t_ms`` (SI, no noise):
        ``vwc_<d>cm`` of the plot it stands on (below the wetting depth: the start θ), or the rain
        gauge's count since 1 January of the year as rain depth (m), whole tips only."""
        day = self.district.local_date(t_ms)
        if quantity == "rain_total":
            rain = sum(r.mm for r in self.scenario.weather.rain if dt.date(day.year, 1, 1) <= r.day < day)
            return TIP_MM * int(rain / TIP_MM + 1e-9) / 1000.0
        plot = next(p for p in self.district.spec.plots if p.station == point_id)
        depth_cm = int(quantity.removeprefix("vwc_").removesuffix("cm"))
        return self.theta(plot.id, day) if depth_cm <= plot.wetting_depth_m * 100 else self._start_theta(plot)

    def _start_theta(self, plot: Plot) -> float:
        return plot.wilting_point + self.scenario.weather.initial_share * (plot.field_capacity - plot.wilting_point)

    def plot_eta(self, plot_id: str, first: dt.date = dt.date.min, last: dt.date = dt.date.max) -> float:
        """The plot's true η_f over its irrigations on days ``first`` … ``last``: Σ stored ÷ Σ applied."""
        done = [i for i in self.irrigations[plot_id] if first <= i.observed.day <= last]
        return sum(i.stored_mm for i in done) / sum(i.applied_mm for i in done)

    def _depths(self, plot: Plot) -> dict[dt.date, float]:
        """The plot's irrigation depth (mm) by local day."""
        unit = self.district.units[plot.unit]
        crop_area = next(c for c in unit.crops if c.crop == plot.crop)
        seasons = self.district.seasons
        out: dict[dt.date, float] = {}
        for season_id, label, start_ms, _end, share in round_windows(self.district, 1):
            del label
            rule = best_quota_rule(self.district.crops[plot.crop], seasons[season_id].kind, crop_area.method, unit.zone)
            if rule is not None:
                m3_per_mu = float(rule.m3_per_mu) * share * self.scenario.hydraulics.demand_factor
                out[self.district.local_date(start_ms) + dt.timedelta(days=TURN_DAY)] = m3_per_mu / M2_PER_MU * 1000.0
        return out

    def inlet_flow(self, plot_id: str) -> StepFn:
        """The true flow (m3/s) through the plot's inlet: each irrigation's applied depth over the plot."""
        plot = self.district.plots[plot_id]
        seconds = IRRIGATION_HOURS * 3600
        pulses = []
        for irrigation in self.irrigations[plot_id]:
            start = dt.datetime.combine(irrigation.observed.day, IRRIGATION_START, self.district.tz)
            start_ms = int(start.timestamp() * 1000)
            m3 = irrigation.applied_mm / 1000.0 * float(plot.area_mu) * M2_PER_MU
            pulses.append((start_ms, start_ms + seconds * 1000, m3 / seconds))
        return StepFn.pulses(pulses)

    def _simulate(self, plot: Plot) -> list[Irrigation]:
        weather = self.scenario.weather
        rain = {r.day: r.mm for r in weather.rain}
        kc = self.district.crops[plot.crop].kc
        depths = self._depths(plot)
        rng = random.Random(f"{self.seed}:{plot.id}")
        meter_factor = 1 + rng.uniform(-INLET_ERROR, INLET_ERROR)
        h_mm = 1000.0 * plot.wetting_depth_m
        fc, wp = h_mm * plot.field_capacity, h_mm * plot.wilting_point
        start_theta = self._start_theta(plot)
        daily = self._theta[plot.id] = {}
        out: list[Irrigation] = []
        for season in self.district.spec.seasons:
            water = start_theta * h_mm
            day = season.start
            while day <= season.end:
                daily[day] = water / h_mm
                before = water
                applied = depths.get(day, 0.0)
                water += effective_rain_mm(rain.get(day, 0.0)) + applied
                percolation = max(0.0, water - fc)
                water -= percolation
                water -= min(kc * weather.et0_mm_per_day, max(0.0, water - wp))
                if applied > 0:
                    out.append(Irrigation(applied, applied - min(percolation, applied), PlotIrrigation(
                        plot.id, day, applied / 1000.0 * float(plot.area_mu) * M2_PER_MU * meter_factor,
                        self._station(plot, before / h_mm, start_theta, rng), self._station(plot, water / h_mm, start_theta, rng),
                        TIP_MM * int(rain.get(day, 0.0) / TIP_MM + 1e-9), weather.et0_mm_per_day,
                    )))
                day += dt.timedelta(days=1)
        return out

    def observations(self) -> list[PlotIrrigation]:
        """What the plots' meters read around every irrigation."""
        return [i.observed for done in self.irrigations.values() for i in done]

    @staticmethod
    def _station(plot: Plot, theta: float, below: float, rng: random.Random) -> dict[int, float] | None:
        if plot.station is None:
            return None
        h_cm = plot.wetting_depth_m * 100
        return {d: (theta if d <= h_cm else below) + rng.uniform(-THETA_NOISE, THETA_NOISE) for d in plot.depths_cm}
