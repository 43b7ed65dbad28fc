"""The fleet: every gateway of a district served over Modbus, each meter at its unit id.

Registers are computed on read: pymodbus 3.16's v4-style ``SimDevice`` calls an ``action`` on
every request with the device's register list, which we fill from the meter at the simulated
instant of the read (``clock.now_ms()``). The action also returns Modbus exception codes, delays
slow devices, and raises ``NoSuchIdException`` (with ``ignore_missing_devices``) so an offline
meter does not answer at all. See docs/fleet.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.simulator import DataType, SimData, SimDevice

from canalflow.clock import SimClock
from canalflow.district import District, Gateway
from canalflow.manifest import write_manifest
from firmware_sim.handler import AbsentUnits, TcpServer
from firmware_sim.meters import Meter, Response
from firmware_sim.scenario import Fault, Scenario
from firmware_sim.truth import Truth

log = logging.getLogger("canalflow.fleet")
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # it logs every exception response as an error


@dataclass
class Stats:
    reads: int = 0
    exceptions: int = 0
    silent: int = 0


@dataclass
class Endpoint:
    """Where a gateway is served. ``port`` for tcp/rtu_over_tcp; ``path`` (the pty) for rtu."""

    gateway: str
    transport: str
    host: str | None = None
    port: int | None = None
    path: str | None = None
    baud: int | None = None
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    units: dict[int, str] = field(default_factory=dict)

    def as_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"transport": self.transport}
        if self.transport == "rtu":
            out |= {"path": self.path, "baud": self.baud, "parity": self.parity, "stopbits": self.stopbits,
                    "bytesize": self.bytesize}
        else:
            out |= {"host": self.host, "port": self.port}
        out["units"] = {str(u): p for u, p in sorted(self.units.items())}
        return out


class DeviceHandler:
    """Binds one meter to pymodbus: fills the register list on each read from the sim clock."""

    def __init__(self, meter: Meter, clock: SimClock, stats: Stats) -> None:
        self.meter = meter
        self.clock = clock
        self.stats = stats

    async def action(
        self, function_code: int, start: int, address: int, count: int, registers: list[int], values: Any
    ) -> ExcCodes | None:
        if values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # meters in this fleet are read-only
        response = self.meter.respond(function_code, address, count, self.clock.now_ms())
        return await apply_response(response, start, address, registers, self.stats)


async def apply_response(response: Response, start: int, address: int, registers: list[int], stats: Stats) -> ExcCodes | None:
    stats.reads += 1
    if response.silent:
        stats.silent += 1
        raise NoSuchIdException("meter is offline")  # with ignore_missing_devices: no answer at all
    if response.delay_s:
        await asyncio.sleep(response.delay_s)
    if response.exception is not None:
        stats.exceptions += 1
        return ExcCodes(response.exception)
    words = response.words or []
    registers[address - start : address - start + len(words)] = words
    return None


def _utc(t_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC)


async def _no_such_unit(*_: Any) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


def sim_device(unit_id: int, handler: DeviceHandler) -> SimDevice:
    """A SimDevice whose whole address range (0..last register) is handed to the meter."""
    size = handler.meter.last_address + 1
    return SimDevice(
        id=unit_id,
        simdata=[SimData(address=0, count=size, datatype=DataType.REGISTERS)],
        action=handler.action,
    )


def gateway_not_answering_device() -> SimDevice:
    """Unit id 0 makes pymodbus hand requests for any unit id to the handler, which answers the ids
    with no meter itself (see ``TcpServer``)."""
    return SimDevice(id=0, simdata=[SimData(address=0, count=1, datatype=DataType.REGISTERS)], action=_no_such_unit)


class Fleet:
    """Serve every gateway of ``district``; ``await start()``, read ``endpoints``, ``await stop()``."""

    def __init__(
        self,
        district: District,
        *,
        scenario: Scenario | None = None,
        seed: int = 0,
        clock: SimClock,
        host: str = "127.0.0.1",
        use_district_ports: bool = False,
        truth: Truth | None = None,
        gateways: list[str] | None = None,
        absent_units: AbsentUnits = "0x0B",
    ) -> None:
        self.district = district
        self.absent_units = absent_units  # what a TCP gateway answers for a unit id with no meter
        self.scenario = scenario or Scenario.default()
        self.seed = seed
        self.clock = clock
        self.host = host
        self.use_district_ports = use_district_ports
        self.truth = truth or Truth(district, self.scenario, seed)
        self.stats = Stats()
        self.meters = {
            p.id: Meter(p, district.profile_of(p.id), self.truth, seed=seed, faults=self.scenario.faults_of(p.id))
            for p in district.spec.points
        }
        chosen = gateways or list(district.gateways)
        unknown = [g for g in chosen if g not in district.gateways]
        if unknown:
            raise ValueError(f"unknown gateway(s) {unknown}; the district has {list(district.gateways)}")
        self.gateway_ids = chosen
        self.endpoints: dict[str, Endpoint] = {}
        self._servers: list[Any] = []
        self._closers: list[Any] = []

    async def start(self) -> None:
        try:
            for gateway_id in self.gateway_ids:
                gateway = self.district.gateways[gateway_id]
                self.endpoints[gateway_id] = await self._serve(gateway)
        except BaseException:
            await self.stop()  # do not leave half the gateways listening
            raise

    def devices_of(self, gateway_id: str) -> list[SimDevice]:
        devices = [
            sim_device(p.unit_id, DeviceHandler(self.meters[p.id], self.clock, self.stats))
            for p in self.district.points_of_gateway(gateway_id)
        ]
        return devices

    def inject_fault(self, point_id: str, fault_type: str, start_ms: int, end_ms: int, **params: Any) -> Fault:
        """Add a fault to a meter while the fleet runs (tests that need no scenario file), e.g.
        ``fleet.inject_fault("V01-IN", "offline", now, now + 600_000)``; params as in scenario faults."""
        if point_id not in self.meters:
            raise KeyError(f"unknown metering point {point_id!r}")
        fault = Fault.model_validate({"point": point_id, "type": fault_type, "start": _utc(start_ms),
                                      "end": _utc(end_ms), **params})
        meter = self.meters[point_id]
        meter.set_faults([*meter.faults, fault])
        return fault

    def units_of(self, gateway_id: str) -> dict[int, str]:
        return {p.unit_id: p.id for p in self.district.points_of_gateway(gateway_id)}

    async def _serve(self, gateway: Gateway) -> Endpoint:
        devices = self.devices_of(gateway.id)
        if gateway.transport == "rtu":
            from firmware_sim.rtu import serve_rtu_pty

            endpoint, closer = await serve_rtu_pty(gateway, devices, self)
            self._closers.append(closer)
            return endpoint
        framer = FramerType.SOCKET if gateway.transport == "tcp" else FramerType.RTU
        port = gateway.port if self.use_district_ports else 0
        server = TcpServer(
            [*devices, gateway_not_answering_device()],
            framer=framer,
            address=(self.host, port),
            ignore_missing_devices=True,
            trace_packet=self.crc_corrupter(gateway.id) if framer is FramerType.RTU else None,
            # a TCP gateway answers for absent units; RTU frames over TCP come from a serial server: silence
            unit_ids=set(self.units_of(gateway.id)),
            absent_units=self.absent_units if gateway.transport == "tcp" else "silent",
        )
        try:
            await server.serve_forever(background=True)
        except (RuntimeError, OSError) as exc:
            raise OSError(f"gateway {gateway.id}: cannot listen on {self.host}:{port} ({exc}); "
                          "try without --use-district-ports to take free ports") from exc
        self._servers.append(server)
        bound = server.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return Endpoint(gateway.id, gateway.transport, host=self.host, port=bound, units=self.units_of(gateway.id))

    def crc_corrupter(self, gateway_id: str) -> Any:
        """trace_packet hook for RTU framing: break the CRC of responses from meters in a crc fault."""
        by_unit = {p.unit_id: self.meters[p.id] for p in self.district.points_of_gateway(gateway_id)}

        def trace(sending: bool, data: bytes) -> bytes:
            meter = by_unit.get(data[0]) if sending and len(data) >= 4 else None
            if meter is not None and any(f.type == "crc" for f in meter.active_faults(self.clock.now_ms())):
                return data[:-1] + bytes([data[-1] ^ 0xFF])
            return data

        return trace

    async def stop(self) -> None:
        for server in self._servers:
            await server.shutdown()
        for closer in self._closers:
            await closer()
        self._servers.clear()
        self._closers.clear()

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def manifest(self) -> dict[str, Any]:
        return {
            "district": self.district.id,
            "district_path": str(Path(self.district.path).resolve()),
            "seed": self.seed,
            "scenario": None if self.scenario.path is None else str(Path(self.scenario.path).resolve()),
            "clock": dataclasses.asdict(self.clock),
            "gateways": {g: e.as_manifest() for g, e in self.endpoints.items()},
        }

    def write_manifest(self, path: Path | str) -> Path:
        """Write the manifest atomically, with who wrote it (:mod:`canalflow.manifest`)."""
        return write_manifest(path, self.manifest())


class FleetThread:
    """Run a :class:`Fleet` on its own event loop in a background thread (for tests and tools
    that are not async). ``with FleetThread(district, clock=clock) as fleet: fleet.endpoints``."""

    def __init__(self, district: District, **kwargs: Any) -> None:
        self.fleet = Fleet(district, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fleet", daemon=True)

    def __enter__(self) -> Fleet:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fleet.start(), self._loop).result(timeout=30)
        return self.fleet

    def __exit__(self, *_: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.fleet.stop(), self._loop).result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


@dataclass(frozen=True)
class ManifestView:
    """What another process needs from a fleet's manifest: its clock and its ground truth."""

    manifest: dict[str, Any]
    district: District
    scenario: Scenario
    clock: SimClock

    @property
    def seed(self) -> int:
        return int(self.manifest["seed"])

    def truth(self) -> Truth:
        """The same ground truth the fleet computes (same district, scenario and seed)."""
        return Truth(self.district, self.scenario, self.seed)


def read_manifest(path: Path | str) -> ManifestView:
    """Load a fleet manifest and the district and scenario it names."""
    from canalflow.district import load_district
    from firmware_sim.scenario import load_scenario

    manifest = json.loads(Path(path).read_text())
    district = load_district(manifest["district_path"])
    scenario = load_scenario(manifest["scenario"], district) if manifest["scenario"] else Scenario.default()
    return ManifestView(manifest, district, scenario, SimClock(**manifest["clock"]))
