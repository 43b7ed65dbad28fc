"""SL 651 ASCII frames (SOH): golden round trips, rejects, mutated frames (random bytes: test_sl651.py)."""

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
from edge.telemetry.explain import explain

STATION = "0012345678"
SENT = dt.datetime(2026, 5, 4, 8, 5, 30)
OBSERVED = dt.datetime(2026, 5, 4, 8, 5)


def element(code: int, value: str | None, observed: dt.datetime = OBSERVED) -> sl651.Element:
    decimals = 0 if value is None else len(value.partition(".")[2])
    return sl651.Element(code, 0, decimals, value=None if value is None else Decimal(value), observed=observed)


REPORT = sl651.Report(9, SENT, STATION, ord("H"), OBSERVED, (
    element(0x39, "1.250"), element(0x3A, "-0.125"), element(0x27, "3.200"), element(0x20, None),
    element(0x39, "1.260", OBSERVED + dt.timedelta(minutes=5)),
    element(0x38, "12.47", OBSERVED + dt.timedelta(minutes=5))))


def frame_of(function: int, report: sl651.Report, **kw: object) -> bytes:
    return sl651_ascii.encode(centre=1, station=STATION, password=0x1234, function=function,
                              body=sl651_ascii.encode_body(report, function), **kw)  # type: ignore[arg-type]


def test_a_report_round_trips_and_reads_as_the_standard_writes_it() -> None:
    raw = frame_of(0x32, REPORT)
    assert raw[:24] == b"\x0101" + STATION.encode() + b"1234320" + f"{len(raw) - 29:03X}".encode() + b"\x02"
    body = raw[24:-5].decode()
    assert body.startswith("0009260504080530ST 0012345678 H TT 2605040805 Z 1.250 ZB -0.125 Q 3.200 PJ M ")
    assert body.endswith("TT 2605040810 Z 1.260 VT 12.47 ")  # the last space belongs to the body
    frame = sl651_ascii.decode(raw)
    assert (frame.uplink, frame.centre, frame.station, frame.password) == (True, 1, STATION, 0x1234)
    assert frame.report == REPORT


@pytest.mark.parametrize("function", [0x30, 0x32, 0x33, 0x34, 0x37, 0x3A, 0x44])
def test_report_functions_round_trip(function: int) -> None:
    assert sl651_ascii.decode(frame_of(function, REPORT)).report == REPORT


def test_an_even_interval_series_of_two_elements_reads_as_the_standard_writes_it() -> None:
    """Table 30: one identifier group after DRxnn, then the values time by time, M for no data."""
    series = sl651.Report(3, SENT, STATION, ord("H"), OBSERVED, (
        sl651.Element(0x39, 0, 3, values=(Decimal("1.250"), None, Decimal("1.270")), step_s=300, observed=OBSERVED),
        sl651.Element(0x38, 0, 2, values=(Decimal("12.10"), Decimal("12.00"), None), step_s=300, observed=OBSERVED)))
    raw = frame_of(0x31, series)
    assert raw[24:-5].decode().endswith("TT 2605040805 DRN05 Z VT 1.250 12.10 M 12.00 1.270 M ")
    assert sl651_ascii.decode(raw).report == series
    assert sl651_ascii.decode(frame_of(0x38, series)).report == series  # the period query's answer (table 45)


def test_the_hours_five_minute_groups_in_ascii() -> None:
    """DRH00 pairs with DRP (12 rain values, 2 hex characters each) and DRZn (4 each); FF.. is no data."""
    hourly = sl651.Report(4, SENT, STATION, ord("H"), OBSERVED, (
        sl651.Element(0xF4, 0, 0, values=(Decimal("0.5"), None) + (Decimal("0.0"),) * 10, step_s=300,
                      observed=OBSERVED),
        sl651.Element(0xF5, 0, 0, values=tuple(Decimal(i).scaleb(-2) for i in range(100, 112)), step_s=300,
                      observed=OBSERVED),
        element(0x38, "12.01")))
    raw = frame_of(0x34, hourly)
    assert "TT 2605040805 DRH00 DRP 05FF00000000000000000000 DRZ1 0064" in raw.decode()
    assert sl651_ascii.decode(raw).report == hourly


def test_a_multi_station_body_has_each_stations_part() -> None:
    """6.6.2.7: ST separates the stations of one report; each part has its type, time and elements."""
    other = sl651.Report(9, SENT, "0012345679", ord("Z"), OBSERVED + dt.timedelta(minutes=1),
                         (element(0x39, "2.000", OBSERVED + dt.timedelta(minutes=1)),))
    both = dataclasses.replace(REPORT, others=(other,))
    raw = frame_of(0x32, both)
    assert "TT 2605040810 Z 1.260 VT 12.47 ST 0012345679 Z TT 2605040806 Z 2.000 " in raw.decode()
    decoded = sl651_ascii.decode(raw).report
    assert decoded == both and [p.station for p in decoded.parts] == [STATION, "0012345679"]  # type: ignore[union-attr]


@pytest.mark.parametrize(("function", "answer"), [
    (0x51, sl651.Report(0, SENT, STATION)),
    (0x4A, sl651.Report(0, SENT, STATION)),
    (0x46, sl651.Report(0, SENT, STATION, elements=(sl651.Element(0x45, 0, 0, value=Decimal(0x0802),
                                                                  observed=SENT),))),
    (0x45, sl651.Report(0, SENT, STATION, rest=b"0A V2.1.0-RTU")),
])
def test_answers_to_the_centres_queries_round_trip(function: int, answer: sl651.Report) -> None:
    raw = frame_of(function, answer)
    assert raw[24:-5].decode().startswith(f"0000260504080530ST {STATION} ")
    assert sl651_ascii.decode(raw).report == answer


def test_keep_alive_and_the_ascii_answer() -> None:
    keep = sl651_ascii.encode(centre=1, station=STATION, password=0x1234, function=0x2F, body=b"0009260504080530")
    assert sl651_ascii.decode(keep).report == sl651.Report(9, SENT)
    up = sl651_ascii.decode(frame_of(0x32, REPORT))
    assert sl651_ascii.answer(sl651_ascii.decode(keep), sent=SENT) is None
    down = sl651_ascii.decode(sl651_ascii.answer(up, sent=SENT, end=sl651.ESC))  # type: ignore[arg-type]
    assert (down.uplink, down.station, down.centre, down.end, down.report) == (
        False, STATION, 1, sl651.ESC, sl651.Report(9, SENT))


def test_multi_packet_ascii_joins_with_the_ascii_body_decoder() -> None:
    body = sl651_ascii.encode_body(REPORT, 0x33)
    frames = [sl651_ascii.decode(sl651_ascii.encode(centre=1, station=STATION, password=0x1234, function=0x33,
                                                    body=part, end=end, packet=(2, n)))
              for n, (part, end) in enumerate(((body[:30], sl651.ETB), (body[30:], sl651.ETX)), start=1)]
    joiner = sl651.Reassembler(body_decoder=sl651_ascii.decode_body)
    assert joiner.feed(frames[0]) is None
    whole = joiner.feed(frames[1])
    assert whole is not None and whole.report == REPORT


def test_edge_decode_explains_ascii_frames() -> None:
    result = explain("sl651", frame_of(0x32, REPORT))
    assert result["encoding"] == "ascii" and result["check"]["ok"] and "4 ASCII hex" in result["check"]["kind"]
    assert [e["symbol"] for e in result["elements"]] == ["Z", "ZB", "Q", "PJ", "Z", "VT"]
    assert result["serial"] == 9 and result["observed"] == "2026-05-04T08:05:00"


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda f: f[:-1], "truncated"),
    (lambda f: f + b"0", "too_long"),
    (lambda f: b"\x02" + f[1:], "bad_start"),
    (lambda f: f[:-1] + (b"0" if f[-1:] != b"0" else b"1"), "bad_crc"),
    (lambda f: f[:-4] + b"XYZW", "bad_crc"),
    (lambda f: f[:19] + b"4" + f[20:], "bad_direction"),
    (lambda f: sl651_ascii.encode(centre=1, station=STATION, password=0, function=0x20, body=b"0009260504080530"),
     "unknown_function"),
    (lambda f: sl651_ascii.encode(centre=1, station=STATION, password=0, function=0x32, body=f[24:-5] + b"VT "),
     "bad_body"),
    (lambda f: sl651_ascii.encode(centre=1, station=STATION, password=0, function=0x32, body=f[24:-5] + b"NOPE 1 "),
     "bad_element"),
    (lambda f: sl651_ascii.encode(centre=1, station=STATION, password=0, function=0x32, body=f[24:-5] + b"Z x "),
     "bad_element"),
    (lambda f: sl651_ascii.encode(centre=1, station=STATION, password=0, function=0x2F, body=b"0009261304080530"),
     "bad_time"),
    (lambda f: sl651_ascii.encode(centre=1, station=STATION, password=0, function=0x32,
                                  body=f[24:-5] + b"DRN05 Z VT 1.0 12.1 1.1 "), "bad_element"),
    (lambda f: sl651_ascii.encode(centre=1, station=STATION, password=0, function=0x32,
                                  body=f[24:-5] + b"DRX05 Z 1.0 "), "bad_element"),
    (lambda f: sl651_ascii.encode(centre=1, station=STATION, password=0, function=0x34,
                                  body=f[24:-5] + b"DRH00 DRP 0102 "), "bad_element"),
    (lambda f: sl651_ascii.encode(centre=1, station=STATION, password=0, function=0x32,
                                  body=f[24:-5] + b"ST 0012345679 H Z 1.0 "), "bad_body"),
])
def test_each_reject_has_its_reason(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FrameError) as caught:
        sl651_ascii.decode(mutate(frame_of(0x32, REPORT)))
    assert caught.value.reason == reason and f"at byte {caught.value.offset}" in str(caught.value)


def _series_frames() -> list[bytes]:
    series = sl651.Report(3, SENT, STATION, ord("H"), OBSERVED, (
        sl651.Element(0x39, 0, 3, values=(Decimal("1.250"), None), step_s=300, observed=OBSERVED),
        sl651.Element(0x38, 0, 2, values=(Decimal("12.10"), Decimal("12.00")), step_s=300, observed=OBSERVED)))
    hourly = sl651.Report(4, SENT, STATION, ord("H"), OBSERVED, (
        sl651.Element(0xF5, 0, 0, values=(Decimal("1.00"),) * 12, step_s=300, observed=OBSERVED),))
    other = sl651.Report(9, SENT, "0012345679", ord("Z"), OBSERVED, (element(0x39, "2.000"),))
    status = sl651.Report(0, SENT, STATION, elements=(sl651.Element(0x45, 0, 0, value=Decimal(5), observed=SENT),))
    return [frame_of(0x32, REPORT), frame_of(0x31, series), frame_of(0x34, hourly), frame_of(0x46, status),
            frame_of(0x32, dataclasses.replace(REPORT, others=(other,)))]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_series_frames()), st.data())
def test_mutated_frames_with_a_fixed_crc_decode_or_reject(frame: bytes, data: st.DataObject) -> None:
    raw = mutated(frame, data, 0, len(frame) - 5)
    fixed = bytes(raw[:-4]) + f"{sl651.crc16(bytes(raw[:-4])):04X}".encode()
    decodes_or_rejects(sl651_ascii.decode, fixed)
