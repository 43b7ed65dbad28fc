"""``canalflow edge decode``: a technician's view of one SL 651 or SZY 206 frame."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DECODE_EXAMPLE = """examples:
  # the SL 651 keep-alive of station 1090330853 (CRC BDE3)
  canalflow edge decode --protocol sl651 7e7e011090330853a0002f000802009f26020209410003bde3
  # an SZY 206 self-report of flow and volume, as JSON
  canalflow edge decode --protocol szy206 --json 681A68B35303810D00C00059000000826110000001106000004508090A3516

Spaces between bytes are allowed (quote the frame). Exit 1 when the frame is rejected: the message
names the reason (bad_crc, truncated, ...), the byte offset and which check was computed."""

RECEIVE_EXAMPLE = """examples:
  # the telemetry centre for the stations whose points name gateway RX-1 (docs/stations.md)
  canalflow edge receive --district examples/demo-district.yaml --gateway RX-1 \\
      --listen 0.0.0.0:5651 --mqtt mqtt://127.0.0.1:1883
  # validate the stations and exit
  canalflow edge receive --district my-district.yaml --gateway RX-1 --check

Stations of both protocols may dial the same port (the first byte tells SL 651 from SZY 206).
Stops cleanly on SIGTERM / Ctrl-C: unsent readings stay in the buffer for the next start."""


def register(actions: Any) -> None:
    parser = actions.add_parser("decode", help="explain one telemetry frame field by field (SL 651, SZY 206)",
                                description="Decode one SL 651-2014 HEX/BCD frame or SZY 206 frame, check its "
                                "CRC/CS and list its fields and elements (docs/stations.md).",
                                epilog=DECODE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", required=True, choices=("sl651", "szy206"))
    parser.add_argument("frame", nargs="+", metavar="HEX", help="the frame as hex digits")
    parser.add_argument("--json", action="store_true", help="JSON: function, station, serial, sent, observed, "
                        "elements, check, fields")
    parser.set_defaults(func=decode_command)
    _register_receive(actions)
    _register_stations(actions)
    _register_simstations(actions)


def _register_receive(actions: Any) -> None:
    from edge.telemetry.receiver import Limits

    parser = actions.add_parser("receive", help="telemetry centre: SL 651 / SZY 206 stations dial in over TCP",
                                description="Listen for stations, buffer and publish their readings like an edge "
                                "agent (docs/stations.md).", epilog=RECEIVE_EXAMPLE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--district", required=True, help="district file with a stations: section")
    parser.add_argument("--gateway", required=True, help="the gateway the stations' points name (e.g. RX-1)")
    parser.add_argument("--listen", default="0.0.0.0:5651", metavar="HOST:PORT", help="where stations connect "
                        "(default 0.0.0.0:5651)")
    parser.add_argument("--mqtt", metavar="URL", help="mqtt://host:port (default mqtt://127.0.0.1:1883)")
    parser.add_argument("--buffer", help="SQLite buffer file (default edge-<district>-<gateway>.db)")
    parser.add_argument("--deadletter", metavar="FILE", help="rejected frames, JSON lines (default: next to the "
                        "buffer)")
    parser.add_argument("--confirm", choices=("ingest", "broker"), help="as for edge run (default ingest)")
    parser.add_argument("--max-connections", type=int, default=Limits.max_connections)
    parser.add_argument("--idle-s", type=float, default=Limits.idle_s, help="close a station silent this long")
    parser.add_argument("--clock-from", metavar="MANIFEST", help="follow the simulated clock of a fleet manifest")
    parser.add_argument("--clock-query", action="store_true", help="ask each SL 651 station for its clock (51) "
                        "once per connection; one off by more than its max_clock_skew_s counts clock_skew")
    parser.add_argument("--set-clock", action="store_true", help="with --clock-query: set such a clock to the "
                        "receiver's (4A)")
    parser.add_argument("--check", action="store_true", help="validate the stations and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.set_defaults(func=receive_command)


def receive_command(args: argparse.Namespace) -> int:
    import asyncio

    from canalflow.district import DistrictError, load_district
    from canalflow.yamlines import YamlSyntaxError
    from edge.cli import _run_until_signal, _setup_logging
    from edge.config import ConfigError, clock_from_manifest
    from edge.telemetry.receiver import Limits, StationReceiver

    _setup_logging(args.verbose)
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"canalflow edge receive: --listen {args.listen!r}: write HOST:PORT, e.g. 0.0.0.0:5651",
              file=sys.stderr)
        return 1
    limits = Limits(max_connections=args.max_connections, idle_s=args.idle_s,
                    clock_query=args.clock_query or args.set_clock, set_clock=args.set_clock)
    try:
        district = load_district(args.district)
        clock = clock_from_manifest(args.clock_from) if args.clock_from else None
        receiver = StationReceiver(district, args.gateway, listen=(host, int(port)), limits=limits,
                                   mqtt_url=args.mqtt, buffer_path=args.buffer, deadletter_path=args.deadletter,
                                   clock=clock)
    except (ConfigError, DistrictError, YamlSyntaxError) as exc:
        print(f"canalflow edge receive: {exc}", file=sys.stderr)
        return 1
    if args.confirm:
        receiver.config.publish.confirm = args.confirm
    if args.check:
        print(f"OK: gateway {receiver.gateway} of district {receiver.district_id}: {len(receiver.stations)} stations")
        for station in receiver.stations.values():
            print(f"  {station.id:12} {station.protocol:6} {station.address}  -> {station.point:12} "
                  + ", ".join(f"{q}={e}" for q, e in station.elements.items()))
        return 0
    return asyncio.run(_run_until_signal(receiver))


def decode_command(args: argparse.Namespace) -> int:
    from edge.telemetry.errors import FrameError
    from edge.telemetry.explain import check_of, explain, parse_hex, render, render_error

    try:
        raw = parse_hex(" ".join(args.frame))
    except ValueError as exc:
        print(f"canalflow edge decode: {exc}", file=sys.stderr)
        return 1
    try:
        result = explain(args.protocol, raw)
    except FrameError as exc:
        if args.json:
            print(json.dumps({"error": {"reason": exc.reason, "offset": exc.offset, "message": exc.detail},
                              "check": check_of(args.protocol, raw)}, ensure_ascii=False, indent=2))
        else:
            print(f"canalflow edge decode: {render_error(args.protocol, raw, exc)}", file=sys.stderr)
        return 1
    print(json.dumps(result, ensure_ascii=False, indent=2) if args.json else render(result))
    return 0


STATIONS_EXAMPLE = """examples:
  canalflow edge stations --mqtt mqtt://127.0.0.1:1883 --district examples/demo-district.yaml --gateway RX-1
  canalflow edge stations --mqtt mqtts://broker:8883 --district examples/demo-district.yaml --gateway RX-1 --json

Reads the receiver's retained status message (published every status interval, 10 s by default)."""


def _register_stations(actions: Any) -> None:
    from canalflow.mqtt import add_mqtt_arguments

    parser = actions.add_parser("stations", help="the stations a receiver holds: connected, last frame, errors",
                                description="List the telemetry stations of a running `canalflow edge receive`, "
                                "from its retained status message on the broker.", epilog=STATIONS_EXAMPLE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mqtt_arguments(parser)
    parser.add_argument("--district", required=True, metavar="FILE", help="district file (its id names the topics)")
    parser.add_argument("--gateway", required=True, help="the receiver's gateway id")
    parser.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the status (default 5)")
    parser.add_argument("--json", action="store_true", help="the status's station entries as JSON")
    parser.set_defaults(func=stations_command)


def stations_command(args: argparse.Namespace) -> int:
    from canalflow.cliopts import district_id_from_file
    from canalflow.contract import status_topic
    from canalflow.mqtt import MqttConnectError, target_from_args

    topic = status_topic(district_id_from_file(args.district), args.gateway)
    try:
        status = _retained(target_from_args(args), topic, args.wait)
    except MqttConnectError as exc:
        print(f"canalflow edge stations: {exc}", file=sys.stderr)
        return 1
    if status is None:
        print(f"canalflow edge stations: no status on {topic} within {args.wait:g} s: is `canalflow edge receive "
              f"--gateway {args.gateway}` running and connected to this broker?", file=sys.stderr)
        return 1
    stations = {name: entry for name, entry in status.health.items() if "protocol" in entry}
    if not stations:
        print(f"canalflow edge stations: {args.gateway} reports no stations: is it a receiver, not a Modbus agent?",
              file=sys.stderr)
        return 1
    summary = status.health.get("_receiver", {})
    if args.json:
        print(json.dumps({"state": status.state, "ts": status.ts, "receiver": summary, "stations": stations},
                         indent=2))
    else:
        print(_stations_table(status.state, stations, summary))
    return 0


def _retained(target: Any, topic: str, wait: float) -> Any:
    import threading
    import uuid

    from canalflow.contract import GatewayStatus
    from canalflow.mqtt import connect_blocking, make_client

    got: list[Any] = []
    done = threading.Event()
    client = make_client(target, f"canalflow-stations-{uuid.uuid4().hex[:8]}", clean_session=True)
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        try:
            got.append(GatewayStatus.model_validate_json(message.payload))
            done.set()
        except ValueError:
            pass

    client.on_message = on_message
    connect_blocking(client, target, timeout=10)
    try:
        done.wait(wait)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[-1] if got else None


def _stations_table(state: str, stations: dict[str, dict[str, Any]], summary: dict[str, Any]) -> str:
    import datetime as dt

    header = ["station", "protocol", "point", "connected", "peer", "frames", "readings", "last frame (UTC)",
              "last function", "clock", "errors"]
    rows = []
    for name, entry in sorted(stations.items()):
        last = entry.get("last_frame_ms")
        stamp = dt.datetime.fromtimestamp(last / 1000, dt.UTC).strftime("%m-%d %H:%M:%S") if last else "-"
        errors = ", ".join(f"{key.removeprefix('error_')} {n}" for key, n in sorted(entry.items())
                           if key.startswith("error_")) or "-"
        offset = entry.get("clock_offset_s")  # from a clock query's answer (edge receive --clock-query)
        rows.append([name, entry.get("protocol"), entry.get("point"), "yes" if entry.get("connected") else "no",
                     entry.get("peer") or "-", entry.get("frames"), entry.get("readings"), stamp,
                     entry.get("last_function") or "-", "-" if offset is None else f"{offset:+.0f} s", errors])
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [f"receiver {state}: {summary.get('stations', len(rows))} stations, {summary.get('connected', '?')} "
             f"connected, {summary.get('unattributed_errors', 0)} rejects of no known station"
             + (f" (listing {len(rows)}, most errors first)" if summary.get("stations", 0) > len(rows) else "")]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


SIMSTATIONS_EXAMPLE = """examples:
  # the stations of gateway RX-1 report the hydraulic truth to a receiver, on a fleet's simulated clock
  canalflow edge simstations --district examples/demo-district.yaml --gateway RX-1 \\
      --connect 127.0.0.1:5651 --clock-from out/fleet.json --faults bad_crc=0.05,duplicate=0.02,drop=0.01
  # real time, reports every minute, for ten minutes
  canalflow edge simstations --district my.yaml --gateway RX-1 --connect 127.0.0.1:5651 \\
      --interval-s 60 --duration 600
  # three hours without a link: the hourly reports due meanwhile arrive as a backlog afterwards
  canalflow edge simstations --district my.yaml --gateway RX-1 --connect 127.0.0.1:5651 \\
      --interval-s 3600 --outage 2026-05-01T10:00/2026-05-01T13:00

Faults (shares of reports, or seconds): bad_crc, duplicate, drop, clock_skew_s."""


def _register_simstations(actions: Any) -> None:
    parser = actions.add_parser("simstations", help="simulated SL 651 / SZY 206 stations that dial a receiver",
                                description="Run the stations of a gateway as simulated RTUs reporting the "
                                "hydraulic truth (firmware_sim) to a receiver, with faults (docs/stations.md).",
                                epilog=SIMSTATIONS_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--district", type=Path, required=True, help="district file with a stations: section")
    parser.add_argument("--scenario", type=Path, help="scenario YAML file (as for firmware_sim run)")
    parser.add_argument("--gateway", required=True, help="the receiver's gateway id")
    parser.add_argument("--connect", required=True, metavar="HOST:PORT", help="the receiver")
    parser.add_argument("--clock-from", metavar="MANIFEST", help="follow the simulated clock of a fleet manifest")
    parser.add_argument("--interval-s", type=float, default=300.0, help="simulated seconds between reports")
    parser.add_argument("--keepalive-s", type=float, default=40.0, help="simulated seconds between keep-alives")
    parser.add_argument("--faults", default="", metavar="NAME=VALUE,...", help="bad_crc, duplicate, drop "
                        "(shares), clock_skew_s (seconds)")
    parser.add_argument("--outage", action="append", default=[], metavar="FROM/TO", help="no link from FROM to "
                        "TO (ISO times, the district's zone unless they give one); the reports due meanwhile are "
                        "sent as a backlog when it ends. Repeatable")
    parser.add_argument("--duration", type=float, help="stop after this many wall seconds (default: SIGTERM)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=simstations_command)


def parse_outage(text: str, zone: Any) -> tuple[int, int]:
    """``FROM/TO`` (ISO times, naive ones in ``zone``) as the (from, to) sim ms of ``Faults.outages``."""
    import datetime as dt

    first, sep, last = text.partition("/")
    try:
        if not sep:
            raise ValueError
        start, end = (dt.datetime.fromisoformat(part.strip()) for part in (first, last))
    except ValueError:
        raise ValueError(f"--outage {text!r}: write FROM/TO as ISO times, e.g. 2026-05-01T10:00/2026-05-01T13:00") \
            from None
    start_ms, end_ms = (int((t if t.tzinfo else t.replace(tzinfo=zone)).timestamp() * 1000) for t in (start, end))
    if end_ms <= start_ms:
        raise ValueError(f"--outage {text!r}: TO must come after FROM")
    return start_ms, end_ms


def parse_faults(text: str) -> Any:
    from edge.telemetry.simstation import Faults

    names = {"bad_crc", "duplicate", "drop", "clock_skew_s"}
    values: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        try:
            if name not in names:
                raise ValueError
            values[name] = float(value)
        except ValueError:
            raise ValueError(f"--faults {item!r}: write NAME=NUMBER with NAME one of {', '.join(sorted(names))}") \
                from None
    return Faults(**values)


def simstations_command(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses

    from canalflow.clock import SimClock
    from edge.config import ConfigError, clock_from_manifest
    from firmware_sim.cli import _load

    host, _, port = args.connect.rpartition(":")
    try:
        if not host or not port.isdigit():
            raise ValueError(f"--connect {args.connect!r}: write HOST:PORT, e.g. 127.0.0.1:5651")
        faults = parse_faults(args.faults)
        clock = clock_from_manifest(args.clock_from) if args.clock_from else SimClock.real()
    except (ValueError, ConfigError) as exc:
        print(f"canalflow edge simstations: {exc}", file=sys.stderr)
        return 1
    loaded = _load(args)
    if loaded is None:
        return 1
    district, scenario = loaded
    try:
        outages = tuple(parse_outage(text, district.tz) for text in args.outage)
    except ValueError as exc:
        print(f"canalflow edge simstations: {exc}", file=sys.stderr)
        return 1
    if outages:
        faults = dataclasses.replace(faults, outages=outages)
    stations = [s for s in district.spec.stations if district.points[s.point].gateway == args.gateway]
    if not stations:
        print(f"canalflow edge simstations: {args.district}: no station feeds a point of gateway {args.gateway}",
              file=sys.stderr)
        return 1
    return asyncio.run(_simulate(district, scenario, stations, host, int(port), clock, faults, args))


async def _simulate(district: Any, scenario: Any, stations: list[Any], host: str, port: int, clock: Any,
                    faults: Any, args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import signal
    from zoneinfo import ZoneInfo

    from edge.telemetry.simstation import SimStation, truth_values
    from firmware_sim.truth import Truth

    truth = Truth(district, scenario, args.seed)
    sims = [SimStation(st, truth_values(truth, st.point), host=host, port=port, clock=clock,
                       zone=ZoneInfo(st.timezone) if st.timezone else district.tz, interval_s=args.interval_s,
                       keepalive_s=args.keepalive_s, faults=faults, seed=args.seed + i)
            for i, st in enumerate(stations)]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: [sim.stop() for sim in sims])
    if args.duration:
        loop.call_later(args.duration, lambda: [sim.stop() for sim in sims])
    print(f"{len(sims)} stations of {args.gateway} dialling {host}:{port}", file=sys.stderr, flush=True)
    await asyncio.gather(*(sim.run() for sim in sims))
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sig)
    for sim in sims:
        print(f"{sim.station.id:12} {sim.station.protocol:6} sent {sim.sent:5}  delivered {sim.answered:5}  "
              f"unsent {len(sim.queue):4}  connects {sim.connects}")
    return 0

