"""``canalflow fleet run|truth|check``: serve the simulated meter fleet, export ground truth, check scenarios."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import re
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canalflow.cliopts import WINDOW_RULE, OptionError, add_window_arguments, parse_instant, parse_window
from canalflow.clock import SimClock
from canalflow.errors import CanalflowError

if TYPE_CHECKING:  # the district and scenario models load in a third of a second: `fleet ready` needs neither
    from canalflow.district import District
    from firmware_sim.scenario import Scenario

RUN_EXAMPLE = """examples:
  canalflow fleet run --district examples/demo-district.yaml --speed 60 --start 2026-03-10T08:00:00+08:00
  canalflow fleet run --district examples/demo-district.yaml --scenario examples/scenarios/breach.yaml \\
      --manifest out/fleet.json --seed 7
  canalflow fleet run --district examples/demo-district.yaml --scenario examples/scenarios/faults.yaml --check

Prints the gateways, ports and unit ids it serves, writes the manifest (JSON: ports, unit ids, clock)
and runs until SIGTERM or Ctrl-C. Other processes follow the clock with SimClock(**manifest["clock"])."""

TRUTH_EXAMPLE = """examples:
  canalflow fleet truth --district examples/demo-district.yaml --from 2026-03-10 --to 2026-03-20 --out out/truth.csv
  canalflow fleet truth --district examples/demo-district.yaml --scenario examples/scenarios/breach.yaml \\
      --from 2026-03-10T00:00+08:00 --to 2026-03-12T00:00+08:00 --step 15m --out out/truth.parquet

One row per metering point and interval (true volume, m3) and per reach and interval (true loss, m3,
of which unmetered_m3 taken by scenario events).

""" + WINDOW_RULE

CHECK_EXAMPLE = """examples:
  canalflow fleet check --district examples/demo-district.yaml examples/scenarios/*.yaml

Each problem is printed as FILE:LINE: error: field: message (hint). Exit 1 on any problem."""

READY_EXAMPLE = """examples:
  canalflow fleet ready --manifest /run/canalflow/fleet.json            # the compose healthcheck
  canalflow fleet ready --manifest out/fleet.json --wait 60              # block until the fleet serves

Exit 0 when the manifest is whole, written by a fleet that is still running, and every gateway in it
answers (TCP connect, or the pty exists); else exit 1 saying why (no file yet, half-written, stale,
a gateway not answering)."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


def parse_duration_ms(text: str) -> int:
    """``15m`` / ``1h`` / ``1d`` / ``30s`` / ``250ms`` (bare numbers are seconds) -> milliseconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"cannot read duration {text!r}; write it like 15m, 1h, 1d or 30s")
    return int(float(match.group(1)) * _UNIT_MS[match.group(2)])


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("fleet", help="run the simulated meter fleet", epilog=RUN_EXAMPLE,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)

    run = commands.add_parser("run", help="serve every gateway of a district over Modbus", epilog=RUN_EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(run)
    run.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second (default 1)")
    run.add_argument("--start", help="simulated start time, ISO 8601 (default: now)")
    run.add_argument("--manifest", type=Path, default=Path("fleet-manifest.json"),
                     help="where to write the manifest JSON (default fleet-manifest.json)")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--use-district-ports", action="store_true", help="listen on the ports in the district file "
                     "instead of free ports")
    run.add_argument("--duration", type=parse_duration_ms, help="stop after this much wall time (e.g. 10m)")
    run.add_argument("--progress", type=parse_duration_ms, default=10_000, help="progress log interval (default 10s)")
    run.add_argument("--check", action="store_true", help="validate the district and scenario, then exit")
    run.add_argument("--absent-units", choices=("0x0B", "silent"), default="0x0B",
                     help="what a TCP gateway answers for a unit id with no meter: exception 0x0B (default, "
                          "'gateway target device failed to respond') or nothing (the master times out)")
    run.set_defaults(func=run_fleet)

    truth = commands.add_parser("truth", help="export ground truth (volumes per point, losses per reach)",
                                epilog=TRUTH_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(truth)
    add_window_arguments(truth, required=True)
    truth.add_argument("--step", type=parse_duration_ms, default=3_600_000, help="interval length (default 1h)")
    truth.add_argument("--out", type=Path, required=True, help="output file, .csv or .parquet")
    truth.set_defaults(func=run_truth)

    ready = commands.add_parser("ready", help="exit 0 when a running fleet's manifest is fresh and its gateways answer",
                                epilog=READY_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    ready.add_argument("--manifest", type=Path, required=True, help="the manifest of `fleet run --manifest`")
    ready.add_argument("--wait", type=float, default=0.0, metavar="S",
                       help="ask again until ready or S seconds have passed (default 0: ask once)")
    ready.set_defaults(func=run_ready)

    check = commands.add_parser("check", help="validate scenario files against a district", epilog=CHECK_EXAMPLE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("--district", type=Path, required=True, help="district YAML file")
    check.add_argument("scenarios", type=Path, nargs="+", help="scenario YAML file(s)")
    check.set_defaults(func=run_check)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--district", type=Path, required=True, help="district YAML file")
    parser.add_argument("--scenario", type=Path, help="scenario YAML file (events, faults, hydraulics)")
    parser.add_argument("--seed", type=int, default=0, help="seed of meter errors (default 0)")


def _load(args: argparse.Namespace) -> tuple[District, Scenario]:
    from canalflow.district import load_district
    from firmware_sim.scenario import Scenario, load_scenario

    district = load_district(args.district)
    scenario = load_scenario(args.scenario, district) if args.scenario else Scenario.default()
    return district, scenario


def run_check(args: argparse.Namespace) -> int:
    from canalflow.district import load_district
    from firmware_sim.scenario import check_scenario

    district = load_district(args.district)
    failed = 0
    for path in args.scenarios:
        scenario, problems = check_scenario(path, district)
        for problem in problems:
            print(problem, file=sys.stderr)
        if scenario is None or problems:
            failed += 1
            print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        else:
            spec = scenario.spec
            print(f"{path}: OK — {spec.name or 'unnamed'}: {len(spec.events)} event(s), {len(spec.faults)} fault(s)")
    return 1 if failed else 0


def run_truth(args: argparse.Namespace) -> int:
    from firmware_sim.export import export_truth
    from firmware_sim.truth import Truth

    district, scenario = _load(args)
    window = parse_window(args.start, args.end, district.tz)
    try:
        rows = export_truth(Truth(district, scenario, args.seed), window.start_ms, window.end_ms, args.step, args.out)
    except ValueError as exc:  # e.g. an output suffix other than .csv/.parquet
        raise CanalflowError(str(exc)) from exc
    print(f"{args.out}: {rows} rows of ground truth")
    return 0


def run_ready(args: argparse.Namespace) -> int:
    from canalflow.manifest import wait_ready

    print(wait_ready(args.manifest, args.wait).reason)
    return 0


def run_fleet(args: argparse.Namespace) -> int:
    from canalflow.manifest import clear_stale

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s fleet %(levelname)s %(message)s")
    if not args.check and clear_stale(args.manifest):  # first: nobody may read the old endpoints and clock meanwhile
        logging.getLogger("canalflow.fleet").info("removed the stale manifest %s", args.manifest)
    district, scenario = _load(args)
    if args.check:
        print(f"{args.district}: OK; scenario {args.scenario or '(none)'}: OK")
        return 0
    if args.speed <= 0:
        raise OptionError("--speed must be positive (e.g. 60 for a simulated minute per second)")
    start_ms = parse_instant(args.start, district.tz, what="--start") if args.start else round(time.time() * 1000)
    clock = SimClock.starting_at(start_ms, args.speed)
    try:
        return asyncio.run(_serve(district, scenario, clock, args))
    except OSError as exc:  # e.g. a district port already in use
        raise CanalflowError(str(exc)) from exc


async def _serve(district: District, scenario: Scenario, clock: SimClock, args: argparse.Namespace) -> int:
    from firmware_sim.fleet import Fleet

    log = logging.getLogger("canalflow.fleet")
    fleet = Fleet(district, scenario=scenario, seed=args.seed, clock=clock, host=args.host,
                  use_district_ports=args.use_district_ports, absent_units=args.absent_units)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await fleet.start()
    try:
        fleet.write_manifest(args.manifest)
        print(endpoint_table(fleet), flush=True)
        log.info("manifest %s; %d meters on %d gateways; sim start %s at x%g", args.manifest, len(fleet.meters),
                 len(fleet.endpoints), _iso(clock.sim_start_ms), clock.speed)
        await _progress(fleet, stop, args, log)
    finally:
        await fleet.stop()
        log.info("stopped after %d reads", fleet.stats.reads)
    return 0


async def _progress(fleet: Any, stop: asyncio.Event, args: argparse.Namespace, log: logging.Logger) -> None:
    deadline = None if args.duration is None else time.monotonic() + args.duration / 1000
    last_reads, last_time = 0, time.monotonic()
    while not stop.is_set():
        timeout = args.progress / 1000
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=timeout)
        now = time.monotonic()
        stats = fleet.stats
        rate = (stats.reads - last_reads) / max(now - last_time, 1e-9)
        log.info("sim %s  reads %d (%.0f/s)  exceptions %d  unanswered %d", _iso(fleet.clock.now_ms()),
                 stats.reads, rate, stats.exceptions, stats.silent)
        last_reads, last_time = stats.reads, now
        if deadline is not None and now >= deadline:
            return


def _iso(t_ms: int) -> str:
    return dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def endpoint_table(fleet: Any) -> str:
    lines = [f"{'gateway':<12} {'transport':<13} {'address':<22} units"]
    for gateway_id, ep in fleet.endpoints.items():
        address = ep.path if ep.transport == "rtu" else f"{ep.host}:{ep.port}"
        units = ", ".join(f"{u}={p}" for u, p in sorted(ep.units.items()))
        lines.append(f"{gateway_id:<12} {ep.transport:<13} {address:<22} {units}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m firmware_sim ...``: the fleet commands on their own (same as ``canalflow fleet``)."""
    from canalflow.cli import main as canalflow_main

    return canalflow_main(["fleet", *(sys.argv[1:] if argv is None else argv)])
