"""Simulated Modbus meters for the edge's own tests and benchmarks (real sockets and ptys).

The district's fleet simulator (``firmware_sim``) is the full model; this is the edge engineer's
test bench: registers encoded with the meter profile (``canalflow.profiles``), served over Modbus
TCP, RTU over TCP or RTU on a pseudo-terminal, with the faults a bus has in the field (a dead meter,
a slow one, one that rejects block reads, exception answers). RTU on a pty emulates the wire time of
each frame at the configured baud rate so bus timing is measurable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
import tty
from dataclasses import dataclass, field
from typing import Any

from edge.modbus import crc16, interframe_gap_s, wire_time_s, with_crc


@dataclass
class SimMeter:
    """One meter: register words by wire address, and its fault behaviour."""

    unit: int
    profile: Any = None  # canalflow.profiles.Profile
    holding: dict[int, int] = field(default_factory=dict)
    input: dict[int, int] = field(default_factory=dict)
    dead: bool = False  # never answers
    delay_s: float = 0.0  # answers late
    exception: int | None = None  # answers every request with this Modbus exception
    block_reads: bool = True  # False: requests for more than one register get exception 3
    bad_crc: bool = False  # RTU answers with a corrupted CRC (noise on the line)
    requests: int = 0

    def set_value(self, name: str, value_si: float) -> None:
        """Encode ``value_si`` into the register called ``name`` of the meter's profile."""
        reg = self.profile.register_named(name)
        table = self.input if self.profile.table == "input" else self.holding
        for offset, word in enumerate(reg.encode(value_si, clamp=True)):
            table[reg.wire_address + offset] = word

    def set_words(self, address: int, words: list[int], table: str = "holding") -> None:
        target = self.input if table == "input" else self.holding
        for offset, word in enumerate(words):
            target[address + offset] = word

    def answer(self, function: int, address: int, count: int) -> bytes:
        """The response PDU (function code onwards) to a read request."""
        self.requests += 1
        if self.exception is not None:
            return bytes([function | 0x80, self.exception])
        if function not in (3, 4):
            return bytes([function | 0x80, 1])
        if count > 1 and not self.block_reads:
            return bytes([function | 0x80, 3])
        table = self.holding if function == 3 else self.input
        if count < 1 or count > 125 or any(a not in table for a in range(address, address + count)):
            return bytes([function | 0x80, 2])
        words = [table[a] for a in range(address, address + count)]
        return struct.pack(f">BB{count}H", function, 2 * count, *words)


def meter_from_profile(unit: int, profile: Any, values: dict[str, float] | None = None) -> SimMeter:
    """A meter whose every register exists (zero unless ``values`` names it) plus its signature."""
    meter = SimMeter(unit, profile, block_reads=profile.block_reads)
    table = meter.input if profile.table == "input" else meter.holding
    for reg in profile.registers:
        for offset in range(reg.word_count):
            table[reg.wire_address + offset] = 0
    meter.set_words(profile.signature_address, list(profile.signature.words), profile.table)
    for name, value in (values or {}).items():
        meter.set_value(name, value)
    return meter


class SimBus:
    """Meters sharing one endpoint (a TCP gateway or a serial line)."""

    def __init__(self, meters: list[SimMeter] | None = None) -> None:
        self.meters: dict[int, SimMeter] = {m.unit: m for m in meters or []}
        self._servers: list[asyncio.base_events.Server] = []
        self._pty_tasks: list[asyncio.Task[None]] = []
        self._fds: list[int] = []
        self.host = "127.0.0.1"
        self.port = 0
        self.pty_path: str | None = None

    def add(self, meter: SimMeter) -> SimMeter:
        self.meters[meter.unit] = meter
        return meter

    async def _answer(self, unit: int, pdu: bytes) -> bytes | None:
        meter = self.meters.get(unit)
        if meter is None or meter.dead or len(pdu) < 5:
            return None
        if meter.delay_s:
            await asyncio.sleep(meter.delay_s)
        function, address, count = struct.unpack(">BHH", pdu[:5])
        return meter.answer(function, address, count)

    # ---- Modbus TCP and RTU over TCP --------------------------------------------------------
    async def serve_tcp(self, port: int = 0, *, rtu: bool = False) -> int:
        handler = self._rtu_over_tcp if rtu else self._mbap
        server = await asyncio.start_server(handler, self.host, port)
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        return self.port

    async def _mbap(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                tid, proto, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                answer = await self._answer(unit, pdu)
                if answer is not None:
                    writer.write(struct.pack(">HHHB", tid, proto, len(answer) + 1, unit) + answer)
        writer.close()

    async def _rtu_over_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                frame = await reader.readexactly(8)
                if crc16(frame[:-2]) != struct.unpack("<H", frame[-2:])[0]:
                    continue
                answer = await self._answer(frame[0], frame[1:6])
                if answer is not None:
                    writer.write(self._rtu_frame(frame[0], answer))
        writer.close()

    def _rtu_frame(self, unit: int, answer: bytes) -> bytes:
        frame = with_crc(bytes([unit]) + answer)
        meter = self.meters.get(unit)
        return frame[:-1] + bytes([frame[-1] ^ 0xFF]) if meter is not None and meter.bad_crc else frame

    # ---- RTU on a pseudo-terminal ------------------------------------------------------------
    def serve_pty(self, baud: int = 9600) -> str:
        """Open a pty pair; return the device path a master (the edge) opens. Frames take wire time."""
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        self._fds += [master, slave]
        self.pty_path = os.ttyname(slave)
        self._pty_tasks.append(asyncio.get_running_loop().create_task(self._pty_loop(master, baud)))
        return self.pty_path

    async def _pty_loop(self, fd: int, baud: int) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        os.set_blocking(fd, False)

        def readable() -> None:
            with contextlib.suppress(BlockingIOError, OSError):
                queue.put_nowait(os.read(fd, 4096))

        loop.add_reader(fd, readable)
        buffer = bytearray()
        try:
            while True:
                buffer += await queue.get()
                while len(buffer) >= 8:
                    frame, buffer = bytes(buffer[:8]), buffer[8:]
                    await self._pty_answer(fd, frame, baud)
        finally:
            loop.remove_reader(fd)

    async def _pty_answer(self, fd: int, frame: bytes, baud: int) -> None:
        started = time.monotonic()
        if crc16(frame[:-2]) != struct.unpack("<H", frame[-2:])[0]:
            return
        answer = await self._answer(frame[0], frame[1:6])
        if answer is None:
            return
        reply = self._rtu_frame(frame[0], answer)
        # the request took wire time to arrive, the reply takes wire time to leave, plus a gap
        due = started + wire_time_s(len(frame) + len(reply), baud) + interframe_gap_s(baud)
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        with contextlib.suppress(OSError):
            os.write(fd, reply)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        for task in self._pty_tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._servers, self._pty_tasks, self._fds = [], [], []
