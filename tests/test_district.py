"""The district model: the demo file loads, and broken copies are reported with file, line and field."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from canalflow.cli import main
from canalflow.district import DistrictError, PointRole, check_district, load_district

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo-district.yaml"


@pytest.fixture(scope="module")
def demo():
    return load_district(DEMO)


def broken_copy(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    text = DEMO.read_text(encoding="utf-8")
    for old, new in replacements:
        assert text.count(old) == 1, f"test setup: {old!r} must occur exactly once"
        text = text.replace(old, new)
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(path: Path, fragment: str) -> int:
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if fragment in text:
            return number
    raise AssertionError(f"{fragment!r} not in {path}")


def errors_of(path: Path):
    _, problems = check_district(path)
    return [p for p in problems if p.severity == "error"]


def test_demo_district_meets_the_skeleton_requirements(demo):
    spec = demo.spec
    levels = [c.level.value for c in spec.canals]
    assert len(spec.headworks) == 1
    assert levels.count("main") == 1 and levels.count("branch") == 3 and levels.count("lateral") >= 8
    assert [c.id for c in demo.skip_level_canals] == ["LS1"]
    villages = [u for u in spec.units if u.kind.value == "village"]
    assert len(villages) == 13 and len({u.township for u in villages}) == 3
    assert {u.kind.value for u in spec.units} == {"village", "association", "operator", "block", "household"}
    assert len(spec.points) >= 30
    kinds = {demo.profile_of(p.id).kind for p in spec.points}
    assert {"pipe", "level", "area_velocity"} <= kinds


def test_reach_balance_terms_follow_the_graph(demo):
    inflow, outflow = demo.reach_balance_points("M1", "M1-R2")
    assert [p.id for p in inflow] == ["M1-S12"]
    assert {p.id for p in outflow} == {"M1-S24", "B2-HEAD", "LS1-HEAD"}
    inflow, outflow = demo.reach_balance_points("L13", "L13-R1")
    assert [p.id for p in inflow] == ["L13-HEAD"] and [p.id for p in outflow] == ["V0405-IN"]


def test_every_reach_has_one_inflow_point(demo):
    for ref in demo.reaches:
        inflow, _ = demo.reach_balance_points(ref.canal, ref.reach.id)
        assert len(inflow) == 1, ref


def test_quota_sums_crops_by_method(demo):
    # V02: wheat 2100 mu furrow at 100 m3/mu + cotton 500 mu at 90 m3/mu
    assert demo.quota_m3("V02", "spring") == 2100 * 100 + 500 * 90
    assert demo.units_sharing("V0405-IN") == [demo.units["V04"], demo.units["V05"]]
    assert all(p.role is PointRole.intake for u in demo.spec.units for p in demo.intake_points(u.id))


def test_broken_copy_names_the_line_of_each_kind_of_error(tmp_path):
    path = broken_copy(
        tmp_path,
        ("canal: L21, km: 2.0, gateway: GW-B2", "canal: L99, km: 2.0, gateway: GW-B2"),  # missing reference
        ("source: B2, offtake_km: 4,", "source: L22, offtake_km: 4,"),  # lateral fed by a lateral
        ("charging_points: [V10-IN],", "charging_points: [],"),  # unit without charging point
        ("profile: tuf2000m}\n  - {id: V12-IN", "profile: tuf9999}\n  - {id: V12-IN"),  # unknown profile
        ("name: 王庄村进水口", "nmae: 王庄村进水口"),  # typo in a field name
    )
    errors = errors_of(path)
    by_field = {p.field: p for p in errors}
    assert by_field["points[22].canal"].line == line_of(path, "canal: L99")
    assert "unknown canal 'L99'" in by_field["points[22].canal"].message
    assert by_field["canals[8].level"].line == line_of(path, "source: L22")
    assert by_field["units[11].charging_points"].line == line_of(path, "charging_points: [],")
    assert by_field["points[29].profile"].line == line_of(path, "tuf9999")
    assert "known profiles" in by_field["points[29].profile"].hint
    assert by_field["points[20].nmae"].message == "unknown field 'nmae'"
    assert by_field["points[20].nmae"].hint.startswith("remove it, or did you mean 'name'?")
    assert all(p.file == path for p in errors)


def test_cycle_in_the_canal_graph_is_reported(tmp_path):
    path = broken_copy(
        tmp_path,
        ("level: main\n    source: HW", "level: main\n    source: B1"),
        ("{id: B1,  name: 一分干, level: branch,  source: M1", "{id: B1,  name: 一分干, level: branch,  source: M1"),
    )
    messages = [p.message for p in errors_of(path)]
    assert any("cycle in the canal graph: B1 -> M1 -> B1" in m or "cycle in the canal graph: M1 -> B1 -> M1" in m for m in messages)


def test_yaml_syntax_error_names_the_line_where_the_unclosed_bracket_opened(tmp_path):
    path = broken_copy(tmp_path, ("  - {id: T2, name: 古云镇}", "  - {id: T2, name: 古云镇"))
    (problem,) = errors_of(path)
    assert problem.line == line_of(path, "{id: T2, name: 古云镇") and problem.field == "(file)"
    assert "'{' opened on this line is never closed" in problem.message and "close the '{'" in problem.hint
    path = broken_copy(tmp_path, ("charging_points: [V08-IN]", "charging_points: [V08-IN"))
    (problem,) = errors_of(path)
    assert problem.line == line_of(path, "charging_points: [V08-IN") and "'['" in problem.message


BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{x}: &{x} [{','.join([f'*{prev}'] * 9)}]\n" for prev, x in zip("abcdefgh", "bcdefghi", strict=True))


def test_an_alias_bomb_is_refused_at_once_naming_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS, encoding="utf-8")
    assert len(BILLION_LAUGHS.splitlines()) == 9
    started = time.perf_counter()
    assert main(["district", "check", str(path)]) == 1
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    print(f"alias bomb (9 lines, {9 ** 9:,} strings expanded) refused in {seconds * 1000:.1f} ms")
    assert f"{path}:2:" in err and "would expand this file's 28 YAML nodes to 4" in err and "alias bomb" in err
    assert seconds < 10  # generous: it takes milliseconds; unbounded it took 7 GB and never finished


def test_shared_defaults_with_aliases_still_load(tmp_path):
    from canalflow.yamlines import load_yaml_text

    text = "defaults: &d {poll: 60, profile: em-pipe}\npoints:\n" + "".join(f"  - {{<<: *d, id: P{i}}}\n" for i in range(2000))
    data, _ = load_yaml_text(text, tmp_path / "ok.yaml")
    assert len(data["points"]) == 2000 and data["points"][-1] == {"poll": 60, "profile": "em-pipe", "id": "P1999"}


def test_a_file_beyond_the_size_limit_is_refused_unread(tmp_path, capsys):
    from canalflow.yamlines import MAX_FILE_BYTES

    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    assert main(["district", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "larger than the limit" in err


def test_bad_tariff_bands(tmp_path):
    path = broken_copy(tmp_path, ('- {up_to: "1.2", multiplier: "1.5"}', '- {up_to: "0.8", multiplier: "1.5"}'))
    (problem,) = errors_of(path)
    assert problem.field == "tariffs[0].bands[1].up_to" and problem.line == line_of(path, '"0.8"')


def test_load_district_raises_with_all_problems(tmp_path):
    path = broken_copy(tmp_path, ("township: T3, charging_points: [V08-IN]", "township: T9, charging_points: [V08-IN]"))
    with pytest.raises(DistrictError) as info:
        load_district(path)
    assert "unknown township 'T9'" in str(info.value)


def test_cli_check_exit_codes(tmp_path, capsys):
    assert main(["district", "check", str(DEMO)]) == 0
    assert "OK" in capsys.readouterr().out
    path = broken_copy(tmp_path, ("unit_id: 2, profile: av-station}", "unit_id: 1, profile: av-station}"))
    assert main(["district", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:{line_of(path, 'id: M1-S12')}" in err and "already used by point 'M1-HEAD'" in err


def test_poll_defaults_apply_to_points_without_their_own(tmp_path):
    text = DEMO.read_text(encoding="utf-8").replace("version: 1\n", "version: 1\npoll_defaults: {fast_s: 300, slow_s: 900}\n", 1)
    text = text.replace("unit_id: 2, profile: av-station}", "unit_id: 2, profile: av-station, poll: {fast_s: 30}}")
    path = tmp_path / "polled.yaml"
    path.write_text(text, encoding="utf-8")
    district = load_district(path)
    assert district.points["V01-IN"].poll.fast_s == 300 and district.points["V01-IN"].poll.slow_s == 900
    assert district.points["M1-S12"].poll.fast_s == 30 and district.points["M1-S12"].poll.slow_s == 600


def test_a_broken_profile_file_is_reported_alone(tmp_path):
    """One broken profile in profile_dirs is one problem (its file and line), not one per point: the
    other profiles stay known; only a point that used the broken one would be reported too."""
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "bad.yaml").write_text("name: bad-meter\nkind: pipe\naccuracy_pct: 1\nregisters: oops\n")
    path = broken_copy(tmp_path, ("version: 1\ndistrict:", "version: 1\nprofile_dirs: [profiles]\ndistrict:"))
    problems = errors_of(path)
    assert problems and all(p.file == tmp_path / "profiles" / "bad.yaml" for p in problems), problems
    assert not any("unknown meter profile" in p.message for p in problems)


def test_an_rtu_gateway_without_a_serial_line_is_refused_naming_the_field(tmp_path):
    path = broken_copy(tmp_path, ("{id: GW-B1,   name: 一分干管理段, transport: tcp, host: 127.0.0.1, port: 5021}",
                                  "{id: GW-B1,   name: 一分干管理段, transport: rtu}"))
    problems = errors_of(path)
    [problem] = [p for p in problems if "needs 'serial'" in p.message]
    assert problem.line == 56 and "gateways" in problem.field, problem


@pytest.mark.parametrize(("gateway", "says"), [
    ("{id: GW-B1, transport: tcp, host: '', port: 5021}", "transport 'tcp' needs 'host'"),
    ("{id: GW-B1, transport: rtu_over_tcp, host: ' '}", "transport 'rtu_over_tcp' needs 'host'"),
    ("{id: GW-B1, transport: rtu, serial: {port: ''}}", "at least 1 character"),
])
def test_district_check_refuses_a_gateway_edge_run_cannot_reach(tmp_path, gateway, says):
    path = broken_copy(tmp_path, ("{id: GW-B1,   name: 一分干管理段, transport: tcp, host: 127.0.0.1, port: 5021}", gateway))
    line = next(n for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if gateway in text)
    [problem] = [p for p in errors_of(path) if says in p.message]
    assert problem.line == line and "gateways" in problem.field, problem
