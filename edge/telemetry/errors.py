"""The one error every telemetry decoder raises, and the BCD helpers both protocols share."""

from __future__ import annotations

from typing import Literal

Reason = Literal[
    "truncated",  # fewer bytes than the header announces
    "too_long",  # bytes after the frame's end, or a frame over the configured bound
    "bad_start",  # not 7E 7E (SL 651) / 68 L 68 (SZY 206)
    "bad_length",  # the length field is out of range
    "bad_direction",  # SL 651 direction nibble neither 0 (up) nor 8 (down)
    "bad_end",  # wrong end character (ETX/ETB, ENQ/ACK/NAK/EOT/ESC, 16)
    "bad_crc",  # SL 651 CRC-16/MODBUS does not check
    "bad_cs",  # SZY 206 CRC-8 (poly E5) does not check
    "bad_bcd",  # a nibble above 9 where BCD is required
    "bad_time",  # a BCD date/time that is no calendar time
    "bad_body",  # the body does not have the structure its function code requires
    "bad_element",  # an element whose definition runs past the body or is malformed
    "bad_packet",  # SL 651 multi-packet header out of range
    "unknown_function",  # a function code (SL 651) / AFN or C function (SZY 206) we do not decode
]

REASONS: tuple[str, ...] = Reason.__args__  # type: ignore[attr-defined]


class FrameError(ValueError):
    """A rejected frame: ``reason`` for counters and dead letters, ``offset`` of the offending byte."""

    def __init__(self, reason: Reason, offset: int, message: str) -> None:
        super().__init__(f"{reason} at byte {offset}: {message}")
        self.reason: Reason = reason
        self.offset = offset
        self.detail = message


def bcd_digits(data: bytes, offset: int, what: str) -> str:
    """The decimal digits of packed BCD ``data`` (high nibble first); ``offset`` locates it in the frame."""
    text = data.hex()
    if text.isdigit() or not text:
        return text
    index = next(i for i, char in enumerate(text) if not char.isdigit())
    raise FrameError("bad_bcd", offset + index // 2, f"{what}: nibble {text[index].upper()} in {text.upper()} is "
                     "not a decimal digit")


def to_bcd(value: int, size: int) -> bytes:
    """``value`` (>= 0) as ``size`` bytes of packed BCD, high digits first."""
    text = f"{value:0{size * 2}d}"
    if value < 0 or len(text) > size * 2:
        raise ValueError(f"{value} does not fit {size} BCD bytes")
    return bytes.fromhex(text)
