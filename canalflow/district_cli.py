"""``canalflow district check|show``: validate a district file and summarise its network."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from canalflow.district import District, check_district

CHECK_EXAMPLE = """example:
  canalflow district check examples/demo-district.yaml
  canalflow district check --json my-district.yaml

Each problem is printed as FILE:LINE: severity: field: message (hint). Exit 1 on any error."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("district", help="validate and inspect a district file")
    commands = parser.add_subparsers(dest="district_command", metavar="ACTION", required=True)
    check = commands.add_parser(
        "check", help="validate a district file", epilog=CHECK_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("file", help="district YAML file")
    check.add_argument("--json", action="store_true", help="print problems as JSON")
    check.set_defaults(func=run_check)
    show = commands.add_parser("show", help="summarise a district: canals, points, units")
    show.add_argument("file")
    show.set_defaults(func=run_show)


def run_check(args: argparse.Namespace) -> int:
    district, problems = check_district(args.file)
    errors = [p for p in problems if p.severity == "error"]
    if args.json:
        print(json.dumps([p.__dict__ | {"file": str(p.file)} for p in problems], ensure_ascii=False, indent=2))
    else:
        for problem in problems:
            print(problem, file=sys.stderr if problem.severity == "error" else sys.stdout)
        if district is not None and not errors:
            print(f"{args.file}: OK — {summary(district)}")
        else:
            print(f"{args.file}: {len(errors)} error(s)", file=sys.stderr)
    return 1 if errors or district is None else 0


def summary(district: District) -> str:
    spec = district.spec
    return (
        f"district {district.id!r}: {len(spec.headworks)} headworks, {len(spec.canals)} canals, "
        f"{len(district.reaches)} reaches, {len(spec.points)} metering points on {len(spec.gateways)} gateways, "
        f"{len(spec.units)} billing units in {len(spec.townships)} townships"
    )


def run_show(args: argparse.Namespace) -> int:
    district, problems = check_district(args.file)
    if district is None:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    print(summary(district))
    for canal in district.spec.canals:
        skip = "  (skip-level offtake)" if district.is_skip_level(canal) else ""
        print(f"  {canal.level.value:8} {canal.id:10} from {canal.source:8} at km {canal.offtake_km:<6} {canal.length_km} km{skip}")
    return 0
