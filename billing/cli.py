"""``canalflow billing ...``: billing runs, their lifecycle, and the billing ledger."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from canalflow.cliopts import (
    WINDOW_RULE,
    OptionError,
    add_influx_arguments,
    add_ledger_argument,
    add_window_arguments,
    influx_from_args,
    parse_instant,
    parse_window,
)
from canalflow.contract import M
from canalflow.district import District, load_district
from canalflow.errors import reported_as_errors

RUN_EXAMPLE = """examples:
  canalflow billing run --district examples/demo-district.yaml --season 2026-spring --out out/bills
  canalflow billing run --district examples/demo-district.yaml --from 2026-03-10 --to 2026-03-19 \\
      --influx http://127.0.0.1:8086 --db canalflow --ledger sqlite:///out/ledger.db

""" + WINDOW_RULE + """
The same inputs give the same run id and byte-identical bills. Exit 1 on error."""

STATUS_EXAMPLE = """examples:
  canalflow billing approve 3f2a9c1d04e5 --user clerk-li
  canalflow billing issue 3f2a9c1d04e5 --user manager-wang --ledger sqlite:///out/ledger.db"""

ADJUST_EXAMPLE = """example:
  canalflow billing adjust 3f2a9c1d04e5-V01 --amount -12.50 --reason "meter V01-IN over-read, see ticket 42" --user clerk-li

The adjustment appears as a line on the unit's next billing run; the issued bill is never edited."""

LEDGER_EXAMPLE = """examples:
  canalflow billing ledger runs
  canalflow billing ledger water-use V01 --ledger sqlite:///out/ledger.db
  canalflow billing ledger postings V01

postings: the unit's journal (issue, payment, adjustment, credit, reversal), one JSON object a
line, then what it owes on issued bills and its adjustments not yet on one. An older ledger is
migrated to the journal the first time any command opens it."""


EFFICIENCY_EXAMPLE = """examples:
  canalflow billing efficiency --district examples/demo-district.yaml --from 2026-03-10 --to 2026-03-19
  canalflow billing efficiency --district examples/demo-district.yaml --season 2026-spring --json --write-kpis

Reach balances, canal/level/system efficiency (graph and level product), field and whole-district
figures against the district's targets. Windows with too little data are reported incomplete.
Exit 1 on error.

""" + WINDOW_RULE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("billing", help="efficiency, billing runs, ledger and the billing API")
    commands = parser.add_subparsers(dest="billing_command", metavar="ACTION", required=True)
    _add_run(commands)
    _add_efficiency(commands)
    _add_explain(commands)
    _add_serve(commands)
    _add_edit(commands)
    for action in ("approve", "issue"):
        p = commands.add_parser(action, help=f"{action} a billing run (draft -> approved -> issued)", epilog=STATUS_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("run_id", help="run id or a unique prefix of it")
        p.add_argument("--user", required=True, help="who does it (recorded in the audit trail)")
        p.add_argument("--note", default="")
        add_ledger_argument(p)
        p.set_defaults(func=cmd_advance, to_status="approved" if action == "approve" else "issued")
    adjust = commands.add_parser("adjust", help="record a correction of an issued bill", epilog=ADJUST_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    adjust.add_argument("bill_id")
    adjust.add_argument("--amount", required=True, help="yuan, negative for a credit")
    adjust.add_argument("--reason", required=True)
    adjust.add_argument("--user", required=True)
    add_ledger_argument(adjust)
    adjust.set_defaults(func=cmd_adjust)
    paid = commands.add_parser("paid", help="record that an issued bill was paid", epilog="example:\n  canalflow billing paid 3f2a9c1d04e5-V01 --user li",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    paid.add_argument("bill_id")
    paid.add_argument("--user", required=True)
    add_ledger_argument(paid)
    paid.set_defaults(func=cmd_paid)
    reverse = commands.add_parser("reverse", help="cancel a payment or a pending adjustment by a reversal posting",
                                  epilog="example:\n  canalflow billing reverse 42 --reason \"paid into the wrong account\" --user li\n\n"
                                         "Posting ids are in `billing ledger postings UNIT`. Then record the right payment or adjustment.",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    reverse.add_argument("posting_id", type=int)
    reverse.add_argument("--reason", required=True)
    reverse.add_argument("--user", required=True)
    add_ledger_argument(reverse)
    reverse.set_defaults(func=cmd_reverse)
    ledger = commands.add_parser("ledger", help="list runs, a unit's water-use ledger (用水台账) or its postings", epilog=LEDGER_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    ledger.add_argument("what", choices=("runs", "water-use", "postings"))
    ledger.add_argument("unit", nargs="?", help="billing unit id (for water-use and postings)")
    add_ledger_argument(ledger)
    ledger.set_defaults(func=cmd_ledger)


def _add_run(commands: Any) -> None:
    run = commands.add_parser("run", help="bill every unit for a season or a window", epilog=RUN_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_args(run)
    when = run.add_mutually_exclusive_group(required=True)
    when.add_argument("--season", help="season id from the district file")
    add_window_arguments(run, from_group=when)
    run.add_argument("--as-of", help="readings as-of time (ISO); default now")
    run.add_argument("--out", type=Path, help="write run.json, bills/*.json, bills.csv, bill_lines.csv, bills.xlsx here")
    add_ledger_argument(run)
    run.add_argument("--user", default="system")
    run.add_argument("--json", action="store_true", help="print the run manifest as JSON")
    run.add_argument("--pdf", action="store_true", help="also render a PDF bill per unit into OUT/pdf (parallel)")
    run.add_argument("--lang", choices=("zh", "en"), help="PDF language (default: the district's locale)")
    run.add_argument("--source", choices=("readings", "rollups"), default="readings", help="raw readings (default) or the daily volume rollups (whole days)")
    run.add_argument("--write-kpis", action="store_true", help=f"write per-unit figures to InfluxDB measurement {M.billing!r}")
    run.set_defaults(func=cmd_run)


EXPLAIN_EXAMPLE = """examples:
  canalflow billing explain 3f2a9c1d04e5-V01-L2 --ledger sqlite:///out/ledger.db
  canalflow billing explain 3f2a9c1d04e5-V01-L2 --influx http://127.0.0.1:8086 --db canalflow --json

Shows the line's arithmetic, the tariff version, the unit's allocations, each charging point's
volume (method, coverage, gaps, estimates) and, with --influx, the readings behind it."""


def _add_explain(commands: Any) -> None:
    ex = commands.add_parser("explain", help="trace a bill line back to volumes and readings", epilog=EXPLAIN_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    ex.add_argument("line_id", help="bill line id as printed on the bill, e.g. 3f2a9c1d04e5-V01-L2")
    add_ledger_argument(ex)
    add_influx_arguments(ex, url_fallback=False)  # with a URL, also summarise the raw readings
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    from billing.explain import explain_line, format_explanation
    from billing.ledger import open_ledger

    ledger = open_ledger(args.ledger)
    if args.influx:
        with influx_from_args(args) as influx:
            ex = explain_line(ledger, args.line_id, influx)
    else:
        ex = explain_line(ledger, args.line_id)
    print(json.dumps(ex, ensure_ascii=False, indent=2, default=str) if args.json else format_explanation(ex))
    return 0


SERVE_EXAMPLE = """examples:
  canalflow billing serve --district examples/demo-district.yaml --tokens tokens.yaml --ledger sqlite:///out/ledger.db
  canalflow billing serve --district examples/demo-district.yaml --tokens tokens.yaml --port 8600 \\
      --influx http://127.0.0.1:8086 --db canalflow

tokens.yaml lists {user, role, sha256} (role auditor, clerk, approver or admin, as in the web
workbench; the old viewer and manager load as auditor and admin; sha256 of the token).
OpenAPI at /docs and /openapi.json. Stops cleanly on SIGTERM/SIGINT."""


EDIT_EXAMPLE = """example:
  canalflow billing edit --district examples/demo-district.yaml V06-IN --from 2026-03-12T12:00+08:00 \\
      --to 2026-03-13T00:00+08:00 --volume 8000 --user li --reason "meter battery flat; gate log"

A manual edit (VEE) replaces the point's volume over that stretch in every later run; the raw
readings are never changed; the edit, its user and reason stay in the ledger."""


def _add_edit(commands: Any) -> None:
    ed = commands.add_parser("edit", help="record a manual volume edit for a point (VEE)", epilog=EDIT_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    ed.add_argument("point")
    ed.add_argument("--district", required=True, type=Path)
    add_window_arguments(ed, required=True)
    ed.add_argument("--volume", required=True, type=float, help="m3 over the stretch")
    ed.add_argument("--user", required=True)
    ed.add_argument("--reason", required=True)
    add_ledger_argument(ed)
    ed.set_defaults(func=cmd_edit)


def cmd_edit(args: argparse.Namespace) -> int:
    from billing.ledger import open_ledger

    district = load_district(args.district)
    if args.point not in district.points:
        raise OptionError(f"unknown point {args.point!r} in {args.district}")
    window = parse_window(args.start, args.end, district.tz)
    start, end = window.start_ms, window.end_ms
    edit_id = open_ledger(args.ledger).add_edit(district.id, args.point, start, end, args.volume, args.user, args.reason)
    print(f"edit #{edit_id} recorded for {args.point}: {args.volume} m3 from {start} to {end} ms")
    return 0


def _add_serve(commands: Any) -> None:
    srv = commands.add_parser("serve", help="the billing HTTP API (FastAPI)", epilog=SERVE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    srv.add_argument("--district", type=Path, help="district YAML file (needed to start runs and for efficiency)")
    srv.add_argument("--tokens", type=Path, required=True, help="YAML file of {user, role, sha256} entries")
    add_ledger_argument(srv)
    add_influx_arguments(srv)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8600)
    srv.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from billing.api import ApiConfig, ServiceConfig, load_tokens, serve

    tokens = load_tokens(args.tokens)
    if args.district is not None:
        load_district(args.district)  # fail now, naming every problem, not on the first request
    from sqlalchemy.engine import make_url

    ledger = make_url(args.ledger).render_as_string(hide_password=True)
    print(f"billing API on http://{args.host}:{args.port} (ledger {ledger}, {len(tokens)} token(s))", file=sys.stderr)
    serve(ApiConfig(ServiceConfig.from_args(args), tokens), args.host, args.port)
    return 0


def _add_efficiency(commands: Any) -> None:
    eff = commands.add_parser("efficiency", help="water balance and canal efficiency for a window", epilog=EFFICIENCY_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_args(eff)
    when = eff.add_mutually_exclusive_group(required=True)
    when.add_argument("--season", help="season id from the district file")
    add_window_arguments(eff, from_group=when)
    eff.add_argument("--json", action="store_true", help="print the report as JSON")
    eff.add_argument("--write-kpis", action="store_true", help=f"write the figures to InfluxDB measurement {M.efficiency!r}")
    eff.add_argument("--source", choices=("readings", "rollups"), default="readings", help="raw readings (default) or the daily volume rollups (whole days)")
    eff.add_argument("--travel-time", action="store_true", help="shift each point's window by the travel time from the headworks (windows starting or ending mid-change)")
    eff.add_argument("--ledger", metavar="URL", help="apply this ledger's manual edits to the volumes, as a billing run does (default: none)")
    eff.set_defaults(func=cmd_efficiency)


def add_source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--district", required=True, type=Path, help="district YAML file")
    add_influx_arguments(parser)


def resolve_window(args: argparse.Namespace, district: District) -> tuple[int, int, str | None]:
    """(start, end, season id) of --season, or of --from/--to (canalflow.cliopts' window rule)."""
    from billing.window import season_window

    if getattr(args, "season", None):
        season = district.seasons.get(args.season)
        if season is None:
            raise OptionError(f"unknown season {args.season!r} in {args.district}; known: {', '.join(district.seasons) or 'none'}")
        t0, t1 = season_window(district, season)
        return t0, t1, season.id
    if not args.end:
        raise OptionError("--from needs --to (or use --season)")
    window = parse_window(args.start, args.end, district.tz)
    return window.start_ms, window.end_ms, None


def cmd_run(args: argparse.Namespace) -> int:
    from billing.run import run_billing

    district = load_district(args.district)
    t0, t1, season_id = resolve_window(args, district)
    as_of = parse_instant(args.as_of, district.tz, what="--as-of") if args.as_of else None
    try:
        with influx_from_args(args) as influx, stop_on_sigterm(), reported_as_errors(ValueError):
            print(f"billing {district.id}: reading {args.influx} db={args.db} ...", file=sys.stderr)
            run = run_billing(district, influx, t0, t1, out_dir=args.out, ledger_url=args.ledger, season_id=season_id, as_of_ms=as_of,
                              user=args.user, write_kpis=args.write_kpis, source=args.source, pdf=args.pdf, locale=args.lang,
                              progress=stderr_progress())
    except KeyboardInterrupt:
        print("canalflow billing run: interrupted; the ledger was not changed (files in --out may be partial)", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(run.manifest(), ensure_ascii=False, indent=2, sort_keys=True))
    else:
        print_run(run)
    return 0


def cmd_efficiency(args: argparse.Namespace) -> int:
    from billing.efficiency import efficiency_from_influx, format_report
    from billing.ledger import open_ledger
    from billing.window import whole_season_kind

    district = load_district(args.district)
    t0, t1, _ = resolve_window(args, district)
    with influx_from_args(args) as influx, reported_as_errors(ValueError):  # e.g. --travel-time with rollups
        print(f"efficiency {district.id}: reading {args.influx} db={args.db} ...", file=sys.stderr)
        edits = open_ledger(args.ledger).edits(district.id) if args.ledger else ()
        report = efficiency_from_influx(district, influx, t0, t1, season_kind=whole_season_kind(district, t0, t1), write_kpis=args.write_kpis,
                                        travel_time=args.travel_time, source=args.source, edits=edits)
    print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) if args.json else format_report(report))
    return 0


def stderr_progress() -> Any:
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    return say


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so a batch stops like on Ctrl-C (ledger transaction rolled back)."""
    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def print_run(run: Any) -> None:
    print(f"run {run.run_id[:12]}  season {run.season_id}  tariff {run.tariff_id} v{run.tariff_version}  {run.ledger_status or 'not recorded'}")
    print(f"  {'unit':8} {'volume m3':>12} {'quota m3':>12} {'total yuan':>12}")
    for bill in run.bills:
        state = f"  BLOCKED: {bill.blocked_reason}" if bill.blocked else ""
        print(f"  {bill.unit_id:8} {bill.volume_m3:>12} {bill.quota_m3:>12.0f} {bill.total:>12}{state}")
    print(f"  {'total':8} {sum(run.unit_volumes.values()):>12} {'':>12} {run.total:>12}")


def cmd_advance(args: argparse.Namespace) -> int:
    from billing.ledger import open_ledger

    status = open_ledger(args.ledger).advance(args.run_id, args.to_status, args.user, args.note)
    print(f"run {args.run_id}: {status}")
    return 0


def cmd_adjust(args: argparse.Namespace) -> int:
    from billing.ledger import open_ledger

    try:
        amount = Decimal(args.amount)
    except InvalidOperation:
        raise OptionError(f"--amount {args.amount!r} is not a number of yuan (e.g. -12.50)") from None
    adj_id = open_ledger(args.ledger).add_adjustment(args.bill_id, amount, args.reason, args.user)
    print(f"adjustment #{adj_id} recorded on {args.bill_id}; it will appear on the unit's next run")
    return 0


def cmd_paid(args: argparse.Namespace) -> int:
    from billing.ledger import open_ledger

    open_ledger(args.ledger).mark_paid(args.bill_id, args.user)
    print(f"bill {args.bill_id}: paid")
    return 0


def cmd_reverse(args: argparse.Namespace) -> int:
    from billing.ledger import open_ledger

    reversal = open_ledger(args.ledger).reverse(args.posting_id, args.user, args.reason)
    print(f"posting #{args.posting_id} reversed by #{reversal}")
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    from billing.ledger import open_ledger

    ledger = open_ledger(args.ledger)
    if args.what == "runs":
        for row in ledger.runs():
            print(f"{row.id[:12]}  {row.status:9} {row.district_id} {row.season_id or '-':12} tariff {row.tariff_id} v{row.tariff_version}  created {row.created_at}")
        return 0
    if not args.unit:
        raise OptionError(f"name a billing unit, e.g. `ledger {args.what} V01`")
    if args.what == "postings":
        for p in ledger.postings(args.unit):
            print(json.dumps(dataclasses.asdict(p), ensure_ascii=False, default=str))
        print(f"{args.unit}: owes {ledger.balance(args.unit)} yuan on issued bills; adjustments not yet on a bill {ledger.corrections_total(args.unit)} yuan")
        return 0
    for entry in ledger.water_use(args.unit):
        print(json.dumps(entry, ensure_ascii=False))
    return 0
