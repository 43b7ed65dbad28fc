"""Stations in the district file: `district check` reports each problem with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from telemetry_testkit import STATIONS, stations_district

from canalflow.cli import main
from canalflow.district import check_district, load_district


def problems(path: Path) -> list[tuple[str, str, int]]:
    _, found = check_district(path)
    return [(p.field, p.message, p.line) for p in found if p.severity == "error"]


def line_of(path: Path, fragment: str) -> int:
    return next(n for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if fragment in text)


def test_the_stations_section_loads(tmp_path: Path) -> None:
    district = load_district(stations_district(tmp_path))
    sl, szy = district.stations["ST-L11"], district.stations["ST-V01"]
    assert (sl.protocol, sl.address, sl.centre, sl.password, sl.point) == ("sl651", "0012345678", 1, "1234", "L11-HEAD")
    assert sl.elements == {"level": "39", "battery": "38"} and szy.elements == {"flow": "flow", "totaliser": "volume"}
    assert district.points["V01-IN"].gateway == "RX-1"


def test_check_command_accepts_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["district", "check", str(stations_district(tmp_path))]) == 0


@pytest.mark.parametrize(("old", "new", "field", "message"), [
    ("point: L11-HEAD", "point: NOPE", "stations[0].point", "unknown point 'NOPE'"),
    ("point: V01-IN", "point: L11-HEAD", "stations[1].point", "already fed by station 'ST-L11'"),
    ('address: "5303810D00"', 'address: "5303810D0"', "stations[1].address", "String should match pattern"),
    ('centre: 1, password: "1234",', "", "stations[0].centre", "needs its centre"),
    ('centre: 1, password: "1234",', 'centre: 1, password: 1234,', "stations[0].password", "valid string"),
    ("point: V01-IN,", "point: V01-IN, centre: 3,", "stations[1].centre", "centre is an SL 651 field"),
    ('level: "39"', 'level: "F0"', "stations[0].elements.level", "no SL 651 element identifier"),
    ("totaliser: volume", "totaliser: volumen", "stations[1].elements.totaliser", "no SZY 206 field"),
    ("totaliser: volume", "volume: volume", "stations[1].elements.volume", "unknown quantity 'volume'"),
    ("timezone: Asia/Chongqing", "timezone: Mars/Olympus", "stations[1].timezone", "unknown time zone"),
    ("elements: {flow: flow, totaliser: volume}", "elements: {battery: flow}", "stations[1].elements",
     "maps none of flow, totaliser, level"),
    ("protocol: szy206", "protocol: iec104", "stations[1].protocol", "'iec104' is not a valid protocol"),
    ("timezone: Asia/Chongqing", "timezone: Asia/Chongqing, scale: {flow: 0}", "stations[1].scale.flow",
     "scale 0.0 is not positive"),
    ("timezone: Asia/Chongqing", "timezone: Asia/Chongqing, scale: {level: 2}", "stations[1].scale.level",
     "which elements does not map"),
])
def test_each_station_problem_names_its_field_and_line(tmp_path: Path, old: str, new: str, field: str,
                                                       message: str) -> None:
    path = stations_district(tmp_path, (old, new))
    found = problems(path)
    assert [f for f in found if f[0] == field and message in f[1]], found
    station_line = line_of(path, "ST-L11" if field.startswith("stations[0]") else "ST-V01")
    assert all(line in (station_line, station_line + 1) for f, _, line in found if f == field)


def test_a_level_only_station_needs_a_rating_on_its_point(tmp_path: Path) -> None:
    path = stations_district(tmp_path, (" ratings: [{type: parshall, throat_mm: 610}]}\n  - {id: L12-HEAD",
                                        "}\n  - {id: L12-HEAD"))
    assert any(f == "stations[0].elements" and "needs a rating" in m for f, m, _ in problems(path))


def test_two_stations_on_one_address(tmp_path: Path) -> None:
    third = '  - {id: ST-V02, protocol: szy206, address: "5303810d00", point: V02-IN, elements: {flow: flow}}\n'
    path = stations_district(tmp_path, stations=STATIONS + third)
    assert any(f == "stations[2].address" and "already station 'ST-V01'" in m for f, m, _ in problems(path))


def test_station_points_on_a_receiver_gateway_need_no_unique_unit_id(tmp_path: Path) -> None:
    """L11-HEAD and L21-HEAD are both unit 1: on a receiver gateway that is no collision (no Modbus bus)."""
    third = '  - {id: ST-L21, protocol: sl651, address: "0012340021", centre: 1, password: "1234", point: L21-HEAD,\n' \
            '     elements: {level: "39"}}\n'
    path = stations_district(tmp_path, stations=STATIONS + third, points=("L11-HEAD", "L21-HEAD", "V01-IN"))
    path.write_text(path.read_text(encoding="utf-8").replace("gateway: GW-B2, unit_id: 1,", "gateway: RX-1, unit_id: 1,"),
                    encoding="utf-8")
    assert problems(path) == []
    unstationed = stations_district(tmp_path, stations=STATIONS)
    unstationed.write_text(unstationed.read_text(encoding="utf-8").replace("gateway: GW-B2, unit_id: 1,",
                                                                           "gateway: RX-1, unit_id: 1,"),
                           encoding="utf-8")
    assert [f for f, m, _ in problems(unstationed) if "unit id 1" in m] == ["points[11].unit_id"]  # L21-HEAD, fed by no station
