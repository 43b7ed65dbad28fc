"""Modbus RTU on a pseudo-terminal, with the wire timing of the gateway's baud rate.

Two pty pairs joined by a relay stand for one RS-485 bus::

    pymodbus serial server -- /dev/pts/A  [master A] <-relay-> [master B]  /dev/pts/B -- the edge

The relay is the wire: a byte takes (1 start + data + parity + stop bits) / baud seconds, so a
frame arrives only after its transmission time, one frame after the other in each direction.
(A single ``os.openpty()`` pair gives a path only for its slave end; the pymodbus server needs a
path to open too, hence two pairs.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.simulator import DataType, SimData, SimDevice

from canalflow.district import Gateway
from firmware_sim.handler import SerialServer

if TYPE_CHECKING:
    from firmware_sim.fleet import Endpoint, Fleet

log = logging.getLogger("canalflow.fleet.rtu")


def char_time_s(baud: int, bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> float:
    """Seconds one character takes on the wire."""
    bits = 1 + bytesize + (0 if parity == "N" else 1) + stopbits
    return bits / baud


class WireRelay:
    """Copies bytes between two pty masters, each direction delayed by its transmission time."""

    def __init__(self, fd_a: int, fd_b: int, char_s: float) -> None:
        self.fds = (fd_a, fd_b)
        self.char_s = char_s
        self.free_at = [0.0, 0.0]  # when the wire in each direction is next free
        self.loop = asyncio.get_running_loop()
        for fd in self.fds:
            os.set_blocking(fd, False)
        self.loop.add_reader(fd_a, self._pump, 0)
        self.loop.add_reader(fd_b, self._pump, 1)

    def _pump(self, side: int) -> None:
        try:
            data = os.read(self.fds[side], 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the other side hung up; keep the bus, it may reopen
            return
        if not data:
            return
        now = self.loop.time()
        deliver = max(now, self.free_at[side]) + len(data) * self.char_s
        self.free_at[side] = deliver
        self.loop.call_at(deliver, self._deliver, 1 - side, data)

    def _deliver(self, side: int, data: bytes) -> None:
        try:
            os.write(self.fds[side], data)
        except OSError as exc:
            log.debug("bus write failed on side %d: %s", side, exc)

    def close(self) -> None:
        for fd in self.fds:
            self.loop.remove_reader(fd)


def _raw_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


async def _silent(*_: Any) -> None:
    raise NoSuchIdException("no such unit on this bus")  # an RTU bus just stays quiet


def silent_device() -> SimDevice:
    """Unit id 0 stands for every unit not on the bus: no answer (the master times out)."""
    return SimDevice(id=0, simdata=[SimData(address=0, count=1, datatype=DataType.REGISTERS)], action=_silent)


async def serve_rtu_pty(gateway: Gateway, devices: list[SimDevice], fleet: Fleet) -> tuple[Endpoint, Callable[[], Awaitable[None]]]:
    """Serve ``devices`` as one RTU bus; returns the endpoint (``path`` for the edge) and a closer."""
    from firmware_sim.fleet import Endpoint

    line = gateway.serial
    baud = line.baud if line else 9600
    bytesize = line.bytesize if line else 8
    parity = line.parity if line else "N"
    stopbits = line.stopbits if line else 1
    server_master, server_slave, server_path = _raw_pty()
    edge_master, edge_slave, edge_path = _raw_pty()
    relay = WireRelay(server_master, edge_master, char_time_s(baud, bytesize, parity, stopbits))
    server = SerialServer(
        [*devices, silent_device()],
        framer=FramerType.RTU,
        port=server_path,
        baudrate=baud,
        bytesize=bytesize,
        parity=parity,
        stopbits=stopbits,
        ignore_missing_devices=True,
        trace_packet=fleet.crc_corrupter(gateway.id),
    )
    await server.serve_forever(background=True)

    async def close() -> None:
        await server.shutdown()
        relay.close()
        for fd in (server_master, server_slave, edge_master, edge_slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    endpoint = Endpoint(gateway.id, "rtu", path=edge_path, baud=baud, parity=parity, stopbits=stopbits,
                        bytesize=bytesize, units=fleet.units_of(gateway.id))
    return endpoint, close
