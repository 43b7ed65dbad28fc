"""Ground truth: a pure, deterministic function of (district, scenario, seed, time).

A test process builds the same :class:`Truth` as the fleet process and gets the same numbers
without talking to it. ``seed`` does not change the hydraulics (it seeds meter errors); it is kept
here so truth and fleet are constructed alike.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from functools import cached_property

from canalflow import ratings
from canalflow.coefficients import SystemBalance, system_balance
from canalflow.district import District, Point
from firmware_sim import hydraulics
from firmware_sim.rootzone import RootZone
from firmware_sim.scenario import Scenario
from firmware_sim.stepfn import StepFn

PIPE_DESIGN_VELOCITY_MS = 1.5  # pipe intakes are sized so the peak flow runs at this velocity
PARSHALL_FREE_FLOW_RATIO = 0.5  # Hb/Ha of a free-flowing flume (well below the 0.7 limit)
WEIR_TAILWATER_M = -0.1  # tailwater below the crest: a free-falling weir


@dataclass(frozen=True)
class PointState:
    """The true physical state at a metering point (SI). ``None``: the point has no such quantity."""

    flow_m3s: float
    level_m: float | None
    velocity_ms: float | None
    downstream_level_m: float | None


def depth_for_area(area_m2: float, bottom_width_m: float, side_slope: float) -> float:
    """Water depth of a rectangular/trapezoidal section holding ``area_m2``."""
    if area_m2 <= 0:
        return 0.0
    if side_slope == 0:
        return area_m2 / bottom_width_m
    b, z = bottom_width_m, side_slope
    return (-b + math.sqrt(b * b + 4 * z * area_m2)) / (2 * z)


class Truth:
    """True flows, volumes, losses and states of a district under a scenario."""

    def __init__(self, district: District, scenario: Scenario | None = None, seed: int = 0) -> None:
        self.district = district
        self.scenario = scenario or Scenario.default()
        self.seed = seed
        self.network = hydraulics.solve(district, self.scenario)
        for plot in district.spec.plots:  # a plot's inlet carries its root zone's irrigations
            self.network.point_flow[plot.inlet] = self.rootzone.inlet_flow(plot.id)
        self._ratings: dict[str, list[ratings.Rating]] = {}

    @cached_property
    def rootzone(self) -> RootZone:
        """The typical plots' root zones, whose θ and rain the plots' stations and gauges read."""
        return RootZone(self.district, self.scenario, self.seed)

    # --- flows and volumes ---
    def flow_fn(self, point_id: str) -> StepFn:
        try:
            return self.network.point_flow[point_id]
        except KeyError:
            raise KeyError(f"unknown metering point {point_id!r} in district {self.district.id!r}") from None

    def flow_m3s(self, point_id: str, t_ms: int) -> float:
        return self.flow_fn(point_id).at(t_ms)

    def volume_m3(self, point_id: str, t0_ms: int, t1_ms: int) -> float:
        """Exact true volume through a point over ``[t0, t1]``."""
        return self.flow_fn(point_id).integral(t0_ms, t1_ms)

    def system_balance(self, t0_ms: int, t1_ms: int) -> SystemBalance:
        """The true canal-system balance; its ``eta`` is the official coefficient by the same definition as billing's."""
        return system_balance(self.district, lambda point_id: self.volume_m3(point_id, t0_ms, t1_ms))

    def reach_loss_m3(self, canal_id: str, reach_id: str, t0_ms: int, t1_ms: int) -> float:
        """True loss of a reach over ``[t0, t1]``: seepage plus unmetered withdrawals and breaches."""
        return self._reach_fn(self.network.reach_loss, canal_id, reach_id).integral(t0_ms, t1_ms)

    def reach_unmetered_m3(self, canal_id: str, reach_id: str, t0_ms: int, t1_ms: int) -> float:
        """The part of a reach's loss taken by scenario events (withdrawal, breach, open gate)."""
        return self._reach_fn(self.network.reach_hidden, canal_id, reach_id).integral(t0_ms, t1_ms)

    def _reach_fn(self, table: dict[tuple[str, str], StepFn], canal_id: str, reach_id: str) -> StepFn:
        canal = self.district.canals.get(canal_id)
        if canal is None or reach_id not in {r.id for r in canal.reach_list}:
            raise KeyError(f"unknown reach {canal_id}/{reach_id} in district {self.district.id!r}")
        return table.get((canal_id, reach_id), StepFn.constant(0.0))

    def peak_flow_m3s(self, point_id: str) -> float:
        return self._peaks[point_id]

    @cached_property
    def _peaks(self) -> dict[str, float]:
        return {p: fn.max() for p, fn in self.network.point_flow.items()}

    @property
    def epoch_ms(self) -> int:
        """Totalisers count true volume from this instant (1 January of the first round's year)."""
        return self.network.epoch_ms

    @property
    def rounds(self) -> list[tuple[str, int, int]]:
        """Every irrigation round instance: (label, start ms, end ms)."""
        return self.network.round_windows

    # --- physical state ---
    def state(self, point_id: str, t_ms: int) -> PointState:
        return self.state_for_flow(point_id, self.flow_m3s(point_id, t_ms), t_ms)

    def state_for_flow(self, point_id: str, flow_m3s: float, t_ms: int) -> PointState:
        """The state a point shows when ``flow_m3s`` passes it (used for metered flows too)."""
        point = self.district.points[point_id]
        kind = self.district.profile_of(point_id).kind
        if kind == "level":
            rating = self.rating_at(point, t_ms)
            level = ratings.level_for_flow(rating, flow_m3s)
            return PointState(flow_m3s, level, None, self._downstream(rating, level))
        if kind == "area_velocity":
            return self._open_channel(point, flow_m3s)
        area = max(self.peak_flow_m3s(point_id), 0.01) / PIPE_DESIGN_VELOCITY_MS
        return PointState(flow_m3s, None, flow_m3s / area, None)

    def rating_at(self, point: Point, t_ms: int) -> ratings.Rating:
        """The rating version in force at ``t_ms`` (one version: no date lookup)."""
        versions = self._ratings.get(point.id)
        if versions is None:
            versions = self._ratings[point.id] = list(point.ratings)
        return versions[0] if len(versions) == 1 else ratings.rating_at(versions, self.day_of(t_ms))

    def day_of(self, t_ms: int) -> dt.date:
        """The day a rating version is chosen by: the district's local day, as ingest and billing do."""
        return self.district.local_date(t_ms)

    @staticmethod
    def _downstream(rating: ratings.Rating, level: float) -> float:
        if isinstance(rating, ratings.ParshallRating):
            return rating.gauge_zero_m + PARSHALL_FREE_FLOW_RATIO * (level - rating.gauge_zero_m)
        if isinstance(rating, ratings.WeirRating):
            return rating.gauge_zero_m + WEIR_TAILWATER_M
        return 0.0

    def _open_channel(self, point: Point, flow_m3s: float) -> PointState:
        width, slope = self._section(point)
        canal = self.district.canals[self.district.fed_canal(point) or point.canal]
        if flow_m3s == 0:
            return PointState(0.0, 0.0, 0.0, None)
        reference = max(self.peak_flow_m3s(point.id), abs(flow_m3s))
        exponent = self.scenario.hydraulics.velocity_exponent
        velocity = math.copysign(canal.velocity_ms * (abs(flow_m3s) / reference) ** exponent, flow_m3s)
        depth = depth_for_area(flow_m3s / velocity, width, slope)
        return PointState(flow_m3s, depth, velocity, None)

    def _section(self, point: Point) -> tuple[float, float]:
        for spec in point.ratings:
            if spec.type == "area_velocity":
                return spec.bottom_width_m, spec.side_slope
        canal = self.district.canals[self.district.fed_canal(point) or point.canal]
        return canal.width_m, 0.0
