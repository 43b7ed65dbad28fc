"""SZY 206-2016 / SL/T 427-2021 frames (``68 L 68 C A AFN data CS 16``): decode, encode, answers.

Pure code like :mod:`edge.telemetry.sl651`. L counts C, A and the user data (AFN and its data);
CS is CRC-8 (poly 0xE5, init 0, MSB first) over C through the last data byte. What is and is not
verified against the standard's text is in docs/stations.md: the C function codes below are those
of SL/T 427-2021 tables 5 and 6; the unit of flow is not settled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from edge.telemetry.errors import FrameError, bcd_digits, to_bcd

START, END = 0x68, 0x16
MIN_L = 7  # C + A (5) + AFN
AFN_LINK, AFN_QUERY_ANSWER, AFN_REPORT, AFN_VOLTAGE = 0x02, 0xB0, 0xC0, 0x84
AFNS = {AFN_LINK: "link check", AFN_QUERY_ANSWER: "query real-time values (answer)",
        AFN_REPORT: "self-reported real-time values", AFN_VOLTAGE: "self-reported supply voltage"}
LINK = {0xF0: "login", 0xF1: "logout", 0xF2: "keep-alive"}
STATUS_BYTES = 4  # alarm (2) + terminal state (2)
TP_BYTES = 5  # SZY 206-2016: second, minute, hour, day (BCD) + allowed delay (BIN minutes)
TP_BYTES_2021 = 7  # SL/T 427-2021: second, minute, hour, day, month, year (BCD) + allowed delay


@dataclass(frozen=True)
class FieldSpec:
    name: str  # "flow", "volume", "level", "rain": the names a station's mapping refers to
    size: int
    decimals: int
    signed: bool
    unit: str


# C's D3-D0 -> what one group of the real-time data holds (SL/T 427-2021 table 6). Only these decode.
FUNCTIONS: dict[int, tuple[str, tuple[FieldSpec, ...]]] = {
    1: ("rain", (FieldSpec("rain", 3, 1, False, "mm"),)),
    2: ("water level", (FieldSpec("level", 4, 3, True, "m"),)),
    3: ("flow and volume", (FieldSpec("flow", 5, 3, True, "m3/s"), FieldSpec("volume", 5, 0, False, "m3"))),
}


# AFN 84 (SL/T 427-2021): the terminal's supply voltage, 2 bytes BCD low byte first, 0-99.99 V (table 46),
# whatever C's function code; then alarm, state and Tp like the real-time data.
VOLTAGE: tuple[str, tuple[FieldSpec, ...]] = ("supply voltage", (FieldSpec("voltage", 2, 2, False, "V"),))


def layout_of(afn: int, function: int) -> tuple[str, tuple[FieldSpec, ...]] | None:
    """What one group of a data frame holds: by AFN 84, else by C's function code."""
    return VOLTAGE if afn == AFN_VOLTAGE else FUNCTIONS.get(function)


def cs8(data: bytes) -> int:
    """CRC-8, polynomial 0xE5, init 0, MSB first, no reflection: SZY 206's CS."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0xE5) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


@dataclass(frozen=True)
class Value:
    name: str
    value: Decimal
    unit: str
    index: int = 0  # which group (meter) of a multi-group report
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class TimeLabel:
    """Tp: 5 bytes in SZY 206-2016 (no month or year), 7 in SL/T 427-2021 (with them)."""

    second: int
    minute: int
    hour: int
    day: int
    delay_min: int
    month: int | None = None
    year: int | None = None  # 2000-2099

    @property
    def size(self) -> int:
        return TP_BYTES if self.month is None else TP_BYTES_2021


@dataclass(frozen=True)
class Frame:
    uplink: bool
    frame_count: int  # C D5-D4
    function: int  # C D3-D0
    address: str  # the 5 address bytes as transmitted, 10 hex digits (region BCD + station HEX low first)
    afn: int
    data: bytes
    cs: int
    divs: int | None = None  # split-frame count down, when C's D6 is set
    link: str | None = None  # AFN 02: login, logout, keep-alive
    values: tuple[Value, ...] = ()
    alarm: int | None = None
    state: int | None = None
    tp: TimeLabel | None = None

    @property
    def control(self) -> int:
        return (0x80 if self.uplink else 0) | (0x40 if self.divs is not None else 0) | \
            (self.frame_count << 4) | self.function

    @property
    def region(self) -> str:
        return self.address[:6]

    @property
    def station_number(self) -> int:
        return int.from_bytes(bytes.fromhex(self.address[6:]), "little")

    @property
    def afn_name(self) -> str:
        return AFNS.get(self.afn, "?")

    @property
    def function_name(self) -> str:
        return (layout_of(self.afn, self.function) or ("?",))[0]

    @property
    def specs(self) -> tuple[FieldSpec, ...]:
        return (layout_of(self.afn, self.function) or ("", ()))[1]


def frame_size(prefix: bytes) -> int | None:
    """The full length of the frame ``prefix`` begins, or None while its 3-byte head is incomplete."""
    for at, expected in ((0, START), (2, START)):
        if len(prefix) > at and prefix[at] != expected:
            raise FrameError("bad_start", at, f"a frame starts 68 L 68, byte {at} is {prefix[at]:02X}")
    if len(prefix) < 3:
        return None
    if prefix[1] < MIN_L:
        raise FrameError("bad_length", 1, f"L = {prefix[1]}: C, address and AFN need at least {MIN_L}")
    return prefix[1] + 5


def decode(frame: bytes) -> Frame:
    """Decode exactly one frame, checking start, length, CS and the end byte 16."""
    size = frame_size(frame[:3])
    if size is None or len(frame) < size:
        raise FrameError("truncated", len(frame), f"frame has {len(frame)} bytes, its L needs {size or 3}")
    if len(frame) > size:
        raise FrameError("too_long", size, f"{len(frame) - size} bytes after the end byte 16")
    if frame[-1] != END:
        raise FrameError("bad_end", size - 1, f"the last byte is {frame[-1]:02X}, expected 16")
    expected, got = cs8(frame[3:-2]), frame[-2]
    if expected != got:
        raise FrameError("bad_cs", size - 2, f"CRC-8 (poly E5, init 0) over bytes 3-{size - 3} is {expected:02X}, "
                         f"the frame says {got:02X}")
    control = frame[3]
    split = bool(control & 0x40)
    address_at = 5 if split else 4
    if address_at + 6 > size - 2:
        raise FrameError("bad_length", 1, "a split frame needs L of at least 8 (C, DIVS, address, AFN)")
    afn_at = address_at + 5
    afn, data = frame[afn_at], frame[afn_at + 1:-2]
    head = {"uplink": bool(control & 0x80), "frame_count": (control >> 4) & 0x03, "function": control & 0x0F,
            "address": frame[address_at:afn_at].hex().upper(), "afn": afn, "data": data, "cs": got,
            "divs": frame[4] if split else None}
    if afn == AFN_LINK:
        return Frame(**head, link=_link(data, afn_at + 1))
    if afn in (AFN_REPORT, AFN_QUERY_ANSWER, AFN_VOLTAGE):
        return Frame(**head, **_realtime(afn, control & 0x0F, data, afn_at + 1))
    raise FrameError("unknown_function", afn_at, f"AFN {afn:02X}: decoded are 02 (link), B0 and C0 (real-time), "
                     "84 (supply voltage)")


def _link(data: bytes, at: int) -> str:
    if not data or data[0] not in LINK:
        shown = data[:1].hex().upper() or "nothing"
        raise FrameError("bad_body", at, f"AFN 02 data is F0 login, F1 logout or F2 keep-alive, got {shown}")
    return LINK[data[0]]


def _realtime(afn: int, function: int, data: bytes, at: int) -> dict:
    layout = layout_of(afn, function)
    if layout is None:
        raise FrameError("unknown_function", 3, f"C function {function}: decoded are "
                         + ", ".join(f"{k} {v[0]}" for k, v in FUNCTIONS.items()))
    name, specs = layout
    group = sum(spec.size for spec in specs)
    # The edition shows in the length: the 2021 Tp is 2 bytes longer, and no group size of the real-time
    # data divides 2; the voltage (2 bytes) comes alone.
    def fits(values_len: int) -> bool:
        return values_len == group if afn == AFN_VOLTAGE else values_len >= group and values_len % group == 0

    tp_size = next((size for size in (TP_BYTES, TP_BYTES_2021) if fits(len(data) - STATUS_BYTES - size)), None)
    if tp_size is None:
        raise FrameError("bad_body", at, f"{len(data)} data bytes: {name} data is groups of "
                         f"{group} bytes, then alarm and state (4) and the time label (5, or 7 in SL/T 427-2021)")
    values_len = len(data) - STATUS_BYTES - tp_size
    values, pos = [], 0
    for index in range(values_len // group):
        for spec in specs:
            raw = data[pos:pos + spec.size]
            values.append(Value(spec.name, _bcd_le(raw, spec, at + pos), spec.unit, index, at + pos))
            pos += spec.size
    status = data[pos:pos + STATUS_BYTES]
    return {"values": tuple(values), "alarm": int.from_bytes(status[:2], "little"),
            "state": int.from_bytes(status[2:], "little"), "tp": _tp(data[pos + STATUS_BYTES:], at + pos + 4)}


def _bcd_le(raw: bytes, spec: FieldSpec, at: int) -> Decimal:
    """BCD low byte first; with ``signed``, a non-zero top nibble marks a negative value."""
    digits = raw[::-1].hex()
    negative = spec.signed and digits[0] != "0"
    if negative:
        digits = "0" + digits[1:]
    text = bcd_digits(bytes.fromhex(digits), at, f"{spec.name}")
    magnitude = Decimal(int(text)).scaleb(-spec.decimals)
    return -magnitude if negative else magnitude


def _tp(raw: bytes, at: int) -> TimeLabel:
    stamp = raw[:-1]
    parts = [int(bcd_digits(stamp[i:i + 1], at + i, "time label")) for i in range(len(stamp))]
    second, minute, hour, day = parts[:4]
    month, year = (parts[4], 2000 + parts[5]) if len(parts) == 6 else (None, None)
    if second > 59 or minute > 59 or hour > 23 or not 1 <= day <= 31 or (month is not None and not 1 <= month <= 12):
        raise FrameError("bad_time", at, f"time label {stamp.hex(' ').upper()} (second minute hour day"
                         f"{' month year' if month else ''}) is no time")
    return TimeLabel(second, minute, hour, day, raw[-1], month, year)


# ----------------------------------------------------------------------------------------- encoding


def encode(*, address: str, afn: int, data: bytes, function: int = 0, uplink: bool = True, frame_count: int = 0,
           divs: int | None = None) -> bytes:
    control = (0x80 if uplink else 0) | (0x40 if divs is not None else 0) | ((frame_count & 3) << 4) | function
    user = bytes([control]) + (bytes([divs]) if divs is not None else b"") + bytes.fromhex(address) + \
        bytes([afn]) + data
    if len(user) > 255:
        raise ValueError(f"user data of {len(user)} bytes: L is one byte")
    return bytes([START, len(user), START]) + user + bytes([cs8(user), END])


def realtime_data(function: int, groups: list[dict[str, Decimal]], *, alarm: int = 0, state: int = 0,
                  tp: TimeLabel, afn: int = AFN_REPORT) -> bytes:
    """The C0/B0/84 data of ``groups`` (one dict of field name -> value per meter)."""
    out = bytearray()
    layout = layout_of(afn, function)
    assert layout is not None, f"no layout for AFN {afn:02X}, function {function}"
    for group in groups:
        for spec in layout[1]:
            out += _to_bcd_le(group[spec.name], spec)
    out += alarm.to_bytes(2, "little") + state.to_bytes(2, "little")
    stamp = (tp.second, tp.minute, tp.hour, tp.day) + (() if tp.month is None else (tp.month, (tp.year or 2000) % 100))
    out += b"".join(to_bcd(v, 1) for v in stamp) + bytes([tp.delay_min])
    return bytes(out)


def _to_bcd_le(value: Decimal, spec: FieldSpec) -> bytes:
    scaled = int(value.scaleb(spec.decimals).to_integral_value())
    raw = bytearray(to_bcd(abs(scaled), spec.size))
    if scaled < 0:
        if raw[0] & 0xF0:
            raise ValueError(f"{value} leaves no room for the sign nibble")
        raw[0] |= 0xF0
    return bytes(raw[::-1])


def answer(frame: Frame) -> bytes | None:
    """The centre's downlink answer: AFN 02 echoes login/logout/keep-alive; real-time data gets none."""
    if frame.afn != AFN_LINK or not frame.uplink:
        return None
    return encode(address=frame.address, afn=AFN_LINK, data=frame.data[:1], function=frame.function, uplink=False,
                  frame_count=frame.frame_count)
