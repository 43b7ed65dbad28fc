"""The command-line options several commands share: the ``--from/--to`` window, InfluxDB, the district
file (``--district`` is the file in every command) and the billing ledger.

One rule for every command (billing, ingest rollup, dashboards, fleet truth, ...), described in
README.md "Command options":

- a date alone (``2026-03-10``) is local midnight in the district's time zone;
- a date-time without an offset (``2026-03-10T06:00``) is district-local;
- with ``Z`` or an offset (``2026-03-10T06:00+08:00``) it is that instant;
- ``--to`` is exclusive, and a date alone as ``--to`` means the end of that local day, so
  ``--from D --to D`` is the local day D and ``--from 2026-03-10 --to 2026-03-19`` ten days.

InfluxDB: ``--influx``, ``--db`` and ``--token`` default to ``$CANALFLOW_INFLUX_URL``
(else http://127.0.0.1:8086), ``$CANALFLOW_INFLUX_DB`` (else canalflow) and
``$CANALFLOW_INFLUX_TOKEN`` (else none) for every command that talks to InfluxDB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canalflow.clock import parse_iso_ms
from canalflow.errors import CanalflowError

if TYPE_CHECKING:
    from canalflow.influx import InfluxV1

ENV_INFLUX_URL = "CANALFLOW_INFLUX_URL"
ENV_INFLUX_DB = "CANALFLOW_INFLUX_DB"
ENV_INFLUX_TOKEN = "CANALFLOW_INFLUX_TOKEN"
DEFAULT_INFLUX_URL = "http://127.0.0.1:8086"
DEFAULT_INFLUX_DB = "canalflow"

WINDOW_RULE = """--from/--to (the same rule for every command, README.md "Command options"): a date
(2026-03-10) is midnight in the district's time zone, a date-time without offset is district
time, with Z or +08:00 it is that instant; --to is exclusive and a date as --to means the end
of that day, so --from D --to D is the local day D."""


class OptionError(CanalflowError, ValueError):
    """A command-line option's value cannot be used; the message names the option."""


@dataclass(frozen=True)
class Window:
    """[start_ms, end_ms): epoch milliseconds, end exclusive."""

    start_ms: int
    end_ms: int


# ---- the window --------------------------------------------------------------------------------


def add_window_arguments(parser: Any, *, required: bool = False, from_group: Any = None) -> None:
    """Add ``--from`` and ``--to`` (dest ``start`` and ``end``). ``from_group``: put ``--from`` in
    this mutually exclusive group (e.g. against ``--season``) instead of on ``parser``."""
    (from_group or parser).add_argument(
        "--from", dest="start", metavar="WHEN", required=required and from_group is None,
        help="window start: a date (local midnight) or an ISO date-time (naive = district time)")
    parser.add_argument(
        "--to", dest="end", metavar="WHEN", required=required,
        help="window end, exclusive: a date means the end of that local day; or an ISO date-time")


def parse_instant(text: str, tz: dt.tzinfo, *, what: str = "time") -> int:
    """One instant of an option, epoch ms: a date is local midnight, a naive time is in ``tz``."""
    try:
        return parse_iso_ms(text, naive_tz=tz, what=what)
    except ValueError as exc:
        raise OptionError(f"{exc}, or a date alone (2026-04-15)") from None


def parse_end(text: str, tz: dt.tzinfo, *, what: str = "--to") -> int:
    """The exclusive end of a window: a date alone is the end of that local day (next midnight)."""
    day = _date_only(text)
    if day is None:
        return parse_instant(text, tz, what=what)
    return parse_instant((day + dt.timedelta(days=1)).isoformat(), tz, what=what)


def parse_window(start: str, end: str, tz: dt.tzinfo) -> Window:
    """``--from start --to end`` -> :class:`Window`; OptionError if unreadable or empty."""
    window = Window(parse_instant(start, tz, what="--from"), parse_end(end, tz))
    if window.end_ms <= window.start_ms:
        raise OptionError(f"--to must be after --from (got --from {start} --to {end})")
    return window


def window_from_args(args: argparse.Namespace, tz: dt.tzinfo) -> Window | None:
    """The window of :func:`add_window_arguments`' options; None when neither is given."""
    if not args.start and not args.end:
        return None
    if not (args.start and args.end):
        raise OptionError("--from and --to go together: give both")
    return parse_window(args.start, args.end, tz)


def _date_only(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        return None


# ---- the district -------------------------------------------------------------------------------


def district_id_from_file(value: str | Path, *, option: str = "--district") -> str:
    """The id of the district file an option names; ``--district`` is the file in every command."""
    path = Path(value)
    if not path.is_file():
        raise OptionError(f"{option} {value}: no such file: {option} is the district file in every command "
                          "(e.g. examples/demo-district.yaml), the district id is read from it")
    from canalflow.district import load_district

    return load_district(path).id


# ---- the billing ledger -------------------------------------------------------------------------

ENV_LEDGER = "CANALFLOW_LEDGER"
DEFAULT_LEDGER = "sqlite:///out/ledger.db"


def add_ledger_argument(parser: Any) -> None:
    """``--ledger``, defaulting to ``$CANALFLOW_LEDGER`` read when the parser is built (the URL may hold a
    password: --help names the variable, never its value), else the demo's SQLite file."""
    parser.add_argument("--ledger", default=os.environ.get(ENV_LEDGER) or DEFAULT_LEDGER, metavar="URL",
                        help=f"SQLAlchemy URL of the ledger (${ENV_LEDGER}, else {DEFAULT_LEDGER})")


# ---- InfluxDB ----------------------------------------------------------------------------------


def add_influx_arguments(parser: Any, *, url_fallback: bool = True) -> None:
    """Add ``--influx``, ``--db`` and ``--token``, defaulting to the CANALFLOW_INFLUX_* environment
    (read now, when the parser is built; --help names the variables, never their values).

    ``url_fallback=False`` (a command for which InfluxDB is optional, e.g. ``billing explain``):
    without ``--influx`` or ``$CANALFLOW_INFLUX_URL`` the URL is None instead of the local default.
    """
    url = os.environ.get(ENV_INFLUX_URL) or (DEFAULT_INFLUX_URL if url_fallback else None)
    db = os.environ.get(ENV_INFLUX_DB) or DEFAULT_INFLUX_DB
    group = parser.add_argument_group("InfluxDB (defaults from the environment, README.md \"Command options\")")
    group.add_argument("--influx", default=url, metavar="URL",
                       help=f"InfluxDB base URL (v1 API: 1.x, or 2.x with --token); default ${ENV_INFLUX_URL}, "
                            f"else {DEFAULT_INFLUX_URL if url_fallback else 'none (InfluxDB not used)'}")
    group.add_argument("--db", default=db, metavar="NAME",
                       help=f"database (2.x: the DBRP-mapped name); default ${ENV_INFLUX_DB}, else {DEFAULT_INFLUX_DB}")
    group.add_argument("--token", default=os.environ.get(ENV_INFLUX_TOKEN) or None, metavar="TOKEN",
                       help=f"InfluxDB 2.x/3.x API token; default ${ENV_INFLUX_TOKEN}, else none")


def influx_from_args(args: argparse.Namespace) -> InfluxV1:
    """The InfluxDB client of :func:`add_influx_arguments`' options (close it, or use ``with``)."""
    from canalflow.influx import InfluxV1

    return InfluxV1(args.influx, args.db, token=args.token)
