"""The full season through the whole pipeline, as deployed: fleet -> edge agents -> Mosquitto -> ingest
-> InfluxDB -> billing, on private services, under the faults of examples/scenarios/season-s1-full.yaml
(spring round S1 of the demo district, 10 days, polls every 15 simulated minutes, at 4320x).

Figures: readings per second through the whole pipeline (rows in InfluxDB / wall seconds of the
season), wall seconds per simulated day, readings lost (confirmed by ingest, not in
InfluxDB), the largest error of a plain (unflagged) bill against the simulator's true volume and
its ratio to the meter accuracy that bill is allowed, the bills flagged, and whether the unmetered
withdrawal came out as a loss anomaly on its reach alone.

    python -m benchmarks season                     # the full round, about 4 minutes
    BENCH_SEASON=reduced python -m benchmarks season # the two-day reduced season of `make test`
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "proof"))

from proof_kit import (
    FULL,
    REDUCED,
    bill_verdicts,
    loss_anomalies,
    loss_report,
    run_season,
    season_district,
    withdrawal_reaches,
)

from testbed.pipeline import Pipeline
from testbed.services import ServiceStack

GOAL_WALL_S_PER_DAY = 30.0


class Progress:
    """A line on stderr at every tenth of the season."""

    def __init__(self) -> None:
        self.shown = -1

    def __call__(self, fraction: float) -> None:
        tenth = int(fraction * 10)
        if tenth > self.shown:
            self.shown = tenth
            print(f"[bench season] {tenth * 10}% of the simulated season", file=sys.stderr, flush=True)


def late_polls(workdir: Path) -> int:
    """Polls the edges started more than an interval late (their last status line): did they keep up?"""
    total = 0
    for log in workdir.glob("edge-*.log"):
        found = re.findall(r"\(late (\d+)\)", log.read_text(encoding="utf-8", errors="replace"))
        total += int(found[-1]) if found else 0
    return total


def run() -> list[dict]:
    plan = REDUCED if os.environ.get("BENCH_SEASON") == "reduced" else FULL
    with tempfile.TemporaryDirectory(prefix="canalflow-bench-season-") as tmp, ServiceStack(Path(tmp) / "services") as stack:
        workdir = Path(tmp) / "run"
        workdir.mkdir()
        district = season_district(workdir, plan.fast_s, plan.slow_s)
        pipeline = Pipeline(district, workdir, stack.mosquitto, stack.influxd, "bench_season")
        result = run_season(plan, pipeline, progress=Progress())
        late = late_polls(workdir)
        report = loss_report(pipeline)
        verdicts = bill_verdicts(result)
        anomalies, _ = loss_anomalies(result)
        expected = withdrawal_reaches(district, plan)
    days = plan.sim_hours / 24
    lost = sum(g["confirmed"] - g["stored"] for g in report.values())
    plain = [v for v in verdicts.values() if not v.flag]
    worst = max(plain, key=lambda v: abs(v.billed_m3 - v.true_m3) / v.tolerance_m3, default=None)
    flagged = sorted(v.unit for v in verdicts.values() if v.flag)
    outside = sorted(v.unit for v in plain if not v.within_accuracy)
    scope = f"{plan.scenario}, {days:g} simulated days at {plan.speed:g}x, polls {plan.fast_s} s"
    return [
        {"name": "season readings/s through the pipeline", "value": result.readings / result.wall_s, "unit": "readings/s",
         "note": f"{result.readings} rows; {scope}"},
        {"name": "season wall time per simulated day", "value": result.wall_s / days, "unit": "s",
         "goal": f"<= {GOAL_WALL_S_PER_DAY:g}", "note": f"set by the speed; the edges kept up: {late} polls late"},
        {"name": "season readings lost (confirmed, not stored)", "value": lost, "unit": "readings", "goal": "0",
         "note": f"{sum(g['confirmed'] for g in report.values())} confirmed"},
        {"name": "season plain bill error vs truth, max", "value": abs(worst.error_pct) if worst else None, "unit": "%",
         "ratio": abs(worst.billed_m3 - worst.true_m3) / worst.tolerance_m3 if worst else None, "goal": "ratio <= 1",
         "note": f"{worst.unit if worst else '-'}; ratio = error / allowed meter accuracy; outside: {outside or 'none'}"},
        {"name": "season bills flagged (estimated/blocked)", "value": len(flagged), "unit": "bills",
         "note": ", ".join(flagged) or "none"},
        {"name": "season withdrawal found on its reach only", "value": int(anomalies == expected), "unit": "bool",
         "goal": "1", "note": f"anomalies {sorted(anomalies)}, expected {sorted(expected)}"},
    ]
