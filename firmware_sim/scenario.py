"""Scenario files: hydraulic settings, events on the canal network and faults on devices.

A scenario is YAML (see ``docs/fleet.md`` and ``examples/scenarios/``)::

    version: 1
    name: breach on the main canal
    hydraulics: {base_flow_m3s: 0.3}
    events:
      - {type: breach, canal: M1, km: 14, flow_m3s: 2.0, start: 2026-03-12T02:00:00+08:00, end: 2026-03-12T08:00:00+08:00}
    faults:
      - {point: V01-IN, type: offline, start: 2026-03-11T00:00:00+08:00, end: 2026-03-11T06:00:00+08:00}

Loading reports each problem with file, line and field (:class:`ScenarioError`); checks that need
the district (unknown canal, km beyond the canal's end) run in :func:`check_scenario`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from canalflow.district import District, PointRole
from canalflow.errors import CanalflowError
from canalflow.problems import Issue, validation_problems
from canalflow.yamlines import Locator, Problem, YamlSyntaxError, load_yaml_with_lines


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hydraulics(_Model):
    """Settings of the hydraulic model (all optional; defaults documented in docs/fleet.md)."""

    base_flow_m3s: float = Field(default=0.3, ge=0)  # main canal flow outside rounds, spilled at its tail
    tail_spill_fraction: float = Field(default=0.02, ge=0, lt=1)  # of a canal's offtakes, during rounds
    demand_factor: float = Field(default=1.0, gt=0)  # scales every unit's quota-based demand
    repeat_years: int = Field(default=10, ge=1, le=50)  # rounds recur yearly from the first round's year
    velocity_exponent: float = Field(default=0.4, ge=0, le=1)  # v = v_design * (Q/Q_ref)^exp
    sub_meter_loss_fraction: float = Field(default=0.06, ge=0, lt=1)  # lost between a unit's intake and its sub-meters


class RainDay(_Model):
    day: dt.date
    mm: float = Field(ge=0)


class Weather(_Model):
    """Weather over the typical plots (firmware_sim.rootzone): reference ET and the days it rains."""

    et0_mm_per_day: float = Field(default=3.0, ge=0)  # reference evapotranspiration, every day
    rain: tuple[RainDay, ...] = ()
    initial_share: float = Field(default=0.4, ge=0, le=1)  # plots' water at a season's start, share of FC − WP above WP


class _Window(_Model):
    start: dt.datetime
    end: dt.datetime

    @model_validator(mode="after")
    def _ordered(self) -> _Window:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        return self


class Withdrawal(_Window):
    """Water taken from a canal without a meter (an illegal pump, a broken-open offtake)."""

    type: Literal["withdrawal"]
    canal: str
    km: float = Field(ge=0)
    flow_m3s: float = Field(gt=0)


class Breach(_Window):
    """A bank breach: water leaves the canal at ``km`` for the duration."""

    type: Literal["breach"]
    canal: str
    km: float = Field(ge=0)
    flow_m3s: float = Field(gt=0)


class Nightly(_Model):
    start: dt.time = dt.time(20, 0)
    end: dt.time = dt.time(6, 0)


class GateOpen(_Window):
    """A gate left open at night: an intake keeps taking water (metered, the unit pays); a canal
    head gate lets water into its canal that spills unmetered from the tail."""

    type: Literal["gate_open"]
    point: str
    flow_m3s: float = Field(gt=0)
    nightly: Nightly = Nightly()


class DrySpell(_Window):
    """No rain: every unit asks for more water during the window."""

    type: Literal["dry_spell"]
    demand_factor: float = Field(gt=0)


Event = Annotated[Withdrawal | Breach | GateOpen | DrySpell, Field(discriminator="type")]

FaultType = Literal[
    "offline",  # no answer at all (requests time out)
    "slow",  # answers after delay_s wall-clock seconds (a timeout when longer than the poller waits)
    "exception",  # Modbus exception response (code 2: illegal data address by default)
    "crc",  # RTU only: responses with a corrupted CRC
    "stuck",  # values frozen at the fault's start
    "totaliser_reset",  # totaliser restarts from 0 at start
    "rollover",  # totaliser set to wrap around `at` (the start of the window)
    "reverse_flow",  # flow and velocity read negative; the positive totaliser stops counting
    "clock_drift",  # the meter's values lag by drift_s
    "garbage",  # random register words
    "power_loss",  # silent; the totaliser keeps its value but counts nothing until power returns
    "fouling",  # reading drifts by drift_pct_per_day from start
    "alarm",  # the status register raises the bit named `bit` (default: the profile's first bit)
    "low_battery",  # the battery reads battery_v and the status raises the profile's low_battery bit
]


class Fault(_Window):
    point: str
    type: FaultType
    delay_s: float = Field(default=5.0, gt=0)
    code: int = Field(default=2, ge=1, le=11)
    drift_s: float = 600.0
    drift_pct_per_day: float = 1.0
    bit: str | None = None
    battery_v: float = Field(default=3.1, ge=0)


class ScenarioFile(_Model):
    version: Literal[1] = 1
    name: str = ""
    description: str = ""
    hydraulics: Hydraulics = Hydraulics()
    weather: Weather = Weather()
    events: tuple[Event, ...] = ()
    faults: tuple[Fault, ...] = ()


ScenarioProblem = Problem  # one problem in a scenario file (the shared data-file problem type)


class ScenarioError(CanalflowError, ValueError):
    def __init__(self, problems: Sequence[ScenarioProblem]) -> None:
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} problem(s) in scenario file:\n" + "\n".join(map(str, self.problems)))


@dataclass(frozen=True)
class Scenario:
    """A loaded scenario; ``path`` is None for the built-in default (no events, no faults)."""

    spec: ScenarioFile
    path: Path | None = None

    @classmethod
    def default(cls) -> Scenario:
        return cls(ScenarioFile())

    @property
    def hydraulics(self) -> Hydraulics:
        return self.spec.hydraulics

    @property
    def weather(self) -> Weather:
        return self.spec.weather

    def faults_of(self, point_id: str) -> list[Fault]:
        return [f for f in self.spec.faults if f.point == point_id]


def load_scenario(path: Path | str, district: District | None = None) -> Scenario:
    """Load and validate a scenario (against ``district`` when given); ScenarioError on problems."""
    scenario, problems = check_scenario(path, district)
    if scenario is None or problems:
        raise ScenarioError(problems)
    return scenario


def check_scenario(path: Path | str, district: District | None = None) -> tuple[Scenario | None, list[ScenarioProblem]]:
    file = Path(path)
    try:
        data, locate = load_yaml_with_lines(file)
    except YamlSyntaxError as exc:
        return None, [exc.problem()]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, [ScenarioProblem(file, 1, "(file)", "a scenario must be a YAML mapping", "start from examples/scenarios/")]
    try:
        spec = ScenarioFile.model_validate(_with_tz(data, district))
    except ValidationError as exc:
        return None, validation_problems(exc, ScenarioFile, file, locate, docs="docs/fleet.md")
    problems = [] if district is None else _semantic_problems(spec, district, file, locate)
    return Scenario(spec, file), problems


def _with_tz(data: dict[str, Any], district: District | None) -> dict[str, Any]:
    """Naive times in a scenario are local to the district (its ``timezone``)."""
    if district is None:
        return data
    zone = ZoneInfo(district.spec.district.timezone)

    def fix(value: Any) -> Any:
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            return value.replace(tzinfo=zone)
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return fix(data)


def _semantic_problems(spec: ScenarioFile, district: District, file: Path, locate: Locator) -> list[ScenarioProblem]:
    out: list[ScenarioProblem] = []

    def add(path: tuple[str | int, ...], message: str, hint: str = "") -> None:
        out.append(Issue(path, message, hint).at(file, locate))

    for i, event in enumerate(spec.events):
        at: tuple[str | int, ...] = ("events", i)
        if isinstance(event, Withdrawal | Breach):
            canal = district.canals.get(event.canal)
            if canal is None:
                add((*at, "canal"), f"unknown canal {event.canal!r}", f"known canals: {', '.join(district.canals)}")
            elif event.km > canal.length_km:
                add((*at, "km"), f"km {event.km} is beyond the end of {canal.id!r} ({canal.length_km} km)")
        elif isinstance(event, GateOpen):
            point = district.points.get(event.point)
            if point is None:
                add((*at, "point"), f"unknown point {event.point!r}", "name a metering point of the district")
            elif point.role not in (PointRole.intake, PointRole.diversion):
                add((*at, "point"), f"point {event.point!r} is a {point.role.value} point, not a gate",
                    "gate_open applies to intake and diversion points")
    for i, fault in enumerate(spec.faults):
        if fault.point not in district.points:
            add(("faults", i, "point"), f"unknown point {fault.point!r}", "name a metering point of the district")
        elif fault.type == "alarm" and fault.bit is not None and fault.bit not in _bit_names(district, fault.point):
            add(("faults", i, "bit"), f"profile {district.points[fault.point].profile!r} has no status bit {fault.bit!r}",
                f"its bits: {', '.join(_bit_names(district, fault.point)) or 'none'}")
        elif fault.type == "crc" and district.gateways[district.points[fault.point].gateway].transport == "tcp":
            add(("faults", i, "type"), f"point {fault.point!r} is on a Modbus TCP gateway: TCP frames carry no CRC",
                "crc faults apply to rtu and rtu_over_tcp gateways")
    return out


def _bit_names(district: District, point_id: str) -> list[str]:
    status = district.profile_of(point_id).by_quantity("status")
    return list((status.bits or {}).values()) if status is not None else []
