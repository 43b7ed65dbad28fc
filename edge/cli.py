"""``canalflow edge ...``: the agent (``run``) and the field technician's tools.

Every action has ``--help`` with an example, ``--json`` where it prints data, and exits non-zero
on error with a message naming the device, register or file and what to try.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from edge import tools
from edge.config import ConfigError
from edge.telemetry import cli as telemetry_cli

RUN_EXAMPLE = """examples:
  # poll gateway GW-B1 of the district, endpoints and clock from a running fleet simulator
  canalflow edge run --district examples/demo-district.yaml --gateway GW-B1 \\
      --mqtt mqtt://127.0.0.1:1883 --endpoints out/fleet.json --clock-from out/fleet.json
  # on a field gateway, with its edge config (see docs/edge.md); --check validates and exits
  canalflow edge run --config /etc/canalflow/edge.yaml
  canalflow edge run --config /etc/canalflow/edge.yaml --check

Stops cleanly on SIGTERM / Ctrl-C: unsent readings stay in the buffer for the next start."""


EDGE_EXAMPLE = """examples:
  canalflow edge run --config /etc/canalflow/edge.yaml
  canalflow edge scan --host 192.168.1.20:502 --units 1-30
  canalflow edge probe --words 0x806B,0x4212
  canalflow edge rating parshall --throat-mm 610 --ha-m 0.35
  canalflow edge decode --protocol sl651 7e7e011090330853a0002f000802009f26020209410003bde3

Each action has its own --help with examples."""


def _formatter() -> dict[str, Any]:
    return {"formatter_class": argparse.RawDescriptionHelpFormatter}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("edge", help="edge agent and field-technician tools",
                                   description="The edge agent and the technician CLI (docs/edge.md).",
                                   epilog=EDGE_EXAMPLE, **_formatter())
    actions = parser.add_subparsers(dest="edge_command", metavar="ACTION", required=True)
    run = actions.add_parser("run", help="run the agent for one gateway", epilog=RUN_EXAMPLE, **_formatter())
    source = run.add_argument_group("what to poll (--config, or --district with --gateway)")
    source.add_argument("--config", help="edge config YAML (docs/edge.md)")
    source.add_argument("--district", help="district file")
    source.add_argument("--gateway", help="gateway id in the district file")
    broker = run.add_argument_group("MQTT broker (each overrides the config)")
    broker.add_argument("--mqtt", metavar="URL", help="mqtt://host:port, or mqtts://host:port for TLS")
    broker.add_argument("--mqtt-username", metavar="USER", help="broker user (or $CANALFLOW_MQTT_USERNAME)")
    broker.add_argument("--mqtt-password-file", metavar="FILE", help="first line is the password "
                        "(or $CANALFLOW_MQTT_PASSWORD)")
    broker.add_argument("--mqtt-cafile", metavar="PEM", help="CA that signed the broker's certificate")
    broker.add_argument("--mqtt-certfile", metavar="PEM", help="client certificate (mqtts)")
    broker.add_argument("--mqtt-keyfile", metavar="PEM", help="client key (mqtts)")
    run.add_argument("--endpoints", metavar="MANIFEST", help="fleet manifest JSON: gateway host/port overrides")
    run.add_argument("--clock-from", metavar="MANIFEST", help="follow the simulated clock of a fleet manifest")
    run.add_argument("--manifest-wait", type=float, default=30.0, metavar="S",
                     help="wait up to S seconds for the --endpoints/--clock-from manifest to be fresh, with its "
                          "gateways answering (`canalflow fleet ready`), then fail saying why (default 30)")
    run.add_argument("--buffer", help="SQLite buffer file (default: from config, else edge-<district>-<gw>.db)")
    run.add_argument("--status-interval", type=float, help="seconds between status messages")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on 127.0.0.1:PORT")
    run.add_argument("--replay-rate", type=float, help="backlog readings per second after a reconnect")
    run.add_argument("--confirm", choices=("ingest", "broker"),
                     help="delete a buffered reading once ingest confirms it stored (the default), or already on "
                          "the broker's PUBACK (when no canalflow ingest answers, e.g. another consumer)")
    run.add_argument("--confirm-timeout", type=float, metavar="S",
                     help="least wait for ingest's confirmation before publishing again (default 5)")
    run.add_argument("--check", action="store_true", help="validate the configuration and exit")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=run_agent)
    tools.register(actions)
    telemetry_cli.register(actions)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def build_config(args: argparse.Namespace) -> Any:
    from edge.config import edge_config_from_district, load_edge_config, refuse_station_fed

    if args.config:
        config = load_edge_config(args.config, manifest=args.endpoints)
    elif args.district and args.gateway:
        config = edge_config_from_district(args.district, args.gateway, manifest=args.endpoints)
    else:
        raise ConfigError("give --config FILE, or --district FILE with --gateway ID")
    refuse_station_fed(config)
    if not config.points:
        raise ConfigError(f"{config.source}: gateway {config.gateway} has no points to poll: add them under points: "
                          "(`canalflow edge commission` does)")
    overrides = {"url": args.mqtt, "username": args.mqtt_username, "password_file": args.mqtt_password_file,
                 "cafile": args.mqtt_cafile, "certfile": args.mqtt_certfile, "keyfile": args.mqtt_keyfile}
    config.mqtt = config.mqtt.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    config.mqtt.target()  # fail now, naming the problem, rather than in the agent
    if args.status_interval:
        config.publish = config.publish.model_copy(update={"status_interval_s": args.status_interval})
    publish = {"replay_rate": args.replay_rate, "confirm": args.confirm, "confirm_timeout_s": args.confirm_timeout}
    config.publish = config.publish.model_copy(update={k: v for k, v in publish.items() if v})
    return config


def run_agent(args: argparse.Namespace) -> int:
    from canalflow.clock import SimClock
    from edge.agent import EdgeAgent
    from edge.buffer import check_writable
    from edge.config import clock_from_manifest

    _setup_logging(args.verbose)
    if not args.check:
        _await_manifests(args)
    config = build_config(args)
    clock = clock_from_manifest(args.clock_from) if args.clock_from else SimClock.real()
    if args.check:
        check_writable(config.buffer_file(args.buffer))
        print(f"OK: gateway {config.gateway} of district {config.district_id}: {len(config.points)} meters on "
              f"{config.endpoint.target()}, buffer {config.buffer_file(args.buffer)}")
        for plan in config.points:
            print(f"  {plan.point:12} unit {plan.unit:3}  {plan.profile.name:15} every {plan.fast_s:g} s "
                  f"(slow {plan.slow_s:g} s)")
        return 0
    agent = EdgeAgent(None, config=config, clock=clock, buffer_path=args.buffer,
                      metrics_port=args.metrics_port)
    agent.reloader = lambda: build_config(args)
    return asyncio.run(_run_until_signal(agent))


def _await_manifests(args: argparse.Namespace) -> None:
    """Read a fleet manifest only once `canalflow fleet ready` would say yes: never a stale one
    (old ports, old clock) left on a volume, nor half a file."""
    from canalflow.manifest import ManifestNotReady, readiness, wait_ready

    for path in dict.fromkeys(p for p in (args.endpoints, args.clock_from) if p):
        state = readiness(path)
        if not state.ready:
            logging.getLogger("canalflow.edge").info("waiting up to %g s: %s", args.manifest_wait, state.reason)
            try:
                wait_ready(path, args.manifest_wait)
            except ManifestNotReady as exc:
                raise ManifestNotReady(str(exc), hint=f"start `canalflow fleet run --manifest {path}` first (in "
                                       "compose: the fleet service), or wait longer with --manifest-wait S") from None


async def _run_until_signal(agent: Any) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    try:
        await agent.run()  # BufferBusy (another agent holds the buffer) reaches canalflow.cli's handler
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return 0
