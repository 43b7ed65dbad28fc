"""``canalflow dashboards build|check|preview|publish``: Grafana dashboards as code."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canalflow import cliopts
from canalflow.district import load_district
from canalflow.errors import CanalflowError
from dashboards.querycheck import TimeRange

BUILD_EXAMPLE = """example:
  canalflow dashboards build --district examples/demo-district.yaml --out deploy/grafana --locale zh

Writes DIR/dashboards/*.json, DIR/provisioning/{datasources,dashboards,alerting}/*.yaml and
DIR/gazetteer/canalflow-<district>.json (see docs/dashboards.md). Exit 1 on any error."""

CHECK_EXAMPLE = """example:
  canalflow dashboards check --district examples/demo-district.yaml --influx http://127.0.0.1:8086 --db canalflow
  canalflow dashboards check --district F --influx URL --db NAME --token $INFLUX_TOKEN --var season=1772294400000

Runs every variable, panel and alert query (Grafana macros substituted) and checks each answer's
shape. Exit 1 when any query fails or returns data of the wrong shape.

""" + cliopts.WINDOW_RULE + """ --to also sets --now."""

PREVIEW_EXAMPLE = """example:
  canalflow dashboards preview --district examples/demo-district.yaml --influx http://127.0.0.1:8086 --db canalflow --out out/previews

Renders each dashboard's panels to DIR/<dashboard uid>.png with matplotlib, from the same queries.

""" + cliopts.WINDOW_RULE + """ --to also sets --now."""

PUBLISH_EXAMPLE = """example:
  canalflow dashboards publish --district examples/demo-district.yaml --url http://grafana:3000 --token $GRAFANA_TOKEN --folder canalflow

Creates the folder if needed and overwrites each dashboard by uid, with a version message.
Exit 1 on an authentication or connection failure, with the reason."""


def _district_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--district", required=True, type=Path, help="district YAML file")
    parser.add_argument("--locale", choices=("zh", "en"), help="title language (default: the district file's locale)")


def _query_args(parser: argparse.ArgumentParser) -> None:
    cliopts.add_influx_arguments(parser)
    parser.add_argument("--now", help="evaluate at this time (ISO 8601, naive = district time; default: now), for simulated data")
    cliopts.add_window_arguments(parser)  # default: each dashboard's own time range
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="set a template variable (repeatable)")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("dashboards", help="build, check, preview and publish Grafana dashboards")
    commands = parser.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    build = commands.add_parser("build", help="write dashboard JSON, provisioning and alert rules", epilog=BUILD_EXAMPLE, formatter_class=fmt)
    _district_arg(build)
    build.add_argument("--out", required=True, type=Path, help="output folder (docker-compose mounts deploy/grafana)")
    build.add_argument("--alerts", type=Path, help="YAML file of alert settings (see docs/dashboards.md)")
    build.set_defaults(func=run_build)

    check = commands.add_parser("check", help="run every panel and alert query against InfluxDB", epilog=CHECK_EXAMPLE, formatter_class=fmt)
    _district_arg(check)
    _query_args(check)
    check.add_argument("--alerts", type=Path, help="YAML file of alert settings")
    check.add_argument("--verbose", action="store_true", help="print every query, not only failing ones")
    check.set_defaults(func=run_check)

    preview = commands.add_parser("preview", help="render each dashboard's panels to PNG", epilog=PREVIEW_EXAMPLE, formatter_class=fmt)
    _district_arg(preview)
    _query_args(preview)
    preview.add_argument("--out", required=True, type=Path, help="folder for the PNG files")
    preview.set_defaults(func=run_preview)

    publish = commands.add_parser("publish", help="upload the dashboards to a Grafana server", epilog=PUBLISH_EXAMPLE, formatter_class=fmt)
    _district_arg(publish)
    publish.add_argument("--url", required=True, help="Grafana base URL, e.g. http://127.0.0.1:3000")
    publish.add_argument("--token", required=True, help="Grafana service-account token")
    publish.add_argument("--folder", default="canalflow", help="folder title (created when missing; default canalflow)")
    publish.add_argument("--message", default="canalflow dashboards build", help="version message stored with each dashboard")
    publish.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request (default 10)")
    publish.set_defaults(func=run_publish)


def run_build(args: argparse.Namespace) -> int:
    from dashboards.alerts import load_alert_settings
    from dashboards.provisioning import write_outputs

    district = load_district(args.district)
    try:
        result = write_outputs(district, args.out, locale=args.locale, alert_settings=load_alert_settings(args.alerts))
    except OSError as exc:
        raise CanalflowError(f"{args.out}: cannot write: {exc}") from exc
    for path in result.files:
        print(path)
    print(f"{len(result.dashboards)} dashboards, {len(result.alerts['groups'][0]['rules'])} alert rules for district {district.id!r}", file=sys.stderr)
    return 0


def parse_window(args: argparse.Namespace, tz: Any) -> tuple[int, TimeRange | None]:
    """(now in epoch ms, the picked time range or None) from --now, --from and --to, whose naive
    times and dates are in ``tz`` (the district's), by the one rule of canalflow.cliopts."""
    window = cliopts.window_from_args(args, tz)
    chosen = None if window is None else TimeRange(window.start_ms, window.end_ms)
    if args.now:
        return cliopts.parse_instant(args.now, tz, what="--now"), chosen
    return (chosen.to_ms if chosen else int(time.time() * 1000)), chosen


def parse_vars(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise cliopts.OptionError(f"--var {item!r}: use NAME=VALUE (VALUE may be a|b for several values)")
        out[name] = value.split("|")
    return out


def default_overrides(district: Any, now_ms: int, given: dict[str, list[str]]) -> dict[str, list[str]]:
    """Variables as Grafana would default them at ``now_ms`` (the season holding it), then --var."""
    from dashboards.build import season_at

    return {**season_at(district, now_ms), **given}


@dataclass(frozen=True)
class _QueryContext:
    """What checking or previewing queries needs: the district, the moment, the picked range, the variables."""

    district: Any
    now_ms: int
    chosen: TimeRange | None
    overrides: dict[str, list[str]]


def _query_context(args: argparse.Namespace) -> _QueryContext:
    """The district, --now/--from/--to and --var of ``check`` and ``preview``."""
    district = load_district(args.district)
    (now_ms, chosen), given = parse_window(args, district.tz), parse_vars(args.var)
    return _QueryContext(district, now_ms, chosen, default_overrides(district, now_ms, given))


def _require_reachable(db: Any, url: str) -> None:
    if not db.ping():
        raise CanalflowError(f"cannot reach InfluxDB at {url} (/ping failed): is it running, and is the URL right?")


def run_check(args: argparse.Namespace) -> int:
    from dashboards.alerts import build_alert_rules, load_alert_settings
    from dashboards.build import build_dashboards
    from dashboards.querycheck import alert_rules, check_dashboard, evaluate_rule

    context = _query_context(args)
    district, now_ms, chosen, overrides = context.district, context.now_ms, context.chosen, context.overrides
    settings = load_alert_settings(args.alerts)
    failed = total = 0
    with cliopts.influx_from_args(args) as db:
        _require_reachable(db, args.influx)
        boards = build_dashboards(district, args.locale)
        results = [r for board in boards.values() for r in check_dashboard(board, db, now_ms=now_ms, overrides=overrides, time_range=chosen)]
        for rule in alert_rules(build_alert_rules(district, args.locale, settings)):
            evaluation = evaluate_rule(rule, db, now_ms=now_ms)
            results += evaluation.results
            print(f"alert {rule['title']!r}: {len(evaluation.firing)} of {evaluation.instances} instance(s) firing {json.dumps(evaluation.firing, ensure_ascii=False)}")
    for result in results:
        total += 1
        failed += not result.ok
        if not result.ok or args.verbose:
            print(result, file=sys.stderr if not result.ok else sys.stdout)
    print(f"{total - failed} of {total} queries returned data of the expected shape", file=sys.stderr)
    return 1 if failed else 0


def run_preview(args: argparse.Namespace) -> int:
    from dashboards.preview import render_previews

    context = _query_context(args)
    with cliopts.influx_from_args(args) as db:
        _require_reachable(db, args.influx)
        paths = render_previews(context.district, db, args.out, locale=args.locale, now_ms=context.now_ms,
                                overrides=context.overrides, time_range=context.chosen, progress=sys.stderr)
    for path in paths:
        print(path)
    return 0


def run_publish(args: argparse.Namespace) -> int:
    from dashboards.build import build_dashboards
    from dashboards.publish import publish

    district = load_district(args.district)
    results = publish(build_dashboards(district, args.locale).values(), url=args.url, token=args.token,
                      folder=args.folder, message=args.message, timeout=args.timeout)
    for line in results:
        print(line)
    return 0

