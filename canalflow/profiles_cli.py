"""``canalflow profiles check|list``: validate meter profile files and list the known models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from canalflow.profiles import BUILTIN_DIR, CheckResult, Profile, check_files, profile_files

CHECK_EXAMPLE = """examples:
  canalflow profiles check                       # the built-in profiles
  canalflow profiles check my-meters/flowx.yaml  # a new profile, checked beside the built-ins
  canalflow profiles check --no-builtin my-meters/

Each problem is printed as FILE:LINE: field: message (hint). Exit 1 on any error
(warnings too with --strict). The format is described in docs/meter-profiles.md."""

LIST_EXAMPLE = """example:
  canalflow profiles list --dir my-meters"""


def register(subparsers: Any) -> None:
    """Add the ``profiles`` command to the ``canalflow`` parser."""
    parser = subparsers.add_parser("profiles", help="validate and list meter profiles")
    commands = parser.add_subparsers(dest="profiles_command", metavar="ACTION", required=True)
    check = commands.add_parser(
        "check",
        help="validate profile files (default: the built-in profiles)",
        epilog=CHECK_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("files", nargs="*", metavar="FILE", help="profile YAML files or directories")
    check.add_argument("--no-builtin", action="store_true", help="do not load the built-in profiles")
    check.add_argument("--strict", action="store_true", help="fail on warnings too")
    check.set_defaults(func=run_check)
    listing = commands.add_parser(
        "list",
        help="list known profiles",
        epilog=LIST_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.add_argument("--dir", action="append", default=[], help="extra profile directory")
    listing.set_defaults(func=run_list)


def _files(paths: list[str], builtin: bool) -> list[Path]:
    chosen = profile_files(([BUILTIN_DIR] if builtin else []) + [Path(p) for p in paths])
    unique: dict[Path, Path] = {}
    for file in chosen:
        unique.setdefault(file.resolve(), file)
    return list(unique.values())


def run_check(args: argparse.Namespace) -> int:
    """Print every problem; exit 1 on errors (or warnings with --strict)."""
    missing = [p for p in args.files if not Path(p).exists()]
    if missing:
        for path in missing:
            print(f"{path}: no such file or directory", file=sys.stderr)
        return 1
    files = _files(args.files, builtin=not args.no_builtin)
    result = check_files(files)
    for problem in result.problems:
        print(problem)
    failing = result.problems if args.strict else result.errors
    print(_summary(len(files), result), file=sys.stderr)
    return 1 if failing else 0


def _summary(n_files: int, result: CheckResult) -> str:
    warnings = len(result.problems) - len(result.errors)
    return (
        f"{n_files} file(s): {len(result.profiles)} profile(s) OK, {len(result.errors)} error(s), {warnings} warning(s)"
    )


def _describe(profile: Profile) -> str:
    quantities = ", ".join(profile.quantities)
    reads = "block" if profile.block_reads else "single"
    return (
        f"{profile.name:16} {profile.kind:14} ±{profile.accuracy_pct:g}%  "
        f"FC{profile.function_code} {reads:6} {quantities}"
    )


def run_list(args: argparse.Namespace) -> int:
    """One line per profile: name, kind, accuracy, function code, read mode, quantities."""
    result = check_files(_files(args.dir, builtin=True))
    for problem in result.errors:
        print(problem, file=sys.stderr)
    for name in sorted(result.profiles):
        print(_describe(result.profiles[name]))
    return 1 if result.errors else 0
