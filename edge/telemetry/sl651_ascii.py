"""SL 651-2014 ASCII frames (``SOH``): the same frames as :mod:`edge.telemetry.sl651`, in characters.

§6.4 and §6.6.2 of the draft: SOH · centre (2 hex characters) · station (10) · password (4 hex) ·
function (2 hex) · direction and length (4 hex: ``0``/``8`` then 3 for the body length) · STX, or
SYN + packet total and number (3 + 3 hex) · body · end · CRC-16/MODBUS as 4 hex characters, high
byte first, over every byte before it. So a frame is ``length + 29`` bytes.

The body is serial (4 hex) and send time (12 digits), then, with no space after them, groups of
``identifier SP data SP`` where identifiers are the ASCII symbols of appendix C (``ST`` station,
``TT`` observation time, ``Z``, ``VT``, …); the last space is part of the body. Decoded frames are
the same :class:`~edge.telemetry.sl651.Frame`/``Report``/``Element`` as HEX ones (an element's
``size`` is 0: ASCII values carry their own digits). Series: the step code is the identifier
``DRxnn`` itself (table C.2), followed in an even-interval body by one group of identifiers and
then the values time by time (6.6.4.4); ``DRH00`` pairs with the hour's ``DRP``/``DRZn`` groups,
whose values are their HEX bytes as hex characters. ``ST`` also separates the stations of a
multi-station body (6.6.2.7).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal, InvalidOperation

from edge.telemetry.errors import FrameError, Reason
from edge.telemetry.sl651 import (
    ENQ,
    EOT,
    ETX,
    KEEP_ALIVE,
    REPORT_FUNCTIONS,
    STATUS_BITS,
    STX,
    SYN,
    Element,
    Frame,
    Report,
    check_codes,
    check_packet,
    check_size,
    crc16,
)
from edge.telemetry.sl651_elements import ADDRESSED_FUNCTIONS, ELEMENTS, HOUR_SERIES, STATUS_FUNCTIONS

SOH = 0x01
HEADER = 23  # SOH, centre, station, password, function, direction+length
OVERHEAD = 29  # header + start of body + end + 4 CRC characters
MAX_BODY = 4095
BY_SYMBOL = {symbol: code for code, (symbol, _, _) in ELEMENTS.items() if code not in (0x04,)}
STEP_UNITS = {"D": 86400, "H": 3600, "N": 60}


def frame_size(prefix: bytes) -> int | None:
    """The full length of the ASCII frame ``prefix`` begins, or None while the header is incomplete."""
    if prefix[:1] and prefix[0] != SOH:
        raise FrameError("bad_start", 0, f"an ASCII frame starts with SOH 01, got {prefix[0]:02X}")
    if len(prefix) < HEADER:
        return None
    return _length(prefix) + OVERHEAD


def _hex(frame: bytes, at: int, size: int, what: str, reason: Reason = "bad_body") -> int:
    text = frame[at:at + size]
    if len(text) != size or not all(chr(c) in "0123456789ABCDEFabcdef" for c in text):
        raise FrameError(reason, at, f"{what} {text!r} is not {size} hex characters")
    return int(text, 16)


def _length(frame: bytes) -> int:
    direction = frame[19:20]
    if direction not in (b"0", b"8"):
        raise FrameError("bad_direction", 19, f"direction character {direction!r}: '0' is uplink, '8' downlink")
    length = _hex(frame, 20, 3, "body length", "bad_length")
    if length == 0:
        raise FrameError("bad_length", 20, "body length 0: the standard allows 1-4095")
    return length


def decode(frame: bytes, *, max_size: int = MAX_BODY + OVERHEAD) -> Frame:
    """Decode exactly one ASCII frame, checking start, length, end character and CRC."""
    size = check_size(frame, frame_size(frame[:HEADER]), HEADER, max_size, 19)
    expected, got = crc16(frame[:-4]), _hex(frame, size - 4, 4, "CRC", "bad_crc")
    if expected != got:
        raise FrameError("bad_crc", size - 4, f"CRC-16/MODBUS over bytes 0-{size - 5} is {expected:04X}, the frame "
                         f"says {got:04X}")
    uplink = frame[19:20] == b"0"
    centre_at, station_at = (1, 3) if uplink else (11, 1)
    function = _hex(frame, 17, 2, "function code")
    start, end = frame[HEADER], frame[size - 5]
    check_codes(function, 17, start, HEADER, end, size - 5, uplink)
    packet, body_at = None, HEADER + 1
    if start == SYN:
        total, number = _hex(frame, HEADER + 1, 3, "packet total"), _hex(frame, HEADER + 4, 3, "packet number")
        packet, body_at = check_packet(total, number, HEADER + 1), HEADER + 7
    body = frame[body_at:size - 5]
    station = frame[station_at:station_at + 10].decode("ascii", "replace").upper()
    report = None if uplink and packet and packet[0] > 1 else decode_body(function, body, uplink, offset=body_at)
    return Frame(uplink, _hex(frame, centre_at, 2, "centre address"), station, _hex(frame, 13, 4,
                 "password"), function, start, end, body, got, packet, report)


def decode_body(function: int, body: bytes, uplink: bool = True, *, offset: int = 0) -> Report:
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise FrameError("bad_body", offset + exc.start, "a non-ASCII byte in an ASCII body") from None
    if len(text) < 16:
        raise FrameError("bad_body", offset, f"the body needs serial and send time (16 characters), has {len(text)}")
    serial = _hex(body, 0, 4, "serial number")
    sent = _time(text[4:16], offset + 4, "send time")
    rest = text[16:]
    if uplink and function in ADDRESSED_FUNCTIONS:
        tokens = _tokens(rest, offset + 16)
        station = _expect(tokens, "ST", "station address guide ST")[0].upper()
        if function in STATUS_FUNCTIONS:
            return Report(serial, sent, station, elements=_elements(tokens, sent))
        return Report(serial, sent, station, rest=" ".join(word for word, _ in reversed(tokens)).encode())
    if not uplink or function not in REPORT_FUNCTIONS:
        if function == KEEP_ALIVE and rest.strip():
            raise FrameError("bad_body", offset + 16, "a keep-alive body is serial and send time only")
        return Report(serial, sent, rest=rest.encode())
    tokens = _tokens(rest, offset + 16)
    parts = [_station_part(tokens, serial, sent)]
    while tokens:  # a multi-station body (6.6.2.7): the next ST starts the next station
        parts.append(_station_part(tokens, serial, sent))
    return dataclasses.replace(parts[0], others=tuple(parts[1:]))


def _station_part(tokens: list[tuple[str, int]], serial: int, sent: dt.datetime) -> Report:
    station = _expect(tokens, "ST", "station address guide ST")
    station_type = _take(tokens, "station type")
    observed = _time(*_expect(tokens, "TT", "observation time guide TT"), "observation time")
    return Report(serial, sent, station[0].upper(), ord(station_type[0]) if len(station_type[0]) == 1 else 0,
                  observed, _elements(tokens, observed))


def _elements(tokens: list[tuple[str, int]], observed: dt.datetime) -> tuple[Element, ...]:
    """Elements up to the end of the body or the next station's ST."""
    elements: list[Element] = []
    while tokens and tokens[-1][0] != "ST":
        symbol, at = _take(tokens, "element identifier")
        if symbol == "TT":
            observed = _time(*_take(tokens, "observation time"), "observation time")
        elif symbol.startswith("DR") and symbol not in BY_SYMBOL:
            step_s = _step(symbol, at)
            if step_s:  # even-interval data: an identifier group, then the values time by time
                elements += _series(tokens, observed, step_s, at)
        elif (code := BY_SYMBOL.get(symbol)) is None:
            raise FrameError("bad_element", at, f"{symbol!r} is no element identifier of appendix C")
        else:
            value_text, value_at = _take(tokens, f"value of {symbol}")
            elements.append(_element(code, symbol, value_text, value_at, observed, at))
    return tuple(elements)


def _element(code: int, symbol: str, text: str, at: int, observed: dt.datetime, ident_at: int) -> Element:
    if code in HOUR_SERIES:  # twelve 5-minute values, each its HEX bytes as hex characters
        width, unit = HOUR_SERIES[code]
        if len(text) != 24 * width or not _is_hex(text):
            raise FrameError("bad_element", at, f"{symbol} holds 12 values of {2 * width} hex characters, got "
                             f"{text!r}")
        chars = 2 * width
        values = tuple(None if text[i:i + chars].upper() == "F" * chars else int(text[i:i + chars], 16) *
                       Decimal(unit) for i in range(0, len(text), chars))
        return Element(code, 0, 0, values=values, step_s=300, observed=observed, offset=ident_at)
    if code == STATUS_BITS:
        if len(text) != 8 or not _is_hex(text):
            raise FrameError("bad_element", at, f"ZT is 4 bytes as 8 hex characters, got {text!r}")
        return Element(code, 0, 0, value=Decimal(int(text, 16)), observed=observed, offset=ident_at)
    return Element(code, 0, _decimals(text), value=_value(text, at, symbol), observed=observed, offset=ident_at)


def _step(symbol: str, at: int) -> int:
    """``DRxnn`` (table C.2): x is D, H or N (days, hours, minutes); DRH00 pairs with DRP/DRZ groups."""
    unit, digits = symbol[2:3], symbol[3:]
    if unit not in STEP_UNITS or len(digits) != 2 or not digits.isdigit():
        raise FrameError("bad_element", at, f"time step code {symbol!r} is not DRDnn, DRHnn or DRNnn")
    return int(digits) * STEP_UNITS[unit]


def _series(tokens: list[tuple[str, int]], observed: dt.datetime, step_s: int, at: int) -> list[Element]:
    codes = []
    while tokens and tokens[-1][0] in BY_SYMBOL and tokens[-1][0] not in ("ST", "TT"):
        codes.append(BY_SYMBOL[_take(tokens, "series identifier")[0]])
    data = []
    while tokens and tokens[-1][0] != "ST":
        data.append(_take(tokens, "series value"))
    if not codes or not data or len(data) % len(codes):
        raise FrameError("bad_element", at, f"an even-interval series of {len(codes)} elements has {len(data)} "
                         "values: expected a whole number of values per element")
    out = []
    for index, code in enumerate(codes):
        column = data[index::len(codes)]
        symbol = ELEMENTS[code][0]
        values = tuple(_value(text, value_at, symbol) for text, value_at in column)
        decimals = max((_decimals(text) for text, _ in column), default=0)
        out.append(Element(code, 0, decimals, values=values, step_s=step_s, observed=observed, offset=at))
    return out


def _is_hex(text: str) -> bool:
    return all(char in "0123456789ABCDEFabcdef" for char in text)


def _tokens(text: str, offset: int) -> list[tuple[str, int]]:
    out, at = [], offset
    for word in text.split(" "):
        if word:
            out.append((word, at))
        at += len(word) + 1
    out.reverse()  # taken from the end
    return out


def _take(tokens: list[tuple[str, int]], what: str) -> tuple[str, int]:
    if not tokens:
        raise FrameError("bad_body", 0, f"the body ends before the {what}")
    return tokens.pop()


def _expect(tokens: list[tuple[str, int]], guide: str, what: str) -> tuple[str, int]:
    word, at = _take(tokens, what)
    if word != guide:
        raise FrameError("bad_body", at, f"expected {what}, got {word!r}")
    return _take(tokens, f"data of {guide}")


def _time(text: str, at: int, what: str) -> dt.datetime:
    if not text.isdigit() or len(text) not in (10, 12):
        raise FrameError("bad_time", at, f"{what} {text!r} is not YYMMDDhhmm[ss]")
    parts = [int(text[i:i + 2]) for i in range(0, len(text), 2)] + [0]
    try:
        return dt.datetime(2000 + parts[0], *parts[1:6])
    except ValueError as exc:
        raise FrameError("bad_time", at, f"{what} {text}: {exc}") from None


def _decimals(text: str) -> int:
    return len(text.partition(".")[2])


def _value(text: str, at: int, symbol: str) -> Decimal | None:
    if text == "M":
        return None  # no data (6.6.4.4 d)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise FrameError("bad_element", at, f"{symbol} value {text!r} is no number") from None
    if not value.is_finite():
        raise FrameError("bad_element", at, f"{symbol} value {text!r} is no number")
    return value


# ----------------------------------------------------------------------------------------- encoding


def encode(*, centre: int, station: str, password: int, function: int, body: bytes, uplink: bool = True,
           end: int | None = None, packet: tuple[int, int] | None = None) -> bytes:
    end = end if end is not None else (ETX if uplink else EOT)
    if len(station) != 10:
        raise ValueError(f"station address {station!r} is not 10 characters")
    addresses = f"{centre:02X}{station}" if uplink else f"{station}{centre:02X}"
    start = bytes([STX]) if packet is None else bytes([SYN]) + f"{packet[0]:03X}{packet[1]:03X}".encode()
    length = len(body) + len(start) - 1
    if not 1 <= length <= MAX_BODY:
        raise ValueError(f"body of {length} bytes: a frame carries 1-{MAX_BODY}")
    head = f"{addresses}{password:04X}{function:02X}{'0' if uplink else '8'}{length:03X}".encode()
    frame = bytes([SOH]) + head + start + body + bytes([end])
    return frame + f"{crc16(frame):04X}".encode()


def encode_body(report: Report, function: int) -> bytes:
    text = f"{report.serial:04X}{report.sent:%y%m%d%H%M%S}"
    if function in ADDRESSED_FUNCTIONS and report.station is not None:
        text += f"ST {report.station} " + "".join(_element_text(e) for e in report.elements)
        return text.encode() + (report.rest + b" " if report.rest else b"")
    if function not in REPORT_FUNCTIONS or report.station is None:
        return text.encode() + report.rest
    for part in report.parts:
        text += f"ST {part.station} {chr(part.station_type or 0x49)} TT {(part.observed or part.sent):%y%m%d%H%M} "
        observed = part.observed
        series = [e for e in part.elements if e.step_s and e.code not in HOUR_SERIES]
        hour_step = False
        for element in part.elements:
            if element in series:
                continue
            if element.observed is not None and element.observed != observed:
                observed = element.observed
                text += f"TT {observed:%y%m%d%H%M} "
            if element.code in HOUR_SERIES and not hour_step:
                text, hour_step = text + "DRH00 ", True  # the fixed pairing with the hour's groups
            text += _element_text(element)
        if series:
            text += _series_text(series)
    return text.encode()


def _element_text(element: Element) -> str:
    if element.code in HOUR_SERIES:
        width, unit = HOUR_SERIES[element.code]
        data = "".join("FF" * width if v is None else f"{int(v / Decimal(unit)):0{2 * width}X}"
                       for v in element.values)
        return f"{element.symbol} {data} "
    if element.code == STATUS_BITS:
        return f"{element.symbol} {int(element.value or 0):08X} "
    return f"{element.symbol} {_shown(element.value, element.decimals)} "


def _series_text(series: list[Element]) -> str:
    step = series[0].step_s or 0
    unit = next(u for u, s in (("D", 86400), ("H", 3600), ("N", 60)) if step % s == 0)
    text = f"DR{unit}{step // STEP_UNITS[unit]:02d} " + "".join(f"{e.symbol} " for e in series)
    for values in zip(*(e.values for e in series), strict=True):
        text += "".join(f"{_shown(v, e.decimals)} " for v, e in zip(values, series, strict=True))
    return text


def _shown(value: Decimal | None, decimals: int) -> str:
    return "M" if value is None else f"{value:.{decimals}f}"


def answer(frame: Frame, *, sent: dt.datetime, end: int = EOT) -> bytes | None:
    """The centre's ASCII confirmation of an uplink ASCII frame (as :func:`edge.telemetry.sl651.answer`)."""
    if frame.function == KEEP_ALIVE or (frame.report is None and frame.packet is None):
        return None
    serial = frame.report.serial if frame.report else 0
    return encode(centre=frame.centre, station=frame.station, password=frame.password, function=frame.function,
                  body=f"{serial:04X}{sent:%y%m%d%H%M%S}".encode(), uplink=False, end=end, packet=frame.packet)


def query(*, centre: int, station: str, password: int, function: int, sent: dt.datetime,
          params: bytes = b"") -> bytes:
    """The centre's ASCII query or command (as :func:`edge.telemetry.sl651.query`)."""
    return encode(centre=centre, station=station, password=password, function=function,
                  body=f"0000{sent:%y%m%d%H%M%S}".encode() + params, uplink=False, end=ENQ)
