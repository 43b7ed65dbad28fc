"""``canalflow edge commission``: read a meter through the gateway, then add it to the edge config.

The meter must answer with its profile's signature and every register must decode; the new
config is validated (loaded, district and all) before it replaces the old file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

import yaml

from canalflow.yamlines import load_yaml_data
from edge.config import ConfigError, load_edge_config
from edge.modbus import ModbusError, ModbusExceptionResponse, ModbusLink
from edge.tools import ToolError, read_meter


def commission(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.config)
    config = load_edge_config(path)
    if args.profile not in config.profiles:
        raise ToolError(f"unknown profile {args.profile!r} (known: {', '.join(sorted(config.profiles))})")
    if args.point in config.point_ids:
        raise ToolError(f"{path}: point {args.point} is already polled by gateway {config.gateway}; "
                        "edit its entry under points: instead")
    profile = config.profiles[args.profile]
    ep = config.endpoint
    link = ModbusLink(ep.target(), baud=ep.baud, parity=ep.parity, stopbits=ep.stopbits)
    try:
        signature = asyncio.run(_read_signature(link, args.unit, profile, args.timeout))
    except ModbusExceptionResponse as exc:
        raise ToolError(f"unit {args.unit} on {ep.target()} refused the {profile.name} signature read ({exc.name}): "
                        "it is probably another model; run `canalflow edge scan` to identify it") from exc
    except ModbusError as exc:
        raise ToolError(f"{args.point} (unit {args.unit} on {ep.target()}): {exc}") from exc
    if signature != list(profile.signature.words):
        raise ToolError(f"unit {args.unit} does not carry the {profile.name} signature at register "
                        f"{profile.signature.register} (got {signature}); run `canalflow edge scan` to identify it")
    try:
        rows = asyncio.run(read_meter(link, args.unit, profile, args.timeout))
    except ModbusError as exc:
        raise ToolError(f"{args.point} (unit {args.unit} on {ep.target()}): {exc}") from exc
    entry = {"id": args.point, "unit_id": args.unit, "profile": args.profile, "fast_s": args.fast_s,
             "slow_s": args.slow_s}
    if args.rating:
        entry["ratings"] = [json.loads(r) for r in args.rating]
    _add_point(path, entry)
    return {"point": args.point, "unit": args.unit, "profile": profile.name, "config": str(path), "registers": rows}


async def _read_signature(link: ModbusLink, unit: int, profile: Any, timeout: float) -> list[int]:
    try:
        return await link.read_registers(unit, profile.signature_address, len(profile.signature.words),
                                         function=profile.function_code, timeout_s=timeout)
    finally:
        await link.close()


def _add_point(path: Path, entry: dict[str, Any]) -> None:
    data = load_yaml_data(path) or {}
    data.setdefault("points", []).append(entry)
    candidate = path.with_name(f".{path.name}.new")
    candidate.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    try:
        load_edge_config(candidate)
    except ConfigError as exc:
        candidate.unlink()
        raise ToolError(f"the new point would make {path} invalid, nothing written:\n{exc}") from exc
    os.replace(candidate, path)
