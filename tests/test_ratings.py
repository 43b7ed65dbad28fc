"""Hydrometry formulas against hand-computed values."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest
from pydantic import ValidationError

from canalflow import ratings
from canalflow.ratings import (
    FT,
    AreaVelocityRating,
    CurveRating,
    ParshallRating,
    RatingError,
    WeirRating,
    flow,
    flow_array,
    parse_rating,
)

CFS = 0.028316846592  # m³/s per ft³/s, exact


# ---- Parshall ---------------------------------------------------------------------------------


def test_usbr_equation_hand_values() -> None:
    # W = 1 ft, Ha = 1 ft: 4·1·1^1.522 = 4.00 cfs
    assert ratings.parshall_usbr_cfs(1.0, 1.0) == pytest.approx(4.0)
    # W = 2 ft, Ha = 1.5 ft: n = 1.522·2^0.026 = 1.549678; 1.5^n = 1.874497; Q = 8·1.874497
    assert ratings.parshall_usbr_cfs(2.0, 1.5) == pytest.approx(14.996, abs=0.002)


def test_not_the_circulating_wrong_variant() -> None:
    wrong = 4 * 2.0**1.026 * 1.5**1.522
    assert abs(ratings.parshall_usbr_cfs(2.0, 1.5) - wrong) > 0.1


def test_usbr_width_in_si_model() -> None:
    # 2 ft throat = 0.6096 m is in the SI table (610 mm); 6 ft is not: USBR equation converted
    six_ft = ParshallRating(throat_mm=6 * 304.8)
    head_ft = 1.5
    result = flow(six_ft, head_ft * FT)
    expected = 4 * 6 * head_ft ** (1.522 * 6**0.026) * CFS
    assert result.flow_m3s == pytest.approx(expected, rel=1e-12)
    assert result.method == "parshall-usbr-1-8ft"
    assert not result.submerged


def test_table_used_for_listed_widths() -> None:
    r = ParshallRating(throat_mm=305)
    out = flow(r, 0.5)
    assert out.method == "parshall-si-305mm"
    assert out.flow_m3s == pytest.approx(0.691 * 0.5**1.522)
    assert ParshallRating(throat_mm=304.8).method == "parshall-si-305mm"
    small = flow(ParshallRating(throat_mm=76), 0.2)
    assert small.flow_m3s == pytest.approx(0.1765 * 0.2**1.547)


@pytest.mark.parametrize("width_mm", [305, 457, 610, 914, 1219])
@pytest.mark.parametrize("head_m", [0.05, 0.15, 0.3, 0.5, 0.75])
def test_table_and_usbr_agree_for_1_to_4_ft(width_mm: int, head_m: float) -> None:
    c, n = ratings.PARSHALL_SI_TABLE[width_mm]
    table_q = c * head_m**n
    width_ft = round(width_mm / 304.8 * 2) / 2  # nominal 1, 1.5, 2, 3, 4 ft
    usbr_q = ratings.parshall_usbr_cfs(width_ft, head_m / FT) * CFS
    assert table_q == pytest.approx(usbr_q, rel=0.03)


def test_large_throat_equation() -> None:
    r = ParshallRating(throat_mm=10 * 304.8)
    expected = (3.6875 * 10 + 2.5) * 2.0**1.6 * CFS
    assert flow(r, 2 * FT).flow_m3s == pytest.approx(expected)


@pytest.mark.parametrize(
    ("width_m", "limit"),
    [(0.076, 0.5), (0.152, 0.6), (0.229, 0.6), (0.305, 0.7), (2.4384, 0.7), (3.048, 0.8)],
)
def test_submergence_limits(width_m: float, limit: float) -> None:
    assert ratings.submergence_limit(width_m) == limit


def test_submergence_flag() -> None:
    r = ParshallRating(throat_mm=610)
    assert not flow(r, 0.5, 0.34).submerged  # 0.68
    assert flow(r, 0.5, 0.36).submerged  # 0.72 > 0.70
    assert not flow(r, 0.0, 0.1).submerged  # no head: no flow, no ratio
    small = ParshallRating(throat_mm=76)
    assert flow(small, 0.2, 0.11).submerged  # 0.55 > 0.5


def test_gauge_zero() -> None:
    r = ParshallRating(throat_mm=305, gauge_zero_m=0.1)
    assert flow(r, 0.6).flow_m3s == pytest.approx(0.691 * 0.5**1.522)
    assert flow(r, 0.05).flow_m3s == 0.0
    split = ParshallRating(throat_mm=305, gauge_zero_m=0.1, downstream_gauge_zero_m=0.2)
    assert flow(split, 0.6, 0.58).submerged  # Hb 0.38 / Ha 0.5 = 0.76
    assert not flow(split, 0.6, 0.5).submerged  # Hb 0.30 / Ha 0.5 = 0.60


def test_unsupported_throat_is_rejected_with_the_options() -> None:
    with pytest.raises(ValidationError, match="supported: 76, 152"):
        ParshallRating(throat_mm=200)
    with pytest.raises(ValidationError, match="1-8 ft"):
        ParshallRating(throat_mm=2800)


# ---- weir -------------------------------------------------------------------------------------


def test_weir_hand_value() -> None:
    # b = 1 m, H = 0.2 m, Cd 0.6: 0.6·(2/3)·√(2·9.80665)·1·0.2^1.5 = 0.15843 m³/s
    r = WeirRating(width_m=1.0)
    assert flow(r, 0.2).flow_m3s == pytest.approx(0.158437, rel=1e-4)
    assert flow(WeirRating(width_m=2.0, cd=0.62), 0.2).flow_m3s == pytest.approx(0.158437 * 2 * 0.62 / 0.6, rel=1e-4)
    assert flow(r, -0.1).flow_m3s == 0.0
    assert flow(r, 0.2, 0.05).submerged
    assert not flow(r, 0.2, -0.05).submerged


# ---- rating curve ----------------------------------------------------------------------------


def _curve() -> CurveRating:
    return CurveRating(
        segments=[
            {"from_m": 0.0, "to_m": 0.5, "a": 2.0, "h0": 0.1, "b": 1.5},
            {"from_m": 0.5, "to_m": 2.0, "a": 3.0, "h0": 0.2, "b": 1.6},
        ]
    )


def test_curve_by_segment() -> None:
    r = _curve()
    assert flow(r, 0.05).flow_m3s == 0.0  # below h0
    assert flow(r, 0.3).flow_m3s == pytest.approx(2.0 * 0.2**1.5)
    assert flow(r, 1.0).flow_m3s == pytest.approx(3.0 * 0.8**1.6)
    assert flow(r, 0.5).flow_m3s == pytest.approx(3.0 * 0.3**1.6)  # boundary: upper segment
    assert not flow(r, 1.0).extrapolated
    high = flow(r, 2.5)
    assert high.extrapolated and high.flow_m3s == pytest.approx(3.0 * 2.3**1.6)
    assert high.method == "curve"


def test_curve_segments_must_be_contiguous() -> None:
    with pytest.raises(ValidationError, match="not contiguous"):
        CurveRating(
            segments=[
                {"from_m": 0.0, "to_m": 0.5, "a": 2.0, "h0": 0.1, "b": 1.5},
                {"from_m": 0.6, "to_m": 2.0, "a": 3.0, "h0": 0.2, "b": 1.6},
            ]
        )
    with pytest.raises(ValidationError, match="must be above"):
        CurveRating(segments=[{"from_m": 1.0, "to_m": 0.5, "a": 2.0, "h0": 0.1, "b": 1.5}])


# ---- area-velocity ---------------------------------------------------------------------------


def test_area_velocity_sections() -> None:
    rect = AreaVelocityRating(bottom_width_m=2.0)
    assert flow(rect, 0.5, velocity_ms=0.8).flow_m3s == pytest.approx(0.8 * 1.0)
    trap = AreaVelocityRating(bottom_width_m=2.0, side_slope=1.5)
    # A = h(b + z h) = 0.5·(2 + 0.75) = 1.375
    assert flow(trap, 0.5, velocity_ms=0.8).flow_m3s == pytest.approx(0.8 * 1.375)
    assert trap.area(-1.0) == 0.0
    with pytest.raises(RatingError, match="velocity_ms"):
        flow(rect, 0.5)
    assert trap.section == "trapezoidal" and rect.section == "rectangular"
    assert flow(trap, 0.5, velocity_ms=0.8).method == "area-velocity-trapezoidal"


# ---- union, versions, vectorised ------------------------------------------------------------


def test_parse_rating_discriminates_on_type() -> None:
    r = parse_rating({"type": "weir", "width_m": 1.5, "valid_from": "2024-03-01"})
    assert isinstance(r, WeirRating) and r.valid_from == date(2024, 3, 1)
    with pytest.raises(ValidationError, match="widht_m"):
        parse_rating({"type": "weir", "widht_m": 1.5})
    with pytest.raises(ValidationError):
        parse_rating({"type": "vnotch"})


def test_rating_at_picks_the_version_in_force() -> None:
    old = WeirRating(width_m=1.0)
    new = WeirRating(width_m=1.1, valid_from=date(2024, 4, 1))
    assert ratings.rating_at([old, new], date(2024, 3, 31)) is old
    assert ratings.rating_at([new, old], date(2024, 4, 1)) is new
    with pytest.raises(RatingError, match="no rating valid"):
        ratings.rating_at([new], date(2024, 1, 1))


def test_vectorised_matches_scalar() -> None:
    levels = np.array([0.0, 0.1, 0.3, 0.6, math.nan])
    downs = np.array([0.0, 0.09, 0.1, 0.5, 0.1])
    for rating in (ParshallRating(throat_mm=457), WeirRating(width_m=1.0), _curve()):
        out = flow_array(rating, levels, downs)
        assert math.isnan(out.flow_m3s[-1])
        for i in range(4):
            one = flow(rating, float(levels[i]), float(downs[i]))
            assert out.flow_m3s[i] == pytest.approx(one.flow_m3s)
            assert bool(out.submerged[i]) == one.submerged
    av = flow_array(AreaVelocityRating(bottom_width_m=1.0), levels, velocity_ms=0.5)
    assert av.flow_m3s[2] == pytest.approx(0.15)


def test_nan_level_is_nan_flow() -> None:
    assert math.isnan(flow(ParshallRating(throat_mm=305), math.nan).flow_m3s)
