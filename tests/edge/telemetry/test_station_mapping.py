"""From decoded frames to wire quantities: element mapping, series, station clock zone, time labels, scale."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from edge.telemetry import sl651, szy206
from edge.telemetry.stations import element_problem, sl651_values, szy206_values

URUMQI, SHANGHAI = ZoneInfo("Asia/Urumqi"), ZoneInfo("Asia/Shanghai")
T0 = dt.datetime(2026, 5, 4, 8, 0)


def station(elements: dict[str, str], scale: dict[str, float] | None = None) -> SimpleNamespace:
    return SimpleNamespace(elements=elements, scale=scale or {})


def ms(when: dt.datetime, zone: ZoneInfo) -> int:
    return int(when.replace(tzinfo=zone).timestamp() * 1000)


def test_sl651_elements_by_identifier_on_the_station_clock() -> None:
    report = sl651.Report(1, T0, "0012345678", 0x5A, T0, (
        sl651.Element(0x39, 4, 3, value=Decimal("1.250"), observed=T0),
        sl651.Element(0xFF01, 6, 2, value=Decimal("1000.50"), observed=T0),
        sl651.Element(0x38, 2, 2, value=Decimal("12.00"), observed=T0),
        sl651.Element(0x27, 5, 3, value=None, observed=T0)))  # no data: left out
    got = sl651_values(station({"level": "39", "totaliser": "FF01", "flow": "27"}), report, URUMQI)
    assert [(m.ts_ms, m.values) for m in got] == [(ms(T0, URUMQI), {"level": 1.25, "totaliser": 1000.5})]
    assert ms(T0, URUMQI) - ms(T0, SHANGHAI) == 2 * 3600 * 1000  # the zone is the station clock's


def test_hour_series_become_five_minute_readings() -> None:
    levels = (Decimal("1.00"), None, *(Decimal(100 + i).scaleb(-2) for i in range(2, 12)))
    report = sl651.Report(1, T0, "0012345678", 0x48, T0, (
        sl651.Element(0xF5, 24, 0, values=levels, step_s=300, observed=T0),
        sl651.Element(0x38, 2, 2, value=Decimal("12.10"), observed=T0 + dt.timedelta(minutes=55))))
    got = sl651_values(station({"level": "F5", "battery": "38"}), report, SHANGHAI)
    stamps = [m.ts_ms for m in got]
    assert len(got) == 11 and stamps == sorted(stamps)  # the missing 5-minute value is left out
    assert got[0].values == {"level": 1.0} and got[-1].values == {"level": 1.11, "battery": 12.1}
    assert got[-1].ts_ms - got[0].ts_ms == 55 * 60 * 1000


def test_even_interval_series() -> None:
    report = sl651.Report(1, T0, "0012345678", 0x48, T0, (
        sl651.Element(0x27, 5, 3, values=(Decimal("0.5"), Decimal("0.6")), step_s=3600, observed=T0),))
    got = sl651_values(station({"flow": "27"}, {"flow": 2.0}), report, SHANGHAI)
    assert [(m.ts_ms - ms(T0, SHANGHAI), m.values) for m in got] == [(0, {"flow": 1.0}), (3_600_000, {"flow": 1.2})]


def frame(day: int, hour: int, groups: list[dict[str, Decimal]]) -> szy206.Frame:
    tp = szy206.TimeLabel(0, 30, hour, day, 5)
    raw = szy206.encode(address="5303810D00", afn=0xC0, data=szy206.realtime_data(3, groups, tp=tp), function=3)
    return szy206.decode(raw)


def test_szy206_fields_with_meter_index_and_scale() -> None:
    now = ms(dt.datetime(2026, 5, 9, 12, 0), SHANGHAI)
    groups = [{"flow": Decimal("1.000"), "volume": Decimal(10)}, {"flow": Decimal("3.600"), "volume": Decimal(20)}]
    got = szy206_values(station({"flow": "flow.1", "totaliser": "volume.1"}, {"flow": 1 / 3600}), frame(9, 8, groups),
                        SHANGHAI, now)
    assert [(m.ts_ms, m.values) for m in got] == [(ms(dt.datetime(2026, 5, 9, 8, 30), SHANGHAI),
                                                   {"flow": 0.001, "totaliser": 20.0})]


def test_szy206_time_label_takes_the_latest_such_day() -> None:
    groups = [{"flow": Decimal(1), "volume": Decimal(1)}]
    now = ms(dt.datetime(2026, 3, 2, 1, 0), SHANGHAI)
    got = szy206_values(station({"flow": "flow"}), frame(31, 23, groups), SHANGHAI, now)  # February has no 31st
    assert got[0].ts_ms == ms(dt.datetime(2026, 1, 31, 23, 30), SHANGHAI)


def test_a_2021_time_label_is_a_whole_date() -> None:
    tp = szy206.TimeLabel(0, 30, 23, 31, 5, month=12, year=2025)
    raw = szy206.encode(address="5303810D00", afn=0xC0, function=3,
                        data=szy206.realtime_data(3, [{"flow": Decimal(1), "volume": Decimal(1)}], tp=tp))
    got = szy206_values(station({"flow": "flow"}), szy206.decode(raw), SHANGHAI, ms(dt.datetime(2026, 3, 2), SHANGHAI))
    assert got[0].ts_ms == ms(dt.datetime(2025, 12, 31, 23, 30), SHANGHAI)  # not the receiver's month


def test_element_references_are_checked_per_protocol() -> None:
    assert element_problem("sl651", "39") is None and element_problem("sl651", "FF0A") is None
    assert element_problem("sl651", "F1") is not None and element_problem("sl651", "level") is not None
    assert element_problem("szy206", "volume.2") is None
    assert "one of flow, level, rain, voltage, volume" in element_problem("szy206", "39")[1]  # type: ignore[index]


def test_the_district_check_knows_exactly_the_decoders_szy206_fields() -> None:
    from canalflow.station_elements import SZY206_FIELDS
    from edge.telemetry import szy206

    layouts = [*szy206.FUNCTIONS.values(), szy206.VOLTAGE]
    assert {spec.name for _, specs in layouts for spec in specs} == set(SZY206_FIELDS)
