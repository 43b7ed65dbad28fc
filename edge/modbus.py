"""A small asyncio Modbus master: TCP (MBAP), RTU over TCP and RTU on a serial port.

Written for bus discipline rather than taken from pymodbus: one outstanding request per link,
a per-request timeout that never closes the link (a late answer from a slow meter is recognised
and discarded, by transaction id on TCP and by flushing the line before the next RTU frame), the
RTU inter-frame gap derived from the baud rate, and Modbus exceptions explained in plain words.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from dataclasses import dataclass
from typing import Literal

from canalflow.errors import CanalflowError

Framing = Literal["socket", "rtu"]

# Modbus exception code -> (name, what it usually means in the field and what to try)
EXCEPTIONS: dict[int, tuple[str, str]] = {
    1: ("illegal function", "the device does not support this function code; try the other register table "
        "(--table holding|input)"),
    2: ("illegal data address", "the register is not in the device's map; if the manual numbers registers "
        "from 1 try address - 1, or read fewer registers (one per request)"),
    3: ("illegal data value", "the count or value is not accepted; the meter may reject block reads: "
        "read one register per request"),
    4: ("server device failure", "the meter failed while answering; check its display and sensor"),
    5: ("acknowledge", "the meter accepted a long operation; ask again later"),
    6: ("server device busy", "the meter is busy; retry after a pause"),
    8: ("memory parity error", "the meter's memory is corrupt; service the meter"),
    10: ("gateway path unavailable", "the gateway has no route to that unit id; check the gateway's serial config"),
    11: ("gateway target device failed to respond", "the meter behind the gateway did not answer: check its "
         "unit id, wiring, power and baud rate"),
}


class ModbusError(CanalflowError):
    """A request failed; ``str()`` names the device, register and what to try."""


class ModbusTimeout(ModbusError):
    pass


class ModbusLinkError(ModbusError):
    """The TCP connection or serial port could not be opened or broke."""


class ModbusFrameError(ModbusError):
    """A corrupt or unexpected answer (bad CRC, wrong unit, wrong length)."""


class ModbusExceptionResponse(ModbusError):
    def __init__(self, unit: int, function: int, address: int, count: int, code: int) -> None:
        self.unit, self.function, self.address, self.count, self.code = unit, function, address, count, code
        name, hint = EXCEPTIONS.get(code, (f"exception code {code}", "see the meter's manual"))
        self.name, self.hint = name, hint
        super().__init__(
            f"unit {unit}: function {function} at address {address} (count {count}): Modbus exception "
            f"{code} ({name}); {hint}"
        )


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC16 = _crc16_table()


def crc16(data: bytes) -> int:
    """Modbus RTU CRC-16 (poly 0xA001, init 0xFFFF); sent low byte first. Also SL 651's frame check."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC16[(crc ^ byte) & 0xFF]
    return crc


def with_crc(frame: bytes) -> bytes:
    return frame + struct.pack("<H", crc16(frame))


def char_time_s(baud: int, parity: str = "N", stopbits: int = 1) -> float:
    """Time of one character on the wire: start bit, 8 data bits, parity bit if any, stop bit(s)."""
    return (1 + 8 + (parity != "N") + stopbits) / baud


def interframe_gap_s(baud: int, parity: str = "N", stopbits: int = 1) -> float:
    """The RTU silent interval: 3.5 character times, fixed at 1.75 ms above 19200 baud (spec)."""
    return 0.00175 if baud > 19200 else 3.5 * char_time_s(baud, parity, stopbits)


def wire_time_s(n_bytes: int, baud: int, parity: str = "N", stopbits: int = 1) -> float:
    return n_bytes * char_time_s(baud, parity, stopbits)


def read_request_pdu(function: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", function, address, count)


class _Receiver(asyncio.Protocol):
    """Collects bytes from a socket or a serial fd; ``read_exactly`` waits for them."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.lost: Exception | None = None
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer.extend(data)
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("connection closed by peer")
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if self.lost is not None:
                raise ModbusLinkError(f"link lost: {self.lost}")
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def discard(self) -> int:
        n = len(self.buffer)
        self.buffer.clear()
        return n


@dataclass
class LinkStats:
    requests: int = 0
    timeouts: int = 0
    exceptions: int = 0
    frame_errors: int = 0
    stale_discarded: int = 0
    reconnects: int = 0
    tx_bytes: int = 0
    rx_bytes: int = 0


class ModbusLink:
    """One physical or logical link (a TCP connection or a serial port): one request at a time.

    ``target`` is ``"tcp://host:port"``, ``"rtu+tcp://host:port"`` or a serial device path with
    ``baud``. Open lazily; after a broken link the next request reconnects.
    """

    def __init__(
        self,
        target: str,
        *,
        baud: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        connect_timeout_s: float = 2.0,
        pause_after_connect_s: float = 0.0,
    ) -> None:
        self.target = target
        self.baud = baud
        self.parity = parity
        self.stopbits = stopbits
        self.connect_timeout_s = connect_timeout_s
        self.pause_after_connect_s = pause_after_connect_s
        self.framing: Framing = "socket" if target.startswith("tcp://") else "rtu"
        self.is_serial = "://" not in target
        self.gap_s = interframe_gap_s(baud, parity, stopbits) if self.is_serial else 0.0
        self.stats = LinkStats()
        self._lock = asyncio.Lock()
        self._rx: _Receiver | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._serial: object | None = None
        self._tid = 0
        self._last_activity = 0.0

    def __repr__(self) -> str:
        return f"ModbusLink({self.target})"

    @property
    def connected(self) -> bool:
        return self._rx is not None and self._rx.lost is None

    async def connect(self) -> None:
        if self.connected:
            return
        await self.close()
        try:
            if self.is_serial:
                await self._open_serial()
            else:
                await self._open_tcp()
        except (TimeoutError, OSError) as exc:
            raise ModbusLinkError(f"cannot open {self.target}: {exc or type(exc).__name__}; "
                                  "check the address/port and that the gateway is powered") from exc
        self.stats.reconnects += 1
        if self.pause_after_connect_s:
            await asyncio.sleep(self.pause_after_connect_s)

    async def _open_tcp(self) -> None:
        host, _, port = self.target.split("://", 1)[1].rpartition(":")
        loop = asyncio.get_running_loop()
        transport, rx = await asyncio.wait_for(
            loop.create_connection(_Receiver, host, int(port)), self.connect_timeout_s
        )
        self._transport, self._rx = transport, rx

    async def _open_serial(self) -> None:
        import serial  # pyserial: configures baud/parity of the tty

        port = serial.Serial(self.target, self.baud, parity=self.parity, stopbits=self.stopbits, timeout=0)
        loop = asyncio.get_running_loop()
        rx = _Receiver()
        fd = port.fileno()
        os.set_blocking(fd, False)

        def readable() -> None:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return
            except OSError as exc:
                loop.remove_reader(fd)
                rx.connection_lost(exc)
                return
            rx.data_received(data)

        loop.add_reader(fd, readable)
        self._serial, self._rx = port, rx

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._serial is not None:
            with contextlib.suppress(Exception):  # fd may already be gone with the pty
                asyncio.get_running_loop().remove_reader(self._serial.fileno())  # type: ignore[attr-defined]
            self._serial.close()  # type: ignore[attr-defined]
            self._serial = None
        self._rx = None

    def _write(self, frame: bytes) -> None:
        if self._serial is not None:
            os.write(self._serial.fileno(), frame)  # type: ignore[attr-defined]
        else:
            self._transport.write(frame)  # type: ignore[union-attr]

    async def read_registers(
        self, unit: int, address: int, count: int, *, function: int = 3, timeout_s: float = 1.0
    ) -> list[int]:
        """Read ``count`` registers at wire address ``address``; raise a ModbusError naming them."""
        async with self._lock:
            await self.connect()
            self.stats.requests += 1
            pdu = read_request_pdu(function, address, count)
            try:
                async with asyncio.timeout(timeout_s):  # no task per request, unlike wait_for
                    body = await self._transact(unit, pdu)
            except TimeoutError:
                self.stats.timeouts += 1
                raise ModbusTimeout(
                    f"unit {unit} on {self.target}: no answer within {timeout_s:g} s to function {function} "
                    f"at address {address} (count {count}); check the unit id, wiring and power"
                ) from None
            except ModbusLinkError:
                await self.close()
                raise
            finally:
                self._last_activity = time.monotonic()
            return self._registers(unit, function, address, count, body)

    def _registers(self, unit: int, function: int, address: int, count: int, body: bytes) -> list[int]:
        if body[0] == function | 0x80:
            self.stats.exceptions += 1
            raise ModbusExceptionResponse(unit, function, address, count, body[1])
        if body[0] != function or body[1] != 2 * count or len(body) != 2 + 2 * count:
            self.stats.frame_errors += 1
            raise ModbusFrameError(f"unit {unit}: unexpected answer to function {function} at {address} "
                                   f"(count {count}): {body[:8].hex()}")
        return list(struct.unpack(f">{count}H", body[2:]))

    async def _transact(self, unit: int, pdu: bytes) -> bytes:
        if self.framing == "socket":
            return await self._transact_mbap(unit, pdu)
        return await self._transact_rtu(unit, pdu)

    async def _transact_mbap(self, unit: int, pdu: bytes) -> bytes:
        rx = self._rx
        assert rx is not None
        self._tid = (self._tid + 1) & 0xFFFF
        self._write(struct.pack(">HHHB", self._tid, 0, len(pdu) + 1, unit) + pdu)
        self.stats.tx_bytes += 7 + len(pdu)
        while True:
            tid, _proto, length, r_unit = struct.unpack(">HHHB", await rx.read_exactly(7))
            body = await rx.read_exactly(length - 1)
            self.stats.rx_bytes += 6 + length
            if tid == self._tid and r_unit == unit:
                return body
            self.stats.stale_discarded += 1  # the late answer to a request that already timed out

    async def _transact_rtu(self, unit: int, pdu: bytes) -> bytes:
        rx = self._rx
        assert rx is not None
        await self._respect_gap()
        self.stats.stale_discarded += 1 if rx.discard() else 0
        self._write(with_crc(bytes([unit]) + pdu))
        self.stats.tx_bytes += 3 + len(pdu)
        head = await rx.read_exactly(3)
        rest = 2 if head[1] & 0x80 else head[2] + 2
        frame = head + await rx.read_exactly(rest)
        self.stats.rx_bytes += len(frame)
        if crc16(frame[:-2]) != struct.unpack("<H", frame[-2:])[0]:
            self.stats.frame_errors += 1
            raise ModbusFrameError(f"unit {unit}: CRC error in answer {frame.hex()}; check baud rate, "
                                   "parity and termination")
        if frame[0] != unit:
            self.stats.frame_errors += 1
            raise ModbusFrameError(f"answer from unit {frame[0]} while asking unit {unit}: two meters share an id?")
        return frame[1:-2]

    async def _respect_gap(self) -> None:
        wait = self._last_activity + self.gap_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
