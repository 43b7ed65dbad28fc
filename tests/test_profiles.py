"""Meter profiles: the built-in register maps, SI decoding, and errors that name file and line."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canalflow import profiles_cli, units
from canalflow.profiles import (
    BUILTIN_DIR,
    Profile,
    ProfileError,
    ProfileLoadError,
    check_files,
    load_profile_file,
    load_profiles,
)

BUILTIN = load_profiles()


def write(tmp_path: Path, text: str, name: str = "meter.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


GOOD = """
name: test-meter
kind: pipe
accuracy_pct: 1.0
addressing: 1
signature: {register: 100, words: [0x5445, 0x5354]}
registers:
  - {name: flow, register: 1, type: float32, order: CDAB, unit: L/s, quantity: flow}
  - {name: total, register: 3, type: uint32, order: ABCD, scale: 0.1, unit: m3, quantity: totaliser, rollover: true}
  - {name: status, register: 5, type: uint16, quantity: status, bits: {0: empty_pipe}}
"""


def problems_of(tmp_path: Path, text: str) -> list[ProfileError]:
    _, problems = load_profile_file(write(tmp_path, text))
    return problems


# ---- the built-in profiles ------------------------------------------------------------------


def test_builtin_profiles_load_cleanly() -> None:
    result = check_files(sorted(BUILTIN_DIR.glob("*.yaml")))
    assert result.problems == []
    assert {"em-pipe", "tuf2000m", "radar-parshall", "av-station"} <= set(BUILTIN)


def test_builtins_cover_all_four_orders_and_distinct_signatures() -> None:
    orders = {r.order for p in BUILTIN.values() for r in p.registers if r.word_count == 2}
    assert orders == {"ABCD", "CDAB", "BADC", "DCBA"}
    signatures = {tuple(p.signature.words) for p in BUILTIN.values()}
    assert len(signatures) == len(BUILTIN)
    for profile in BUILTIN.values():
        if profile.kind != "rain_gauge":  # the XM9505's published map has neither
            assert {"status", "battery"} <= set(profile.quantities), profile.name


def test_soil_station_and_rain_gauge_follow_their_published_maps() -> None:
    """VWC 0..10000 = 0..100 % (Seeed map) reads as m3/m3 on the wire; each gauge count is 0.1 mm."""
    station, gauge = BUILTIN["soil-station"], BUILTIN["rain-gauge"]
    vwc = station.by_quantity("vwc_20cm")
    assert vwc is not None and vwc.register - 16 * 2 == 0x0001 and vwc.si_unit == "m3/m3"
    assert vwc.decode([1821]) == pytest.approx(0.1821)
    rain = gauge.by_quantity("rain_total")
    assert rain is not None and rain.register == 0x0000 and rain.rollover
    assert rain.decode([536]) == pytest.approx(0.0536)  # 536 counts = 53.6 mm = 0.0536 m


def test_tuf2000m_layout() -> None:
    tuf = BUILTIN["tuf2000m"]
    assert tuf.addressing == 1 and tuf.function_code == 3
    expected = {"flow": 0, "velocity": 4, "total": 8, "errors": 71, "signal_quality": 91, "flow_unit_code": 1436}
    for name, wire in expected.items():
        assert tuf.register_named(name).wire_address == wire
    assert all(r.order == "CDAB" for r in tuf.registers if r.word_count == 2)
    assert tuf.register_named("errors").bits is not None


def test_radar_reads_one_register_per_request() -> None:
    radar = BUILTIN["radar-parshall"]
    assert not radar.block_reads and radar.function_code == 4
    assert all(block.count == 1 for block in radar.read_blocks())
    assert radar.register_named("level").decode([1234]) == pytest.approx(1.234)


def test_em_pipe_decodes_to_si() -> None:
    em = BUILTIN["em-pipe"]
    flow = em.register_named("flow")
    assert flow.si_unit == "m3/s"
    assert flow.decode(flow.encode(0.01)) == pytest.approx(0.01)  # 36 m3/h
    assert flow.encode(0.01) == [0x4210, 0x0000]  # 36.0 float32 big-endian
    total = em.register_named("total")
    assert total.rollover_modulus_si == pytest.approx(42_949_672.96)
    assert total.encode(42_949_672.96 + 5.0) == total.encode(5.0)  # wraps like the meter
    assert total.decode([0, 12345]) == 123.45


def test_read_blocks_group_adjacent_registers() -> None:
    em = BUILTIN["em-pipe"]
    (block,) = em.read_blocks()
    assert (block.start, block.count) == (2, 10)
    words = [0x4210, 0, 0, 0, 0, 12345, 0b10001, 360, 0x6A0B, 0x5E00]
    values = block.decode(words)
    assert values["device_time"] == 0x6A0B5E00  # the meter's clock, UTC epoch s (ABCD)
    assert values["flow"] == pytest.approx(0.01)
    assert values["total"] == 123.45
    assert values["status"] == 0b10001
    assert values["battery"] == pytest.approx(3.6)
    fast = em.read_blocks("fast")
    assert [(b.start, b.count) for b in fast] == [(2, 4), (8, 1)]
    tuf = BUILTIN["tuf2000m"]
    assert [(b.start, b.count) for b in tuf.read_blocks("fast", max_gap=2)] == [(0, 6), (71, 1), (91, 1)]


@pytest.mark.parametrize("name", ["em-pipe", "tuf2000m", "radar-parshall", "av-station"])
@given(data=st.data())
def test_every_register_round_trips_in_si(name: str, data: st.DataObject) -> None:
    for reg in BUILTIN[name].registers:
        if reg.type == "float32":
            value: float = data.draw(st.floats(0, 1000, width=32))
        elif reg.wall_clock:  # a BCD calendar: whole seconds, years 2000-2099
            value = data.draw(st.integers(946_684_800, 4_102_444_799))
        else:
            raw = data.draw(st.integers(0, 30000))
            value = raw * reg.scale if reg.unit is None else units.to_si(raw * reg.scale, reg.unit)[0]
        assert reg.decode(reg.encode(value)) == pytest.approx(value, rel=1e-6, abs=1e-9)


# ---- errors name file, line, field, and say how to fix ----------------------------------------


def test_good_profile_has_no_problems(tmp_path: Path) -> None:
    profile, problems = load_profile_file(write(tmp_path, GOOD))
    assert problems == []
    assert isinstance(profile, Profile)
    assert profile.register_named("total").wire_address == 2


def test_typo_in_type_names_line_and_suggests(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, GOOD.replace("type: float32", "type: flaot32"))
    assert problem.line == 7
    assert problem.field == "registers[0].type"
    assert "'flaot32'" in problem.message
    assert "did you mean 'float32'" in problem.hint
    assert str(problem).startswith(f"{tmp_path / 'meter.yaml'}:7: error: registers[0].type: ")


def test_unknown_key_suggests_the_field(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, GOOD.replace("scale: 0.1", "scael: 0.1"))
    assert (problem.line, problem.field) == (8, "registers[1].scael")
    assert "did you mean 'scale'" in problem.hint


def test_missing_field(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, GOOD.replace("accuracy_pct: 1.0\n", ""))
    assert problem.field == "accuracy_pct"
    assert "add `accuracy_pct:`" in problem.hint


def test_unknown_unit_and_wrong_unit(tmp_path: Path) -> None:
    text = GOOD.replace("unit: L/s", "unit: l/sec").replace("unit: m3, quantity", "unit: mm, quantity")
    found = {p.field: p for p in problems_of(tmp_path, text)}
    assert "unknown unit 'l/sec'" in found["registers[0].unit"].message
    assert found["registers[0].unit"].line == 7
    assert "does not measure totaliser" in found["registers[1].unit"].message
    assert found["registers[1].unit"].line == 8


def test_unit_aliases_are_accepted(tmp_path: Path) -> None:
    profile, problems = load_profile_file(write(tmp_path, GOOD.replace("unit: L/s", "unit: m³/h")))
    assert problems == [] and profile is not None
    assert profile.register_named("flow").unit == "m3/h"


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("register: 3, type: uint32", "register: 2, type: uint32", "registers[1].register", "overlaps 'flow'"),
        ("{name: status,", "{name: flow,", "registers[2].name", "duplicate register name 'flow'"),
        ("order: CDAB, ", "", "registers[0].order", "needs a word order"),
        ("quantity: status, bits", "quantity: battery, unit: V, bits", "registers[2].bits", "not quantity: status"),
        (
            "rollover: true}",
            "rollover: true, group: fast}\n  - {name: b, register: 9, type: uint16, "
            "unit: V, quantity: battery, rollover: true}",
            "registers[2].rollover",
            "not a totaliser",
        ),
        ("{0: empty_pipe}", "{16: empty_pipe}", "registers[2].bits[16]", "outside a 16-bit"),
        ("kind: pipe", "kind: area_velocity", "kind", "must publish 'level'"),
        ("register: 100,", "register: 0,", "signature.register", "below the first register"),
        ("addressing: 1\n", "addressing: 1\nblock_reads: false\n", "registers[0].type", "block_reads is false"),
        (
            "type: uint32, order: ABCD, scale: 0.1",
            "type: float32, order: ABCD",
            "registers[1].rollover",
            "no fixed wrap point",
        ),
    ],
)
def test_semantic_checks(tmp_path: Path, old: str, new: str, field: str, message: str) -> None:
    assert old in GOOD
    problems = problems_of(tmp_path, GOOD.replace(old, new))
    matching = [p for p in problems if p.field == field and message in p.message]
    assert matching, problems
    assert matching[0].line is not None and matching[0].hint


def test_coarse_integer_level_is_a_warning(tmp_path: Path) -> None:
    text = GOOD.replace("kind: pipe", "kind: level").replace(
        "  - {name: status",
        "  - {name: level, register: 6, type: int16, unit: m, quantity: level}\n  - {name: status",
    )
    profile, problems = load_profile_file(write(tmp_path, text))
    (problem,) = problems
    assert problem.severity == "warning" and "resolves only 1 m" in problem.message
    assert profile is not None  # warnings do not stop loading
    assert ": warning: registers[2].scale:" in str(problem)


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, GOOD.replace("kind: pipe", "kind: [pipe"))
    assert problem.line is not None
    assert "YAML" in problem.hint


def test_not_a_mapping(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, "- just\n- a list\n")
    assert "mapping" in problem.message


def test_duplicate_name_and_signature_across_dirs(tmp_path: Path) -> None:
    write(tmp_path, GOOD.replace("test-meter", "em-pipe"), "a.yaml")
    write(
        tmp_path,
        GOOD.replace("0x5445, 0x5354", "0x454D, 0x0001")
        .replace("register: 100", "register: 1")
        .replace("addressing: 1", "addressing: 1\ntable: holding"),
        "b.yaml",
    )
    with pytest.raises(ProfileLoadError) as info:
        load_profiles([tmp_path])
    messages = [(p.file.name, p.field, p.message) for p in info.value.problems]
    assert ("a.yaml", "name", f"profile 'em-pipe' is already defined in {BUILTIN_DIR / 'em-pipe.yaml'}") in messages
    assert any(f == "b.yaml" and "same signature as profile 'em-pipe'" in m for f, _, m in messages)


def test_extra_dir_profiles_are_added(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    loaded = load_profiles([tmp_path])
    assert "test-meter" in loaded and "em-pipe" in loaded
    assert set(load_profiles([tmp_path], builtin=False)) == {"test-meter"}


def test_constructing_a_bad_profile_in_code_raises() -> None:
    data = {
        "name": "x",
        "kind": "pipe",
        "accuracy_pct": 1,
        "signature": {"register": 0, "words": [1]},
        "registers": [{"name": "flow", "register": 0, "type": "float32", "unit": "m3/s", "quantity": "flow"}],
    }
    with pytest.raises(ValueError, match="needs a word order"):
        Profile.model_validate(data)


# ---- CLI -------------------------------------------------------------------------------------


def _run(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="canalflow")
    profiles_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_check_builtins_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["profiles", "check"]) == 0
    assert "6 profile(s) OK, 0 error(s)" in capsys.readouterr().err


def test_cli_check_reports_file_line_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, GOOD.replace("type: float32", "type: flaot32"))
    assert _run(["profiles", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:7: error: registers[0].type: 'flaot32' is not a valid type (hint: did you mean 'float32'?" in out


def test_cli_strict_fails_on_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = GOOD.replace(
        "unit: L/s, quantity: flow}",
        "unit: L/s, quantity: flow}\n  - {name: level, register: 6, type: int16, unit: m, quantity: level}",
    )
    path = write(tmp_path, text)
    assert _run(["profiles", "check", "--no-builtin", str(path)]) == 0
    assert _run(["profiles", "check", "--no-builtin", "--strict", str(path)]) == 1
    assert _run(["profiles", "check", str(tmp_path / "missing.yaml")]) == 1


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["profiles", "list"]) == 0
    out = capsys.readouterr().out
    assert "tuf2000m" in out and "radar-parshall" in out


# ---- units -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "si", "si_unit"),
    [
        (3600, "m3/h", 1.0, "m3/s"),
        (1000, "L/s", 1.0, "m3/s"),
        (60, "m3/min", 1.0, "m3/s"),
        (1234, "mm", 1.234, "m"),
        (50, "cm/s", 0.5, "m/s"),
        (2500, "L", 2.5, "m3"),
        (3.6, "V", 3.6, "V"),
        (87, "%", 87, "%"),
    ],
)
def test_units(value: float, unit: str, si: float, si_unit: str) -> None:
    converted, name = units.to_si(value, unit)
    assert converted == pytest.approx(si) and name == si_unit
    assert units.from_si(converted, unit) == pytest.approx(value)


def test_unknown_unit_suggests() -> None:
    with pytest.raises(units.UnitError, match="did you mean 'm3/h'"):
        units.to_si(1, "m3/hr")


def test_a_calendar_register_takes_no_quantity_unit_or_scale(tmp_path: Path) -> None:
    text = GOOD + "  - {name: device_time, register: 6, type: bcd_datetime, order: ABCD, unit: m}\n"
    (problem,) = problems_of(tmp_path, text)
    assert problem.field == "registers[3].type" and "calendar" in problem.message
    assert problems_of(tmp_path, GOOD + "  - {name: device_time, register: 6, type: bcd_datetime, order: ABCD}\n") == []


def test_a_calendar_that_is_no_date_reads_nan_and_one_never_set_reads_zero() -> None:
    clock = BUILTIN["tuf2000m"].register_named("device_time")
    assert clock.decode([0, 0, 0]) == 0
    assert math.isnan(clock.decode([0xFFFF, 0x1234, 0x5678]))
