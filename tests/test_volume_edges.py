"""A totaliser read in a slow poll group leaves the window's edges uncovered; flow measures them."""

from __future__ import annotations

import numpy as np
import pytest

from canalflow.volume import Series, window_volume

MIN = 60_000


def series(flow_m3s: float, first: int, last: int, totaliser_every: int, start_total: float = 5000.0) -> Series:
    """Flow every minute from ``first`` to ``last`` minutes; the totaliser only every ``totaliser_every``."""
    minutes = np.arange(first, last + 1, dtype=np.int64)
    ts = minutes * MIN
    flow = np.full(len(ts), flow_m3s)
    total = np.where(minutes % totaliser_every == 0, start_total + flow_m3s * ts / 1000, np.nan)
    return Series(ts, {"flow": flow, "totaliser": total}, np.zeros(len(ts), dtype=np.int8))


def test_edges_between_totaliser_readings_are_measured_by_flow():
    # readings from 3 to 28 min, the totaliser at 10 and 20 only: 5..10 and 20..27 lie outside its pairs
    result = window_volume(series(0.25, 3, 28, 10), 5 * MIN, 27 * MIN, max_gap_ms=60 * MIN)
    assert result.method == "totaliser+flow"
    assert result.volume_m3 == pytest.approx(0.25 * 22 * 60)
    assert result.coverage == pytest.approx(1.0) and not result.incomplete and result.gaps == []


def test_window_inside_totaliser_readings_keeps_the_totaliser():
    result = window_volume(series(0.25, 0, 30, 10), 5 * MIN, 27 * MIN, max_gap_ms=60 * MIN)
    assert result.method == "totaliser" and result.volume_m3 == pytest.approx(0.25 * 22 * 60)


def test_without_flow_the_edges_stay_gaps():
    s = series(0.25, 3, 28, 10)
    no_flow = Series(s.ts_ms, {"totaliser": s.values["totaliser"]}, s.qcode)
    result = window_volume(no_flow, 5 * MIN, 27 * MIN, max_gap_ms=60 * MIN)
    assert result.method == "totaliser" and result.gaps == [(5 * MIN, 10 * MIN), (20 * MIN, 27 * MIN)]
    assert result.volume_m3 == pytest.approx(0.25 * 10 * 60)
