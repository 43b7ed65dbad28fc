"""One pydantic -> Problem translation (canalflow.problems) for every file the project reads.

The same typo gets the same message and hint in a district file, a meter profile, a scenario and
an edge config: each is written as an operator would, loaded through its own loader, and the
problem must name the file, the line of the typo, the field and a "did you mean" from the model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from canalflow.district import check_district
from canalflow.profiles import BUILTIN_DIR, load_profile_file
from canalflow.yamlines import Problem
from edge.config import ConfigError, load_edge_config
from firmware_sim.scenario import check_scenario

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo-district.yaml"
PROFILE = BUILTIN_DIR / "tuf2000m.yaml"
SCENARIO = ROOT / "examples" / "scenarios" / "breach.yaml"
EDGE = f"district: {DEMO}\ngateway: GW-B1\ntimezone: Asia/Shanghai\nendpoint: {{transport: tcp, port: 502}}\n"


def _district(path: Path) -> list[Problem]:
    return check_district(path)[1]


def _profile(path: Path) -> list[Problem]:
    return load_profile_file(path)[1]


def _scenario(path: Path) -> list[Problem]:
    return check_scenario(path)[1]


def _edge(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_edge_config(path)
    return caught.value.problems


KINDS = {  # file kind: (original text, loader)
    "district": (DEMO.read_text(encoding="utf-8"), _district),
    "profile": (PROFILE.read_text(encoding="utf-8"), _profile),
    "scenario": (SCENARIO.read_text(encoding="utf-8"), _scenario),
    "edge": (EDGE, _edge),
}


def problems_of(tmp_path: Path, kind: str, old: str, new: str) -> tuple[Path, list[Problem]]:
    text, loader = KINDS[kind]
    assert old in text, f"{old!r} not in the {kind} file"
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path, loader(path)


def the_problem(path: Path, problems: list[Problem], field: str, typo_line_text: str) -> Problem:
    found = {p.field: p for p in problems}
    assert field in found, [str(p) for p in problems]
    problem = found[field]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert problem.file == path and problem.line == 1 + next(i for i, line in enumerate(lines) if typo_line_text in line)
    return problem


def guess(hint: str) -> str:
    """The "did you mean" part of a hint (the listing after it is the model's own fields)."""
    return hint.split("?")[0] + "?"


# The same misspelt key in two kinds of file that both have the field; and one per kind.
UNKNOWN_KEYS = [
    # (kind, old text, new text, field of the problem, the key meant)
    ("district", "  timezone: Asia/Shanghai", "  timezon: Asia/Shanghai", "district.timezon", "timezone"),
    ("edge", "timezone: Asia/Shanghai", "timezon: Asia/Shanghai", "timezon", "timezone"),
    ("profile", "description: >", "descripton: >", "descripton", "description"),
    ("scenario", "description: Bank", "descripton: Bank", "descripton", "description"),
    ("district", "role: intake, canal: L11, km: 1.5", "role: intake, canall: L11, km: 1.5", "points[18].canall", "canal"),
    ("profile", "{name: flow, register: 1, type: float32, order: CDAB,", "{name: flow, register: 1, type: float32, ordre: CDAB,",
     "registers[0].ordre", "order"),
    ("scenario", "    flow_m3s: 1.5", "    flow_m3: 1.5", "events[0].flow_m3", "flow_m3s"),
    ("edge", "{transport: tcp, port: 502}", "{transport: tcp, prot: 502}", "endpoint.prot", "port"),
]


@pytest.mark.parametrize(("kind", "old", "new", "field", "meant"), UNKNOWN_KEYS, ids=lambda v: v if v in KINDS else None)
def test_an_unknown_key_gets_the_same_message_and_did_you_mean_in_every_file(
        tmp_path: Path, kind: str, old: str, new: str, field: str, meant: str) -> None:
    path, problems = problems_of(tmp_path, kind, old, new)
    typo = field.rsplit(".", 1)[-1]
    problem = the_problem(path, problems, field, f"{typo}:")
    assert problem.message == f"unknown field {typo!r}"
    assert guess(problem.hint) == f"remove it, or did you mean {meant!r}?"
    assert "see docs/" in problem.hint


def test_the_same_typo_gets_the_same_hint_in_a_district_and_an_edge_config(tmp_path: Path) -> None:
    hints = []
    for kind in ("district", "edge"):
        _, problems = problems_of(tmp_path, kind, "timezone: Asia/Shanghai", "timezon: Asia/Shanghai")
        problem = next(p for p in problems if p.field.endswith("timezon"))
        hints.append((problem.message, guess(problem.hint)))
    assert hints[0] == hints[1] == ("unknown field 'timezon'", "remove it, or did you mean 'timezone'?")


def test_the_same_typo_gets_the_same_hint_in_a_profile_and_a_scenario(tmp_path: Path) -> None:
    hints = []
    for kind, old in (("profile", "description: >"), ("scenario", "description: Bank")):
        _, problems = problems_of(tmp_path, kind, old, old.replace("description", "descripton"))
        problem = next(p for p in problems if p.field == "descripton")
        hints.append((problem.message, guess(problem.hint)))
    assert hints[0] == hints[1] == ("unknown field 'descripton'", "remove it, or did you mean 'description'?")


CHOICES = [
    # a misspelt choice: (kind, old, new, field, the typo, the value meant)
    ("district", "name: 张庄村进水口, role: intake,", "name: 张庄村进水口, role: intak,", "points[18].role", "intak", "intake"),
    ("district", "  locale: zh", "  locale: zhh", "district.locale", "zhh", "zh"),
    ("profile", "{name: flow, register: 1, type: float32,", "{name: flow, register: 1, type: flaot32,", "registers[0].type", "flaot32", "float32"),
    ("scenario", "  - type: breach", "  - type: brech", "events[0].type", "brech", "breach"),
    ("edge", "{transport: tcp, port: 502}", "{transport: tpc, port: 502}", "endpoint.transport", "tpc", "tcp"),
]


@pytest.mark.parametrize(("kind", "old", "new", "field", "typo", "meant"), CHOICES, ids=lambda v: v if v in KINDS else None)
def test_a_misspelt_choice_gets_did_you_mean_from_the_allowed_values(
        tmp_path: Path, kind: str, old: str, new: str, field: str, typo: str, meant: str) -> None:
    path, problems = problems_of(tmp_path, kind, old, new)
    key = field.rsplit(".", 1)[-1]
    problem = the_problem(path, problems, field, f"{key}: {typo}")
    assert problem.message == f"{typo!r} is not a valid {key}"
    assert problem.hint.startswith(f"did you mean {meant!r}?; one of: ")


def test_a_missing_key_and_a_bad_number_get_the_same_hint_everywhere(tmp_path: Path) -> None:
    path, problems = problems_of(tmp_path, "scenario", "    km: 14\n", "")
    assert the_problem(path, problems, "events[0].km", "  - type: breach").hint == "add `km:` here"
    _, problems = problems_of(tmp_path, "edge", "gateway: GW-B1\n", "")
    assert {(p.field, p.message, p.hint) for p in problems} == {("gateway", "required field is missing", "add `gateway:` here")}
    for kind, old, new, field in (("profile", "register: 1, type: float32", "register: one, type: float32", "registers[0].register"),
                                  ("edge", "port: 502}", "port: many}", "endpoint.port"),
                                  ("scenario", "    km: 14", "    km: far", "events[0].km")):
        path, problems = problems_of(tmp_path, kind, old, new)
        assert the_problem(path, problems, field, new.strip()[:12]).hint == "write a plain number (0x.. hex is fine for integers)"


@pytest.mark.parametrize(("kind", "old", "new", "field", "docs"), [
    ("district", "gateway: GW-B1, unit_id: 11,", "gateway: GW-B1, unit_id: 999,", "points[18].unit_id", "docs/district-file.md"),
    ("profile", "accuracy_pct: ", "accuracy_pct: -", "accuracy_pct", "docs/meter-profiles.md"),
    ("scenario", "    flow_m3s: 1.5", "    flow_m3s: -1.5", "events[0].flow_m3s", "docs/fleet.md"),
    ("edge", "port: 502}", "port: 99999}", "endpoint.port", "docs/edge.md"),
], ids=lambda v: v if v in KINDS else None)
def test_an_out_of_range_value_points_to_the_documentation_of_its_file(
        tmp_path: Path, kind: str, old: str, new: str, field: str, docs: str) -> None:
    path, problems = problems_of(tmp_path, kind, old, new)
    problem = the_problem(path, problems, field, new.strip()[-12:])
    assert problem.message.startswith("Input should be ") and problem.hint == f"see {docs}"
