"""Read metering-point series from InfluxDB (the `reading` measurement) for volume computation.

Queries go through :class:`canalflow.influx.InfluxV1` with InfluxQL on the v1 API. A window is
fetched with a margin of ``max_gap`` on both sides so that :func:`canalflow.volume.window_volume`
can interpolate at the edges, in time chunks so that no single answer grows without bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from canalflow.contract import M, source_of
from canalflow.influx import InfluxV1, quote_ident
from canalflow.volume import Series, VolumeResult

VOLUME_QUANTITIES = ("flow", "totaliser", "level", "downstream_level", "velocity")
DAY_MS = 86_400_000
CHUNK_MS = 7 * DAY_MS


def _time_clause(t0_ms: int, t1_ms: int) -> str:
    return f"time >= {int(t0_ms)}ms AND time <= {int(t1_ms)}ms"


def fetch_series(
    influx: InfluxV1,
    district_id: str,
    point_ids: Iterable[str],
    t0_ms: int,
    t1_ms: int,
    *,
    margin_ms: int,
    as_of_ms: int | None = None,
    chunk_ms: int = CHUNK_MS,
    quantities: Sequence[str] = VOLUME_QUANTITIES,
) -> dict[str, Series]:
    """Series of each point over ``[t0 - margin, t1 + margin]``; points without readings get an empty Series.
    ``quantities``: the fields read (default: those volumes are computed from).

    ``as_of_ms`` is recorded by billing runs for reproducibility; readings are keyed by their
    measurement time, so late arrivals are visible only through the caller's choice of window.
    """
    wanted = set(point_ids)
    rows: dict[str, list[dict]] = {p: [] for p in wanted}
    start, end = t0_ms - margin_ms, t1_ms + margin_ms
    if as_of_ms is not None:
        end = min(end, as_of_ms)
    fields = ", ".join([*quantities, "qcode"])
    cursor = start
    while cursor <= end:
        stop = min(end, cursor + chunk_ms - 1)
        q = (
            f"SELECT {fields} FROM {source_of(M.readings)} "
            f"WHERE district = $district AND {_time_clause(cursor, stop)} GROUP BY point"
        )
        for point in influx.query_points(q, params={"district": district_id}):
            pid = point.get("point")
            if pid in wanted:
                rows[pid].append(point)
        cursor = stop + 1
    return {pid: Series.from_rows(r, quantities) if r else Series.empty() for pid, r in rows.items()}


ROLLUP_FIELD = "volume_m3"  # dashboards/kpis.py VOLUME_FIELD; ingest writes it per point and interval
INTERVAL_MS = {"1h": 3_600_000, "1d": DAY_MS}


@dataclass(frozen=True)
class RollupVolumes:
    results: dict[str, VolumeResult]
    monthly: dict[str, dict[str, float]]  # point -> label -> m3 (when months were asked for)


def fetch_rollup_volumes(
    influx: InfluxV1, district_id: str, point_ids: Iterable[str], t0_ms: int, t1_ms: int, *, interval: str = "1d",
    min_coverage: float = 0.9, months: Sequence[tuple[str, int, int]] = (),
) -> RollupVolumes:
    """Window volumes summed by InfluxDB from the ``volume`` rollups (intervals starting in [t0, t1)).

    The window must be whole intervals as the rollups are aligned (for ``1d``, the days ingest
    writes). Per point: volume = Σ ``volume_m3``; coverage = Σ ``coverage`` / intervals in the
    window (a missing interval counts 0; without a coverage field, each interval present counts 1);
    estimated share = Σ ``estimated_share`` / Σ ``coverage`` (the mean share of covered intervals).

    With ``months`` (label, start, end) covering the window, the volume is summed per month (the
    window's volume is their sum) and returned in ``monthly`` too.

    One ``sum()`` per field, run concurrently: on InfluxDB 1.6 each extra aggregate in a single
    statement costs about as much as a separate query, and separate queries use both cores.
    """
    if interval not in INTERVAL_MS:
        raise ValueError(f"unknown rollup interval {interval!r}; use one of {', '.join(INTERVAL_MS)}")
    expected = max(1, round((t1_ms - t0_ms) / INTERVAL_MS[interval]))
    params = {"district": district_id, "interval": interval}

    def where(a: int, b: int) -> str:
        return f"WHERE district = $district AND interval = $interval AND time >= {int(a)}ms AND time < {int(b)}ms GROUP BY point"

    def sums(task: tuple[str, int, int]) -> dict[str, float]:
        field, a, b = task
        q = f"SELECT sum({quote_ident(field)}) AS total FROM {source_of(M.volume)} {where(a, b)}"
        return {row["point"]: float(row["total"] or 0.0) for row in influx.query_points(q, params=params)}

    spans = list(months) or [("", t0_ms, t1_ms)]
    tasks = [(ROLLUP_FIELD, a, b) for _, a, b in spans] + [("coverage", t0_ms, t1_ms), ("estimated_share", t0_ms, t1_ms)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(sums, tasks))
    per_span, coverage, estimated = answers[: len(spans)], answers[-2], answers[-1]
    monthly: dict[str, dict[str, float]] = {}
    volume: dict[str, float] = {}
    for (label, _, _), span in zip(spans, per_span, strict=True):
        for p, v in span.items():
            volume[p] = volume.get(p, 0.0) + v
            if label:
                monthly.setdefault(p, {})[label] = v
    if volume and not coverage:  # rollups without a coverage field: every interval present is covered
        q = f"SELECT count({quote_ident(ROLLUP_FIELD)}) AS total FROM {source_of(M.volume)} {where(t0_ms, t1_ms)}"
        coverage = {row["point"]: float(row["total"] or 0.0) for row in influx.query_points(q, params=params)}
    none = VolumeResult(0.0, 0.0, 0.0, "none", [(t0_ms, t1_ms)], True, 0)
    out: dict[str, VolumeResult] = {}
    for p in point_ids:
        if p not in volume:
            out[p] = none
            continue
        covered = coverage.get(p, 0.0)
        share = min(1.0, estimated.get(p, 0.0) / covered) if covered > 0 else 0.0
        cov = min(1.0, covered / expected)
        out[p] = VolumeResult(volume[p], cov, share, f"rollup_{interval}", [], cov < min_coverage, round(covered))
    return RollupVolumes(out, monthly)
