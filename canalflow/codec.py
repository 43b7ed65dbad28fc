"""Modbus register codec: numbers <-> 16-bit register words, in every word/byte order.

Shared by the simulator (``encode``) and the edge agent (``decode``), so both sides agree by
construction.

Word orders, defined on the value's big-endian bytes ``A B C D`` (A most significant):

=====  ====================  ==========================================
order  registers on the wire  also known as
=====  ====================  ==========================================
ABCD   ``[AB, CD]``          big-endian, "high word first"
CDAB   ``[CD, AB]``          word-swapped, "low word first" (TUF-2000M)
BADC   ``[BA, DC]``          byte-swapped inside each word
DCBA   ``[DC, BA]``          little-endian
=====  ====================  ==========================================

So an order is two independent switches: reverse the word sequence (CDAB, DCBA) and swap the two
bytes inside each word (BADC, DCBA). The same switches extend to 64-bit values (4 words) and to
16-bit values, where only the byte swap has an effect (``BADC``/``DCBA`` read ``[BA]``).

``scale`` maps raw register numbers to engineering values: ``value = raw * scale``. For integer
types ``raw = round(value / scale)``; a value that does not fit raises :class:`CodecError` (or is
clamped, or wraps like a rolling-over totaliser, if asked).

``bcd_datetime`` is a meter calendar in 3 registers of BCD bytes ``SS MM hh DD MO YY`` (year
2000-2099), as the TUF-2000M family keeps it: the value is the calendar's wall-clock time as
epoch seconds read as if UTC (``canalflow.clock.wall_to_utc`` applies the site's time zone).
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from canalflow.errors import CanalflowError

ORDERS: tuple[str, ...] = ("ABCD", "CDAB", "BADC", "DCBA")

# order -> (reverse word sequence, swap bytes in each word)
_ORDER_SWITCHES: dict[str, tuple[bool, bool]] = {
    "ABCD": (False, False),
    "CDAB": (True, False),
    "BADC": (False, True),
    "DCBA": (True, True),
}


@dataclass(frozen=True)
class TypeInfo:
    """A register data type: struct code, size in words, integer range."""

    name: str
    code: str  # struct format character (big-endian)
    words: int
    is_float: bool
    min: int = 0
    max: int = 0


def _int_type(name: str, code: str, words: int, signed: bool) -> TypeInfo:
    bits = 16 * words
    low = -(1 << (bits - 1)) if signed else 0
    high = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    return TypeInfo(name, code, words, False, low, high)


TYPES: dict[str, TypeInfo] = {
    t.name: t
    for t in (
        _int_type("int16", "h", 1, True),
        _int_type("uint16", "H", 1, False),
        _int_type("int32", "i", 2, True),
        _int_type("uint32", "I", 2, False),
        _int_type("int64", "q", 4, True),
        _int_type("uint64", "Q", 4, False),
        TypeInfo("float32", "f", 2, True),
        TypeInfo("float64", "d", 4, True),
        TypeInfo("bcd_datetime", "", 3, False),  # no struct code: see _encode_bcd_datetime
    )
}
BCD_DATETIME = "bcd_datetime"


class CodecError(CanalflowError, ValueError):
    """A value or register block that cannot be encoded/decoded as asked; says why and what to do."""


def type_info(type: str) -> TypeInfo:
    """The TypeInfo of a type name; CodecError naming the known types if unknown."""
    try:
        return TYPES[type]
    except KeyError:
        raise CodecError(f"unknown register type {type!r} (known: {', '.join(TYPES)})") from None


def word_count(type: str) -> int:
    """Number of 16-bit registers a value of ``type`` occupies (1, 2, 3 or 4)."""
    return type_info(type).words


def _switches(order: str) -> tuple[bool, bool]:
    try:
        return _ORDER_SWITCHES[order]
    except KeyError:
        raise CodecError(f"unknown word order {order!r} (known: {', '.join(ORDERS)})") from None


def _to_words(data: bytes, order: str) -> list[int]:
    """Big-endian value bytes -> register words in ``order``."""
    reverse, swap = _switches(order)
    pairs = [data[i : i + 2] for i in range(0, len(data), 2)]
    if reverse:
        pairs.reverse()
    if swap:
        pairs = [p[::-1] for p in pairs]
    return [int.from_bytes(p, "big") for p in pairs]


def _from_words(words: Sequence[int], order: str) -> bytes:
    """Register words in ``order`` -> big-endian value bytes (the inverse of _to_words)."""
    reverse, swap = _switches(order)
    pairs = [w.to_bytes(2, "big") for w in words]
    if swap:
        pairs = [p[::-1] for p in pairs]
    if reverse:
        pairs.reverse()
    return b"".join(pairs)


def _raw_int(value: float | int, info: TypeInfo, scale: float, clamp: bool, wrap: bool) -> int:
    if isinstance(value, float) and not math.isfinite(value):
        raise CodecError(f"cannot encode {value} as {info.name}: integers have no NaN/infinity")
    raw = round(value / scale) if scale != 1.0 else round(value)
    if info.min <= raw <= info.max:
        return raw
    if wrap:
        span = info.max - info.min + 1
        return (raw - info.min) % span + info.min
    if clamp:
        return max(info.min, min(info.max, raw))
    raise CodecError(
        f"value {value} (raw {raw} at scale {scale}) does not fit {info.name} "
        f"[{info.min}, {info.max}]; use a wider type or a coarser scale"
    )


def _check_scale(scale: float) -> None:
    if not (math.isfinite(scale) and scale > 0):
        raise CodecError(f"scale must be a positive finite number, got {scale!r}")


def encode(
    value: float | int,
    type: str,
    order: str = "ABCD",
    scale: float = 1.0,
    *,
    clamp: bool = False,
    wrap: bool = False,
) -> list[int]:
    """Encode an engineering ``value`` into register words.

    Integer types store ``round(value / scale)``. Out of range raises CodecError unless
    ``clamp`` (saturate at the type's limits) or ``wrap`` (modulo 2^bits, like a totaliser
    rolling over) is set. Floats store ``value / scale``; a float32 overflow raises.
    """
    info = type_info(type)
    _check_scale(scale)
    if type == BCD_DATETIME:
        _no_scale(scale)
        return _to_words(_bcd_datetime_bytes(value), order)
    if info.is_float:
        scaled = value / scale if scale != 1.0 else float(value)
        try:
            data = struct.pack(">" + info.code, scaled)
        except (OverflowError, struct.error) as exc:
            raise CodecError(f"value {value} does not fit {type}: {exc}; use float64") from None
    else:
        data = struct.pack(">" + info.code, _raw_int(value, info, scale, clamp, wrap))
    return _to_words(data, order)


def _check_words(words: Sequence[int], info: TypeInfo) -> None:
    if len(words) != info.words:
        raise CodecError(f"{info.name} needs {info.words} register(s), got {len(words)}: {format_words(words)}")
    for word in words:
        if not isinstance(word, int) or not 0 <= word <= 0xFFFF:
            raise CodecError(f"register word {word!r} is not a 16-bit unsigned value (0..65535)")


def apply_scale(raw: float | int, scale: float) -> float | int:
    """``raw * scale``, computed as ``raw / (1/scale)`` when that is exact (0.01 -> /100),
    so 12345 at scale 0.01 reads 123.45 and not 123.45000000000002."""
    if scale == 1.0:
        return raw
    inverse = 1.0 / scale
    if inverse >= 1.0 and abs(inverse - round(inverse)) < 1e-9 * inverse:
        return raw / round(inverse)
    return raw * scale


def decode(words: Sequence[int], type: str, order: str = "ABCD", scale: float = 1.0) -> float | int:
    """Decode register words into an engineering value (``raw * scale``).

    Integer types with scale 1 return ``int``; everything else returns ``float`` (NaN and
    infinities of float registers pass through: the caller decides what they mean).
    """
    info = type_info(type)
    _check_scale(scale)
    _check_words(words, info)
    if type == BCD_DATETIME:
        _no_scale(scale)
        return _bcd_datetime_value(_from_words(words, order), words)
    (raw,) = struct.unpack(">" + info.code, _from_words(words, order))
    return apply_scale(raw, scale)


def _no_scale(scale: float) -> None:
    if scale != 1.0:
        raise CodecError(f"a {BCD_DATETIME} register is a calendar: it takes no scale (got {scale})")


def _bcd_datetime_bytes(value: float | int) -> bytes:
    if isinstance(value, float) and not math.isfinite(value):
        raise CodecError(f"cannot encode {value} as {BCD_DATETIME}: a calendar has no NaN/infinity")
    t = dt.datetime.fromtimestamp(int(value), dt.UTC)
    if not 2000 <= t.year <= 2099:
        raise CodecError(f"{t:%Y-%m-%d} does not fit {BCD_DATETIME}: its two-digit year spans 2000-2099")
    return bytes((n // 10) << 4 | n % 10 for n in (t.second, t.minute, t.hour, t.day, t.month, t.year - 2000))


def _bcd_datetime_value(data: bytes, words: Sequence[int]) -> int:
    digits = []
    for byte in data:
        high, low = byte >> 4, byte & 0x0F
        if high > 9 or low > 9:
            raise CodecError(f"byte 0x{byte:02X} of {format_words(words)} is not BCD (two decimal digits): "
                             "is this the calendar register, in the right word order?")
        digits.append(10 * high + low)
    second, minute, hour, day, month, year = digits
    try:
        t = dt.datetime(2000 + year, month, day, hour, minute, second, tzinfo=dt.UTC)
    except ValueError as exc:
        raise CodecError(f"{format_words(words)} is not a calendar time ({exc}): read as "
                         f"{second:02}s {minute:02}m {hour:02}h day {day} month {month} year {year:02}") from None
    return int(t.timestamp())


def orders_for(type: str) -> tuple[str, ...]:
    """The orders that give distinct interpretations for ``type`` (16-bit: ABCD and BADC)."""
    return ORDERS if word_count(type) > 1 else ("ABCD", "BADC")


def decode_all_orders(words: Sequence[int]) -> dict[str, dict[str, float | int | str]]:
    """Every type x order reading of a block of 1-4 words, for the technician's ``probe``.

    Returns ``{type: {order: value}}``, using the first ``word_count(type)`` words for each type
    that fits; 16-bit types list only ``ABCD`` (as is) and ``BADC`` (bytes swapped). A BCD
    calendar is shown as its date and time, in the orders where the bytes are valid BCD.
    """
    if not 1 <= len(words) <= 4:
        raise CodecError(f"probe takes 1 to 4 register words, got {len(words)}")
    result: dict[str, dict[str, float | int | str]] = {}
    for name, info in TYPES.items():
        if info.words > len(words):
            continue
        block = list(words[: info.words])
        if name == BCD_DATETIME:
            calendars = {order: _calendar_text(block, order) for order in orders_for(name)}
            if found := {order: text for order, text in calendars.items() if text}:
                result[name] = found
            continue
        result[name] = {order: decode(block, name, order) for order in orders_for(name)}
    return result


def _calendar_text(words: Sequence[int], order: str) -> str:
    try:
        seconds = decode(words, BCD_DATETIME, order)
    except CodecError:
        return ""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_words(text: str) -> list[int]:
    """Parse ``"0x806B,0x4212"`` / ``"32875 16914"`` into register words (hex or decimal)."""
    tokens = [t for t in text.replace(",", " ").split() if t]
    if not tokens:
        raise CodecError("no register words given; write them like 0x806B,0x4212")
    words: list[int] = []
    for token in tokens:
        try:
            word = int(token, 0)
        except ValueError:
            raise CodecError(f"{token!r} is not a number; write words like 0x806B or 32875") from None
        if not 0 <= word <= 0xFFFF:
            raise CodecError(f"{token} is outside 0..0xFFFF: a register holds 16 bits")
        words.append(word)
    return words


def format_words(words: Sequence[int]) -> str:
    """``[0x3F80, 0x0000]`` rendered as ``0x3F80,0x0000``."""
    return ",".join(f"0x{w:04X}" if isinstance(w, int) else repr(w) for w in words)
