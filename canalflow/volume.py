"""Volumes from meter readings over a time window: the shared hydrometry core (pure numpy).

Used by ingest (interval rollups) and billing (season volumes). Two methods:

- ``totaliser``: differences of the meter's totaliser, linearly interpolated at the window edges.
  A drop of the totaliser is a *rollover* when it is consistent with the register wrapping at
  ``rollover_m3`` (the previous value in the upper half of the span, the wrapped delta under half
  of it and no more than the point can pass in the interval, ``max_flow_m3s``); a *reset* when it falls to near zero (then the new value is counted as the volume since
  the reset); any other drop is a data error: that interval is not counted and lowers coverage.
  A totaliser keeps counting through a communication gap, so a long gap that lies wholly inside
  the window is measured volume; a long gap cut by a window edge is split in proportion to time
  and that part is *estimated* (it does not count as coverage).
  Stretches the totaliser does not cover (typically the window's edges, as the totaliser is read
  in a slower poll group) are measured by integrating flow over them (method ``totaliser+flow``).
- ``flow``: trapezoidal integration of flow (m³/s), clipped to the window with linear
  interpolation at the edges. Gaps longer than ``max_gap_ms`` are not bridged: they add no volume
  and lower coverage.

Readings with quality ``bad`` are excluded; ``estimated`` readings are used and their share of
the volume is reported. A window whose coverage is below ``min_coverage`` is ``incomplete``.

Readings outside the window matter: pass the series with a margin of at least ``max_gap_ms`` on
both sides so the edges can be interpolated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from canalflow.contract import Quality

BAD = Quality.bad.code
ESTIMATED = Quality.estimated.code
RESET_FRACTION = 0.1  # a drop to below this fraction of the previous value is a meter reset
JITTER_FRACTION = 1e-6  # a drop this small relative to the value is float noise, not a reset

__all__ = ["Series", "VolumeResult", "window_volume"]


@dataclass(frozen=True)
class Series:
    """One metering point's readings, sorted by timestamp."""

    ts_ms: np.ndarray  # int64
    values: dict[str, np.ndarray]  # quantity -> float64, NaN where absent
    qcode: np.ndarray  # int8 quality codes (canalflow.contract.Quality.code)

    def __post_init__(self) -> None:
        n = len(self.ts_ms)
        if len(self.qcode) != n or any(len(v) != n for v in self.values.values()):
            raise ValueError("Series: ts_ms, qcode and every values array must have the same length")
        if n > 1 and np.any(np.diff(self.ts_ms) < 0):
            raise ValueError("Series: ts_ms must be sorted in increasing order")

    def __len__(self) -> int:
        return len(self.ts_ms)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], quantities: Iterable[str] = ("flow", "totaliser")) -> Series:
        """Build from rows like InfluxDB query points: ``{"time": ms, "flow": ..., "qcode": ...}``.

        Rows are sorted by time; of rows with the same time the last wins. A missing ``qcode``
        counts as good.
        """
        by_ts: dict[int, Mapping[str, Any]] = {}
        for row in rows:
            by_ts[int(row["time"])] = row
        stamps = sorted(by_ts)
        names = list(quantities)
        values = {
            q: np.array([_float(by_ts[t].get(q)) for t in stamps], dtype=np.float64) for q in names
        }
        qcode = np.array([int(by_ts[t].get("qcode") or 0) for t in stamps], dtype=np.int8)
        return cls(np.array(stamps, dtype=np.int64), values, qcode)

    @classmethod
    def empty(cls) -> Series:
        return cls(np.zeros(0, dtype=np.int64), {}, np.zeros(0, dtype=np.int8))


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


@dataclass(frozen=True)
class VolumeResult:
    volume_m3: float
    coverage: float  # fraction of the window whose volume is measured (0..1)
    estimated_share: float  # fraction of the volume from estimated readings or split long gaps
    method: str  # "totaliser" | "totaliser+flow" (flow measures the totaliser's gaps) | "flow" | "none"
    gaps: list[tuple[int, int]]  # uncovered stretches of the window, (start_ms, end_ms)
    incomplete: bool
    n_readings: int  # usable readings inside the window
    flags: tuple[str, ...] = field(default=())  # totaliser_rollover, totaliser_reset, totaliser_decrease


@dataclass(frozen=True)
class _Intervals:
    """Per interval between consecutive usable readings: volume inside the window and its status."""

    ta: np.ndarray
    tb: np.ndarray
    volume: np.ndarray
    covered: np.ndarray  # bool: counts towards coverage
    estimated: np.ndarray  # bool: volume is an estimate
    flags: tuple[str, ...]


def window_volume(
    series: Series,
    t0_ms: int,
    t1_ms: int,
    *,
    max_gap_ms: int,
    rollover_m3: float | None = None,
    min_coverage: float = 0.9,
    max_flow_m3s: float | None = None,
) -> VolumeResult:
    """The volume (m³) through a metering point in ``[t0_ms, t1_ms]``; see the module docstring.
    ``max_flow_m3s``: the most the point can pass (``District.capacity_m3s``): a totaliser drop whose
    wrapped difference would need more is no rollover."""
    if t1_ms <= t0_ms:
        raise ValueError(f"window end {t1_ms} must be after its start {t0_ms}")
    if max_gap_ms <= 0:
        raise ValueError("max_gap_ms must be positive")
    candidates = []
    flow_data = _usable(series, "flow")
    for method in ("totaliser", "flow"):
        ts, vals, q = flow_data if method == "flow" else _usable(series, method)
        if len(ts) < 2:
            continue
        if method == "totaliser":
            intervals = _totaliser_intervals(ts, vals, q, t0_ms, t1_ms, max_gap_ms, rollover_m3, max_flow_m3s)
        else:
            intervals = _flow_intervals(ts, vals, q, t0_ms, t1_ms, max_gap_ms)
        n_inside = int(np.count_nonzero((ts >= t0_ms) & (ts <= t1_ms)))
        result = _result(method, intervals, t0_ms, t1_ms, min_coverage, n_inside)
        if method == "totaliser" and result.gaps and len(flow_data[0]) >= 2:
            result = _fill_gaps_with_flow(result, flow_data, t0_ms, t1_ms, max_gap_ms, min_coverage)
        candidates.append(result)
    if not candidates:
        inside = int(np.count_nonzero((series.ts_ms >= t0_ms) & (series.ts_ms <= t1_ms) & (series.qcode != BAD)))
        return VolumeResult(0.0, 0.0, 0.0, "none", [(t0_ms, t1_ms)], True, inside)
    # The totaliser is preferred (it integrates at the meter) unless flow covers more of the window.
    best = candidates[0]
    for other in candidates[1:]:
        if other.coverage > best.coverage + 1e-12:
            best = other
    return best


def _fill_gaps_with_flow(
    result: VolumeResult,
    flow_data: tuple[np.ndarray, np.ndarray, np.ndarray],
    t0: int,
    t1: int,
    max_gap: int,
    min_coverage: float,
) -> VolumeResult:
    """Measure the stretches the totaliser does not cover by integrating flow over them.

    A totaliser is read less often than flow (a slow poll group), so the window's edges usually
    fall between two totaliser readings of which one lies outside the queried span; flow readings
    measure those edges instead of leaving them uncounted.
    """
    ts, vals, q = flow_data
    volume, covered_ms, estimated_m3 = result.volume_m3, result.coverage * (t1 - t0), result.estimated_share * abs(result.volume_m3)
    gaps: list[tuple[int, int]] = []
    for g0, g1 in result.gaps:
        part = _result("flow", _flow_intervals(ts, vals, q, g0, g1, max_gap), g0, g1, min_coverage, 0)
        volume += part.volume_m3
        covered_ms += part.coverage * (g1 - g0)
        estimated_m3 += part.estimated_share * abs(part.volume_m3)
        gaps += part.gaps
    coverage = min(1.0, covered_ms / (t1 - t0))
    estimated_share = min(1.0, estimated_m3 / abs(volume)) if volume else 0.0  # float sums can pass 1 by an ulp
    return VolumeResult(
        volume, coverage, estimated_share, "totaliser+flow", gaps, coverage < min_coverage, result.n_readings, result.flags
    )


def _usable(series: Series, quantity: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values = series.values.get(quantity)
    if values is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int8)
    keep = (series.qcode != BAD) & np.isfinite(values)
    ts, vals, q = series.ts_ms[keep], values[keep], series.qcode[keep]
    if len(ts) > 1:
        # Same timestamp twice: keep the last reading.
        last = np.append(ts[1:] != ts[:-1], True)
        ts, vals, q = ts[last], vals[last], q[last]
    return ts.astype(np.int64), vals.astype(np.float64), q


def _overlap(ta: np.ndarray, tb: np.ndarray, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.maximum(ta, t0)
    b = np.minimum(tb, t1)
    return a, b, np.clip(b - a, 0, None)


def _flow_intervals(
    ts: np.ndarray, flow: np.ndarray, q: np.ndarray, t0: int, t1: int, max_gap: int
) -> _Intervals:
    ta, tb = ts[:-1], ts[1:]
    fa, fb = flow[:-1], flow[1:]
    dt = (tb - ta).astype(np.float64)
    a, b, overlap = _overlap(ta, tb, t0, t1)
    slope = (fb - fa) / dt
    f_at_a = fa + slope * (a - ta)
    f_at_b = fa + slope * (b - ta)
    bridged = (tb - ta) <= max_gap
    volume = np.where(bridged, (f_at_a + f_at_b) / 2.0 * overlap / 1000.0, 0.0)
    estimated = (q[:-1] == ESTIMATED) | (q[1:] == ESTIMATED)
    return _Intervals(ta, tb, volume, bridged, estimated & bridged, ())


def _totaliser_deltas(
    tot: np.ndarray, rollover_m3: float | None, max_delta: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Volume between consecutive totaliser readings and whether each difference is valid;
    ``max_delta``: per interval, the most water the point can pass in it."""
    prev, cur = tot[:-1], tot[1:]
    delta = cur - prev
    valid = np.ones(len(delta), dtype=bool)
    flags: list[str] = []
    drops = np.flatnonzero(delta < -JITTER_FRACTION * np.maximum(np.abs(prev), 1.0))
    delta = np.where(delta < 0, np.maximum(delta, 0.0), delta)  # jitter counts as no flow
    for i in drops:
        p, c = float(prev[i]), float(cur[i])
        wrapped = (rollover_m3 - p + c) if rollover_m3 else None
        possible = wrapped is not None and (max_delta is None or wrapped <= max_delta[i])
        if possible and p > rollover_m3 / 2 and 0 <= wrapped < rollover_m3 / 2:
            delta[i] = wrapped
            flags.append("totaliser_rollover")
        elif 0 <= c < RESET_FRACTION * p:
            delta[i] = c
            flags.append("totaliser_reset")
        else:
            delta[i] = 0.0
            valid[i] = False
            flags.append("totaliser_decrease")
    return delta, valid, tuple(dict.fromkeys(flags))


def _totaliser_intervals(
    ts: np.ndarray,
    tot: np.ndarray,
    q: np.ndarray,
    t0: int,
    t1: int,
    max_gap: int,
    rollover_m3: float | None,
    max_flow_m3s: float | None = None,
) -> _Intervals:
    ta, tb = ts[:-1], ts[1:]
    max_delta = None if max_flow_m3s is None else max_flow_m3s * (tb - ta) / 1000.0
    delta, valid, flags = _totaliser_deltas(tot, rollover_m3, max_delta)
    _, _, overlap = _overlap(ta, tb, t0, t1)
    volume = np.where(valid, delta * overlap / (tb - ta), 0.0)
    long_gap = (tb - ta) > max_gap
    whole_inside = (ta >= t0) & (tb <= t1)
    covered = valid & (~long_gap | whole_inside)
    split_long_gap = valid & long_gap & ~whole_inside
    estimated = ((q[:-1] == ESTIMATED) | (q[1:] == ESTIMATED) | split_long_gap) & valid
    return _Intervals(ta, tb, volume, covered, estimated, flags)


def _result(
    method: str, iv: _Intervals, t0: int, t1: int, min_coverage: float, n_inside: int
) -> VolumeResult:
    _, _, overlap = _overlap(iv.ta, iv.tb, t0, t1)
    span = float(t1 - t0)
    coverage = float(np.sum(overlap[iv.covered])) / span
    volume = float(np.sum(iv.volume))
    magnitude = float(np.sum(np.abs(iv.volume)))
    estimated = min(1.0, float(np.sum(np.abs(iv.volume[iv.estimated]))) / magnitude) if magnitude > 0 else 0.0  # sums of a part can pass the whole by an ulp
    gaps = _gaps(iv, t0, t1)
    coverage = min(1.0, coverage)
    return VolumeResult(volume, coverage, estimated, method, gaps, coverage < min_coverage, n_inside, iv.flags)


def _gaps(iv: _Intervals, t0: int, t1: int) -> list[tuple[int, int]]:
    """Stretches of [t0, t1] not covered by a covered interval, merged."""
    keep = iv.covered & (iv.tb > t0) & (iv.ta < t1)
    starts = np.maximum(iv.ta[keep], t0)
    ends = np.minimum(iv.tb[keep], t1)
    gaps: list[tuple[int, int]] = []
    cursor = t0
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        if start > cursor:
            gaps.append((int(cursor), int(start)))
        cursor = max(cursor, end)
    if cursor < t1:
        gaps.append((int(cursor), int(t1)))
    return gaps
