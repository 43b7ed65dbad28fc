"""``python -m edge ...``: the edge commands alone (same as ``canalflow edge ...``).

On a field gateway this entry point keeps the agent's memory to its own needs: ``canalflow``
imports every component's command line, the agent needs only its own.
"""

from __future__ import annotations

import argparse
import sys

from edge import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m", description="canalflow edge agent and technician tools")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cli.register(subparsers)
    args = parser.parse_args(["edge", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
