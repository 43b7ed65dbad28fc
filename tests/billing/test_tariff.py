"""The tariff engine, by hand-computed cases on the demo district's TARIFF-2026.

TARIFF-2026 (examples/demo-district.yaml): grain 0.080 + 0.030, cash 0.110 + 0.040 yuan/m3;
bands <= 1.0 quota x1.0, 1.0-1.2 x1.5, above x2.0; subsidy grain 0.020; reward grain 0.050,
other 0.030. V03 grows 3000 mu of flood wheat: spring quota 3000 x 120 = 360,000 m3.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.tariff import apply_tariff, band_volumes, split_exactly, to_fen

Q = D(360_000)


def charge(demo, volume, unit="V03", **kw):
    return apply_tariff(demo, unit, D(volume), "spring", demo.tariffs["TARIFF-2026"], **kw)


def amounts(c):
    return [(line.kind, line.crop_class, line.component, line.band, line.amount) for line in c.lines]


def test_quota_comes_from_the_district(demo):
    assert charge(demo, 0).quota_m3 == Q == demo.quota_m3("V03", "spring")


def test_exactly_at_quota(demo):
    c = charge(demo, Q)
    assert amounts(c) == [
        ("charge", "grain", "backbone", 0, D("28800.00")),
        ("charge", "grain", "terminal", 0, D("10800.00")),
        ("subsidy", "grain", "subsidy", None, D("-7200.00")),
    ]
    assert c.total == D("32400.00")


def test_one_m3_below_quota_gets_subsidy_and_reward(demo):
    c = charge(demo, Q - 1)
    assert amounts(c) == [
        ("charge", "grain", "backbone", 0, D("28799.92")),
        ("charge", "grain", "terminal", 0, D("10799.97")),
        ("subsidy", "grain", "subsidy", None, D("-7199.98")),
        ("reward", "grain", "reward", None, D("-0.05")),
    ]
    assert c.total == D("32399.86")


def test_one_m3_over_quota_enters_band_1_and_loses_credits(demo):
    c = charge(demo, Q + 1)
    assert amounts(c) == [
        ("charge", "grain", "backbone", 0, D("28800.00")),
        ("charge", "grain", "terminal", 0, D("10800.00")),
        ("charge", "grain", "backbone", 1, D("0.12")),  # 0.080 x 1.5
        ("charge", "grain", "terminal", 1, D("0.05")),  # 0.045 rounded half up to the fen
    ]
    assert c.total == D("39600.17")
    assert any("subsidy and reward refused" in n for n in c.notes)


def test_at_and_above_the_120_percent_boundary(demo):
    at = charge(demo, D(432_000))
    assert [a[-1] for a in amounts(at)] == [D("28800.00"), D("10800.00"), D("8640.00"), D("3240.00")]
    above = charge(demo, D(432_001))
    assert amounts(above)[-2:] == [
        ("charge", "grain", "backbone", 2, D("0.16")),
        ("charge", "grain", "terminal", 2, D("0.06")),
    ]
    assert above.total == D("51480.22")


def test_zero_use(demo):
    c = charge(demo, 0)
    assert c.lines == () and c.total == 0
    assert c.notes == ("no water used: no charge, no subsidy, no reward",)


def test_subsidy_refused_with_unpaid_fees_reward_kept(demo):
    c = charge(demo, 300_000, unpaid_fees=True)
    assert amounts(c) == [
        ("charge", "grain", "backbone", 0, D("24000.00")),
        ("charge", "grain", "terminal", 0, D("9000.00")),
        ("reward", "grain", "reward", None, D("-3000.00")),
    ]
    assert "precise subsidy refused" in c.notes[0]


def test_mixed_crop_classes_share_volume_by_quota(demo):
    # V01: wheat 2600 mu x 120 = 312,000 (grain) + vegetables 300 mu x 150 = 45,000 (cash)
    c = charge(demo, 178_500, unit="V01")
    assert [(s.crop_class, s.quota_m3, s.volume_m3) for s in c.shares] == [
        ("grain", D(312_000), D("156000.000")),
        ("cash", D(45_000), D("22500.000")),
    ]
    assert amounts(c) == [
        ("charge", "grain", "backbone", 0, D("12480.00")),
        ("charge", "grain", "terminal", 0, D("4680.00")),
        ("charge", "cash", "backbone", 0, D("2475.00")),
        ("charge", "cash", "terminal", 0, D("900.00")),
        ("subsidy", "grain", "subsidy", None, D("-3120.00")),
        ("reward", "grain", "reward", None, D("-7800.00")),
        ("reward", "cash", "reward", None, D("-675.00")),
    ]
    assert c.total == D("8940.00")


def test_rounding_to_the_fen_only_on_lines(demo):
    # 1 m3 at V01: shares 0.874 grain / 0.126 cash (largest remainder on 0.001 m3)
    c = charge(demo, 1, unit="V01")
    charges = [line for line in c.lines if line.kind == "charge"]
    assert [(line.volume_m3, line.amount) for line in charges] == [
        (D("0.874"), D("0.07")),  # 0.06992
        (D("0.874"), D("0.03")),  # 0.02622
        (D("0.126"), D("0.01")),  # 0.01386
        (D("0.126"), D("0.01")),  # 0.00504
    ]
    exact = sum(line.volume_m3 * line.rate for line in charges)
    assert exact == D("0.11504")  # exact; each line is rounded once, the total is the sum of the rounded lines
    assert sum(line.amount for line in charges) == D("0.12")
    assert to_fen(D("0.005")) == D("0.01") and to_fen(D("0.00499")) == D("0.00") and to_fen(D("-0.005")) == D("-0.01")


def test_aquaculture_and_no_quota_season(demo):
    # V07: wheat 2000 mu (winter quota 80) + fish 150 mu (winter 100): 160,000 + 15,000
    c = apply_tariff(demo, "V07", D(175_000), "winter", demo.tariffs["TARIFF-2026"])
    assert {s.crop_class: s.volume_m3 for s in c.shares} == {"grain": D("160000.000"), "aquaculture": D("15000.000")}
    fish = [line for line in c.lines if line.crop_class == "aquaculture" and line.kind == "charge"]
    assert [line.amount for line in fish] == [D("2250.00"), D("600.00")]  # 0.150 and 0.040


def test_negative_volume_is_refused(demo):
    with pytest.raises(ValueError, match="negative volume"):
        charge(demo, -1)


def test_band_volumes_by_hand(demo):
    bands = demo.tariffs["TARIFF-2026"].bands
    assert band_volumes(D(130), D(100), bands) == [D(100), D(20), D(10)]
    assert band_volumes(D(50), D(100), bands) == [D(50), D(0), D(0)]
    assert band_volumes(D(5), D(0), bands) == [D(0), D(0), D(5)]


def test_split_exactly_by_hand():
    assert split_exactly(D(10), [D(1), D(1), D(1)], D(1)) == [D(4), D(3), D(3)]
    assert split_exactly(D(100), [D(2200), D(1200)], D(1)) == [D(65), D(35)]
    assert split_exactly(D(7), [D(0), D(0)], D(1)) == [D(4), D(3)]
    with pytest.raises(ValueError, match="multiple of the quantum"):
        split_exactly(D("1.5"), [D(1)], D(1))


# --- properties ---------------------------------------------------------------------------------

volumes = st.decimals(min_value=0, max_value=2_000_000, places=3, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(volumes, st.sampled_from(["V01", "V02", "V04", "V07", "OP1", "WUA1"]), st.sampled_from(["spring", "winter"]), st.booleans())
def test_lines_add_up_and_are_rounded_once(demo, volume, unit, kind, unpaid):
    c = apply_tariff(demo, unit, volume, kind, demo.tariffs["TARIFF-2026"], unpaid_fees=unpaid)
    assert c.total == sum((line.amount for line in c.lines), D(0))
    for line in c.lines:
        assert line.amount == to_fen(line.volume_m3 * line.rate)
    assert sum(s.volume_m3 for s in c.shares) == volume
    charged = sum(line.volume_m3 for line in c.lines if line.kind == "charge" and line.component == "backbone")
    assert charged == volume
    if c.over_quota:
        assert all(line.kind == "charge" for line in c.lines)


@settings(max_examples=100, deadline=None)
@given(volumes, volumes)
def test_charges_never_fall_when_use_rises(demo, a, b):
    low, high = sorted((a, b))
    def charges(v):
        return sum(line.amount for line in charge(demo, v, unit="V01").lines if line.kind == "charge")
    assert charges(low) <= charges(high) + D("0.04")  # per-line rounding may differ by a fen per line


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9), st.lists(st.decimals(min_value=0, max_value=10**6, places=2), min_size=1, max_size=12))
def test_split_exactly_adds_up_and_is_proportional(total, weights):
    parts = split_exactly(D(total), weights, D(1))
    assert sum(parts) == total
    weight_sum = sum(weights)
    if weight_sum > 0:
        for part, weight in zip(parts, weights, strict=True):
            assert abs(part - D(total) * weight / weight_sum) < 1
