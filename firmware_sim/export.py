"""Ground truth export: per metering point and interval the true volume, per reach the true loss."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from firmware_sim.truth import Truth

COLUMNS = ("kind", "id", "canal", "reach", "start", "end", "start_ms", "end_ms", "volume_m3", "unmetered_m3")


def intervals(t0_ms: int, t1_ms: int, step_ms: int) -> Iterator[tuple[int, int]]:
    if step_ms <= 0:
        raise ValueError("step must be positive")
    start = t0_ms
    while start < t1_ms:
        end = min(start + step_ms, t1_ms)
        yield start, end
        start = end


def _iso(t_ms: int) -> str:
    return dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


def truth_rows(truth: Truth, t0_ms: int, t1_ms: int, step_ms: int) -> Iterator[dict[str, Any]]:
    """One row per point and interval (kind ``point``), then per reach and interval (``reach``)."""
    district = truth.district
    windows = list(intervals(t0_ms, t1_ms, step_ms))
    for point in district.spec.points:
        for a, b in windows:
            yield {"kind": "point", "id": point.id, "canal": point.canal, "reach": "", "start": _iso(a), "end": _iso(b),
                   "start_ms": a, "end_ms": b, "volume_m3": truth.volume_m3(point.id, a, b), "unmetered_m3": 0.0}
    for ref in district.reaches:
        for a, b in windows:
            yield {"kind": "reach", "id": ref.reach.id, "canal": ref.canal, "reach": ref.reach.id, "start": _iso(a),
                   "end": _iso(b), "start_ms": a, "end_ms": b,
                   "volume_m3": truth.reach_loss_m3(ref.canal, ref.reach.id, a, b),
                   "unmetered_m3": truth.reach_unmetered_m3(ref.canal, ref.reach.id, a, b)}


def export_truth(truth: Truth, t0_ms: int, t1_ms: int, step_ms: int, out: Path | str) -> int:
    """Write ground truth to ``out`` (.csv or .parquet); returns the number of rows."""
    path = Path(out)
    rows = list(truth_rows(truth, t0_ms, t1_ms, step_ms))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".csv":
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows, schema=_schema(pa))
        pq.write_table(table, tmp)
    else:
        raise ValueError(f"{path}: unknown output format {path.suffix!r}; name the file .csv or .parquet")
    tmp.replace(path)
    return len(rows)


def _schema(pa: Any) -> Any:
    text = {"kind", "id", "canal", "reach", "start", "end"}
    ints = {"start_ms", "end_ms"}
    return pa.schema([(c, pa.string() if c in text else pa.int64() if c in ints else pa.float64()) for c in COLUMNS])
