"""SL 651-2014 HEX/BCD frames (``7E 7E``): decode, encode, the centre's answer, multi-packet reassembly.

Pure code: bytes in, :class:`Frame` out, or :class:`~edge.telemetry.errors.FrameError` with its
reason and byte offset. Layouts from the standard's draft, §6.2, §6.5, §6.6 and appendices A–C
(docs/stations.md says what was checked against captured frames).

Uplink: 7E 7E · centre (1) · station (5) · password (2) · function (1) · direction+length (2) ·
STX, or SYN + packet total/number (3) · body · ETX/ETB · CRC-16/MODBUS high byte first.
A downlink frame swaps station and centre and ends with ENQ/ACK/NAK/EOT/ESC. The 12-bit length
counts the bytes after STX (after SYN, including the 3 packet bytes) up to the end character, so a
frame is always ``length + 17`` bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from edge.modbus import crc16  # SL 651's CRC is CRC-16/MODBUS, sent high byte first here
from edge.telemetry.errors import FrameError, bcd_digits, to_bcd
from edge.telemetry.sl651_elements import (
    ADDRESSED_FUNCTIONS,
    ELEMENTS,
    FUNCTIONS,
    HOUR_SERIES,
    REPORT_FUNCTIONS,
    STATUS_FUNCTIONS,
)

START = b"\x7e\x7e"
STX, SYN, ETX, ETB = 0x02, 0x16, 0x03, 0x17
ENQ, ACK, NAK, EOT, ESC = 0x05, 0x06, 0x15, 0x04, 0x1B
END_NAMES = {ETX: "ETX", ETB: "ETB", ENQ: "ENQ", ACK: "ACK", NAK: "NAK", EOT: "EOT", ESC: "ESC"}
UP_ENDS = frozenset({ETX, ETB})
DOWN_ENDS = frozenset({ENQ, ACK, NAK, EOT, ESC})
HEADER = 13  # start, addresses, password, function, direction+length
OVERHEAD = 17  # header + start of body + end + CRC
MAX_BODY = 4095
KEEP_ALIVE = 0x2F
STATION_GUIDE = b"\xf1\xf1"
TIME_GUIDE = b"\xf0\xf0"
STEP_CODE = 0x04
STATUS_BITS = 0x45
__all__ = ["Reassembler", "answer", "crc16", "decode", "encode", "query"]


@dataclass(frozen=True)
class Element:
    """One element: a value, or a series (even-interval reports, the hour's twelve 5-minute values).

    ``value``/``values`` is None where the station sent "no data" (all F). ``size`` and
    ``decimals`` come from the definition byte and make the element re-encodable.
    """

    code: int  # identifier byte, or 0xFFxx for a user-defined element
    size: int
    decimals: int
    value: Decimal | None = None
    values: tuple[Decimal | None, ...] = ()
    step_s: int | None = None  # seconds between ``values``
    observed: dt.datetime | None = None  # of the value, or of the first of ``values``
    offset: int = field(default=0, compare=False)  # of the identifier, in the frame

    @property
    def ident(self) -> str:
        return f"{self.code:02X}" if self.code <= 0xFF else f"{self.code:04X}"

    @property
    def symbol(self) -> str:
        return ELEMENTS.get(self.code, ("?",))[0]

    @property
    def name(self) -> str:
        return ELEMENTS.get(self.code, ("?", "user-defined" if self.code > 0xFF else "unknown element", ""))[1]

    @property
    def unit(self) -> str:
        return ELEMENTS.get(self.code, ("?", "", ""))[2]


@dataclass(frozen=True)
class Report:
    """A frame's body: serial and send time, and for reports the station, its type and the elements.

    A multi-station body (6.6.2.7: the station address guide also separates stations) has the
    first station here and each further one in ``others``, with the same serial and send time.
    """

    serial: int
    sent: dt.datetime
    station: str | None = None
    station_type: int | None = None
    observed: dt.datetime | None = None
    elements: tuple[Element, ...] = ()
    rest: bytes = b""  # what follows serial, time (and the address of ADDRESSED_FUNCTIONS), not decoded
    others: tuple[Report, ...] = ()

    @property
    def parts(self) -> tuple[Report, ...]:
        """This station's part and the other stations' of a multi-station body."""
        return (self, *self.others)


@dataclass(frozen=True)
class Frame:
    uplink: bool
    centre: int
    station: str  # the 5 address bytes as 10 hex digits (BCD for hydrological stations)
    password: int
    function: int
    start: int  # STX or SYN
    end: int
    body: bytes
    crc: int
    packet: tuple[int, int] | None = None  # (total, number) after SYN
    report: Report | None = None  # None for one packet of several: see Reassembler

    @property
    def function_name(self) -> str:
        return FUNCTIONS.get(self.function, "?")

    @property
    def end_name(self) -> str:
        return END_NAMES.get(self.end, f"{self.end:02X}")


def frame_size(prefix: bytes) -> int | None:
    """The full length of the frame ``prefix`` begins, or None while the header is incomplete."""
    if prefix[:2] != START[: len(prefix[:2])]:
        raise FrameError("bad_start", 0 if prefix[:1] != b"\x7e" else 1,
                         f"a HEX/BCD frame starts 7E 7E, got {prefix[:2].hex(' ').upper()}")
    if len(prefix) < HEADER:
        return None
    length = _length(prefix)
    return length + OVERHEAD


def _length(frame: bytes) -> int:
    direction, length = frame[11] >> 4, int.from_bytes(frame[11:13]) & 0x0FFF
    if direction not in (0, 8):
        raise FrameError("bad_direction", 11, f"direction nibble {direction:X}: 0 is uplink, 8 downlink")
    if length == 0:
        raise FrameError("bad_length", 11, "body length 0: the standard allows 1-4095")
    return length


def decode(frame: bytes, *, max_size: int = MAX_BODY + OVERHEAD) -> Frame:
    """Decode exactly one HEX/BCD frame, checking start, length, end character and CRC."""
    size = check_size(frame, frame_size(frame[:HEADER]), HEADER, max_size, 11)
    expected, got = crc16(frame[:-2]), int.from_bytes(frame[-2:])
    if expected != got:
        raise FrameError("bad_crc", size - 2, f"CRC-16/MODBUS (high byte first) over bytes 0-{size - 3} is "
                         f"{expected:04X}, the frame says {got:04X}")
    uplink = frame[11] >> 4 == 0
    centre_at, station_at = (2, 3) if uplink else (7, 2)
    function = frame[10]
    check_codes(function, 10, frame[HEADER], HEADER, frame[-3], size - 3, uplink)
    packet, body_at = None, HEADER + 1
    if frame[HEADER] == SYN:
        packet, body_at = _packet(frame), HEADER + 4
    body = frame[body_at:size - 3]
    header = {"uplink": uplink, "centre": frame[centre_at], "station": frame[station_at:station_at + 5].hex().upper(),
              "password": int.from_bytes(frame[8:10]), "function": function, "start": frame[HEADER],
              "end": frame[-3], "body": body, "crc": got, "packet": packet}
    report = None if uplink and packet and packet[0] > 1 else decode_body(function, body, uplink, offset=body_at)
    return Frame(**header, report=report)


def check_size(frame: bytes, size: int | None, header: int, max_size: int, length_at: int) -> int:
    """The frame's announced ``size``, once ``frame`` is exactly that long and within ``max_size``."""
    if size is None or len(frame) < size:
        raise FrameError("truncated", len(frame), f"frame has {len(frame)} bytes, its header needs {size or header}")
    if size > max_size:
        raise FrameError("too_long", length_at, f"frame of {size} bytes is over the bound of {max_size}")
    if len(frame) > size:
        raise FrameError("too_long", size, f"{len(frame) - size} bytes after the frame's CRC")
    return size


def check_codes(function: int, function_at: int, start: int, start_at: int, end: int, end_at: int,
                uplink: bool) -> None:
    """Function code, start of body and end character, the same in HEX and ASCII frames."""
    if function not in FUNCTIONS:
        raise FrameError("unknown_function", function_at, f"function code {function:02X} is reserved (appendix B)")
    if start not in (STX, SYN):
        raise FrameError("bad_body", start_at, f"start of body {start:02X}: expected STX 02 or SYN 16")
    ends = UP_ENDS if uplink else DOWN_ENDS
    if end not in ends:
        names = "/".join(END_NAMES[e] for e in sorted(ends))
        raise FrameError("bad_end", end_at, f"end character {end:02X}: an {'up' if uplink else 'down'}link frame "
                         f"ends with {names}")


def check_packet(total: int, number: int, at: int) -> tuple[int, int]:
    if not 1 <= number <= total:
        raise FrameError("bad_packet", at, f"packet {number} of {total}: the number must be 1..total")
    return total, number


def _packet(frame: bytes) -> tuple[int, int]:
    if _length(frame) < 3:
        raise FrameError("bad_packet", HEADER + 1, "SYN needs 3 bytes of packet total and number")
    word = int.from_bytes(frame[HEADER + 1:HEADER + 4])
    return check_packet(word >> 12, word & 0x0FFF, HEADER + 1)


def decode_body(function: int, body: bytes, uplink: bool = True, *, offset: int = 0) -> Report:
    """The body of a single-packet frame (or the joined bodies of a multi-packet message)."""
    reader = _Reader(body, offset)
    serial = int.from_bytes(reader.take(2, "serial number"))
    sent = reader.time(6, "send time")
    if uplink and function in ADDRESSED_FUNCTIONS:
        reader.expect(STATION_GUIDE, "station address guide F1 F1")
        station = reader.take(5, "station address").hex().upper()
        if function in STATUS_FUNCTIONS:
            return Report(serial, sent, station, elements=_elements(reader, sent))
        return Report(serial, sent, station, rest=reader.take(reader.left, "rest"))
    if not uplink or function not in REPORT_FUNCTIONS:
        if function == KEEP_ALIVE and reader.left:
            raise FrameError("bad_body", reader.at, f"a keep-alive body is serial and send time only, "
                             f"{reader.left} bytes follow")
        return Report(serial, sent, rest=reader.take(reader.left, "rest"))
    parts = [_station_part(reader, serial, sent)]
    while reader.left:  # a multi-station body: the next F1 F1 starts the next station
        parts.append(_station_part(reader, serial, sent))
    return dataclasses.replace(parts[0], others=tuple(parts[1:]))


def _station_part(reader: _Reader, serial: int, sent: dt.datetime) -> Report:
    reader.expect(STATION_GUIDE, "station address guide F1 F1")
    station = reader.take(5, "station address").hex().upper()
    station_type = reader.take(1, "station type")[0]
    reader.expect(TIME_GUIDE, "observation time guide F0 F0")
    observed = reader.time(5, "observation time")
    return Report(serial, sent, station, station_type, observed, _elements(reader, observed))


def _elements(reader: _Reader, observed: dt.datetime) -> tuple[Element, ...]:
    """Elements up to the end of the body or the next station's F1 F1."""
    elements: list[Element] = []
    step_s: int | None = None
    while reader.left and reader.peek(2) != STATION_GUIDE:
        at = reader.at
        if reader.peek(2) == TIME_GUIDE:
            reader.take(2, "observation time guide")
            observed = reader.time(5, "observation time")
            continue
        code, size, decimals = _identifier(reader)
        if code == STEP_CODE:
            step_s = _step(reader.take(size, "time step code"), at)
            continue
        if step_s:  # even-interval report: every remaining byte is this element's series
            elements.append(_series(reader, code, size, decimals, observed, step_s, at))
            if reader.left:
                raise FrameError("bad_element", reader.at, "bytes after an even-interval series")
            break
        elements.append(_element(reader, code, size, decimals, observed, at))
    return tuple(elements)


def _identifier(reader: _Reader) -> tuple[int, int, int]:
    code = reader.take(1, "element identifier")[0]
    if code == 0xFF:
        code = 0xFF00 | reader.take(1, "user-defined identifier")[0]
    definition = reader.take(1, "element definition byte")[0]
    size, decimals = definition >> 3, definition & 0x07
    if size == 0:
        raise FrameError("bad_element", reader.at - 1, f"element {code:02X}: definition {definition:02X} gives 0 bytes")
    return code, size, decimals


def _element(reader: _Reader, code: int, size: int, decimals: int, observed: dt.datetime, at: int) -> Element:
    raw_at = reader.at
    raw = reader.take(size, f"element {code:02X} value")
    if code in HOUR_SERIES:
        width, unit = HOUR_SERIES[code]
        if size != 12 * width:
            raise FrameError("bad_element", at + 1, f"element {code:02X} holds 12 values of {width} bytes, "
                             f"its definition says {size} bytes")
        values = tuple(None if raw[i:i + width] == b"\xff" * width else int.from_bytes(raw[i:i + width]) *
                       Decimal(unit) for i in range(0, size, width))
        return Element(code, size, 0, values=values, step_s=300, observed=observed, offset=at)
    if code == STATUS_BITS:
        return Element(code, size, 0, value=Decimal(int.from_bytes(raw)), observed=observed, offset=at)
    return Element(code, size, decimals, value=bcd_value(raw, decimals, raw_at, code), observed=observed, offset=at)


def _series(reader: _Reader, code: int, size: int, decimals: int, observed: dt.datetime, step_s: int,
            at: int) -> Element:
    if reader.left % size:
        raise FrameError("bad_element", reader.at, f"even-interval series of {size}-byte values: {reader.left} "
                         "bytes left is not a whole number of values")
    values = []
    while reader.left:
        raw_at = reader.at
        values.append(bcd_value(reader.take(size, "series value"), decimals, raw_at, code))
    return Element(code, size, decimals, values=tuple(values), step_s=step_s, observed=observed, offset=at)


def _step(raw: bytes, at: int) -> int | None:
    if len(raw) != 3:
        raise FrameError("bad_element", at, f"time step code has 3 bytes (dhm), got {len(raw)}")
    days, hours, minutes = (int(bcd_digits(raw[i:i + 1], at + 2 + i, "time step code")) for i in range(3))
    return (days * 86400 + hours * 3600 + minutes * 60) or None  # 000000: the hour series F4-FC follow


def bcd_value(raw: bytes, decimals: int, offset: int, code: int = 0) -> Decimal | None:
    """A BCD element value: all F is "no data"; a leading FF byte marks a negative value."""
    if raw == b"\xff" * len(raw):
        return None
    negative = raw[0] == 0xFF and len(raw) > 1
    digits = bcd_digits(raw[1:] if negative else raw, offset + negative, f"element {code:02X} value")
    magnitude = Decimal(int(digits)).scaleb(-decimals)
    return -magnitude if negative else magnitude


class _Reader:
    def __init__(self, body: bytes, offset: int) -> None:
        self.body, self.pos, self.base = body, 0, offset

    @property
    def left(self) -> int:
        return len(self.body) - self.pos

    @property
    def at(self) -> int:
        return self.base + self.pos

    def peek(self, size: int) -> bytes:
        return self.body[self.pos:self.pos + size]

    def take(self, size: int, what: str) -> bytes:
        if size > self.left:
            raise FrameError("bad_element" if what.startswith("element") else "bad_body", self.at,
                             f"{what} needs {size} bytes, the body has {self.left} left")
        chunk = self.body[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def expect(self, marker: bytes, what: str) -> None:
        at, got = self.at, self.take(len(marker), what)
        if got != marker:
            raise FrameError("bad_body", at, f"expected {what}, got {got.hex(' ').upper()}")

    def time(self, size: int, what: str) -> dt.datetime:
        at = self.at
        digits = bcd_digits(self.take(size, what), at, what)
        parts = [int(digits[i:i + 2]) for i in range(0, len(digits), 2)] + [0]
        try:
            return dt.datetime(2000 + parts[0], *parts[1:6])
        except ValueError as exc:
            raise FrameError("bad_time", at, f"{what} {digits}: {exc}") from None


# ----------------------------------------------------------------------------------------- encoding


def encode(*, centre: int, station: str, password: int, function: int, body: bytes, uplink: bool = True,
           end: int | None = None, packet: tuple[int, int] | None = None) -> bytes:
    """A complete frame around ``body``; ``end`` defaults to ETX (uplink) / EOT (downlink)."""
    end = end if end is not None else (ETX if uplink else EOT)
    address = bytes.fromhex(station)
    if len(address) != 5:
        raise ValueError(f"station address {station!r} is not 10 hex digits")
    addresses = bytes([centre]) + address if uplink else address + bytes([centre])
    start = bytes([STX]) if packet is None else bytes([SYN]) + ((packet[0] << 12) | packet[1]).to_bytes(3)
    length = len(body) + len(start) - 1
    if not 1 <= length <= MAX_BODY:
        raise ValueError(f"body of {length} bytes: a frame carries 1-{MAX_BODY}")
    head = START + addresses + password.to_bytes(2) + bytes([function]) + ((0 if uplink else 0x8000) | length).to_bytes(2)
    frame = head + start + body + bytes([end])
    return frame + crc16(frame).to_bytes(2)


def encode_body(report: Report, function: int) -> bytes:
    """The body bytes of ``report`` (the inverse of :func:`decode_body`)."""
    out = bytearray(report.serial.to_bytes(2) + _bcd_time(report.sent, 6))
    if function in ADDRESSED_FUNCTIONS and report.station is not None:
        out += STATION_GUIDE + bytes.fromhex(report.station)
        return bytes(out + b"".join(encode_element(e) for e in report.elements) + report.rest)
    if function not in REPORT_FUNCTIONS or report.station is None:
        return bytes(out + report.rest)
    for part in report.parts:
        assert part.station is not None
        out += STATION_GUIDE + bytes.fromhex(part.station) + bytes([part.station_type or 0])
        out += TIME_GUIDE + _bcd_time(part.observed or part.sent, 5)
        observed = part.observed
        for element in part.elements:
            if element.observed is not None and element.observed != observed:
                observed = element.observed
                out += TIME_GUIDE + _bcd_time(observed, 5)
            out += encode_element(element)
    return bytes(out)


def encode_element(element: Element) -> bytes:
    ident = element.code.to_bytes(2 if element.code > 0xFF else 1)
    definition = bytes([(element.size << 3) | element.decimals])
    if element.code in HOUR_SERIES:
        width, unit = HOUR_SERIES[element.code]
        data = b"".join(b"\xff" * width if v is None else int(v / Decimal(unit)).to_bytes(width)
                        for v in element.values)
        return ident + definition + data
    if element.code == STATUS_BITS:
        return ident + definition + int(element.value or 0).to_bytes(element.size)
    if element.step_s:
        step = bytes([STEP_CODE, 3 << 3]) + _step_code(element.step_s)
        return step + ident + definition + b"".join(bcd_bytes(v, element.size, element.decimals)
                                                    for v in element.values)
    return ident + definition + bcd_bytes(element.value, element.size, element.decimals)


def bcd_bytes(value: Decimal | None, size: int, decimals: int) -> bytes:
    """``value`` as ``size`` BCD bytes with ``decimals`` implied decimals; None as all F."""
    if value is None:
        return b"\xff" * size
    scaled = int(value.scaleb(decimals).to_integral_value())
    if scaled < 0:
        return b"\xff" + to_bcd(-scaled, size - 1)
    return to_bcd(scaled, size)


def _step_code(step_s: int) -> bytes:
    if step_s % 86400 == 0:
        return to_bcd(step_s // 86400, 1) + b"\x00\x00"
    if step_s % 3600 == 0:
        return b"\x00" + to_bcd(step_s // 3600, 1) + b"\x00"
    return b"\x00\x00" + to_bcd(step_s // 60, 1)


def _bcd_time(when: dt.datetime, size: int) -> bytes:
    return bytes.fromhex(when.strftime("%y%m%d%H%M%S")[: size * 2])


def answer(frame: Frame, *, sent: dt.datetime, end: int = EOT) -> bytes | None:
    """The centre's confirmation of an uplink ``frame`` (M2/M3), or None where none is sent.

    A keep-alive has no answer (§6.6.4.2). The answer carries the station's serial number and the
    centre's time; ``end`` is EOT (done, the station may hang up), ESC (stay online), ACK (a
    multi-packet message goes on) or NAK (resend that packet).
    """
    if frame.function == KEEP_ALIVE or (frame.report is None and frame.packet is None):
        return None
    serial = frame.report.serial if frame.report else 0
    body = serial.to_bytes(2) + _bcd_time(sent, 6)
    packet = (frame.packet[0], frame.packet[1]) if frame.packet else None
    return encode(centre=frame.centre, station=frame.station, password=frame.password, function=frame.function,
                  body=body, uplink=False, end=end, packet=packet)


def query(*, centre: int, station: str, password: int, function: int, sent: dt.datetime,
          params: bytes = b"") -> bytes:
    """The centre's query or command (M4, ends with ENQ): serial 0 (6.6.2.4), its time, ``params``."""
    return encode(centre=centre, station=station, password=password, function=function,
                  body=bytes(2) + _bcd_time(sent, 6) + params, uplink=False, end=ENQ)


class Reassembler:
    """Joins the packets of a multi-packet (M3) message, per station and function; bounded."""

    def __init__(self, max_packets: int = 256, body_decoder: Callable[..., Report] | None = None) -> None:
        self.max_packets = max_packets
        self.body_decoder = body_decoder or decode_body  # sl651_ascii.decode_body for ASCII frames
        self.pending: dict[tuple[str, int], dict[int, Frame]] = {}

    def feed(self, frame: Frame) -> Frame | None:
        """The whole message once its last packet arrived, else None. Single-packet frames pass through."""
        if frame.packet is None or frame.packet[0] == 1:
            return frame
        total, number = frame.packet
        if total > self.max_packets:
            raise FrameError("bad_packet", HEADER + 1, f"{total} packets is over the bound of {self.max_packets}")
        key = (frame.station, frame.function)
        parts = self.pending.setdefault(key, {})
        if parts and next(iter(parts.values())).packet[0] != total:  # type: ignore[index]
            parts.clear()  # a new message replaced an unfinished one
        parts[number] = frame
        if len(parts) < total:
            return None
        del self.pending[key]
        body = b"".join(parts[n].body for n in range(1, total + 1))
        report = self.body_decoder(frame.function, body, frame.uplink, offset=HEADER + 4)
        first = parts[1]
        return Frame(first.uplink, first.centre, first.station, first.password, first.function, first.start,
                     frame.end, body, frame.crc, (total, total), report)
