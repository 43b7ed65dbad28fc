"""SL 651-2014 HEX/BCD frames: the captured keep-alive, golden round trips, rejects, random bytes."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telemetry_testkit import decodes_or_rejects, mutated

from edge.telemetry import sl651, sl651_ascii
from edge.telemetry.errors import FrameError

CAPTURED_KEEP_ALIVE = bytes.fromhex("7e7e011090330853a0002f000802009f26020209410003bde3")
STATION = "0012345678"
SENT = dt.datetime(2026, 5, 4, 8, 5, 30)
OBSERVED = dt.datetime(2026, 5, 4, 8, 5)


def element(code: int, size: int, decimals: int, value: str | None, observed: dt.datetime = OBSERVED) -> sl651.Element:
    return sl651.Element(code, size, decimals, value=None if value is None else Decimal(value), observed=observed)


def report(*elements: sl651.Element, serial: int = 7, station_type: int = 0x5A) -> sl651.Report:
    return sl651.Report(serial, SENT, STATION, station_type, OBSERVED, elements)


def frame_of(function: int, rep: sl651.Report, **kw: object) -> bytes:
    return sl651.encode(centre=1, station=STATION, password=0x1234, function=function,
                        body=sl651.encode_body(rep, function), **kw)  # type: ignore[arg-type]


def test_captured_keep_alive_decodes_with_its_crc() -> None:
    frame = sl651.decode(CAPTURED_KEEP_ALIVE)
    assert (frame.uplink, frame.centre, frame.station, frame.function) == (True, 1, "1090330853", 0x2F)
    assert frame.password == 0xA000 and frame.crc == 0xBDE3 == sl651.crc16(CAPTURED_KEEP_ALIVE[:-2])
    assert frame.report == sl651.Report(0x9F, dt.datetime(2026, 2, 2, 9, 41, 0))
    assert sl651.answer(frame, sent=SENT) is None  # a keep-alive has no downlink (§6.6.4.2)


def test_protocols_md_element_examples() -> None:
    """`39 23 00000138` is Z = 0.138 m, `27 2B 0000000000` Q = 0.000, `38 12 1197` VT = 11.97 V."""
    body = sl651.encode_body(report(), 0x32) + bytes.fromhex("392300000138" "272B0000000000" "38121197")
    frame = sl651.decode(sl651.encode(centre=1, station=STATION, password=0, function=0x32, body=body))
    got = [(e.symbol, e.value, e.unit) for e in frame.report.elements]  # type: ignore[union-attr]
    assert got == [("Z", Decimal("0.138"), "m"), ("Q", Decimal("0.000"), "m3/s"), ("VT", Decimal("11.97"), "V")]


GOLDEN = {
    0x30: report(element(0x20, 3, 1, "12.5"), element(0x26, 4, 1, "345.6"), element(0x39, 4, 3, "2.345"),
                 element(0x38, 2, 2, "12.60"), station_type=0x48),
    0x32: report(element(0x39, 4, 3, "-0.125"), element(0x3A, 4, 3, "1.002"), element(0x3B, 4, 3, "1.450"),
                 element(0x27, 5, 3, "3.217"), element(0x09, 3, 2, "0.75"), element(0x45, 4, 0, "5"),
                 element(0xFF01, 6, 2, "123456.78"), element(0x38, 2, 2, "11.97")),
    0x33: report(element(0x39, 4, 3, "3.100"), element(0x39, 4, 3, "3.120", OBSERVED + dt.timedelta(minutes=5)),
                 element(0x68, 5, 2, "-15.25"), element(0x60, 6, 3, None)),
    0x34: report(sl651.Element(0xF4, 12, 0, values=(Decimal("0.5"), None) + (Decimal("0.0"),) * 10, step_s=300,
                               observed=OBSERVED),
                 sl651.Element(0xF5, 24, 0, values=tuple(Decimal(i).scaleb(-2) for i in range(100, 112)),
                               step_s=300, observed=OBSERVED),
                 element(0x26, 4, 1, "801.2"), element(0x38, 2, 2, "12.01")),
    0x31: report(sl651.Element(0x39, 4, 3, values=(Decimal("1.000"), None, Decimal("-1.500")), step_s=3600,
                               observed=OBSERVED)),
}


# Answers to the centre's queries that carry observations (tables 43, 45, 49, 55): laid out as reports.
GOLDEN |= {
    0x37: GOLDEN[0x32],  # real-time data
    0x38: GOLDEN[0x31],  # period data: an even-interval series
    0x3A: report(element(0x39, 4, 3, "2.250"), element(0x27, 5, 3, "1.075")),  # chosen elements
    0x44: report(*(element(code, 2, 1, "231.5") for code in range(0x70, 0x76)), station_type=0x44),  # pump
}


@pytest.mark.parametrize("function", sorted(GOLDEN), ids=lambda f: f"{f:02X}")
def test_golden_round_trip(function: int) -> None:
    raw = frame_of(function, GOLDEN[function])
    frame = sl651.decode(raw)
    assert frame.function == function and frame.report == GOLDEN[function]
    assert sl651.encode_body(frame.report, function) == frame.body  # type: ignore[arg-type]


# Answers whose body is serial, send time, F1 F1 + address, then the function's own data (tables 51-86).
ADDRESSED = {
    0x40: bytes.fromhex("0228") + bytes.fromhex("0012345678"),  # a configuration identifier and its data
    0x41: bytes.fromhex("0120") + bytes.fromhex("01020304"), 0x42: bytes.fromhex("2008") + b"\x05",
    0x43: bytes.fromhex("2008") + b"\x05", 0x45: b"\x0bV2.1.0-RTU1", 0x47: b"", 0x48: b"",
    0x49: bytes.fromhex("0310") + bytes.fromhex("4321"), 0x4A: b"", 0x4C: bytes.fromhex("0105"),
    0x4D: bytes.fromhex("0101"), 0x4E: bytes.fromhex("01030075"), 0x4F: b"\xff", 0x50: bytes(range(64)), 0x51: b"",
}


@pytest.mark.parametrize("function", sorted(ADDRESSED), ids=lambda f: f"{f:02X}")
def test_addressed_answers_round_trip(function: int) -> None:
    answer = sl651.Report(0, SENT, STATION, rest=ADDRESSED[function])
    raw = frame_of(function, answer)
    assert raw[14:22 + 7] == bytes(2) + bytes.fromhex("260504080530") + b"\xf1\xf1" + bytes.fromhex(STATION)
    frame = sl651.decode(raw)
    assert frame.report == answer and frame.function_name != "?"


@pytest.mark.parametrize("function", [0x46, 0x4B])
def test_status_answers_carry_the_zt_element(function: int) -> None:
    """46 (query status and alarms) and 4B (IC card state) answer with ZT: 4 bytes of table 58 bits."""
    answer = sl651.Report(0, SENT, STATION, elements=(element(0x45, 4, 0, str(0b1000_0000_0010), SENT),))
    raw = frame_of(function, answer)
    assert raw.hex().upper().find("F1F1" + STATION + "452000000802") > 0
    assert sl651.decode(raw).report == answer


def test_the_clock_query_and_its_answer() -> None:
    """51: the centre asks with ENQ and serial 0; the station answers with its clock as the send time."""
    ask = sl651.decode(sl651.query(centre=1, station=STATION, password=0x1234, function=0x51, sent=SENT))
    assert (ask.uplink, ask.end_name, ask.report) == (False, "ENQ", sl651.Report(0, SENT))
    station_clock = SENT + dt.timedelta(minutes=7)
    reply = sl651.decode(frame_of(0x51, sl651.Report(0, station_clock, STATION)))
    assert reply.report is not None and reply.report.sent == station_clock and reply.report.station == STATION


def test_a_multi_station_body_has_each_stations_part() -> None:
    """6.6.2.7: F1 F1 also separates the stations of one report."""
    other = sl651.Report(7, SENT, "0012345679", 0x48, OBSERVED, (element(0x39, 4, 3, "2.000"),))
    both = dataclasses.replace(GOLDEN[0x32], others=(other,))
    frame = sl651.decode(frame_of(0x32, both))
    assert frame.report == both and [p.station for p in frame.report.parts] == [STATION, "0012345679"]


def test_every_element_width_round_trips() -> None:
    for size in range(1, 9):
        for decimals in range(0, 4):
            biggest = Decimal(10 ** (size * 2) - 1).scaleb(-decimals)
            smallest = -Decimal(10 ** ((size - 1) * 2) - 1).scaleb(-decimals) if size > 1 else Decimal(0)
            rep = report(element(0x39, size, decimals, str(biggest)), element(0x39, size, decimals, str(smallest)))
            assert sl651.decode(frame_of(0x32, rep)).report == rep


def test_negative_values_follow_the_standard_layout() -> None:
    assert sl651.bcd_bytes(Decimal("-1.23"), 3, 2) == bytes.fromhex("ff0123")
    assert sl651.bcd_value(bytes.fromhex("ff0123"), 2, 0) == Decimal("-1.23")  # odd digit count: FF0 + digits
    assert sl651.bcd_value(bytes.fromhex("ff1234"), 3, 0) == Decimal("-1.234")  # even count: one FF byte
    assert sl651.bcd_value(bytes.fromhex("ffffff"), 3, 0) is None  # all F: no data


def test_centre_answer_echoes_serial_and_station() -> None:
    up = sl651.decode(frame_of(0x32, GOLDEN[0x32]))
    down = sl651.decode(sl651.answer(up, sent=SENT + dt.timedelta(seconds=2)))  # type: ignore[arg-type]
    assert (down.uplink, down.station, down.centre, down.function, down.end) == (False, STATION, 1, 0x32, sl651.EOT)
    assert down.report == sl651.Report(7, SENT + dt.timedelta(seconds=2))
    esc = sl651.decode(sl651.answer(up, sent=SENT, end=sl651.ESC))  # type: ignore[arg-type]
    assert esc.end_name == "ESC"


def test_multi_packet_message_reassembles_and_is_answered_with_the_total() -> None:
    body = sl651.encode_body(GOLDEN[0x33], 0x33)
    parts = [body[:10], body[10:25], body[25:]]
    frames = [sl651.decode(sl651.encode(centre=1, station=STATION, password=0, function=0x33, body=part,
                                        end=sl651.ETB if n < 3 else sl651.ETX, packet=(3, n)))
              for n, part in enumerate(parts, start=1)]
    assert all(f.report is None for f in frames)
    joiner = sl651.Reassembler()
    assert joiner.feed(frames[2]) is None and joiner.feed(frames[0]) is None  # out of order is fine
    whole = joiner.feed(frames[1])
    assert whole is not None and whole.report == GOLDEN[0x33] and not joiner.pending
    down = sl651.decode(sl651.answer(whole, sent=SENT))  # type: ignore[arg-type]
    assert down.packet == (3, 3) and down.report is not None and down.report.serial == 7


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda f: f[:-1], "truncated"),
    (lambda f: f[:5], "truncated"),
    (lambda f: f + b"\x00", "too_long"),
    (lambda f: b"\x7e\x7f" + f[2:], "bad_start"),
    (lambda f: f[:-1] + bytes([f[-1] ^ 1]), "bad_crc"),
    (lambda f: sl651.encode(centre=1, station=STATION, password=0, function=0x20, body=b"\x00" * 8), "unknown_function"),
    (lambda f: sl651.encode(centre=1, station=STATION, password=0, function=0x32, body=f[14:-3], end=sl651.EOT),
     "bad_end"),
    (lambda f: sl651.encode(centre=1, station=STATION, password=0, function=0x32, body=f[14:-6]), "bad_element"),
    (lambda f: sl651.encode(centre=1, station=STATION, password=0, function=0x2F,
                            body=bytes.fromhex("000126133201000000")), "bad_time"),
    (lambda f: sl651.encode(centre=1, station=STATION, password=0, function=0x2F, body=bytes.fromhex("00012601A2000000")),
     "bad_bcd"),
    (lambda f: sl651.encode(centre=1, station=STATION, password=0, function=0x32, body=f[14:22] + b"\xf1\xf2"),
     "bad_body"),
])
def test_each_reject_has_its_reason_and_offset(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FrameError) as caught:
        sl651.decode(mutate(frame_of(0x32, GOLDEN[0x32])))
    assert caught.value.reason == reason
    assert f"at byte {caught.value.offset}" in str(caught.value)


def test_frame_size_bound() -> None:
    raw = frame_of(0x32, GOLDEN[0x32])
    with pytest.raises(FrameError, match="over the bound") as caught:
        sl651.decode(raw, max_size=len(raw) - 1)
    assert caught.value.reason == "too_long"


@pytest.mark.parametrize(("decode", "start"), [(sl651.decode, b"\x7e\x7e"), (sl651_ascii.decode, b"\x01")],
                         ids=["hex", "ascii"])
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=90))
def test_random_bytes_never_escape_but_as_frame_error(decode, start: bytes, data: bytes) -> None:  # type: ignore[no-untyped-def]
    decodes_or_rejects(decode, data)
    decodes_or_rejects(decode, start + data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(GOLDEN)), st.data())
def test_mutated_frames_with_a_fixed_crc_decode_or_reject(function: int, data: st.DataObject) -> None:
    """Mutations behind a recomputed CRC reach the body parser: it, too, only raises FrameError."""
    frame = frame_of(function, GOLDEN[function])
    raw = mutated(frame, data, 0, len(frame) - 3)
    fixed = bytes(raw[:-2]) + sl651.crc16(bytes(raw[:-2])).to_bytes(2)
    decodes_or_rejects(sl651.decode, fixed)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(GOLDEN)), st.data())
def test_a_single_changed_byte_is_always_rejected(function: int, data: st.DataObject) -> None:
    raw = bytearray(frame_of(function, GOLDEN[function]))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises(FrameError):
        sl651.decode(bytes(raw))


def _more_frames() -> list[bytes]:
    status = sl651.Report(0, SENT, STATION, elements=(element(0x45, 4, 0, "5", SENT),))
    other = sl651.Report(7, SENT, "0012345679", 0x48, OBSERVED, (element(0x39, 4, 3, "2.000"),))
    return [frame_of(f, sl651.Report(0, SENT, STATION, rest=rest)) for f, rest in ADDRESSED.items()] + [
        frame_of(0x46, status), frame_of(0x32, dataclasses.replace(GOLDEN[0x32], others=(other,)))]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_more_frames()), st.data())
def test_mutated_answers_and_multi_station_bodies_decode_or_reject(frame: bytes, data: st.DataObject) -> None:
    raw = mutated(frame, data, 0, len(frame) - 3)
    fixed = bytes(raw[:-2]) + sl651.crc16(bytes(raw[:-2])).to_bytes(2)
    decodes_or_rejects(sl651.decode, fixed)
