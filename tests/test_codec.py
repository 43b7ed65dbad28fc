"""Modbus register codec: known vectors, property round-trips, errors."""

from __future__ import annotations

import math
import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canalflow import codec
from canalflow.codec import CodecError, decode, decode_all_orders, encode, word_count

INT_TYPES = [name for name, info in codec.TYPES.items() if not info.is_float and name != codec.BCD_DATETIME]


# ---- known vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order", "words"),
    [
        ("ABCD", [0x3F80, 0x0000]),
        ("CDAB", [0x0000, 0x3F80]),
        ("BADC", [0x803F, 0x0000]),
        ("DCBA", [0x0000, 0x803F]),
    ],
)
def test_float32_one_in_every_order(order: str, words: list[int]) -> None:
    assert encode(1.0, "float32", order) == words
    assert decode(words, "float32", order) == 1.0


@pytest.mark.parametrize(
    ("order", "words"),
    [
        ("ABCD", [0x1122, 0x3344]),
        ("CDAB", [0x3344, 0x1122]),
        ("BADC", [0x2211, 0x4433]),
        ("DCBA", [0x4433, 0x2211]),
    ],
)
def test_uint32_byte_layout_matches_the_definition(order: str, words: list[int]) -> None:
    assert encode(0x11223344, "uint32", order) == words
    assert decode(words, "uint32", order) == 0x11223344


def test_64_bit_orders_extend_the_same_switches() -> None:
    value = 0x0102030405060708
    assert encode(value, "uint64", "ABCD") == [0x0102, 0x0304, 0x0506, 0x0708]
    assert encode(value, "uint64", "CDAB") == [0x0708, 0x0506, 0x0304, 0x0102]
    assert encode(value, "uint64", "BADC") == [0x0201, 0x0403, 0x0605, 0x0807]
    assert encode(value, "uint64", "DCBA") == [0x0807, 0x0605, 0x0403, 0x0201]
    assert decode(encode(-2.5, "float64", "DCBA"), "float64", "DCBA") == -2.5


def test_signed_16_and_32() -> None:
    assert encode(-1, "int16") == [0xFFFF]
    assert decode([0xFFFF], "int16") == -1
    assert decode([0xFFFF], "uint16") == 65535
    assert encode(-2, "int32", "CDAB") == [0xFFFE, 0xFFFF]
    assert decode([0x8000, 0x0000], "int32") == -(2**31)


def test_16_bit_byte_swap() -> None:
    assert encode(0x1234, "uint16", "BADC") == [0x3412]
    assert encode(0x1234, "uint16", "CDAB") == [0x1234]  # word reversal: no effect on one word
    assert decode([0x3412], "uint16", "DCBA") == 0x1234


def test_scale_on_integers() -> None:
    assert encode(123.45, "uint32", "ABCD", scale=0.01) == [0, 12345]
    assert decode([0, 12345], "uint32", "ABCD", scale=0.01) == 123.45  # exact, no float noise
    assert decode([1234], "int16", scale=0.001) == 1.234
    assert decode([1234], "int16") == 1234
    assert isinstance(decode([1234], "int16"), int)
    assert encode(2.5, "int16", scale=0.5) == [5]
    assert decode([5], "int16", scale=0.5) == 2.5


def test_scale_on_floats() -> None:
    words = encode(36.0, "float32", "ABCD", scale=0.1)
    assert decode(words, "float32", "ABCD") == 360.0
    assert decode(words, "float32", "ABCD", scale=0.1) == 36.0


def test_word_count() -> None:
    assert [word_count(t) for t in ("int16", "uint16", "int32", "uint32", "float32")] == [
        1,
        1,
        2,
        2,
        2,
    ]
    assert word_count("float64") == 4


# ---- errors ----------------------------------------------------------------------------------


def test_overflow_raises_with_a_clear_message() -> None:
    with pytest.raises(CodecError, match=r"does not fit uint16 \[0, 65535\].*wider type"):
        encode(70000, "uint16")
    with pytest.raises(CodecError, match="does not fit int16"):
        encode(40.0, "int16", scale=0.001)
    with pytest.raises(CodecError, match="float32"):
        encode(1e40, "float32")


def test_clamp_and_wrap() -> None:
    assert encode(70000, "uint16", clamp=True) == [0xFFFF]
    assert encode(-5, "uint16", clamp=True) == [0]
    assert encode(2**32 + 7, "uint32", wrap=True) == [0, 7]
    assert encode(42_949_672.96 + 1.0, "uint32", scale=0.01, wrap=True) == [0, 100]


def test_nan_cannot_be_an_integer() -> None:
    with pytest.raises(CodecError, match="NaN"):
        encode(math.nan, "uint16")
    assert math.isnan(decode(encode(math.nan, "float32"), "float32"))


@pytest.mark.parametrize(
    ("words", "type_", "order", "message"),
    [
        ([1], "float32", "ABCD", "needs 2 register"),
        ([1, 2, 3], "uint32", "ABCD", "needs 2 register"),
        ([70000], "uint16", "ABCD", "16-bit"),
        ([-1], "uint16", "ABCD", "16-bit"),
        ([1], "float16", "ABCD", "unknown register type 'float16'"),
        ([1, 2], "float32", "ADCB", "unknown word order 'ADCB'"),
    ],
)
def test_decode_errors(words: list[int], type_: str, order: str, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(words, type_, order)


def test_bad_scale() -> None:
    with pytest.raises(CodecError, match="scale"):
        encode(1, "int16", scale=0)


# ---- probe -----------------------------------------------------------------------------------


def test_decode_all_orders_finds_the_cdab_float() -> None:
    words = codec.parse_words("0x806B,0x4212")
    table = decode_all_orders(words)
    assert set(table) == {"int16", "uint16", "int32", "uint32", "float32"}
    assert set(table["float32"]) == set(codec.ORDERS)
    assert set(table["int16"]) == {"ABCD", "BADC"}
    expected = struct.unpack(">f", bytes([0x42, 0x12, 0x80, 0x6B]))[0]
    assert table["float32"]["CDAB"] == pytest.approx(expected)
    assert 36.0 < table["float32"]["CDAB"] < 37.0
    assert table["uint16"]["ABCD"] == 0x806B


def test_decode_all_orders_with_four_words_adds_64_bit() -> None:
    table = decode_all_orders([0x3FF0, 0, 0, 0])
    assert table["float64"]["ABCD"] == 1.0


def test_parse_words_errors() -> None:
    assert codec.parse_words("32875 16914") == [0x806B, 0x4212]
    with pytest.raises(CodecError, match="not a number"):
        codec.parse_words("0x80ZZ")
    with pytest.raises(CodecError, match="16 bits"):
        codec.parse_words("0x10000")
    with pytest.raises(CodecError, match="1 to 4"):
        decode_all_orders([])


# ---- properties ------------------------------------------------------------------------------

orders = st.sampled_from(codec.ORDERS)


@given(st.sampled_from(INT_TYPES), orders, st.data())
def test_integer_round_trip(type_: str, order: str, data: st.DataObject) -> None:
    info = codec.TYPES[type_]
    value = data.draw(st.integers(info.min, info.max))
    words = encode(value, type_, order)
    assert len(words) == info.words
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode(words, type_, order) == value


@given(st.sampled_from(INT_TYPES), orders, st.data(), st.sampled_from([0.1, 0.01, 0.001, 0.5, 10.0]))
def test_scaled_integer_round_trip(type_: str, order: str, data: st.DataObject, scale: float) -> None:
    info = codec.TYPES[type_]
    raw = data.draw(st.integers(max(info.min, -(2**40)), min(info.max, 2**40)))
    value = codec.apply_scale(raw, scale)
    words = encode(value, type_, order, scale)
    assert decode(words, type_, order, scale) == pytest.approx(value, rel=1e-12, abs=1e-12)
    assert words == encode(raw, type_, order)


@given(st.floats(width=32, allow_nan=False), orders)
def test_float32_round_trip(value: float, order: str) -> None:
    assert decode(encode(value, "float32", order), "float32", order) == value


@given(st.floats(allow_nan=False), orders)
def test_float64_round_trip(value: float, order: str) -> None:
    assert decode(encode(value, "float64", order), "float64", order) == value


@given(st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2), orders)
def test_words_round_trip_through_uint32(words: list[int], order: str) -> None:
    assert encode(decode(words, "uint32", order), "uint32", order) == words


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=4))
def test_decode_all_orders_never_raises(words: list[int]) -> None:
    table = decode_all_orders(words)
    assert "uint16" in table


# ---- BCD calendar (TUF-2000M registers 53-55) --------------------------------------------------


def test_bcd_calendar_bytes_are_second_minute_hour_day_month_year() -> None:
    wall = 1_772_369_445  # 2026-03-01 12:50:45 on the meter's wall clock
    assert encode(wall, "bcd_datetime") == [0x4550, 0x1201, 0x0326]
    assert decode([0x4550, 0x1201, 0x0326], "bcd_datetime") == wall
    assert encode(wall, "bcd_datetime", "CDAB") == [0x0326, 0x1201, 0x4550]
    assert word_count("bcd_datetime") == 3


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ([0x4A50, 0x1201, 0x0326], "byte 0x4A of 0x4A50,0x1201,0x0326 is not BCD"),
        ([0x4550, 0x1231, 0x0226], "not a calendar time (day is out of range for month)"),
        ([0x4550, 0x1201, 0x1326], "month must be in 1..12"),
    ],
)
def test_bcd_calendar_errors_name_the_bytes(words: list[int], message: str) -> None:
    with pytest.raises(CodecError, match=re.escape(message)):
        decode(words, "bcd_datetime")


def test_bcd_calendar_limits() -> None:
    with pytest.raises(CodecError, match="2000-2099"):
        encode(946_684_799, "bcd_datetime")  # 1999-12-31 23:59:59
    with pytest.raises(CodecError, match="scale"):
        encode(1_772_369_445, "bcd_datetime", scale=0.1)


@given(st.integers(946_684_800, 4_102_444_799), st.sampled_from(codec.ORDERS))
def test_bcd_calendar_round_trip(seconds: int, order: str) -> None:
    assert decode(encode(seconds, "bcd_datetime", order), "bcd_datetime", order) == seconds


def test_probe_shows_a_calendar_where_the_bytes_are_bcd() -> None:
    found = decode_all_orders([0x4550, 0x1201, 0x0326])["bcd_datetime"]
    assert found["ABCD"] == "2026-03-01 12:50:45"
    assert "BADC" not in found  # 0x50 0x45 ... reads second 50, minute 45, but 0x26 0x03 is no month
