"""Hydrometry: flow from level at a measuring structure, shared by the edge and billing.

The edge computes a provisional flow with these formulas; billing recomputes history from the
stored raw levels (a re-rating changes past volumes, so levels, not flows, are the record).
All inputs and outputs are SI: levels in m, flow in m³/s.

Formulas (see ``shared/docs/domain.md`` section 3):

* Parshall flume, free flow. For the throats in the SI table (76 ... 1219 mm) ``Q = C·Ha^n``;
  otherwise the USBR Water Measurement Manual equation in US units,
  ``Q[cfs] = 4·W·Ha^(1.522·W^0.026)`` for 1–8 ft throats and ``Q = (3.6875·W + 2.5)·Ha^1.6`` for
  10–50 ft, converted. (Not the circulating ``4·W^1.026·Ha^1.522``, wrong by several % at low
  head.) Submergence ``Hb/Ha`` above the transition (0.5 for 1–3 in, 0.6 for 6–9 in, 0.7 for
  1–8 ft, 0.8 for 10–50 ft) sets ``submerged``: the free-flow value then over-reads.
* Rectangular sharp-crested weir ``Q = Cd·(2/3)·√(2g)·b·H^1.5``.
* Rating curve ``Q = a·(h − h0)^b`` by stage segment; ``h <= h0`` gives 0.
* Area-velocity ``Q = v·A(h)`` for a rectangular or trapezoidal section.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from canalflow.errors import CanalflowError

G = 9.80665  # m/s², standard gravity
FT = 0.3048  # m per foot
CFS = FT**3  # m³/s per ft³/s

# Parshall free-flow SI table (domain.md): throat mm -> (C, n), Q[m³/s] = C·Ha[m]^n.
PARSHALL_SI_TABLE: dict[int, tuple[float, float]] = {
    76: (0.1765, 1.547),
    152: (0.381, 1.58),
    229: (0.535, 1.53),
    305: (0.691, 1.522),
    457: (1.056, 1.538),
    610: (1.428, 1.550),
    914: (2.184, 1.566),
    1219: (2.953, 1.578),
}
_TABLE_TOLERANCE_MM = 1.0  # 0.3048 m and 0.305 m both mean the 305 mm (1 ft) throat


class RatingError(CanalflowError, ValueError):
    """A rating that cannot produce a flow (unsupported throat, bad input, no velocity)."""


@dataclass(frozen=True)
class RatedFlow:
    """One rated flow. ``submerged``: free-flow formula over-reads; ``extrapolated``: the stage is
    above the highest calibrated segment of a curve."""

    flow_m3s: float
    submerged: bool
    method: str
    extrapolated: bool = False


@dataclass(frozen=True)
class RatedFlowArray:
    """Vectorised :class:`RatedFlow`: arrays of equal length (NaN level -> NaN flow)."""

    flow_m3s: NDArray[np.float64]
    submerged: NDArray[np.bool_]
    method: str
    extrapolated: NDArray[np.bool_]


class _RatingBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    valid_from: date | None = Field(default=None, description="first day this rating applies; None: since ever")


# ---- Parshall ---------------------------------------------------------------------------------


def _table_key(width_m: float) -> int | None:
    width_mm = width_m * 1000.0
    for key in PARSHALL_SI_TABLE:
        if abs(width_mm - key) <= _TABLE_TOLERANCE_MM:
            return key
    return None


def _usbr_range(width_ft: float) -> str | None:
    if 1.0 - 1e-6 <= width_ft <= 8.0 + 1e-6:
        return "usbr-1-8ft"
    if 10.0 - 1e-6 <= width_ft <= 50.0 + 1e-6:
        return "usbr-10-50ft"
    return None


def submergence_limit(width_m: float) -> float:
    """Hb/Ha above which a Parshall flume of this throat is submerged (USBR WMM)."""
    width_in = width_m / FT * 12.0
    if width_in < 4.5:
        return 0.5
    if width_in < 11.5:
        return 0.6
    if width_in <= 8.0 * 12 + 1:
        return 0.7
    return 0.8


class ParshallRating(_RatingBase):
    """Parshall flume; level is the upstream head Ha, downstream level the throat head Hb."""

    type: Literal["parshall"] = "parshall"
    throat_mm: float = Field(gt=0, description="throat width W in millimetres (1 ft = 304.8)")
    gauge_zero_m: float = Field(default=0.0, description="level reading at crest height")
    downstream_gauge_zero_m: float | None = Field(
        default=None, description="Hb gauge reading at crest height; default gauge_zero_m"
    )

    @property
    def throat_width_m(self) -> float:
        return self.throat_mm / 1000.0

    @model_validator(mode="after")
    def _supported_width(self) -> ParshallRating:
        width_ft = self.throat_width_m / FT
        if _table_key(self.throat_width_m) is None and _usbr_range(width_ft) is None:
            sizes = ", ".join(f"{k}" for k in PARSHALL_SI_TABLE)
            raise ValueError(
                f"no Parshall equation for a {self.throat_mm:g} mm throat; supported: {sizes} mm "
                f"(SI table), or 1-8 ft / 10-50 ft throats (304.8-2438.4 mm, 3048-15240 mm)"
            )
        return self

    @property
    def method(self) -> str:
        key = _table_key(self.throat_width_m)
        if key is not None:
            return f"parshall-si-{key}mm"
        return f"parshall-{_usbr_range(self.throat_width_m / FT)}"

    def coefficients(self) -> tuple[float, float]:
        """``(C, n)`` of ``Q[m³/s] = C·Ha[m]^n`` for this throat."""
        key = _table_key(self.throat_width_m)
        if key is not None:
            return PARSHALL_SI_TABLE[key]
        return usbr_si_coefficients(self.throat_width_m)


def usbr_si_coefficients(width_m: float) -> tuple[float, float]:
    """The USBR free-flow equation for a throat, rewritten as SI ``(C, n)``."""
    width_ft = width_m / FT
    rng = _usbr_range(width_ft)
    if rng == "usbr-1-8ft":
        coef_us, n = 4.0 * width_ft, 1.522 * width_ft**0.026
    elif rng == "usbr-10-50ft":
        coef_us, n = 3.6875 * width_ft + 2.5, 1.6
    else:
        raise RatingError(f"the USBR equation covers 1-8 ft and 10-50 ft throats, not {width_ft:.3f} ft")
    # Q_cfs = k·(H_m/FT)^n  ->  Q_m3s = k·CFS/FT^n · H_m^n
    return coef_us * CFS / FT**n, n


def parshall_usbr_cfs(width_ft: float, head_ft: float) -> float:
    """USBR free-flow discharge in ft³/s for a 1–8 ft throat: ``4·W·Ha^(1.522·W^0.026)``."""
    return 4.0 * width_ft * head_ft ** (1.522 * width_ft**0.026)


# ---- weir, curve, area-velocity --------------------------------------------------------------


class WeirRating(_RatingBase):
    """Rectangular sharp-crested weir; level is the head over the crest (after gauge zero)."""

    type: Literal["weir"] = "weir"
    width_m: float = Field(gt=0, description="crest length b, m")
    cd: float = Field(default=0.6, gt=0, le=1.0, description="discharge coefficient Cd")
    gauge_zero_m: float = Field(default=0.0, description="level reading at crest height")


class CurveSegment(BaseModel):
    """One stage range of a rating curve: ``Q = a·(h − h0)^b`` for ``from_m <= h < to_m``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    from_m: float
    to_m: float
    a: float = Field(gt=0)
    h0: float = 0.0
    b: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> CurveSegment:
        if not self.to_m > self.from_m:
            raise ValueError(f"to_m ({self.to_m}) must be above from_m ({self.from_m})")
        return self


class CurveRating(_RatingBase):
    """Piecewise power-law rating curve by stage segment (contiguous, ascending)."""

    type: Literal["curve"] = "curve"
    segments: list[CurveSegment] = Field(min_length=1)

    @model_validator(mode="after")
    def _contiguous(self) -> CurveRating:
        for i, (lower, upper) in enumerate(itertools.pairwise(self.segments)):
            if not math.isclose(lower.to_m, upper.from_m, abs_tol=1e-9):
                raise ValueError(
                    f"segments {i} and {i + 1} are not contiguous: to_m {lower.to_m} != "
                    f"from_m {upper.from_m}; list segments in ascending stage with no gap"
                )
        return self


class AreaVelocityRating(_RatingBase):
    """Open channel with an area-velocity meter: ``Q = v_mean · A(h)``; level is water depth
    above the bed after gauge zero, side slope z is horizontal per vertical (0: rectangular)."""

    type: Literal["area_velocity"] = "area_velocity"
    bottom_width_m: float = Field(gt=0)
    side_slope: float = Field(default=0.0, ge=0, description="z (H:V); 0 for rectangular")
    gauge_zero_m: float = Field(default=0.0, description="level reading at the channel bed")

    @property
    def section(self) -> str:
        """``rectangular`` (side slope 0) or ``trapezoidal``."""
        return "trapezoidal" if self.side_slope > 0 else "rectangular"

    def area(self, depth_m: float) -> float:
        """Wetted area A(h) in m²."""
        depth = max(depth_m, 0.0)
        return depth * (self.bottom_width_m + self.side_slope * depth)


Rating = Annotated[ParshallRating | WeirRating | CurveRating | AreaVelocityRating, Field(discriminator="type")]
RATING_ADAPTER: TypeAdapter[Rating] = TypeAdapter(Rating)


def parse_rating(data: object) -> Rating:
    """Validate a rating mapping (from a district file) into the right Rating model."""
    return RATING_ADAPTER.validate_python(data)


def rating_at(ratings: Sequence[Rating], day: date) -> Rating:
    """The rating version in force on ``day``: the latest ``valid_from <= day``."""
    candidates = [r for r in ratings if r.valid_from is None or r.valid_from <= day]
    if not candidates:
        first = min(r.valid_from for r in ratings if r.valid_from is not None) if ratings else None
        raise RatingError(f"no rating valid on {day} (earliest valid_from: {first})")
    return max(candidates, key=lambda r: r.valid_from or date.min)


# ---- scalar evaluation ----------------------------------------------------------------------


def flow(
    rating: Rating,
    level_m: float,
    downstream_level_m: float | None = None,
    *,
    velocity_ms: float | None = None,
) -> RatedFlow:
    """Rated flow for one reading. NaN level gives NaN flow; a head at or below zero gives 0."""
    result = flow_array(
        rating,
        np.asarray([level_m], dtype=float),
        None if downstream_level_m is None else np.asarray([downstream_level_m], dtype=float),
        velocity_ms=None if velocity_ms is None else np.asarray([velocity_ms], dtype=float),
    )
    return RatedFlow(
        flow_m3s=float(result.flow_m3s[0]),
        submerged=bool(result.submerged[0]),
        method=result.method,
        extrapolated=bool(result.extrapolated[0]),
    )


# ---- vectorised evaluation ------------------------------------------------------------------


def _head(level: NDArray[np.float64], zero: float) -> NDArray[np.float64]:
    head = level - zero
    return np.where(head > 0, head, np.where(np.isnan(head), np.nan, 0.0))


def _parshall(r: ParshallRating, level: NDArray[np.float64], down: NDArray[np.float64] | None) -> RatedFlowArray:
    c, n = r.coefficients()
    ha = _head(level, r.gauge_zero_m)
    q = c * ha**n
    submerged = np.zeros(level.shape, dtype=bool)
    if down is not None:
        zero_b = r.gauge_zero_m if r.downstream_gauge_zero_m is None else r.downstream_gauge_zero_m
        hb = _head(down, zero_b)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(ha > 0, hb / ha, 0.0)
        submerged = np.nan_to_num(ratio, nan=0.0) > submergence_limit(r.throat_width_m)
    return RatedFlowArray(q, submerged, r.method, np.zeros(level.shape, dtype=bool))


def _weir(r: WeirRating, level: NDArray[np.float64], down: NDArray[np.float64] | None) -> RatedFlowArray:
    head = _head(level, r.gauge_zero_m)
    q = r.cd * (2.0 / 3.0) * math.sqrt(2.0 * G) * r.width_m * head**1.5
    # tailwater above the crest: the weir is no longer free-falling
    submerged = (
        np.zeros(level.shape, dtype=bool) if down is None else np.nan_to_num(down - r.gauge_zero_m, nan=-1.0) > 0
    )
    return RatedFlowArray(q, submerged, "weir-rectangular", np.zeros(level.shape, dtype=bool))


def _curve(r: CurveRating, level: NDArray[np.float64]) -> RatedFlowArray:
    edges = np.array([s.to_m for s in r.segments[:-1]])
    index = np.searchsorted(edges, np.nan_to_num(level, nan=-np.inf), side="right")
    a = np.array([s.a for s in r.segments])[index]
    h0 = np.array([s.h0 for s in r.segments])[index]
    b = np.array([s.b for s in r.segments])[index]
    head = _head(level - h0, 0.0)
    q = a * head**b
    finite = np.nan_to_num(level, nan=-np.inf)
    # outside the calibrated stages (below the lowest segment only matters if water flows there)
    extrapolated = (finite > r.segments[-1].to_m) | ((finite < r.segments[0].from_m) & (q > 0))
    return RatedFlowArray(q, np.zeros(level.shape, dtype=bool), "curve", extrapolated)


def _area_velocity(
    r: AreaVelocityRating, level: NDArray[np.float64], velocity: NDArray[np.float64] | None
) -> RatedFlowArray:
    if velocity is None:
        raise RatingError("an area_velocity rating needs velocity_ms (the mean velocity reading)")
    depth = _head(level, r.gauge_zero_m)
    q = velocity * depth * (r.bottom_width_m + r.side_slope * depth)
    method = f"area-velocity-{r.section}"
    return RatedFlowArray(q, np.zeros(level.shape, dtype=bool), method, np.zeros(level.shape, dtype=bool))


def flow_array(
    rating: Rating,
    level_m: ArrayLike,
    downstream_level_m: ArrayLike | None = None,
    *,
    velocity_ms: ArrayLike | None = None,
) -> RatedFlowArray:
    """Vectorised :func:`flow` for billing: arrays of levels (m) in, arrays of flows out."""
    level = np.asarray(level_m, dtype=float)
    down = None if downstream_level_m is None else np.asarray(downstream_level_m, dtype=float)
    if down is not None and down.shape != level.shape:
        raise RatingError(f"level and downstream level differ in shape: {level.shape} vs {down.shape}")
    if isinstance(rating, ParshallRating):
        return _parshall(rating, level, down)
    if isinstance(rating, WeirRating):
        return _weir(rating, level, down)
    if isinstance(rating, CurveRating):
        return _curve(rating, level)
    if isinstance(rating, AreaVelocityRating):
        vel = None if velocity_ms is None else np.broadcast_to(np.asarray(velocity_ms, dtype=float), level.shape)
        return _area_velocity(rating, level, vel)
    raise RatingError(f"unknown rating {type(rating).__name__}")


def level_for_flow(rating: Rating, flow_m3s: float) -> float:
    """Inverse rating: the level (m) at which ``rating`` gives ``flow_m3s``."""
    if flow_m3s <= 0:
        return getattr(rating, "gauge_zero_m", 0.0)
    if isinstance(rating, ParshallRating):
        c, n = rating.coefficients()
        return rating.gauge_zero_m + (flow_m3s / c) ** (1.0 / n)
    if isinstance(rating, WeirRating):
        coef = rating.cd * (2.0 / 3.0) * math.sqrt(2.0 * G) * rating.width_m
        return rating.gauge_zero_m + (flow_m3s / coef) ** (2.0 / 3.0)
    return _bisect_level(rating, flow_m3s)


def _bisect_level(rating: Rating, flow_m3s: float) -> float:
    low, high = -10.0, 1.0
    while flow(rating, high).flow_m3s < flow_m3s and high < 1e3:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        if flow(rating, mid).flow_m3s < flow_m3s:
            low = mid
        else:
            high = mid
    return (low + high) / 2
