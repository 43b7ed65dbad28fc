"""Helpers of the proof tests and the season benchmark: a season copy of the demo district, the
accounting of what the edge accepted, and what InfluxDB holds.

"Confirmed" is read from the edge's own durable buffer, not from its logs: the buffer's
``readings`` table is ``AUTOINCREMENT``, so ``sqlite_sequence`` holds the number of readings ever
committed (across restarts and kill -9), and a row is deleted only once ingest has confirmed its
message stored (``publish.confirm: ingest``, the agents' default). So

    confirmed = committed - still in the buffer - dropped by the declared full-buffer policy

and every confirmed reading must be a row of InfluxDB (InfluxDB keeps one row per series and
timestamp, so a re-delivered message cannot add a row: the count per gateway is the exact figure).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from canalflow.contract import M
from canalflow.district import District, load_district
from canalflow.influx import InfluxV1
from testbed.pipeline import Pipeline, PipelineError, run_canalflow, wait_for

if TYPE_CHECKING:
    from billing.bills import Bill
    from firmware_sim.truth import Truth

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-district.yaml"
SCENARIOS = ROOT / "examples" / "scenarios"
TZ = dt.timezone(dt.timedelta(hours=8))
MINUTE_MS = 60_000


def season_district(workdir: Path, fast_s: int = 300, slow_s: int = 900) -> District:
    """The demo district with coarser polls, so an accelerated season stays within the bus's capacity."""
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    data["poll_defaults"] = {"fast_s": fast_s, "slow_s": slow_s}
    for point in data["points"]:
        point.pop("poll", None)
    path = workdir / "season-district.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load_district(path)


@dataclass(frozen=True)
class BufferAccount:
    committed: int  # readings ever committed to the buffer
    waiting: int  # still in the buffer (not confirmed)
    dropped: int  # removed by the declared full-buffer / max-age policy

    @property
    def confirmed(self) -> int:
        return self.committed - self.waiting - self.dropped


def buffer_account(path: Path) -> BufferAccount:
    """Read an edge buffer's counts (the agent must be stopped or killed; WAL is read consistently)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
        waiting = db.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        dropped = db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
    finally:
        db.close()
    return BufferAccount(int(seq[0]) if seq else 0, int(waiting), int(dropped[0]) if dropped else 0)


def rows_per_tag(influx: InfluxV1, tag: str) -> dict[str, int]:
    rows = influx.query(f'SELECT count("qcode") FROM "{M.readings}" GROUP BY "{tag}"')
    return {row["tags"][tag]: int(row["values"][0][1]) for row in rows}


def distinct_rows_per_point(influx: InfluxV1) -> dict[str, tuple[int, int]]:
    """(rows, distinct timestamps) per point: equal when nothing is stored twice for one (point, ts)."""
    result: dict[str, tuple[int, int]] = {}
    for row in influx.query(f'SELECT "qcode" FROM "{M.readings}" GROUP BY "point"'):
        stamps = [v[0] for v in row["values"]]
        result[row["tags"]["point"]] = (len(stamps), len(set(stamps)))
    return result


def edge_buffer(pipeline: Pipeline, gateway: str) -> Path:
    return pipeline.workdir / f"edge-{gateway}.sqlite"


def loss_report(pipeline: Pipeline) -> dict[str, dict[str, int]]:
    """Per gateway: confirmed by ingest (left the buffer) vs rows in InfluxDB (after the edges stopped)."""
    stored = rows_per_tag(pipeline.influx, "gateway")
    report = {}
    for gateway in pipeline.district.gateways:
        account = buffer_account(edge_buffer(pipeline, gateway))
        report[gateway] = {"committed": account.committed, "waiting": account.waiting, "dropped": account.dropped,
                           "confirmed": account.confirmed, "stored": stored.get(gateway, 0)}
    return report


def log_count(path: Path, text: str) -> int:
    return path.read_text(encoding="utf-8", errors="replace").count(text) if path.exists() else 0


def settle(pipeline: Pipeline, quiet_s: float = 3.0, timeout: float = 60.0) -> None:
    """Stop the edges (they flush what they can), then wait for ingest to write everything.

    On a loaded machine ingest can pause for seconds, so a quiet spell alone may come before the
    last writes: wait first until InfluxDB holds as many rows as ingest confirmed (a real
    loss then shows as a timeout and a short count), then for the count to settle.
    """
    pipeline.stop_edges()
    confirmed = sum(buffer_account(edge_buffer(pipeline, g)).confirmed for g in pipeline.district.gateways)
    with contextlib.suppress(PipelineError):
        wait_for(lambda: pipeline.count_readings() >= confirmed, timeout, f"{confirmed} confirmed readings in InfluxDB")
    pipeline.drain(quiet_s=quiet_s, timeout=timeout)


def dump_logs(pipeline: Pipeline, lines: int = 25) -> None:
    for proc in pipeline.procs.values():
        print(f"--- {proc.name}\n{proc.tail(lines)}")
    for log in sorted(pipeline.workdir.glob("*.log")):
        if log.stem not in pipeline.procs:
            print(f"--- {log.name} (stopped)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))


# ---------------------------------------------------------------------------------------------
# A season run: shared by test_season.py and benchmarks/bench_season.py
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeasonPlan:
    scenario: str  # file name under examples/scenarios
    start: dt.datetime  # simulated start of the fleet (the edges catch up within a few simulated hours)
    sim_hours: float  # simulated time to run once every meter reports
    speed: float  # simulated seconds per wall second
    fast_s: int = 300
    slow_s: int = 900
    seed: int = 11

    @property
    def scenario_path(self) -> Path:
        return SCENARIOS / self.scenario


REDUCED = SeasonPlan("season-s1-reduced.yaml", dt.datetime(2026, 3, 11, 3, 0, tzinfo=TZ), sim_hours=48, speed=2880,
                     fast_s=600, slow_s=1800)
FULL = SeasonPlan("season-s1-full.yaml", dt.datetime(2026, 3, 10, 0, 0, tzinfo=TZ), sim_hours=10.5 * 24, speed=4320,
                  fast_s=900, slow_s=1800)


@dataclass
class SeasonResult:
    pipeline: Pipeline
    plan: SeasonPlan
    began_ms: int  # simulated time when every meter was reporting
    ended_ms: int
    wall_s: float  # wall time of the simulated span (not start-up)
    readings: int  # rows in InfluxDB after the drain

    @property
    def window(self) -> tuple[int, int]:
        """Whole hours well inside the polled span, so both window edges have readings around them."""
        hour = 60 * MINUTE_MS
        return self.began_ms - self.began_ms % hour + hour, self.ended_ms - self.ended_ms % hour - hour


def run_season(plan: SeasonPlan, pipeline: Pipeline, progress: Callable[[float], None] | None = None) -> SeasonResult:
    """Run the pipeline through the plan's scenario; leave it drained with the edges stopped."""
    try:
        clock = pipeline.start_all(plan.start, plan.speed, seed=plan.seed, scenario=plan.scenario_path)
        began, wall0 = clock.now_ms(), time.monotonic()
        pipeline.run_for_sim(plan.sim_hours * 3600, progress=progress)
        ended, wall = clock.now_ms(), time.monotonic() - wall0
        settle(pipeline)
    except Exception:
        dump_logs(pipeline)
        raise
    finally:
        pipeline.stop()
    return SeasonResult(pipeline, plan, began, ended, wall, pipeline.count_readings())


# ---------------------------------------------------------------------------------------------
# Judging a season: bills against the simulator's truth, loss anomalies
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BillVerdict:
    unit: str
    true_m3: float
    billed_m3: float
    tolerance_m3: float  # the charging meters' stated accuracy (+ the 1 m3 rounding quantum)
    flag: str  # why the bill is not a plain metered one ('' when it is)

    @property
    def error_pct(self) -> float:
        return 100 * (self.billed_m3 - self.true_m3) / self.true_m3 if self.true_m3 else 0.0

    @property
    def within_accuracy(self) -> bool:
        return abs(self.billed_m3 - self.true_m3) <= self.tolerance_m3


def bill_verdicts(result: SeasonResult) -> dict[str, BillVerdict]:
    from billing.bills import tree_bills
    from billing.run import run_billing
    from firmware_sim.scenario import load_scenario
    from firmware_sim.truth import Truth

    district = result.pipeline.district
    t0, t1 = result.window
    run = run_billing(district, result.pipeline.influx, t0, t1)
    truth = Truth(district, load_scenario(result.plan.scenario_path, district), seed=result.plan.seed)
    verdicts = {}
    for unit in district.root_units:  # with the entities below it, billed what its intake measured
        bills = tree_bills(district, run, unit.id)
        true_m3 = sum(true_unit_share(district, truth, unit.id, p, t0, t1) for p in unit.charging_points)
        accuracy = max(district.profile_of(p).accuracy_pct for p in unit.charging_points) / 100
        flag = "; ".join(f for f in (bill_flag(b) for b in bills) if f)
        verdicts[unit.id] = BillVerdict(unit.id, true_m3, float(sum(b.volume_m3 for b in bills)), accuracy * true_m3 + 1.0, flag)
    return verdicts


def bill_flag(bill: Bill) -> str:
    """Why a bill is not a plain metered bill: blocked, or estimated/flagged sources; '' if plain."""
    if bill.blocked:
        return f"blocked: {bill.blocked_reason}"
    reasons = [f"{s['point']}: {s['method']}, {s['estimated_share']:.0%} estimated {' '.join(s['flags'])}".strip()
               for s in bill.sources if s["estimated_share"] > 0 or s["flags"]]
    return "; ".join(reasons)


def true_unit_share(district: District, truth: Truth, unit_id: str, point_id: str, t0: int, t1: int) -> float:
    """A unit's share of a charging point's true volume, split by area as the district says."""
    sharing = district.units_sharing(point_id)
    area = sum(u.area_mu for u in sharing)
    return truth.volume_m3(point_id, t0, t1) * float(district.units[unit_id].area_mu / area)


def loss_anomalies(result: SeasonResult) -> tuple[set[tuple[str, str]], list[dict]]:
    """Reaches `canalflow billing efficiency` reports as loss anomalies over the window (after the rollup)."""
    pipeline = result.pipeline
    t0, t1 = result.window
    common = ["--district", str(pipeline.district.path), "--influx", pipeline.influxd.url, "--db", pipeline.database,
              "--from", iso_utc(t0), "--to", iso_utc(t1)]
    run_canalflow("ingest", "rollup", *common)
    reaches = json.loads(run_canalflow("billing", "efficiency", *common, "--json"))["reaches"]
    return {(r["canal"], r["reach"]) for r in reaches if r["anomaly"]}, reaches


def withdrawal_reaches(district: District, plan: SeasonPlan) -> set[tuple[str, str]]:
    from firmware_sim.scenario import load_scenario

    found = set()
    for event in load_scenario(plan.scenario_path, district).spec.events:
        if event.type == "withdrawal":
            found |= {(event.canal, r.id) for r in district.canals[event.canal].reach_list if r.from_km <= event.km < r.to_km}
    return found


def iso_utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()
