"""Rollups for billing and Grafana: interval volumes per metering point, daily balances per reach.

- ``volume`` (tags ``VOLUME_TAGS``; one row per point and window, at the window start): volume_m3,
  coverage, estimated_share, method, incomplete, n_readings, gaps, computed_ms. The volume comes from
  ``canalflow.volume.window_volume`` (totaliser deltas aware of rollover and reset, else integrated
  flow; flow rated from level with the point's rating when a meter sends level only).
- ``balance`` (tags ``BALANCE_TAGS``; one row per reach and day): in_m3, out_m3, loss_m3,
  expected_loss_m3 (the reach's expected seepage from its outflows by the soil law,
  ``canalflow.seepage.reach_expected_seepage_m3``, the same figure ``billing efficiency`` reports),
  eta, anomaly, data_error (η > 1), incomplete, computed_ms. In/out points from ``District.reach_balance_points``.

Windows: hours are UTC hours; days are calendar days in the district's time zone (billing days).
Rows are overwritten when recomputed (same tags + same time), so recomputing is idempotent.
Late data: workers record which (point, day) their writes touched (:class:`DirtyWindows`);
``ingest rollup --dirty`` recomputes exactly those days (their hours, the day, and the balances of
the reaches the point belongs to) and nothing else.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO
from zoneinfo import ZoneInfo

import numpy as np

from canalflow import ratings
from canalflow.contract import M, line, policy_of, source_of
from canalflow.district import District, Point
from canalflow.influx import InfluxV1
from canalflow.seepage import judge_reach, reach_expected_seepage_m3
from canalflow.volume import Series, VolumeResult, window_volume
from ingest.dirty import DirtyWindows, day_start, day_windows, touched_days

__all__ = ["DirtyWindows", "Rollup", "day_start", "day_windows", "run_dirty", "run_rollup", "touched_days"]

CHUNK_DAYS = 7  # days computed from one query per point
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
QUANTITIES = ("flow", "totaliser", "level", "downstream_level", "velocity")


def hour_windows(start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    t0 = start_ms - start_ms % HOUR_MS
    return [(t, t + HOUR_MS) for t in range(t0, end_ms, HOUR_MS)]


@dataclass
class Rollup:
    district: District
    client: InfluxV1

    def __post_init__(self) -> None:
        self.tz = ZoneInfo(self.district.spec.district.timezone)
        tol = self.district.spec.tolerances
        self.max_gap_ms = int(tol.max_gap_minutes * 60_000)
        self.min_coverage = tol.min_coverage
        self.computed_ms = int(time.time() * 1000)

    # -- per point ------------------------------------------------------------------------
    def series(self, point: Point, t0: int, t1: int) -> Series:
        margin = self.max_gap_ms
        rows = self.client.query_points(
            f'SELECT "flow", "totaliser", "level", "downstream_level", "velocity", "qcode" FROM {source_of(M.readings)} '
            f'WHERE "point" = $point AND time >= {t0 - margin}ms AND time <= {t1 + margin}ms',
            params={"point": point.id},
        )
        series = Series.from_rows(rows, QUANTITIES)
        return self._with_rated_flow(point, series)

    def _with_rated_flow(self, point: Point, series: Series) -> Series:
        """Level-only meters: rate each level with the point's rating in force on its day (re-ratings apply by date)."""
        flow = series.values["flow"]
        level = series.values["level"]
        if len(series) == 0 or not point.ratings or not np.all(np.isnan(flow)) or np.all(np.isnan(level)):
            return series
        versions = [ratings.parse_rating(r.model_dump()) for r in point.ratings]
        rated = np.full(len(series), np.nan)
        day_of = np.array([dt.datetime.fromtimestamp(int(t) / 1000, self.tz).date().toordinal() for t in series.ts_ms])
        velocity = series.values["velocity"]
        for ordinal in np.unique(day_of):
            mask = day_of == ordinal
            try:
                rating = ratings.rating_at(versions, dt.date.fromordinal(int(ordinal)))
                result = ratings.flow_array(
                    rating, level[mask], series.values["downstream_level"][mask],
                    velocity_ms=None if np.all(np.isnan(velocity[mask])) else velocity[mask],
                )
            except ratings.RatingError:
                continue  # no rating valid that day: those readings give no flow (coverage shows it)
            rated[mask] = np.asarray(result.flow_m3s, dtype=float)
        return Series(series.ts_ms, {**series.values, "flow": rated}, series.qcode)

    def rollover_m3(self, point: Point) -> float | None:
        profile = self.district.profiles.get(point.profile)
        register = profile.by_quantity("totaliser") if profile is not None else None
        return register.rollover_modulus_si if register is not None else None

    def point_volumes(self, point: Point, windows: list[tuple[int, int]]) -> list[VolumeResult]:
        if not windows:
            return []
        return self.window_results(point, self.series(point, windows[0][0], windows[-1][1]), windows)

    def window_results(self, point: Point, series: Series, windows: list[tuple[int, int]]) -> list[VolumeResult]:
        rollover = self.rollover_m3(point)
        return [
            window_volume(series, t0, t1, max_gap_ms=self.max_gap_ms, rollover_m3=rollover, min_coverage=self.min_coverage,
                          max_flow_m3s=self.district.capacity_m3s(point.id))
            for t0, t1 in windows
        ]

    def volume_line(self, point: Point, interval: str, t0: int, result: VolumeResult) -> str:
        tags = {"district": self.district.id, "point": point.id, "canal": point.canal, "role": point.role.value, "interval": interval}
        fields: dict[str, float | int | bool | str] = {
            "volume_m3": float(result.volume_m3),
            "coverage": float(result.coverage),
            "estimated_share": float(result.estimated_share),
            "method": result.method,
            "incomplete": bool(result.incomplete),
            "n_readings": int(result.n_readings),
            "gaps": len(result.gaps),
            "flags": ",".join(result.flags),
            "computed_ms": self.computed_ms,
        }
        return line(M.volume, tags, fields, t0)

    # -- per reach ------------------------------------------------------------------------
    def balance_line(self, canal_id: str, reach_id: str, t0: int, t1: int, day: dict[str, VolumeResult]) -> str | None:
        inflow, outflow = self.district.reach_balance_points(canal_id, reach_id)
        if not inflow:
            return None
        members = [*inflow, *outflow]
        v_in = sum(day[p.id].volume_m3 for p in inflow)
        v_out = sum(day[p.id].volume_m3 for p in outflow)
        incomplete = any(day[p.id].incomplete for p in members)
        outflows = {p.id: day[p.id].volume_m3 for p in outflow}
        expected = reach_expected_seepage_m3(self.district, canal_id, reach_id, outflows, (t1 - t0) / 1000)
        loss = v_in - v_out
        verdict = judge_reach(v_in, v_out, expected, incomplete=incomplete, anomaly_factor=self.district.spec.tolerances.loss_anomaly_factor)
        fields: dict[str, float | int | bool | str] = {
            "in_m3": float(v_in),
            "out_m3": float(v_out),
            "loss_m3": float(loss),
            "expected_loss_m3": float(expected),
            "incomplete": incomplete,
            "data_error": verdict.data_error,
            "anomaly": verdict.anomaly,
            "points_in": len(inflow),
            "points_out": len(outflow),
            "computed_ms": self.computed_ms,
        }
        if v_in > 0:
            fields["eta"] = float(v_out / v_in)
        tags = {"district": self.district.id, "canal": canal_id, "reach": reach_id, "interval": "1d"}
        return line(M.balance, tags, fields, t0)

    def reaches_of(self, point_ids: set[str]) -> list[tuple[str, str]]:
        out = []
        for ref in self.district.reaches:
            inflow, outflow = self.district.reach_balance_points(ref.canal, ref.reach.id)
            if point_ids & {p.id for p in (*inflow, *outflow)}:
                out.append((ref.canal, ref.reach.id))
        return out

    # -- a run ----------------------------------------------------------------------------
    def run(self, days: Iterable[tuple[int, int]], point_ids: set[str] | None = None, *,
            intervals: Iterable[str] = ("1h", "1d"), progress: IO[str] | None = None) -> dict[str, int]:
        """Recompute ``intervals`` of ``point_ids`` (all points if None) on ``days``, and those days' balances."""
        wanted = set(intervals)
        unknown = wanted - {"1h", "1d"}
        if unknown:
            raise ValueError(f"unknown interval(s) {sorted(unknown)}: use 1h and/or 1d")
        chosen = {p.id for p in self.district.spec.points if point_ids is None or p.id in point_ids}
        reaches = [(r.canal, r.reach.id) for r in self.district.reaches] if point_ids is None else self.reaches_of(point_ids)
        balance_points = set()
        for canal_id, reach_id in reaches:
            inflow, outflow = self.district.reach_balance_points(canal_id, reach_id)
            balance_points.update(p.id for p in (*inflow, *outflow))
        counts = {"volume": 0, "balance": 0}
        needed = [p for p in self.district.spec.points if p.id in chosen or p.id in balance_points]
        for chunk in consecutive_chunks(list(days), CHUNK_DAYS):
            c0, c1 = chunk[0][0], chunk[-1][1]
            lines: list[str] = []
            by_day: list[dict[str, VolumeResult]] = [{} for _ in chunk]
            for point in needed:
                series = self.series(point, c0, c1)  # one query per point and chunk of days
                windows = list(chunk) + (hour_windows(c0, c1) if "1h" in wanted and point.id in chosen else [])
                results = self.window_results(point, series, windows)
                for i, (d0, _d1) in enumerate(chunk):
                    by_day[i][point.id] = results[i]
                    if "1d" in wanted and point.id in chosen:
                        lines.append(self.volume_line(point, "1d", d0, results[i]))
                for (h0, _h1), result in zip(windows[len(chunk):], results[len(chunk):], strict=True):
                    lines.append(self.volume_line(point, "1h", h0, result))
            counts["volume"] += len(lines)
            balances: list[str] = []
            if "1d" in wanted:
                for (d0, d1), day_results in zip(chunk, by_day, strict=True):
                    for canal_id, reach_id in reaches:
                        balance = self.balance_line(canal_id, reach_id, d0, d1, day_results)
                        if balance:
                            balances.append(balance)
            counts["balance"] += len(balances)
            self._write(M.volume, lines)
            self._write(M.balance, balances)
            if progress is not None:
                first, last = (dt.datetime.fromtimestamp(t / 1000, self.tz).date() for t in (c0, c1 - 1))
                print(f"rollup {first}..{last}: {len(chosen)} point(s), {len(reaches)} reach balance(s)", file=progress, flush=True)
        return counts

    def _write(self, measurement: str, lines: list[str]) -> None:
        for i in range(0, len(lines), 5000):
            self.client.write_lines(lines[i : i + 5000], rp=policy_of(measurement))


def consecutive_chunks(days: list[tuple[int, int]], size: int) -> list[list[tuple[int, int]]]:
    """Split sorted day windows into runs of consecutive days, at most ``size`` long (one query per point each)."""
    chunks: list[list[tuple[int, int]]] = []
    for window in sorted(days):
        if chunks and chunks[-1][-1][1] == window[0] and len(chunks[-1]) < size:
            chunks[-1].append(window)
        else:
            chunks.append([window])
    return chunks


def run_rollup(district: District, client: InfluxV1, start_ms: int, end_ms: int, *,
               intervals: Iterable[str] = ("1h", "1d"), progress: IO[str] | None = None) -> str:
    """Recompute every window overlapping [start_ms, end_ms); return a one-line summary."""
    rollup = Rollup(district, client)
    days = day_windows(start_ms, end_ms, rollup.tz)
    counts = rollup.run(days, intervals=intervals, progress=progress)
    where = f"retention policy {policy_of(M.volume)!r}"
    return f"wrote {counts['volume']} volume row(s) and {counts['balance']} balance row(s) for {len(days)} day(s) ({where})"


def run_dirty(district: District, client: InfluxV1, dirty: DirtyWindows, *, progress: IO[str] | None = None) -> str:
    """Recompute the windows late data touched, then forget them."""
    rollup = Rollup(district, client)
    pending = dirty.pending()
    total = {"volume": 0, "balance": 0}
    for day_ms in sorted(pending):
        points = pending[day_ms] & set(district.points)
        d0, d1 = day_windows(day_ms, day_ms + 1, rollup.tz)[0]
        counts = rollup.run([(d0, d1)], points, progress=progress)
        dirty.clear(day_ms, pending[day_ms])
        for key in total:
            total[key] += counts[key]
    return f"recomputed {len(pending)} day(s): {total['volume']} volume row(s), {total['balance']} balance row(s)"
