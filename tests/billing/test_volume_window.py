"""canalflow.volume: hand-computed windows and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canalflow.contract import Quality
from canalflow.volume import Series, window_volume

MIN = 60_000
HOUR = 3_600_000
GOOD, EST, BAD = Quality.good.code, Quality.estimated.code, Quality.bad.code


def series(ts: list[int], q: list[int] | None = None, **values: list[float]) -> Series:
    n = len(ts)
    return Series(
        np.array(ts, dtype=np.int64),
        {k: np.array(v, dtype=np.float64) for k, v in values.items()},
        np.array(q if q is not None else [GOOD] * n, dtype=np.int8),
    )


def test_constant_flow_one_hour():
    s = series([0, 30 * MIN, 60 * MIN], flow=[2.0, 2.0, 2.0])
    r = window_volume(s, 0, HOUR, max_gap_ms=HOUR)
    assert r.method == "flow"
    assert r.volume_m3 == pytest.approx(7200.0)
    assert r.coverage == 1.0 and not r.incomplete and r.gaps == []
    assert r.n_readings == 3


def test_flow_ramp_clipped_with_interpolated_edges():
    # flow rises 0 -> 6 m3/s over 60 min; window 15..45 min: mean flow 3 m3/s for 1800 s
    s = series([0, 60 * MIN], flow=[0.0, 6.0])
    r = window_volume(s, 15 * MIN, 45 * MIN, max_gap_ms=2 * HOUR)
    assert r.volume_m3 == pytest.approx(5400.0)
    assert r.coverage == 1.0


def test_flow_gap_longer_than_max_is_not_bridged():
    # readings every 10 min, but none between 20 and 50 min; 1 m3/s
    ts = [0, 10 * MIN, 20 * MIN, 50 * MIN, 60 * MIN]
    s = series(ts, flow=[1.0] * 5)
    r = window_volume(s, 0, HOUR, max_gap_ms=15 * MIN)
    assert r.volume_m3 == pytest.approx(1800.0)  # 30 min measured
    assert r.coverage == pytest.approx(0.5)
    assert r.gaps == [(20 * MIN, 50 * MIN)]
    assert r.incomplete


def test_leading_and_trailing_edges_without_readings_are_gaps():
    s = series([10 * MIN, 50 * MIN], flow=[1.0, 1.0])
    r = window_volume(s, 0, HOUR, max_gap_ms=HOUR)
    assert r.volume_m3 == pytest.approx(2400.0)
    assert r.gaps == [(0, 10 * MIN), (50 * MIN, HOUR)]
    assert r.coverage == pytest.approx(40 / 60)


def test_bad_readings_are_excluded():
    # the bad spike of 100 m3/s must not count; the good readings either side bridge it
    s = series([0, 5 * MIN, 10 * MIN], [GOOD, BAD, GOOD], flow=[1.0, 100.0, 1.0])
    r = window_volume(s, 0, 10 * MIN, max_gap_ms=HOUR)
    assert r.volume_m3 == pytest.approx(600.0)
    assert r.n_readings == 2


def test_estimated_share_is_by_volume():
    s = series([0, 10 * MIN, 20 * MIN, 30 * MIN], [GOOD, GOOD, EST, GOOD], flow=[1.0, 1.0, 1.0, 1.0])
    r = window_volume(s, 0, 30 * MIN, max_gap_ms=HOUR)
    assert r.volume_m3 == pytest.approx(1800.0)
    assert r.estimated_share == pytest.approx(2 / 3)  # intervals 10-20 and 20-30 touch the estimate


def test_totaliser_preferred_and_interpolated_at_edges():
    # totaliser 1000 at t=0, 1360 at t=60 min; window 0..30 min -> 180 m3; flow disagrees on purpose
    s = series([0, 60 * MIN], flow=[5.0, 5.0], totaliser=[1000.0, 1360.0])
    r = window_volume(s, 0, 30 * MIN, max_gap_ms=2 * HOUR)
    assert r.method == "totaliser"
    assert r.volume_m3 == pytest.approx(180.0)


def test_totaliser_rollover_is_recognised():
    # a 6-digit register wraps at 1,000,000: 999,900 -> 150 means 250 m3
    s = series([0, 10 * MIN], totaliser=[999_900.0, 150.0])
    r = window_volume(s, 0, 10 * MIN, max_gap_ms=HOUR, rollover_m3=1_000_000.0)
    assert r.volume_m3 == pytest.approx(250.0)
    assert "totaliser_rollover" in r.flags
    assert r.coverage == 1.0


def test_totaliser_reset_counts_from_new_value():
    s = series([0, 10 * MIN, 20 * MIN], totaliser=[5000.0, 40.0, 140.0])
    r = window_volume(s, 0, 20 * MIN, max_gap_ms=HOUR, rollover_m3=1_000_000.0)
    assert r.volume_m3 == pytest.approx(140.0)
    assert "totaliser_reset" in r.flags


def test_totaliser_unexplained_drop_is_a_gap_not_a_volume():
    s = series([0, 10 * MIN, 20 * MIN], totaliser=[5000.0, 4000.0, 4100.0])
    r = window_volume(s, 0, 20 * MIN, max_gap_ms=HOUR, rollover_m3=1_000_000.0)
    assert r.volume_m3 == pytest.approx(100.0)
    assert "totaliser_decrease" in r.flags
    assert r.coverage == pytest.approx(0.5)
    assert r.gaps == [(0, 10 * MIN)]


def test_totaliser_long_gap_inside_window_is_measured():
    s = series([0, 10 * MIN, 5 * HOUR, 5 * HOUR + 10 * MIN], totaliser=[0.0, 60.0, 1800.0, 1860.0])
    r = window_volume(s, 0, 5 * HOUR + 10 * MIN, max_gap_ms=HOUR)
    assert r.volume_m3 == pytest.approx(1860.0)
    assert r.coverage == 1.0 and r.estimated_share == 0.0


def test_totaliser_long_gap_cut_by_window_is_estimated():
    s = series([0, 4 * HOUR], totaliser=[0.0, 4000.0])
    r = window_volume(s, HOUR, 2 * HOUR, max_gap_ms=HOUR)
    assert r.volume_m3 == pytest.approx(1000.0)
    assert r.estimated_share == 1.0
    assert r.coverage == 0.0 and r.incomplete


def test_no_usable_readings():
    s = series([0, MIN], [BAD, BAD], flow=[1.0, 1.0])
    r = window_volume(s, 0, HOUR, max_gap_ms=HOUR)
    assert r.method == "none" and r.volume_m3 == 0.0 and r.incomplete
    assert r.gaps == [(0, HOUR)]


def test_from_rows_sorts_and_keeps_nan_for_missing():
    rows = [{"time": 2000, "flow": 1.0, "qcode": 0}, {"time": 1000, "totaliser": 5.0}]
    s = Series.from_rows(rows)
    assert s.ts_ms.tolist() == [1000, 2000]
    assert math.isnan(s.values["flow"][0]) and s.values["totaliser"][0] == 5.0


def test_bad_window_is_an_error():
    with pytest.raises(ValueError, match="after its start"):
        window_volume(Series.empty(), 10, 10, max_gap_ms=1)


# --- properties ---------------------------------------------------------------------------------

readings = st.lists(
    st.tuples(st.integers(1, 30 * MIN), st.floats(0, 50, allow_nan=False), st.sampled_from([GOOD, GOOD, EST, BAD])),
    min_size=2,
    max_size=40,
)


def _flow_series(steps: list[tuple[int, float, int]]) -> Series:
    ts = np.cumsum([s for s, _, _ in steps]).tolist()
    return series(ts, [q for _, _, q in steps], flow=[f for _, f, _ in steps])


def _totaliser_series(steps: list[tuple[int, float, int]]) -> Series:
    ts = np.cumsum([s for s, _, _ in steps]).tolist()
    tot = np.cumsum([f * s / 1000 for s, f, _ in steps]).tolist()
    return series(ts, [q for _, _, q in steps], totaliser=tot)


@settings(max_examples=150, deadline=None)
@given(readings, st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.booleans())
def test_volume_is_additive_over_adjacent_windows(steps, fa, fb, fc, use_totaliser):
    s = _totaliser_series(steps) if use_totaliser else _flow_series(steps)
    span = int(s.ts_ms[-1]) + 10 * MIN
    a, b, c = sorted(int(f * span) for f in (fa, fb, fc))
    if not a < b < c:
        return
    kw = {"max_gap_ms": 10 * MIN}
    whole = window_volume(s, a, c, **kw)
    left, right = window_volume(s, a, b, **kw), window_volume(s, b, c, **kw)
    if whole.method == left.method == right.method:
        assert whole.volume_m3 == pytest.approx(left.volume_m3 + right.volume_m3, rel=1e-9, abs=1e-6)
        weighted = (left.coverage * (b - a) + right.coverage * (c - b)) / (c - a)
        if whole.method == "flow":
            assert whole.coverage == pytest.approx(weighted, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(readings)
def test_totaliser_and_flow_agree_when_flow_is_piecewise_constant(steps):
    # a totaliser accumulating a constant flow per step equals the flow integral of a step function;
    # for any window covering whole steps the totaliser delta is exact and never negative
    s = _totaliser_series(steps)
    r = window_volume(s, 0, int(s.ts_ms[-1]) + 1, max_gap_ms=HOUR)
    assert r.volume_m3 >= 0
    assert 0.0 <= r.coverage <= 1.0 and 0.0 <= r.estimated_share <= 1.0
