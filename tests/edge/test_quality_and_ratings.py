"""Quality flags (never a silent drop) and edge ratings against the USBR equation."""

from __future__ import annotations

import datetime as dt

import pytest
from edge_testkit import DEMO

from canalflow import ratings as rt
from canalflow.contract import Flag, Quality
from canalflow.district import load_district
from canalflow.profiles import load_profiles
from edge.config import PointPlan, QualityOptions, edge_config_from_district
from edge.poller import rate
from edge.quality import QualityChecker

NOW = 1_772_323_200_000
MIN = 60_000


def _series(values: list[dict[str, float]], **kwargs: object) -> list[tuple[Quality, tuple[Flag, ...], dict[str, float]]]:
    checker = QualityChecker(QualityOptions(**kwargs))  # type: ignore[arg-type]
    out = []
    for i, v in enumerate(values):
        verdict = checker.check("P", NOW + i * MIN, v, now_ms=NOW + i * MIN, rollover={"totaliser": 42_949_672.96})
        out.append((verdict.quality, tuple(verdict.flags), verdict.values))
    return out


def test_plain_values_are_good() -> None:
    assert _series([{"flow": 0.5, "level": 1.0}, {"flow": 0.52, "level": 1.01}])[-1][:2] == (Quality.good, ())


def test_out_of_range_is_suspect_and_impossible_is_bad_but_still_reported() -> None:
    (q1, f1, v1), = _series([{"flow": 5000.0}])
    assert (q1, f1) == (Quality.bad, (Flag.out_of_range,)) and "flow" not in v1  # beyond the contract's bounds
    (q2, f2, v2), = _series([{"level": 25.0}])
    assert (q2, f2, v2) == (Quality.suspect, (Flag.out_of_range,), {"level": 25.0})
    (q3, f3, _), = _series([{"flow": float("nan")}])
    assert (q3, f3) == (Quality.bad, (Flag.out_of_range,))


def test_rate_of_change() -> None:
    assert _series([{"level": 1.0}, {"level": 9.0}])[-1][:2] == (Quality.suspect, (Flag.rate_of_change,))


def test_stuck_value_but_not_a_closed_gate() -> None:
    stuck = _series([{"flow": 0.3}] * 5, stuck_polls=5)
    assert stuck[3][1] == () and stuck[4][1] == (Flag.stuck,)
    assert _series([{"flow": 0.0}] * 6, stuck_polls=5)[-1][1] == ()


def test_totaliser_rollover_is_good_and_reset_is_suspect() -> None:
    rolled = _series([{"totaliser": 42_949_600.0}, {"totaliser": 12.0}])[-1]
    assert rolled[:2] == (Quality.good, (Flag.totaliser_rollover,))
    reset = _series([{"totaliser": 5000.0}, {"totaliser": 3.0}])[-1]
    assert reset[:2] == (Quality.suspect, (Flag.totaliser_reset,))


def test_future_timestamp_reverse_flow_and_alarms() -> None:
    checker = QualityChecker(QualityOptions())
    future = checker.check("P", NOW + 3_600_000, {"flow": 0.1}, now_ms=NOW)
    assert future.flags == [Flag.future_timestamp]
    backwards = checker.check("Q", NOW, {"flow": -0.2}, now_ms=NOW)
    assert backwards.flags == [Flag.reverse_flow] and backwards.quality is Quality.suspect
    alarms = checker.check("R", NOW, {"flow": 0.1}, now_ms=NOW, alarms=["coil_fault", "low_battery"])
    assert alarms.flags == [Flag.device_alarm, Flag.low_battery]


def test_low_signal_from_signal_quality_or_a_fouling_status_bit() -> None:
    checker = QualityChecker(QualityOptions())  # min_signal_quality 60 %
    fine = checker.check("S", NOW, {"flow": 0.1, "signal_quality": 60.0}, now_ms=NOW)
    assert fine.flags == [] and fine.quality is Quality.good
    weak = checker.check("S", NOW + MIN, {"flow": 0.1, "signal_quality": 59.0}, now_ms=NOW + MIN)
    assert weak.flags == [Flag.low_signal] and weak.quality is Quality.suspect
    assert weak.values["signal_quality"] == 59.0  # flagged, not dropped
    for bit in ("electrode_coating", "silt_on_sensor", "poor_signal", "echo_lost"):
        coated = checker.check("E", NOW, {"flow": 0.1}, now_ms=NOW, alarms=[bit])
        assert coated.flags == [Flag.low_signal] and coated.quality is Quality.suspect, bit
    local = QualityChecker(QualityOptions(min_signal_quality=30, signal_bits=[]))
    assert local.check("S", NOW, {"signal_quality": 45.0}, now_ms=NOW).flags == []
    assert local.check("E", NOW, {"flow": 0.1}, now_ms=NOW, alarms=["electrode_coating"]).flags == [Flag.device_alarm]


def test_clock_drift_beyond_the_tolerance_of_the_round_trip_and_it_persists() -> None:
    checker = QualityChecker(QualityOptions())  # max_clock_drift_s 300
    on_time = checker.check("C", NOW, {"flow": 0.1}, now_ms=NOW, device_clock=(NOW / 1000 - 299, NOW, NOW + 50))
    assert on_time.flags == []
    late = checker.check("C", NOW + MIN, {"flow": 0.1}, now_ms=NOW + MIN,
                         device_clock=((NOW + MIN) / 1000 - 900, NOW + MIN, NOW + MIN + 50))
    assert late.flags == [Flag.clock_drift] and late.quality is Quality.suspect
    # polls without the (slow-group) clock keep the verdict of the last clock read
    assert checker.check("C", NOW + 2 * MIN, {"flow": 0.1}, now_ms=NOW + 2 * MIN).flags == [Flag.clock_drift]
    reset = checker.check("C", NOW + 3 * MIN, {"flow": 0.1}, now_ms=NOW + 3 * MIN,
                          device_clock=((NOW + 3 * MIN) / 1000, NOW + 3 * MIN, NOW + 3 * MIN + 20))
    assert reset.flags == []
    ahead = checker.check("D", NOW, {"flow": 0.1}, now_ms=NOW, device_clock=(NOW / 1000 + 301, NOW, NOW + 20))
    assert ahead.flags == [Flag.clock_drift]
    # a slow answer is not drift: the meter read its clock somewhere in a long round trip
    slow = checker.check("E", NOW, {"flow": 0.1}, now_ms=NOW,
                         device_clock=(NOW / 1000 + 1_000, NOW, NOW + 1_000_000))
    assert slow.flags == []
    unset = checker.check("F", NOW, {"flow": 0.1}, now_ms=NOW, device_clock=(0.0, NOW, NOW + 20))
    assert unset.flags == []  # a clock at 0 was never set: not judged


def test_failed_poll_is_a_bad_reading_not_a_gap() -> None:
    reading = QualityChecker(QualityOptions()).failed(NOW, Flag.comm_error)
    assert reading.values == {} and reading.quality is Quality.bad and reading.flags == (Flag.comm_error,)


@pytest.mark.parametrize("throat_mm", [305, 457, 610, 914, 1219])
@pytest.mark.parametrize("head_m", [0.1, 0.3, 0.6])
def test_edge_parshall_flow_matches_the_usbr_equation(throat_mm: int, head_m: float) -> None:
    """The edge's rated flow for 1-4 ft throats agrees with Q = 4·W·Ha^(1.522·W^0.026) (cfs)."""
    plan = PointPlan("F", 1, load_profiles()["radar-parshall"],
                     (rt.parse_rating({"type": "parshall", "throat_mm": throat_mm}),))
    verdict = QualityChecker(QualityOptions()).check("F", NOW, {"level": head_m}, now_ms=NOW)
    rate(plan, NOW, verdict)
    usbr = rt.parshall_usbr_cfs(throat_mm / 304.8, head_m / 0.3048) * 0.3048**3
    assert verdict.values["flow"] == pytest.approx(usbr, rel=0.015)
    assert Flag.rated in verdict.flags and verdict.values["level"] == head_m


def test_submerged_parshall_and_weir_from_the_district_file() -> None:
    config = edge_config_from_district(DEMO, "GW-B2")
    plans = {p.point: p for p in config.points}
    checker = QualityChecker(QualityOptions())
    flume = checker.check("L21-HEAD", NOW, {"level": 0.4, "downstream_level": 0.35}, now_ms=NOW)
    rate(plans["L21-HEAD"], NOW, flume)
    assert Flag.submerged in flume.flags and flume.quality is Quality.suspect  # Hb/Ha 0.875 > 0.7
    weir = checker.check("B2-TAIL", NOW, {"level": 0.2}, now_ms=NOW)
    rate(plans["B2-TAIL"], NOW, weir)
    assert weir.values["flow"] == pytest.approx(0.6 * 2 / 3 * (2 * 9.80665) ** 0.5 * 1.0 * 0.2**1.5)


def test_rating_in_force_follows_valid_from() -> None:
    old = rt.parse_rating({"type": "parshall", "throat_mm": 610})
    new = rt.parse_rating({"type": "parshall", "throat_mm": 914, "valid_from": "2026-06-01"})
    plan = PointPlan("F", 1, load_profiles()["radar-parshall"], (old, new))
    assert plan.rating_on(dt.date(2026, 3, 1)) is old and plan.rating_on(dt.date(2026, 7, 1)) is new
    assert load_district(DEMO).points["L11-HEAD"].ratings  # the demo has level-only points to rate
