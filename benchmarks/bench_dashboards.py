"""Dashboards: how long a district manager waits for each dashboard's queries, and how long a build takes.

Issue 7 names no number; these are the figures that matter to the people who open the dashboards.
Setup (not timed): a private InfluxDB 1.6 with 7 days of one-minute readings of the 31 demo meters
(312,000 rows) plus hourly/daily rollups. Timed: every panel and variable query of each dashboard
over its default 7-day range, as Grafana would send them on load (``dashboards.querycheck``), next
to the raw ceiling: one ``count()`` over all readings of the same range.

    python -m benchmarks dashboards
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from canalflow.contract import M, Quality, line, policy_of, source_of
from canalflow.district import District, load_district
from canalflow.influx import InfluxV1
from dashboards.build import build_dashboards
from dashboards.querycheck import check_dashboard
from ingest.admin import setup_database
from testbed.services import Influxd

ROOT = Path(__file__).resolve().parents[1]
DAYS = 7
MINUTE = 60_000
NOW = dt.datetime(2026, 4, 15, 4, 0, tzinfo=dt.UTC)


def readings(district: District, now_ms: int) -> list[str]:
    rows = []
    for index, point in enumerate(district.spec.points):
        tags = {"district": district.id, "point": point.id, "gateway": point.gateway, "canal": point.canal, "role": point.role.value}
        for ts in range(now_ms - DAYS * 86_400_000, now_ms, MINUTE):
            flow = 2.0 + math.sin(ts / 3_600_000 + index)
            quality = Quality.suspect if ts // MINUTE % 50 == index else Quality.good
            rows.append(line(M.readings, tags, {"flow": flow, "quality": quality.value, "qcode": quality.code, "flags": "", "seq": 0}, ts))
    return rows


def rollups(district: District, now_ms: int) -> list[str]:
    rows = []
    for point in district.spec.points:
        tags = {"district": district.id, "point": point.id, "canal": point.canal, "role": point.role.value}
        for interval, size in (("1h", 3_600_000), ("1d", 86_400_000)):
            for ts in range(now_ms - DAYS * 86_400_000, now_ms, size):
                rows.append(line(M.volume, {**tags, "interval": interval}, {"volume_m3": 7200.0 * size / 3_600_000, "coverage": 1.0}, ts))
    return rows


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run() -> list[dict]:
    district = load_district(ROOT / "examples" / "demo-district.yaml")
    now_ms = int(NOW.timestamp() * 1000)
    build_s, boards = timed(lambda: build_dashboards(district, "en"))
    out: list[dict] = [{"name": "build 4 dashboards (demo district)", "value": build_s * 1000, "unit": "ms"}]
    with tempfile.TemporaryDirectory() as tmp:
        server = Influxd(Path(tmp)).start()
        try:
            db = InfluxV1(server.url, "bench")
            setup_database(db)  # as production: `canalflow ingest setup`
            raw, derived = readings(district, now_ms), rollups(district, now_ms)
            for measurement, batch in ((M.readings, raw), (M.volume, derived)):
                for start in range(0, len(batch), 5000):
                    db.write_lines(batch[start:start + 5000], rp=policy_of(measurement))
            rows = raw + derived
            ceiling_q = f'SELECT count("qcode") FROM {source_of(M.readings)} WHERE time >= {now_ms - DAYS * 86_400_000}ms AND time <= {now_ms}ms'
            db.query(ceiling_q)  # warm the cache as a reload of the dashboard would
            ceiling_s, _ = timed(lambda: db.query(ceiling_q))
            out.append({"name": f"raw ceiling: count() over {len(rows):,} rows, 7 d", "value": ceiling_s * 1000, "unit": "ms"})
            for kind, board in boards.items():
                check_dashboard(board, db, now_ms=now_ms)  # warm-up
                seconds, results = timed(lambda board=board: check_dashboard(board, db, now_ms=now_ms))
                out.append({"name": f"{kind}: all {len(results)} queries, 7 d", "value": seconds * 1000, "unit": "ms",
                            "ratio": seconds / ceiling_s if ceiling_s else None,
                            "note": "sequential; Grafana sends them in parallel"})
            db.close()
        finally:
            server.stop()
    return out


if __name__ == "__main__":
    for row in run():
        print(row)
