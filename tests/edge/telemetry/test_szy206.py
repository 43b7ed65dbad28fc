"""SZY 206 frames: the published example (CS 0x35), golden round trips, rejects, random bytes."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telemetry_testkit import decodes_or_rejects, mutated

from edge.telemetry import szy206
from edge.telemetry.errors import FrameError

EXAMPLE = bytes.fromhex("681A68B35303810D00C00059000000826110000001106000004508090A3516")
ADDRESS = "5303810D00"
TP = szy206.TimeLabel(second=5, minute=30, hour=14, day=21, delay_min=10)


def test_published_example_decodes_with_cs_35() -> None:
    frame = szy206.decode(EXAMPLE)
    assert frame.cs == 0x35 == szy206.cs8(EXAMPLE[3:-2])
    assert (frame.uplink, frame.frame_count, frame.function, frame.afn) == (True, 3, 3, 0xC0)
    assert (frame.address, frame.region, frame.station_number) == (ADDRESS, "530381", 13)
    values = {v.name: v.value for v in frame.values}
    assert values == {"flow": Decimal("5.900"), "volume": Decimal("106182")}
    assert (frame.alarm, frame.state) == (0x1001, 0x0060)
    assert frame.tp == szy206.TimeLabel(second=0, minute=45, hour=8, day=9, delay_min=10)
    assert szy206.answer(frame) is None


@pytest.mark.parametrize("link", [0xF0, 0xF1, 0xF2], ids=["login", "logout", "keep-alive"])
def test_link_frames_round_trip_and_are_echoed(link: int) -> None:
    raw = szy206.encode(address=ADDRESS, afn=szy206.AFN_LINK, data=bytes([link]), function=3, frame_count=1)
    frame = szy206.decode(raw)
    assert frame.link == szy206.LINK[link] and frame.uplink
    echo = szy206.decode(szy206.answer(frame))  # type: ignore[arg-type]
    assert (echo.uplink, echo.address, echo.link, echo.frame_count) == (False, ADDRESS, frame.link, 1)


GROUPS = {
    1: [{"rain": Decimal("12.5")}],
    2: [{"level": Decimal("1.234")}, {"level": Decimal("-0.050")}],
    3: [{"flow": Decimal("0.125"), "volume": Decimal("99999")}, {"flow": Decimal("-1.500"), "volume": Decimal(0)}],
}


@pytest.mark.parametrize("afn", [szy206.AFN_REPORT, szy206.AFN_QUERY_ANSWER], ids=["C0", "B0"])
@pytest.mark.parametrize("function", sorted(GROUPS))
def test_realtime_round_trip(function: int, afn: int) -> None:
    data = szy206.realtime_data(function, GROUPS[function], alarm=0x0102, state=0x0304, tp=TP)
    raw = szy206.encode(address=ADDRESS, afn=afn, data=data, function=function)
    frame = szy206.decode(raw)
    got = [{} for _ in GROUPS[function]]  # type: list[dict[str, Decimal]]
    for value in frame.values:
        got[value.index][value.name] = value.value
    assert got == GROUPS[function]
    assert (frame.alarm, frame.state, frame.tp) == (0x0102, 0x0304, TP)


TP_2021 = szy206.TimeLabel(second=5, minute=30, hour=14, day=21, delay_min=10, month=5, year=2026)


@pytest.mark.parametrize("function", sorted(GROUPS))
def test_the_2021_time_label_has_month_and_year(function: int) -> None:
    """SL/T 427-2021 Tp: 6 BCD bytes (second ... year) and the delay; told from the 2016 form by length."""
    data = szy206.realtime_data(function, GROUPS[function], tp=TP_2021)
    assert data.endswith(bytes.fromhex("0530142105260A"))  # the delay in BIN
    frame = szy206.decode(szy206.encode(address=ADDRESS, afn=szy206.AFN_REPORT, data=data, function=function))
    assert frame.tp == TP_2021 and len(frame.values) == sum(len(g) for g in GROUPS[function])
    bad = data[:-3] + bytes.fromhex("1326") + data[-1:]  # month 13
    with pytest.raises(FrameError) as caught:
        szy206.decode(szy206.encode(address=ADDRESS, afn=szy206.AFN_REPORT, data=bad, function=function))
    assert caught.value.reason == "bad_time"


@pytest.mark.parametrize("tp", [TP, TP_2021], ids=["Tp 5 bytes", "Tp 7 bytes"])
def test_the_2021_supply_voltage_self_report(tp: szy206.TimeLabel) -> None:
    """AFN 84: 2 bytes BCD low byte first (12.47 V is 47 12), alone, then alarm, state and Tp."""
    data = szy206.realtime_data(13, [{"voltage": Decimal("12.47")}], tp=tp, afn=szy206.AFN_VOLTAGE)
    assert data[:2] == bytes.fromhex("4712")
    frame = szy206.decode(szy206.encode(address=ADDRESS, afn=szy206.AFN_VOLTAGE, data=data, function=13))
    assert [(v.name, v.value, v.unit) for v in frame.values] == [("voltage", Decimal("12.47"), "V")]
    assert frame.afn_name == "self-reported supply voltage" and frame.tp == tp


def test_example_re_encodes_byte_for_byte() -> None:
    frame = szy206.decode(EXAMPLE)
    data = szy206.realtime_data(3, [{"flow": Decimal("5.900"), "volume": Decimal(106182)}], alarm=frame.alarm or 0,
                                state=frame.state or 0, tp=frame.tp)  # type: ignore[arg-type]
    assert szy206.encode(address=ADDRESS, afn=0xC0, data=data, function=3, frame_count=3) == EXAMPLE


def test_split_frame_carries_divs() -> None:
    raw = szy206.encode(address=ADDRESS, afn=szy206.AFN_LINK, data=b"\xf2", divs=3)
    assert szy206.decode(raw).divs == 3


@pytest.mark.parametrize(("raw", "reason"), [
    (EXAMPLE[:-1], "truncated"),
    (EXAMPLE[:2], "truncated"),
    (EXAMPLE + b"\x16", "too_long"),
    (b"\x69" + EXAMPLE[1:], "bad_start"),
    (EXAMPLE[:2] + b"\x67" + EXAMPLE[3:], "bad_start"),
    (b"\x68\x03\x68\x00\x00\x00\x00\x16", "bad_length"),
    (EXAMPLE[:-1] + b"\x17", "bad_end"),
    (EXAMPLE[:-2] + b"\x36\x16", "bad_cs"),
    (szy206.encode(address=ADDRESS, afn=0x50, data=b""), "unknown_function"),
    (szy206.encode(address=ADDRESS, afn=0x81, data=EXAMPLE[10:-2], function=3), "unknown_function"),
    (szy206.encode(address=ADDRESS, afn=0xC0, data=EXAMPLE[10:-2], function=9), "unknown_function"),
    (szy206.encode(address=ADDRESS, afn=0xC0, data=EXAMPLE[10:-3], function=3), "bad_body"),
    (szy206.encode(address=ADDRESS, afn=0x02, data=b"\xf5"), "bad_body"),
    (szy206.encode(address=ADDRESS, afn=0xC0, data=b"\x0a" + EXAMPLE[11:-2], function=3), "bad_bcd"),
    (szy206.encode(address=ADDRESS, afn=0xC0, data=EXAMPLE[10:24] + b"\x00\x61" + EXAMPLE[26:-2], function=3),
     "bad_time"),
])
def test_each_reject_has_its_reason_and_offset(raw: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as caught:
        szy206.decode(raw)
    assert caught.value.reason == reason
    assert f"at byte {caught.value.offset}" in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_random_bytes_never_escape_but_as_frame_error(data: bytes) -> None:
    decodes_or_rejects(szy206.decode, data)
    decodes_or_rejects(szy206.decode, bytes([0x68, len(data), 0x68]) + data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_frames_with_a_fixed_cs_decode_or_reject(data: st.DataObject) -> None:
    raw = mutated(EXAMPLE, data, 3, len(EXAMPLE) - 3)
    raw[-2] = szy206.cs8(bytes(raw[3:-2]))
    decodes_or_rejects(szy206.decode, bytes(raw))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_single_changed_byte_is_always_rejected(data: st.DataObject) -> None:
    raw = bytearray(EXAMPLE)
    raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    with pytest.raises(FrameError):
        szy206.decode(bytes(raw))
