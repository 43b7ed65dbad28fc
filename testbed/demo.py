"""``canalflow demo``: the whole pipeline on the simulated demo district, leaving bills, a report
and dashboards in ``out/``.

It starts Mosquitto and InfluxDB on free loopback ports in a private directory, runs the fleet,
one edge agent per gateway and ingest as separate processes (as deployed) for a simulated day of
an irrigation round (the typical plots' turn: their soil moisture before and after), then runs rollups, billing, efficiency and the dashboards, compares
the bills with the simulator's ground truth, and stops everything it started.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from canalflow.district import District, load_district
from testbed.pipeline import Pipeline, PipelineError, run_canalflow
from testbed.screens import workbench_screens
from testbed.services import ServiceStack

DEMO_DISTRICT = Path(__file__).resolve().parents[1] / "examples" / "demo-district.yaml"
# Inside spring irrigation round S1 of the demo district (2026-03-10 06:00 +08:00, 10 days).
DEMO_START = dt.datetime(2026, 3, 12, 6, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
# The demo's own run: the whole local day of 2026-03-12, the typical plots' turn in round S1
# (firmware_sim.rootzone.TURN_DAY), with polls on both sides of its midnights.
# The simulated clock runs while the agents start (hours of it at the demo's speed): start early,
# and run to the end (start + hours) whatever the start-up took.
RUN_START = dt.datetime(2026, 3, 11, 18, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
RUN_HOURS = 31.0

EPILOG = """examples:
  canalflow demo --out out                  # to 31 simulated hours after the start at 900x (about two minutes of polling)
  canalflow demo --hours 6 --speed 360      # 6 hours: canal figures and bills, no plot irrigation inside
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline on the simulated demo district", description=__doc__,
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--district", type=Path, default=DEMO_DISTRICT, help="district file (default: the demo district)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="where bills, report and dashboards go (default: out)")
    parser.add_argument("--hours", type=float, default=RUN_HOURS, help=f"simulated hours from --start to the end of the run (default {RUN_HOURS:g})")
    parser.add_argument("--speed", type=float, default=900.0, help="simulated seconds per wall second (default 900)")
    parser.add_argument("--start", type=dt.datetime.fromisoformat, default=RUN_START, help=f"simulated start time, ISO 8601 (default {RUN_START.isoformat()})")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated meters' errors")
    parser.set_defaults(func=run_demo)


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def progress_bar(fraction: float, width: int = 30) -> None:
    from canalflow.progress import Progress

    global _bar
    if _bar is None or _bar.stream is not sys.stdout:
        _bar = Progress("[demo] simulating", stream=sys.stdout, width=width)
    _bar(fraction)


_bar = None  # the demo's progress (a bar on a terminal, a line per 10 % in a log)


def run_demo(args: argparse.Namespace) -> int:
    district = load_district(args.district)
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="canalflow-demo-") as tmp, ServiceStack(Path(tmp) / "services") as stack:
        say(f"Mosquitto on {stack.mqtt_url}, InfluxDB on {stack.influx_url} (private, in {tmp})")
        workdir = Path(tmp) / "run"
        workdir.mkdir()
        pipeline = Pipeline(district, workdir, stack.mosquitto, stack.influxd, "canalflow_demo")
        try:
            window = simulate(pipeline, args)
        except PipelineError as exc:
            print(f"[demo] {exc}", file=sys.stderr)
            return 1
        finally:
            pipeline.stop()
            keep_logs(workdir, out / "logs")
        summary = produce_outputs(district, stack.influx_url, pipeline.database, window, out, args.seed)
        summary += workbench_screens(district, stack.influx_url, pipeline.database, out)
    say(f"done in {time.monotonic() - began:.0f} s; outputs in {out}/")
    print(summary)
    return 0


def keep_logs(workdir: Path, logs: Path) -> None:
    logs.mkdir(exist_ok=True)
    for log in workdir.glob("*.log"):
        shutil.copy(log, logs / log.name)


def simulate(pipeline: Pipeline, args: argparse.Namespace) -> tuple[int, int]:
    """Run the pipeline for the requested simulated time; return the [t0, t1) window (epoch ms) to bill."""
    say(f"district {pipeline.district.id!r}: {len(pipeline.district.points)} meters on {len(pipeline.district.gateways)} gateways")
    clock = pipeline.start_all(args.start, args.speed, seed=args.seed)
    t0 = clock.now_ms()
    say(f"fleet, ingest and {len(pipeline.district.gateways)} edge agents running; simulated start {args.start.isoformat()}, {args.speed:g}x")
    started_late_s = (t0 - args.start.timestamp() * 1000) / 1000
    pipeline.run_for_sim(max(args.hours * 3600 - started_late_s, 600.0), progress=progress_bar)
    t1 = clock.now_ms()
    pipeline.stop_edges()
    pipeline.drain()
    say(f"{pipeline.count_readings()} readings stored in InfluxDB")
    # Bill whole minutes well inside the polled span, so every window edge has readings around it.
    margin = 5 * 60 * 1000
    return _floor_minute(t0 + margin), _floor_minute(t1 - margin)


def _floor_minute(ms: int) -> int:
    return ms - ms % 60_000


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def produce_outputs(district: District, influx_url: str, database: str, window: tuple[int, int], out: Path, seed: int) -> str:
    t0, t1 = _iso(window[0]), _iso(window[1])
    common = ["--district", str(district.path), "--influx", influx_url, "--db", database]
    span = ["--from", t0, "--to", t1]
    say("rollups: interval volumes and reach balances")
    run_canalflow("ingest", "rollup", *common, *span)
    say("billing run: bills (PDF, JSON), CSV and XLSX summaries, ledger")
    run_canalflow("billing", "run", *common, *span, "--out", str(out / "bills"), "--pdf", "--write-kpis",
                  "--ledger", f"sqlite:///{(out / 'ledger.db').resolve()}")  # `make demo`: the default ledger
    say("canal balance and efficiency")
    efficiency = run_canalflow("billing", "efficiency", *common, *span, "--json", "--write-kpis")
    (out / "efficiency.json").write_text(efficiency, encoding="utf-8")
    say("dashboards, provisioning and alert rules; panel previews")
    run_canalflow("dashboards", "build", "--district", str(district.path), "--out", str(out / "dashboards"))
    run_canalflow("dashboards", "preview", *common, *span, "--out", str(out / "previews"))
    from testbed.report import demo_report

    text = demo_report(district, out, window, json.loads(efficiency), seed=seed)
    (out / "report.md").write_text(text, encoding="utf-8")
    return text
