"""Shared checks for the telemetry decoders' property tests."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st

from edge.telemetry.errors import REASONS, FrameError


def decodes_or_rejects(decode: Callable[[bytes], object], data: bytes) -> None:
    """``decode`` returns, or raises FrameError with a known reason and a message: nothing else escapes."""
    try:
        decode(data)
    except FrameError as exc:
        assert exc.reason in REASONS and exc.detail


def mutated(frame: bytes, data: st.DataObject, first: int, last: int) -> bytearray:
    """``frame`` with 1-4 bytes in ``first..last`` replaced by drawn values."""
    raw = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(first, last))] = data.draw(st.integers(0, 255))
    return raw
