"""``canalflow ingest run|setup|deadletter|rollup``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from canalflow.cliopts import (
    WINDOW_RULE,
    OptionError,
    add_influx_arguments,
    add_window_arguments,
    influx_from_args,
    window_from_args,
)
from canalflow.district import load_district
from canalflow.errors import CanalflowError, reported_as_errors
from canalflow.influx import InfluxError
from canalflow.mqtt import add_mqtt_arguments, target_from_args

DEFAULT_DEADLETTER = Path("ingest-deadletter.sqlite")

RUN_EXAMPLE = """example:
  canalflow ingest run --district examples/demo-district.yaml --mqtt mqtt://127.0.0.1:1883 \\
      --influx http://127.0.0.1:8086 --db canalflow --workers 2

Workers join the MQTT shared subscription $share/GROUP/canalflow/v1/DISTRICT/+/+/readings and
acknowledge each message only after its readings are written. Stop with Ctrl-C or SIGTERM.
Progress is logged to stderr every --stats-interval seconds."""

SETUP_EXAMPLE = """examples:
  canalflow ingest setup --influx http://127.0.0.1:8086 --db canalflow --raw-retention 730d
  canalflow ingest setup --influx http://influxdb:8086 --db canalflow --org canalflow --token $INFLUX_TOKEN   # 2.x

Creates the database, a default retention policy "raw" for readings and "rollups" (longer) for
interval volumes and balances. Safe to run again: existing policies are altered."""

DEADLETTER_EXAMPLE = """examples:
  canalflow ingest deadletter list --store ingest-deadletter.sqlite
  canalflow ingest deadletter show 42 --store ingest-deadletter.sqlite
  canalflow ingest deadletter replay --reason unknown_point --district examples/demo-district.yaml \\
      --influx http://127.0.0.1:8086 --db canalflow --store ingest-deadletter.sqlite"""

ROLLUP_EXAMPLE = """examples:
  canalflow ingest rollup --district examples/demo-district.yaml --influx http://127.0.0.1:8086 --db canalflow \\
      --from 2026-03-01 --to 2026-03-01
  canalflow ingest rollup --dirty --store ingest-deadletter.sqlite --district examples/demo-district.yaml \\
      --influx http://127.0.0.1:8086 --db canalflow

Recomputes hourly and daily volumes per metering point and daily balances per reach for every
day (district time zone) overlapping [--from, --to), or, with --dirty, exactly the points and days
that ingest wrote since the last rollup. Rows are overwritten, so running it again is harmless.

""" + WINDOW_RULE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("ingest", help="MQTT -> InfluxDB ingest workers, dead letters, rollups")
    actions = parser.add_subparsers(dest="ingest_command", metavar="ACTION", required=True)
    _add_run(actions)
    _add_setup(actions)
    _add_deadletter(actions)
    _add_rollup(actions)


def _sub(actions: Any, name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
    return actions.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_run(actions: Any) -> None:
    run = _sub(actions, "run", "run ingest workers until SIGTERM/SIGINT", RUN_EXAMPLE)
    run.add_argument("--district", required=True, type=Path, help="district YAML file")
    add_mqtt_arguments(run)
    add_influx_arguments(run)
    run.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    run.add_argument("--group", default="ingest", help="shared-subscription group (default ingest)")
    run.add_argument("--instance", help="name of this machine in client ids (default: hostname)")
    run.add_argument("--deadletter", type=Path, default=DEFAULT_DEADLETTER, help=f"SQLite dead-letter store (default {DEFAULT_DEADLETTER})")
    run.add_argument("--batch-lines", type=int, default=5000, help="lines per InfluxDB write at most (default 5000)")
    run.add_argument("--inflight", type=int, default=1000,
                     help="unacknowledged messages the broker may send each worker (MQTT v5 receive maximum; bounds memory)")
    run.add_argument("--writes-in-flight", type=int, default=2, metavar="N",
                     help="InfluxDB writes each worker keeps going at once (default 2); acks stay in order")
    run.add_argument("--max-delay", type=float, default=0.2, help="seconds a message may wait for its batch (default 0.2)")
    run.add_argument("--stats-interval", type=float, default=10.0, help="seconds between progress lines and ingest_stats rows")
    run.add_argument("--metrics-port", type=int, default=0, help="Prometheus /metrics on this port (+ worker index); 0 = off")
    run.add_argument("--rollup-every", type=float, default=0.0, metavar="SECONDS",
                     help="recompute the rollup windows touched by new or late data every SECONDS (0 = off; "
                          "else run `ingest rollup --dirty` from cron)")
    run.add_argument("--no-status", action="store_true", help="do not subscribe to gateway status topics")
    run.add_argument("--backoff-max", type=float, default=5.0, help="longest wait between write retries, seconds")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=cmd_run)


def _add_setup(actions: Any) -> None:
    setup = _sub(actions, "setup", "create the database and retention policies", SETUP_EXAMPLE)
    add_influx_arguments(setup)
    setup.add_argument("--raw-retention", default="730d", help="how long raw readings are kept (default 730d)")
    setup.add_argument("--rollup-retention", default="INF", help="how long rollups are kept (default INF)")
    setup.add_argument("--org", help="InfluxDB 2.x: create buckets DB-raw and DB-rollups in this org and map them "
                                     "(DBRP) to database DB, policies raw and rollups; needs --token")
    setup.set_defaults(func=cmd_setup)


def _add_deadletter(actions: Any) -> None:
    dl = _sub(actions, "deadletter", "list, show and replay dead letters", DEADLETTER_EXAMPLE)
    dl_actions = dl.add_subparsers(dest="deadletter_command", metavar="ACTION", required=True)
    listing = _sub(dl_actions, "list", "list dead letters (counts by reason, then the letters)", DEADLETTER_EXAMPLE)
    listing.add_argument("--store", type=Path, default=DEFAULT_DEADLETTER)
    listing.add_argument("--reason", help="only this reason")
    listing.add_argument("--pending", action="store_true", help="only letters not replayed yet")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_dl_list)
    show = _sub(dl_actions, "show", "show one dead letter with its raw payload", DEADLETTER_EXAMPLE)
    show.add_argument("id", type=int)
    show.add_argument("--store", type=Path, default=DEFAULT_DEADLETTER)
    show.set_defaults(func=cmd_dl_show)
    rep = _sub(dl_actions, "replay", "validate dead letters again and write the ones that pass", DEADLETTER_EXAMPLE)
    rep.add_argument("ids", type=int, nargs="*", help="letter ids (default: all pending, or --reason)")
    rep.add_argument("--store", type=Path, default=DEFAULT_DEADLETTER)
    rep.add_argument("--reason", help="replay pending letters of this reason")
    rep.add_argument("--district", required=True, type=Path)
    rep.add_argument("--dry-run", action="store_true", help="validate only, write nothing")
    add_influx_arguments(rep)
    rep.set_defaults(func=cmd_dl_replay)


def _add_rollup(actions: Any) -> None:
    roll = _sub(actions, "rollup", "recompute interval volumes and reach balances", ROLLUP_EXAMPLE)
    roll.add_argument("--district", required=True, type=Path)
    add_influx_arguments(roll)
    add_window_arguments(roll)
    roll.add_argument("--dirty", action="store_true",
                      help="instead of --from/--to: recompute the days that writes touched since the last rollup (late data)")
    roll.add_argument("--store", type=Path, default=DEFAULT_DEADLETTER, help="with --dirty: the --deadletter file of `ingest run`")
    roll.add_argument("--intervals", default="1h,1d", help="comma-separated: 1h,1d (default both)")
    roll.set_defaults(func=cmd_rollup)


# ---------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from ingest.run import run_supervised, setup_logging
    from ingest.worker import WorkerConfig

    level = logging.DEBUG if args.verbose else logging.INFO
    setup_logging(level)
    load_district(args.district)
    with reported_as_errors(OSError):
        target = target_from_args(args)
    if args.workers < 1:
        raise OptionError("--workers must be at least 1")
    if not 1 <= args.inflight <= 65535:
        raise OptionError("--inflight must be between 1 and 65535 (MQTT receive maximum)")
    if args.writes_in_flight < 1:
        raise OptionError("--writes-in-flight must be at least 1")
    if not args.group or any(c in args.group for c in "/+#"):
        raise OptionError(f"--group {args.group!r}: a shared-subscription group name cannot be empty or hold '/', '+' or '#'")
    config = WorkerConfig(
        district=args.district.resolve(), mqtt=target, influx_url=args.influx, db=args.db,
        deadletter=args.deadletter.resolve(), group=args.group, token=args.token,
        subscribe_status=not args.no_status, batch_lines=args.batch_lines, max_delay_s=args.max_delay,
        stats_interval_s=args.stats_interval, metrics_port=args.metrics_port, backoff_max_s=args.backoff_max,
        inflight=args.inflight, writes_in_flight=args.writes_in_flight,
    )
    if args.instance:
        config.instance = args.instance
    with influx_from_args(args) as client:
        if not client.ping():
            logging.getLogger("canalflow.ingest").warning("InfluxDB at %s does not answer /ping yet; workers will retry", args.influx)
        else:
            _require_setup(client, args)
    return run_supervised(config, args.workers, log_level=level, rollup_every_s=args.rollup_every)


def _require_setup(client: Any, args: argparse.Namespace) -> None:
    """Refuse to start on a database ``ingest setup`` did not make (writes name its policies)."""
    from canalflow.contract import RAW_RP, ROLLUP_RP

    databases = {row["name"] for row in client.query_points("SHOW DATABASES")}
    policies = ({row["name"] for row in client.query_points("SHOW RETENTION POLICIES")}
                if args.db in databases else set())
    missing = [p for p in (RAW_RP, ROLLUP_RP) if p not in policies]
    if missing:
        what = (f"database {args.db!r} does not exist" if args.db not in databases
                else f"database {args.db!r} has no retention policy {', '.join(map(repr, missing))}")
        raise CanalflowError(f"{what} at {args.influx}",
                             hint=f"run `canalflow ingest setup --influx {args.influx} --db {args.db}` first")


def cmd_setup(args: argparse.Namespace) -> int:
    from ingest.admin import setup_database, setup_v2

    if args.org:
        if not args.token:
            raise OptionError("--org (InfluxDB 2.x) needs --token")
        try:
            for done in setup_v2(args.influx, args.token, args.org, args.db, raw_retention=args.raw_retention,
                                 rollup_retention=args.rollup_retention):
                print(done)
        except Exception as exc:  # influxdb-client raises its own ApiException and urllib3 errors
            raise CanalflowError(f"InfluxDB 2.x setup at {args.influx} failed: {exc}") from exc
        return 0
    try:
        with influx_from_args(args) as client, reported_as_errors(ValueError):
            for done in setup_database(client, raw_retention=args.raw_retention, rollup_retention=args.rollup_retention):
                print(done)
    except InfluxError as exc:
        exc.hint = f"is InfluxDB running at {args.influx}? for 2.x pass --token and create the bucket + DBRP mapping"
        raise
    return 0


def _open_store(path: Path) -> Any:
    from ingest.deadletter import DeadLetterStore

    if not path.exists():
        raise OptionError(f"dead-letter store {path} does not exist (pass --store, the --deadletter of `ingest run`)")
    return DeadLetterStore(path)


def cmd_dl_list(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    counts = store.counts()
    letters = store.list(reason=args.reason, pending_only=args.pending, limit=args.limit)
    if args.json:
        print(json.dumps({"counts": counts, "letters": [_letter_json(x, payload=False) for x in letters]}, ensure_ascii=False, indent=2))
        return 0
    from ingest.validate import REASONS

    print(f"{store.total()} dead letter(s) in {args.store}")
    for reason, count in counts.items():
        print(f"  {reason:20} {count:8}  {REASONS.get(reason, '')}")
    for letter in letters:
        state = "replayed" if letter.replayed_ms else "pending"
        print(f"#{letter.id} {letter.reason} [{state}] {letter.topic}: {letter.detail[:160]}")
    return 0


def _letter_json(letter: Any, payload: bool = True) -> dict[str, Any]:
    data = {k: v for k, v in letter.__dict__.items() if k != "payload"}
    if payload:
        try:
            data["payload"] = letter.payload.decode("utf-8")
        except UnicodeDecodeError:
            data["payload_hex"] = letter.payload.hex()
    data["payload_bytes"] = len(letter.payload)
    return data


def cmd_dl_show(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    letter = store.get(args.id)
    if letter is None:
        raise OptionError(f"no dead letter #{args.id} in {args.store} (see `canalflow ingest deadletter list`)")
    print(json.dumps(_letter_json(letter), ensure_ascii=False, indent=2))
    return 0


def cmd_dl_replay(args: argparse.Namespace) -> int:
    from ingest.admin import replay
    from ingest.validate import LINES_RP, MessageValidator
    from ingest.writer import ResilientWriter

    store = _open_store(args.store)
    district = load_district(args.district)
    letters = list(store.iter(ids=args.ids or None, reason=args.reason, pending_only=not args.ids))
    if not letters:
        print("nothing to replay")
        return 0
    with influx_from_args(args) as client:
        if not args.dry_run and not client.ping():
            raise CanalflowError(f"InfluxDB at {args.influx} does not answer /ping")
        writer = ResilientWriter(client, backoff_max_s=2.0, rp=LINES_RP)
        result, notes = replay(letters, store, MessageValidator(district), writer, dry_run=args.dry_run)
    for note in notes:
        print(note)
    print(f"replayed {result.replayed}, still failing {result.failed}")
    return 1 if result.failed else 0


def cmd_rollup(args: argparse.Namespace) -> int:
    from ingest.rollup import DirtyWindows, run_dirty, run_rollup

    if args.dirty == bool(args.start or args.end):
        raise OptionError("give either --from and --to, or --dirty")
    district = load_district(args.district)
    intervals = [s.strip() for s in args.intervals.split(",") if s.strip()]
    window = window_from_args(args, district.tz)
    if args.dirty and not args.store.exists():
        raise OptionError(f"state file {args.store} does not exist (pass --store, the --deadletter of `ingest run`)")
    with influx_from_args(args) as client, reported_as_errors(ValueError):  # e.g. an unknown --intervals
        if window is None:
            dirty = DirtyWindows(args.store)
            try:
                summary = run_dirty(district, client, dirty, progress=sys.stderr)
            finally:
                dirty.close()
        else:
            summary = run_rollup(district, client, window.start_ms, window.end_ms, intervals=intervals, progress=sys.stderr)
    print(summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ingest.cli ingest ...``: the same as ``canalflow ingest ...``."""
    from canalflow.cli import main as canalflow_main

    return canalflow_main(argv)


if __name__ == "__main__":
    sys.exit(main())
