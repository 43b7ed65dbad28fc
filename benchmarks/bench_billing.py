"""Billing at district scale: a season run for 10,000 billing units and 20,000 metering points.

Issue 6's number: the run from daily rollups in under 60 s on this machine, PDFs excluded and
reported separately. Setup (not timed in the run figure): a generated district file, a private
InfluxDB 1.6 with 92 days of daily ``volume`` rollups per point (1.84 million points). The raw
ceiling measured beside it is InfluxDB's own ``sum() GROUP BY point`` over the same rollups.

    python -m benchmarks billing
"""

from __future__ import annotations

import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from canalflow.contract import M, line, policy_of, source_of
from canalflow.district import load_district
from canalflow.influx import InfluxV1
from ingest.admin import setup_database
from testbed.services import Influxd

UNITS = 10_000
POINTS = 20_000
BRANCHES = 20
LATERALS_PER_BRANCH = 20
SEASON = "2026-spring"
DAYS = 92


def district_yaml(units: int = UNITS, points: int = POINTS) -> str:
    """A generated district: 1 main canal, 20 branches, 400 laterals, intakes on the laterals."""
    out = [
        "version: 1",
        "district: {id: big, name: 大型灌区基准, timezone: Asia/Shanghai}",
        "profile_dirs: []",
        "soils: {loam: {A: 1.9, m: 0.4}}",
        "headworks: [{id: HW, name: 渠首, capacity_m3s: 500}]",
        "canals:",
        "  - {id: M1, name: 干渠, level: main, source: HW, length_km: 100, soil: loam}",
    ]
    laterals = []
    for b in range(BRANCHES):
        out.append(f"  - {{id: B{b}, name: 支{b}, level: branch, source: M1, offtake_km: {2 + 4 * b}, length_km: 30, soil: loam}}")
        for lat in range(LATERALS_PER_BRANCH):
            out.append(f"  - {{id: L{b}-{lat}, name: 斗{b}-{lat}, level: lateral, source: B{b}, offtake_km: {1 + lat * 1.4:.1f}, length_km: 10, soil: loam}}")
            laterals.append(f"L{b}-{lat}")
    gateways = (points + 199) // 200
    out.append("gateways:")
    out += [f"  - {{id: G{g}, port: {10000 + g}}}" for g in range(gateways)]
    out.append("points:")
    n = 0

    def point(pid: str, role: str, canal: str, km: float, extra: str = "") -> None:
        nonlocal n
        out.append(f"  - {{id: {pid}, role: {role}, canal: {canal}, km: {km}, gateway: G{n // 200}, unit_id: {n % 200 + 1}, profile: em-pipe{extra}}}")
        n += 1

    point("M1-HEAD", "diversion", "M1", 0)
    for b in range(BRANCHES):
        point(f"B{b}-HEAD", "diversion", "M1", 2 + 4 * b, f", feeds: B{b}")
        for lat in range(LATERALS_PER_BRANCH):
            point(f"L{b}-{lat}-HEAD", "diversion", f"B{b}", round(1 + lat * 1.4, 1), f", feeds: L{b}-{lat}")
    intakes = []
    i = 0
    while n < points:
        lateral = laterals[i % len(laterals)]
        km = round(0.1 + 0.2 * (i // len(laterals)) % 9.8, 2)
        point(f"I{i}", "intake", lateral, km)
        intakes.append(f"I{i}")
        i += 1
    out.append("townships:")
    out += [f"  - {{id: T{t}, name: 镇{t}}}" for t in range(100)]
    out += [
        "crops:",
        "  - {id: wheat, crop_class: grain, quotas: [{season_kind: spring, m3_per_mu: 120}], net_depth_mm: {spring: 90}}",
        "  - {id: veg, crop_class: cash, quotas: [{season_kind: spring, m3_per_mu: 150}], net_depth_mm: {spring: 110}}",
        "units:",
    ]
    per_unit = len(intakes) / units
    for u in range(units):
        mine = intakes[int(u * per_unit): int((u + 1) * per_unit)]
        out.append(f"  - {{id: U{u}, name: 村{u}, kind: village, township: T{u % 100}, charging_points: [{', '.join(mine)}], "
                   f"crops: [{{crop: wheat, area_mu: {500 + u % 700}}}, {{crop: veg, area_mu: {50 + u % 90}}}]}}")
    out += [
        "seasons:",
        f"  - {{id: {SEASON}, kind: spring, start: 2026-03-01, end: 2026-05-31, tariff: T2026}}",
        "tariffs:",
        "  - id: T2026",
        "    prices: {grain: {backbone: '0.080', terminal: '0.030'}, cash: {backbone: '0.110', terminal: '0.040'}}",
        "    bands: [{up_to: '1.0', multiplier: '1.0'}, {up_to: '1.2', multiplier: '1.5'}, {multiplier: '2.0'}]",
        "    subsidy: {grain_per_m3: '0.020'}",
        "    reward: {grain_per_m3: '0.050', other_per_m3: '0.030'}",
    ]
    return "\n".join(out) + "\n"


def rollup_lines(district: Any, t0_ms: int) -> list[str]:
    lines = []
    for index, p in enumerate(district.spec.points):
        tags = {"district": district.id, "point": p.id, "canal": p.canal, "role": p.role.value, "interval": "1d"}
        daily = 400.0 + (index % 97) * 3.25
        for day in range(DAYS):
            lines.append(line(M.volume, tags, {"volume_m3": daily, "coverage": 1.0, "estimated_share": 0.0}, t0_ms + day * 86_400_000))
    return lines


def _timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def run() -> list[dict]:
    from billing.bills import build_run
    from billing.exports import write_outputs
    from billing.ledger import open_ledger
    from billing.volumes import RollupsSource, charging_points
    from billing.window import season_window

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-billing-") as tmp:
        root = Path(tmp)
        path = root / "big.yaml"
        path.write_text(district_yaml(), encoding="utf-8")
        district, load_s = _timed(lambda: load_district(path))
        rows.append({"name": f"load district file ({UNITS:,} units, {POINTS:,} points)", "value": load_s, "unit": "s"})
        server = Influxd(root / "influxd").start()
        try:
            influx = InfluxV1(server.url, "bench", timeout=300)
            setup_database(influx)  # as production: `canalflow ingest setup`
            t0, t1 = season_window(district, district.seasons[SEASON])
            lines = rollup_lines(district, t0)
            started = time.perf_counter()
            for start in range(0, len(lines), 5000):
                influx.write_lines(lines[start:start + 5000], rp=policy_of(M.volume))
            write_s = time.perf_counter() - started
            rows.append({"name": f"setup: write {len(lines):,} daily rollups", "value": len(lines) / write_s, "unit": "points/s", "note": "not part of the run"})
            del lines
            points = charging_points(district)
            raw_q = f'SELECT sum(volume_m3) FROM {source_of(M.volume)} WHERE interval = \'1d\' AND time >= {t0}ms AND time < {t1}ms GROUP BY point'
            _, raw_s = _timed(lambda: influx.query(raw_q))
            measured, fetch_s = _timed(lambda: RollupsSource(district, influx).measure(points, t0, t1))
            season = district.seasons[SEASON]
            point_volumes = measured.volumes
            run_, build_s = _timed(lambda: build_run(district, point_volumes, t0, t1, season=season, as_of_ms=t1))
            _, files_s = _timed(lambda: write_outputs(run_, root / "out"))
            ledger = open_ledger(f"sqlite:///{root}/ledger.db")
            _, ledger_s = _timed(lambda: ledger.record_run(run_))
            total = fetch_s + build_s + files_s + ledger_s
            assert len(run_.bills) == UNITS and all(b.total == sum((x.amount for x in b.lines), Decimal(0)) for b in run_.bills)
            rows += [
                {"name": "raw ceiling: InfluxDB sum() GROUP BY point over the season", "value": raw_s, "unit": "s"},
                {"name": "run: fetch point volumes (server-side sums)", "value": fetch_s, "unit": "s", "ratio": fetch_s / raw_s},
                {"name": "run: allocate + tariff 10,000 bills", "value": build_s, "unit": "s"},
                {"name": "run: write JSON/CSV files", "value": files_s, "unit": "s"},
                {"name": "run: record in SQLite ledger", "value": ledger_s, "unit": "s"},
                {"name": f"season run {UNITS:,} units / {POINTS:,} points (PDFs excluded)", "value": total, "unit": "s", "goal": "< 60 s"},
                {"name": "  the same plus loading the district file (CLI)", "value": total + load_s, "unit": "s", "goal": "< 60 s",
                 "note": "includes canalflow.district.load_district"},
            ]
            rows += _pdf_rows(district, run_, root)
            influx.close()
        finally:
            server.stop()
    return rows


def _pdf_rows(district: Any, run_: Any, root: Path) -> list[dict]:
    """PDF rendering, reported separately: a sample of bills rendered in parallel, extrapolated."""
    try:
        from billing.pdf import render_bills_parallel
    except ImportError:
        return [{"name": "PDF bills", "value": None, "unit": "", "note": "billing.pdf not built"}]
    sample = list(run_.bills[:100])
    _, seconds = _timed(lambda: render_bills_parallel(district, sample, root / "pdf", workers=2))
    per_bill = seconds / len(sample)
    return [
        {"name": f"PDF bills: {len(sample)} rendered on 2 workers", "value": per_bill * 1000, "unit": "ms/bill"},
        {"name": f"PDF bills: all {UNITS:,} (extrapolated)", "value": per_bill * UNITS, "unit": "s", "note": "excluded from the run figure"},
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
