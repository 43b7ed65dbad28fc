"""The ``canalflow`` command line: one entry point, each component adds its own subcommands.

A component package ``X`` provides ``X/cli.py`` with ``register(subparsers)`` that adds a
subcommand whose handler is set with ``parser.set_defaults(func=...)``; the handler returns the
exit code. A handler reports an operator's error by raising a
:class:`canalflow.errors.CanalflowError`: :func:`main` prints it as ``canalflow <command>: error:
<message>`` (and its hint) and exits 1; any other exception keeps its traceback. The options
several commands share (the ``--from/--to`` window, InfluxDB) come from :mod:`canalflow.cliopts`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from canalflow import __version__
from canalflow.errors import CanalflowError, report

# (command, module providing register(), one-line help)
COMPONENTS: tuple[tuple[str, str, str], ...] = (
    ("district", "canalflow.district_cli", "validate and inspect a district file"),
    ("profiles", "canalflow.profiles_cli", "validate and list meter profiles"),
    ("demo", "testbed.demo", "run the whole pipeline on the simulated demo district"),
    ("fleet", "firmware_sim.cli", "run the simulated meter fleet"),
    ("edge", "edge.cli", "edge agent and field-technician tools"),
    ("ingest", "ingest.cli", "MQTT -> InfluxDB ingest workers"),
    ("billing", "billing.cli", "efficiency, billing runs, ledger and the billing API"),
    ("dashboards", "dashboards.cli", "build, preview and publish Grafana dashboards"),
    ("credentials", "canalflow.credentials", "generate and check broker passwords, ACLs and TLS files"),
    ("web", "web.cli", "web workbench for billing clerks and the public water-use notice"),
)

EPILOG = """examples:
  canalflow district check examples/demo-district.yaml
  canalflow demo --out out
  canalflow fleet run --district examples/demo-district.yaml --speed 60
"""


def _not_available(command: str, reason: str) -> argparse.ArgumentParser:
    def handler(_: argparse.Namespace) -> int:
        print(f"canalflow {command}: not available in this build ({reason})", file=sys.stderr)
        return 2

    parser = argparse.ArgumentParser(add_help=False)
    parser.set_defaults(func=handler)
    return parser


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, just that command's component is imported (the others stay
    one-line entries), so `canalflow edge run` does not load billing, dashboards and the rest."""
    parser = argparse.ArgumentParser(
        prog="canalflow",
        description="Irrigation-district water metering: Modbus meters -> MQTT -> InfluxDB -> efficiency and bills.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"canalflow {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, module_name, help_text in COMPONENTS:
        if only is not None and command != only:
            subparsers.add_parser(command, help=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # the component itself is missing (a gateway install has no testbed), not something it imports
            if exc.name is None or not f"{module_name}.".startswith(f"{exc.name}."):
                raise
            sub = subparsers.add_parser(command, help=f"{help_text} (not installed)")
            sub.set_defaults(func=_not_available(command, f"{exc.name} is not installed").get_default("func"))
            continue
        module.register(subparsers)
    _name_commands(parser)
    return parser


def _name_commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> None:
    """Give every (sub)command's parser the default ``command_name`` ("billing run"), which the
    error handler of :func:`main` prints."""
    parser.set_defaults(command_name=" ".join(words))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                _name_commands(sub, (*words, name))


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    known = {command for command, _, _ in COMPONENTS}
    parser = build_parser(args_list[0] if args_list and args_list[0] in known else None)
    args = parser.parse_args(args_list)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except CanalflowError as exc:
        print(report(exc, args.command_name), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
