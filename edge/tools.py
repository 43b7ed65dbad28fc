"""The field technician's commands: scan, read, probe, watch, commission, buffer, rating."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from canalflow import codec
from canalflow.cliopts import district_id_from_file
from canalflow.clock import wall_to_utc
from canalflow.errors import CanalflowError
from canalflow.mqtt import add_mqtt_arguments, target_from_args
from canalflow.progress import Progress
from edge.modbus import ModbusError, ModbusExceptionResponse, ModbusLink, ModbusTimeout
from edge.poller import CLOCK_REGISTER

RAW = argparse.RawDescriptionHelpFormatter


def _epilog(*lines: str) -> dict[str, Any]:
    return {"epilog": "examples:\n" + "\n".join(f"  {line}" for line in lines), "formatter_class": RAW}


class ToolError(CanalflowError):
    """A technician-facing error: printed as is, exit 1."""


def register(actions: Any) -> None:
    _register_device_tools(actions)
    _register_watch(actions)
    _register_commission(actions)
    _register_buffer(actions)
    _register_rating(actions)


# ---- device connection arguments ---------------------------------------------------------------

def _device_args(parser: argparse.ArgumentParser, *, unit: bool = True) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="Modbus TCP gateway HOST:PORT")
    where.add_argument("--rtu-over-tcp", metavar="HOST:PORT", help="RTU frames over a TCP serial server")
    where.add_argument("--port", help="serial port, e.g. /dev/ttyUSB0 (RTU)")
    parser.add_argument("--baud", type=int, default=9600)
    parser.add_argument("--parity", choices=["N", "E", "O"], default="N")
    parser.add_argument("--timeout", type=float, default=1.0, help="answer timeout in seconds")
    if unit:
        parser.add_argument("--unit", type=int, required=True, help="Modbus unit id (1-247)")
    parser.add_argument("--json", action="store_true", help="JSON output for scripts")


def _link(args: argparse.Namespace) -> ModbusLink:
    if args.host:
        return ModbusLink(f"tcp://{_host_port(args.host)}")
    if args.rtu_over_tcp:
        return ModbusLink(f"rtu+tcp://{_host_port(args.rtu_over_tcp)}")
    return ModbusLink(args.port, baud=args.baud, parity=args.parity)


def _host_port(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ToolError(f"{text!r}: write the gateway as HOST:PORT, e.g. 192.168.1.20:502")
    return text


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except ModbusError as exc:
        raise ToolError(str(exc)) from exc


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _guard(func: Any) -> Any:
    """Turn technician-facing errors into a message on stderr and exit code 1."""

    def handler(args: argparse.Namespace) -> int:
        try:
            return int(func(args) or 0)
        except CanalflowError:
            raise  # ToolError, CodecError, MqttConnectError, BufferBusy...: canalflow.cli's handler
        except (ValueError, KeyError, OSError) as exc:
            print(f"canalflow edge {args.edge_command}: {str(exc).strip(chr(39))}", file=sys.stderr)
            return 1

    return handler


def _profiles(district: str | None = None) -> dict[str, Any]:
    from canalflow.profiles import load_profiles

    if district:
        from canalflow.district import load_district

        return dict(load_district(district).profiles)
    return load_profiles()


# ---- scan ------------------------------------------------------------------------------------

def _register_device_tools(actions: Any) -> None:
    scan = actions.add_parser("scan", help="find the unit ids that answer and identify their meter model",
                              **_epilog("canalflow edge scan --host 127.0.0.1:5021 --units 1-20",
                                        "canalflow edge scan --port /dev/ttyUSB0 --baud 9600 --units 1-247 --json"))
    _device_args(scan, unit=False)
    scan.add_argument("--units", default="1-247", help="unit ids to try: 1-247, or 1,2,10-20")
    scan.add_argument("--district", help="district file (for its extra profile directories)")
    scan.add_argument("--quiet", action="store_true", help="no progress (a bar on a terminal, else a line per 10 %%)")
    scan.set_defaults(func=_guard(cmd_scan), timeout=0.3)
    read = actions.add_parser("read", help="read one meter with its profile, decoded with units",
                              **_epilog("canalflow edge read --host 127.0.0.1:5021 --unit 11 --profile em-pipe",
                                        "canalflow edge read --port /dev/ttyUSB0 --unit 3 --profile tuf2000m --json"))
    _device_args(read)
    read.add_argument("--profile", required=True, help="meter profile name (canalflow profiles list)")
    read.add_argument("--district", help="district file (for its extra profile directories and its time zone)")
    read.add_argument("--tz", help="time zone of the meter's calendar, e.g. Asia/Shanghai (default: the district's, "
                                   "else this machine's)")
    read.set_defaults(func=_guard(cmd_read))
    probe = actions.add_parser(
        "probe", help="raw registers decoded in every type, word order and address base",
        **_epilog("canalflow edge probe --words 0x806B,0x4212",
                  "canalflow edge probe --host 127.0.0.1:5021 --unit 11 --address 2 --count 2",
                  "canalflow edge probe --port /dev/ttyUSB0 --unit 1 --address 40002 --count 2 --json"))
    where = probe.add_mutually_exclusive_group(required=True)
    where.add_argument("--words", help="offline: register words, e.g. 0x806B,0x4212")
    where.add_argument("--host", help="Modbus TCP gateway HOST:PORT")
    where.add_argument("--rtu-over-tcp", metavar="HOST:PORT")
    where.add_argument("--port", help="serial port (RTU)")
    probe.add_argument("--unit", type=int, default=1)
    probe.add_argument("--address", type=int, help="wire address (0-based, default 0); 4xxxx/3xxxx numbers "
                       "are converted; with --words it shows the address in both bases")
    probe.add_argument("--count", type=int, default=2, help="registers to read (1-4 are decoded)")
    probe.add_argument("--table", choices=["holding", "input"], default="holding")
    probe.add_argument("--baud", type=int, default=9600)
    probe.add_argument("--parity", choices=["N", "E", "O"], default="N")
    probe.add_argument("--timeout", type=float, default=1.0)
    probe.add_argument("--json", action="store_true")
    probe.set_defaults(func=_guard(cmd_probe))


def parse_units(text: str) -> list[int]:
    units: list[int] = []
    for part in text.replace(" ", "").split(","):
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ToolError(f"--units {text!r}: write unit ids like 1-247 or 1,2,10-20") from None
        if not 1 <= first <= last <= 247:
            raise ToolError(f"--units {text!r}: unit ids run from 1 to 247")
        units += range(first, last + 1)
    return units


async def scan_units(link: ModbusLink, units: Iterable[int], profiles: dict[str, Any], timeout: float,
                     progress: Any = None) -> list[dict[str, Any]]:
    """Which units answer, and which profile's signature each one carries."""
    signatures: dict[tuple[int, int, int], list[Any]] = {}
    for profile in profiles.values():
        key = (profile.function_code, profile.signature_address, len(profile.signature.words))
        signatures.setdefault(key, []).append(profile)
    found = []
    unit_list = list(units)
    try:
        for index, unit in enumerate(unit_list):
            if progress:
                progress(index + 1, len(unit_list), unit)
            entry = await _identify(link, unit, signatures, timeout)
            if entry is not None:
                found.append(entry)
    finally:
        await link.close()
    return found


# Exceptions a TCP gateway sends on behalf of a device that is not there: no evidence of a device.
GATEWAY_EXCEPTIONS = {0x0A: "gateway path unavailable", 0x0B: "gateway target device failed to respond"}


async def _identify(link: ModbusLink, unit: int, signatures: dict[tuple[int, int, int], list[Any]],
                    timeout: float) -> dict[str, Any] | None:
    """A unit counts only when a device answered: with data, or with an exception of its own
    (not the gateway's 0x0A/0x0B, nor silence); ``why`` says which answer made it count."""
    why = ""
    notes = []
    for (function, address, count), candidates in signatures.items():
        try:
            words = await link.read_registers(unit, address, count, function=function, timeout_s=timeout)
        except ModbusTimeout:
            if not why:
                return None  # nobody at this id: do not spend more timeouts on it
            continue
        except ModbusExceptionResponse as exc:
            if exc.code in GATEWAY_EXCEPTIONS:
                if not why:
                    return None  # the gateway says no device answered at this id
                continue
            why = why or f"answered exception 0x{exc.code:02X} ({exc.name}) to fc{function}@{address}: a device is there"
            notes.append(f"fc{function}@{address}: {exc.name}")
            continue
        for profile in candidates:
            if list(words) == list(profile.signature.words):
                return {"unit": unit, "model": profile.name, "vendor": profile.vendor,
                        "signature": codec.format_words(words),
                        "why": f"signature at fc{function}@{address} matches profile {profile.name}"}
        why = why or f"answered data to fc{function}@{address}, matching no profile's signature"
        notes.append(f"fc{function}@{address}: {codec.format_words(words)}")
    return {"unit": unit, "model": None, "vendor": None, "signature": "; ".join(notes), "why": why}


def _scan_progress(quiet: bool) -> Any:
    bar = Progress("scanning", stream=sys.stderr, quiet=quiet)
    return lambda done, total, unit: bar(done / total, f"{done}/{total} unit {unit:3}")


def cmd_scan(args: argparse.Namespace) -> int:
    units = parse_units(args.units)
    found = _run(scan_units(_link(args), units, _profiles(args.district), args.timeout,
                            _scan_progress(args.quiet or args.json)))
    if args.json:
        _print_json(found)
    elif found:
        print(_table([(f["unit"], f["model"] or "unknown", f["vendor"] or "", f["signature"], f["why"]) for f in found],
                     ["unit", "model", "vendor", "signature", "why it counts"]))
        print(f"{len(found)} of {len(units)} unit id(s) answered; ids the gateway answered for with "
              f"0x0A/0x0B ({GATEWAY_EXCEPTIONS[0x0B]}) or that stayed silent are not listed", file=sys.stderr)
    else:
        print(f"no unit answered among {len(units)} ids: check wiring, baud rate ({args.baud}) and parity",
              file=sys.stderr)
    return 0 if found else 1


# ---- read ------------------------------------------------------------------------------------

async def read_meter(link: ModbusLink, unit: int, profile: Any, timeout: float) -> list[dict[str, Any]]:
    """Every register of a meter, decoded to SI, one request per block (or per value)."""
    rows = []
    try:
        for block in profile.read_blocks(None, max_words=120, max_gap=0):
            words = await link.read_registers(unit, block.start, block.count, function=profile.function_code,
                                              timeout_s=timeout)
            decoded = block.decode(words)
            for reg in block.registers:
                offset = reg.wire_address - block.start
                rows.append({
                    "name": reg.name, "register": reg.register, "address": reg.wire_address,
                    "quantity": reg.quantity, "value": decoded[reg.name],
                    "unit": reg.si_unit or "", "raw": codec.format_words(words[offset:offset + reg.word_count]),
                    "alarms": [n for b, n in (reg.bits or {}).items() if int(decoded[reg.name]) >> int(b) & 1],
                    "calendar": "local" if reg.wall_clock else ("utc" if reg.name == CLOCK_REGISTER else None),
                })
    finally:
        await link.close()
    return rows


def _profile(args: argparse.Namespace) -> Any:
    profiles = _profiles(getattr(args, "district", None))
    if args.profile not in profiles:
        raise ToolError(f"unknown profile {args.profile!r} (known: {', '.join(sorted(profiles))})")
    return profiles[args.profile]


def cmd_read(args: argparse.Namespace) -> int:
    profile = _profile(args)
    zone = _meter_zone(args)
    rows = _run(read_meter(_link(args), args.unit, profile, args.timeout))
    now_s = time.time()  # this edge's clock, just after the read
    for row in rows:
        if row["calendar"]:
            row.update(calendar_time(row["value"], row["calendar"] == "local", zone, now_s))
    if args.json:
        _print_json({"unit": args.unit, "profile": profile.name, "registers": rows})
        return 0
    print(f"unit {args.unit}, profile {profile.name} ({profile.vendor} {profile.model})")
    print(_table([(r["name"], r["register"], r["quantity"] or "-", r.get("local_time") or _fmt(r["value"]), r["unit"],
                   r["raw"], ",".join(r["alarms"])) for r in rows],
                 ["register", "number", "quantity", "value", "SI unit", "raw words", "alarms"]))
    return 0


def _meter_zone(args: argparse.Namespace) -> dt.tzinfo:
    """The zone a meter's calendar is shown in: --tz, else the district's, else this machine's."""
    name = args.tz
    if not name and args.district:
        from canalflow.district import load_district

        name = load_district(args.district).spec.district.timezone
    if not name:
        return dt.datetime.now().astimezone().tzinfo or dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"--tz {name!r}: unknown time zone; use an IANA name like Asia/Shanghai") from None


def calendar_time(value: float, local: bool, zone: dt.tzinfo, now_s: float) -> dict[str, Any]:
    """A meter clock register as the technician reads it: local date-time with its zone, and how far
    it is from this edge's clock. ``local``: a calendar kept in local wall-clock time (BCD), else UTC epoch s."""
    if not value or not math.isfinite(value):
        return {"local_time": "not set (0)" if not value else "not a date", "clock_offset_s": None}
    utc_s = wall_to_utc(value, zone) if local else float(value)
    when = dt.datetime.fromtimestamp(utc_s, zone)
    offset = utc_s - now_s
    name = getattr(zone, "key", None) or when.tzname()
    ahead = "ahead of" if offset >= 0 else "behind"
    text = f"{when:%Y-%m-%d %H:%M:%S} {name} (UTC{when:%z}), {abs(offset):.0f} s {ahead} this edge's clock"
    step = abs(offset) % 900
    if local and abs(offset) >= 1800 and min(step, 900 - step) < 120:  # whole quarter-hours off: a zone, not a drift
        text += " (a whole time-zone step: is the meter's zone right? see --tz / --district)"
    return {"local_time": text, "utc": dt.datetime.fromtimestamp(utc_s, dt.UTC).isoformat(), "clock_offset_s": round(offset, 1)}


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


# ---- probe -----------------------------------------------------------------------------------

def wire_address(number: int) -> tuple[int, str]:
    """A register number as written in a manual -> (wire address, how it was read)."""
    for base, table in ((400001, "4xxxxx"), (300001, "3xxxxx"), (40001, "4xxxx"), (30001, "3xxxx")):
        if base <= number < base + (65536 if base > 100000 else 10000):
            return number - base, f"{number} is {table} notation: wire address {number - base}"
    return number, f"wire address {number} (register {number} counted from 0, or {number + 1} counted from 1)"


def probe_words(words: list[int]) -> dict[str, Any]:
    decoded = codec.decode_all_orders(words[:4])
    return {"words": codec.format_words(words), "decoded": decoded}


def cmd_probe(args: argparse.Namespace) -> int:
    if args.words:
        words = codec.parse_words(args.words)
        note = "" if args.address is None else wire_address(args.address)[1]
    else:
        address, note = wire_address(args.address or 0)
        if not 1 <= args.count <= 125:
            raise ToolError("--count must be 1..125 registers")
        function = 4 if args.table == "input" or 30001 <= (args.address or 0) < 40001 else 3
        words = _run(_probe_read(_link(args), args.unit, address, args.count, function, args.timeout))
    result = probe_words(words)
    if note:
        result["address"] = note
    if args.json:
        _print_json(result)
        return 0
    if note:
        print(note)
    print(f"words {result['words']}")
    rows = [(t, order, _fmt(v)) for t, orders in result["decoded"].items() for order, v in orders.items()]
    print(_table(rows, ["type", "order", "value"]))
    return 0


async def _probe_read(link: ModbusLink, unit: int, address: int, count: int, function: int, timeout: float) -> list[int]:
    try:
        return await link.read_registers(unit, address, count, function=function, timeout_s=timeout)
    finally:
        await link.close()


# ---- watch -----------------------------------------------------------------------------------

def _register_watch(actions: Any) -> None:
    watch = actions.add_parser(
        "watch", help="a live table of an agent's points (from the broker)",
        **_epilog("canalflow edge watch --mqtt mqtt://127.0.0.1:1883 --district examples/demo-district.yaml "
                  "--gateway GW-B1",
                  "canalflow edge watch --mqtt mqtt://127.0.0.1:1883 --district examples/demo-district.yaml "
                  "--duration 10 --json"))
    add_mqtt_arguments(watch)
    watch.add_argument("--district", required=True, metavar="FILE", help="district file (its id names the topics)")
    watch.add_argument("--gateway", default="+", help="gateway id (default: all)")
    watch.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    watch.add_argument("--json", action="store_true", help="print each batch as a JSON line")
    watch.set_defaults(func=_guard(cmd_watch))


def cmd_watch(args: argparse.Namespace) -> int:
    from edge.watch import watch

    district = district_id_from_file(args.district)
    return watch(target_from_args(args), district, args.gateway, duration=args.duration, as_json=args.json)


# ---- commission ------------------------------------------------------------------------------

def _register_commission(actions: Any) -> None:
    com = actions.add_parser(
        "commission", help="read a meter; when it answers, add it to the edge config (validated)",
        **_epilog("canalflow edge commission --config edge.yaml --point V13-IN --unit 16 --profile em-pipe",
                  "canalflow edge commission --config edge.yaml --point L14-HEAD --unit 5 --profile radar-parshall "
                  "--rating '{\"type\": \"parshall\", \"throat_mm\": 610}'"))
    com.add_argument("--config", required=True, help="edge config YAML to add the point to")
    com.add_argument("--point", required=True, help="metering point id")
    com.add_argument("--unit", type=int, required=True)
    com.add_argument("--profile", required=True)
    com.add_argument("--rating", action="append", default=[], help="rating as JSON (level-only meters)")
    com.add_argument("--fast-s", type=float, default=60.0)
    com.add_argument("--slow-s", type=float, default=600.0)
    com.add_argument("--timeout", type=float, default=1.0)
    com.add_argument("--json", action="store_true")
    com.set_defaults(func=_guard(cmd_commission))


def cmd_commission(args: argparse.Namespace) -> int:
    from edge.commission import commission

    result = commission(args)
    if args.json:
        _print_json(result)
    else:
        print(f"{args.point}: unit {args.unit} answered as {args.profile}; added to {args.config}")
        for row in result["registers"]:
            if row["quantity"]:
                print(f"  {row['quantity']:16} {_fmt(row['value'])} {row['unit']}")
    return 0


# ---- buffer ----------------------------------------------------------------------------------

def _register_buffer(actions: Any) -> None:
    buf = actions.add_parser("buffer", help="inspect, export or replay the agent's store-and-forward buffer",
                             **_epilog("canalflow edge buffer status --buffer /var/lib/canalflow/edge.db",
                                       "canalflow edge buffer export --buffer edge.db > backlog.jsonl",
                                       "canalflow edge buffer replay --buffer edge.db --mqtt mqtt://127.0.0.1:1883 "
                                       "--district /etc/canalflow/district.yaml --gateway GW-B1"))
    sub = buf.add_subparsers(dest="buffer_command", metavar="ACTION", required=True)
    status = sub.add_parser("status", help="depth, age, drops and points waiting",
                            **_epilog("canalflow edge buffer status --buffer edge.db --json"))
    export = sub.add_parser("export", help="every waiting reading as JSON lines",
                            **_epilog("canalflow edge buffer export --buffer edge.db > backlog.jsonl"))
    replay = sub.add_parser("replay", help="publish the backlog now (agent stopped), marked historical",
                            **_epilog("canalflow edge buffer replay --buffer edge.db --mqtt mqtt://127.0.0.1:1883 "
                                      "--district /etc/canalflow/district.yaml --gateway GW-B1"))
    for p in (status, export, replay):
        p.add_argument("--buffer", required=True, help="the agent's SQLite buffer file")
        p.add_argument("--json", action="store_true")
    add_mqtt_arguments(replay)
    replay.add_argument("--district", required=True, metavar="FILE", help="district file (its id names the topics)")
    replay.add_argument("--gateway", required=True)
    replay.add_argument("--confirm", choices=("ingest", "broker"), default="ingest",
                        help="remove a reading once ingest confirms it stored (default), or on the broker's PUBACK")
    replay.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="seconds to wait for the broker, then for ingest's confirmations (default 30)")
    status.set_defaults(func=_guard(cmd_buffer_status))
    export.set_defaults(func=_guard(cmd_buffer_export))
    replay.set_defaults(func=_guard(cmd_buffer_replay))


def _open_buffer(path: str) -> Any:
    from edge.buffer import Buffer

    if not Path(path).exists():
        raise ToolError(f"{path}: no buffer file there; the agent's --buffer or buffer.path in its config names it")
    return Buffer(path)


def cmd_buffer_status(args: argparse.Namespace) -> int:
    buffer = _open_buffer(args.buffer)
    status = buffer.status()
    buffer.close()
    if args.json:
        _print_json(status)
        return 0
    for key, value in status.items():
        if key != "points":
            print(f"{key:14} {value}")
    if status["points"]:
        print(_table(sorted(status["points"].items()), ["point", "waiting"]))
    return 0


def cmd_buffer_export(args: argparse.Namespace) -> int:
    buffer = _open_buffer(args.buffer)
    count = 0
    for entry in buffer.export():
        print(json.dumps(entry, ensure_ascii=False))
        count += 1
    buffer.close()
    print(f"exported {count} readings", file=sys.stderr)
    return 0


def cmd_buffer_replay(args: argparse.Namespace) -> int:
    from edge.replay import replay_buffer

    sent = replay_buffer(args.buffer, target_from_args(args), district_id_from_file(args.district), args.gateway,
                         timeout_s=args.timeout, confirm=args.confirm)
    if args.json:
        _print_json({"replayed": sent})
    else:
        seen = "confirmed by ingest" if args.confirm == "ingest" else "acknowledged by the broker"
        print(f"replayed {sent} readings; rows {seen} removed from {args.buffer}")
    return 0


# ---- rating ----------------------------------------------------------------------------------

def _register_rating(actions: Any) -> None:
    rating = actions.add_parser("rating", help="the flow a measuring structure gives at a head",
                                **_epilog("canalflow edge rating parshall --throat-mm 610 --ha-m 0.35 --hb-m 0.2",
                                          "canalflow edge rating weir --width-m 1.0 --head-m 0.2",
                                          "canalflow edge rating curve --district examples/demo-district.yaml "
                                          "--point L11-HEAD --level-m 0.4"))
    sub = rating.add_subparsers(dest="rating_command", metavar="STRUCTURE", required=True)
    parshall = sub.add_parser("parshall", help="Parshall flume, USBR free-flow equation, submergence check",
                              **_epilog("canalflow edge rating parshall --throat-mm 610 --ha-m 0.35 --hb-m 0.2"))
    parshall.add_argument("--throat-mm", type=float, required=True)
    parshall.add_argument("--ha-m", type=float, required=True, help="upstream head Ha, m")
    parshall.add_argument("--hb-m", type=float, help="throat (downstream) head Hb, m")
    weir = sub.add_parser("weir", help="rectangular sharp-crested weir",
                          **_epilog("canalflow edge rating weir --width-m 1.0 --head-m 0.2 --cd 0.62"))
    weir.add_argument("--width-m", type=float, required=True)
    weir.add_argument("--head-m", type=float, required=True)
    weir.add_argument("--cd", type=float, default=0.6)
    weir.add_argument("--tailwater-m", type=float, help="downstream level over the crest, m")
    curve = sub.add_parser("curve", help="a point's rating from the district file (or a, h0, b)",
                           **_epilog("canalflow edge rating curve --district examples/demo-district.yaml "
                                     "--point B2-TAIL --level-m 0.3",
                                     "canalflow edge rating curve --a 2.1 --h0 0.05 --b 1.6 --level-m 0.4"))
    curve.add_argument("--district")
    curve.add_argument("--point")
    curve.add_argument("--a", type=float)
    curve.add_argument("--h0", type=float, default=0.0)
    curve.add_argument("--b", type=float)
    curve.add_argument("--level-m", type=float, required=True)
    curve.add_argument("--downstream-m", type=float)
    for p in (parshall, weir, curve):
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=_guard(cmd_rating))


def rating_for(args: argparse.Namespace) -> tuple[Any, float, float | None]:
    from canalflow import ratings as rt

    kind = args.rating_command
    if kind == "parshall":
        return rt.parse_rating({"type": "parshall", "throat_mm": args.throat_mm}), args.ha_m, args.hb_m
    if kind == "weir":
        rating = rt.parse_rating({"type": "weir", "width_m": args.width_m, "cd": args.cd})
        return rating, args.head_m, args.tailwater_m
    if args.point:
        return _point_rating(args), args.level_m, args.downstream_m
    if args.a is None or args.b is None:
        raise ToolError("give --district and --point, or the curve's --a and --b (and --h0)")
    seg = {"from_m": args.h0, "to_m": max(args.h0 + 100.0, args.level_m + 1), "a": args.a, "h0": args.h0, "b": args.b}
    return rt.parse_rating({"type": "curve", "segments": [seg]}), args.level_m, args.downstream_m


def _point_rating(args: argparse.Namespace) -> Any:
    import datetime as dt

    from canalflow import ratings as rt
    from canalflow.district import load_district
    from edge.config import edge_rating

    if not args.district:
        raise ToolError("--point needs --district FILE")
    district = load_district(args.district)
    if args.point not in district.points:
        raise ToolError(f"{args.district}: no point {args.point!r}")
    specs = district.points[args.point].ratings
    if not specs:
        raise ToolError(f"{args.district}: point {args.point} has no ratings: (it is not a level-only meter)")
    return rt.rating_at([edge_rating(s) for s in specs], dt.date.today())


def cmd_rating(args: argparse.Namespace) -> int:
    from canalflow import ratings as rt

    rating, head, downstream = rating_for(args)
    result = rt.flow(rating, head, downstream)
    data = {"structure": args.rating_command, "method": result.method, "head_m": head,
            "downstream_m": downstream, "flow_m3s": result.flow_m3s, "flow_ls": result.flow_m3s * 1000,
            "regime": "submerged" if result.submerged else "free", "extrapolated": result.extrapolated}
    if getattr(rating, "type", "") == "parshall" and downstream is not None and head > 0:
        data["submergence"] = round(downstream / head, 3)
        data["submergence_limit"] = rt.submergence_limit(rating.throat_width_m)
    if args.json:
        _print_json(data)
        return 0
    print(f"{result.method}: head {head:g} m -> Q = {result.flow_m3s:.5f} m3/s ({result.flow_m3s * 1000:.2f} L/s), "
          f"{data['regime']} flow")
    if "submergence" in data:
        print(f"submergence Hb/Ha = {data['submergence']} (limit {data['submergence_limit']})"
              + ("; the free-flow value over-reads" if result.submerged else ""))
    if result.extrapolated:
        print("warning: the level is outside the calibrated stages of the curve")
    return 0
