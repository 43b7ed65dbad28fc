"""The district model: canal graph, metering points, billing units, crops, seasons and tariffs.

This module is the only place that knows the district file's schema. Every component loads a
district with :func:`load_district` and navigates it through :class:`District`.

Loading runs in three layers, each reporting problems with file, line and field:
1. YAML syntax (``canalflow.yamlines``),
2. structure and types (pydantic models below, ``extra="forbid"`` so a typo is an error),
3. meaning (references, the canal graph's shape, reaches, units, tariffs) in :func:`check_semantics`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from canalflow.contract import SOIL_DEPTHS_CM
from canalflow.errors import CanalflowError
from canalflow.problems import Issue, validation_issues
from canalflow.profiles import Profile
from canalflow.ratings import Rating
from canalflow.yamlines import Locator, Problem, YamlSyntaxError, load_yaml_with_lines

SCHEMA_VERSION = 1


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]


class CanalLevel(StrEnum):
    main = "main"
    branch = "branch"
    lateral = "lateral"
    farm = "farm"

    @property
    def rank(self) -> int:
        return list(CanalLevel).index(self)


DEFAULT_CAPACITY_M3S = 50.0  # a point's capacity when neither its canal nor the headworks gives one


class PointRole(StrEnum):
    diversion = "diversion"  # at the head of a canal: what the canal takes from its source
    section = "section"  # on a canal between reaches
    intake = "intake"  # a billing unit's offtake (village, association, operator)
    outfall = "outfall"  # water leaving the system at a canal's tail (drain, return)
    soil_moisture = "soil_moisture"  # a typical plot's soil-moisture station (墒情站): no water passes it
    rain_gauge = "rain_gauge"  # a rain gauge near typical plots


class Info(Model):
    id: Id
    name: str
    timezone: str = "Asia/Shanghai"
    locale: Literal["zh", "en"] = "zh"
    public_household_names: StrictBool = False  # the public notice lists households by name (农户公示) only where set


class Soil(Model):
    """Seepage per km as a fraction of flow: sigma = A / (100 * Q**m), Q in m3/s (Kostiakov form)."""

    A: float = Field(gt=0)
    m: float = Field(ge=0, lt=1)
    description: str = ""


class Headworks(Model):
    id: Id
    name: str
    capacity_m3s: float = Field(gt=0)


class ReachStorage(Model):
    """A reach's declared volume–level relation: water held (m3) against the level at ``point``."""

    point: Id  # a metering point on the reach that reports level
    curve: tuple[tuple[float, float], ...] = Field(min_length=2)  # (level_m, volume_m3), levels increasing

    def volume_m3(self, level_m: float) -> float:
        """Volume at ``level_m``, linear between the curve's points and along its end segments beyond them."""
        pts = self.curve
        i = next((k for k in range(1, len(pts) - 1) if level_m < pts[k][0]), len(pts) - 1)
        (h0, v0), (h1, v1) = pts[i - 1], pts[i]
        return v0 + (v1 - v0) * (level_m - h0) / (h1 - h0)


class Reach(Model):
    id: Id
    from_km: float = Field(ge=0)
    to_km: float = Field(gt=0)
    storage: ReachStorage | None = None  # None: ΔS ≈ canal width_m × length × mean Δlevel of the reach's level meters


class Canal(Model):
    id: Id
    name: str
    level: CanalLevel
    source: Id  # a headworks id, or the id of the canal it takes water from
    offtake_km: float = Field(default=0.0, ge=0)  # chainage on the source canal
    length_km: float = Field(gt=0)
    soil: Id
    lining_factor: float = Field(default=1.0, gt=0, le=1)  # seepage multiplier (lined < 1)
    width_m: float = Field(default=5.0, gt=0)  # water-surface width, for storage change
    velocity_ms: float = Field(default=0.6, gt=0)  # typical mean velocity, for travel time
    capacity_m3s: float | None = Field(default=None, gt=0)
    reaches: tuple[Reach, ...] = ()

    @property
    def reach_list(self) -> tuple[Reach, ...]:
        """Explicit reaches, or one reach covering the whole canal."""
        return self.reaches or (Reach(id=f"{self.id}-R1", from_km=0.0, to_km=self.length_km),)


class SerialLine(Model):
    port: str = Field(min_length=1)  # the device `edge run` opens, e.g. /dev/ttyUSB0
    baud: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class Gateway(Model):
    id: Id
    name: str = ""
    transport: Literal["tcp", "rtu", "rtu_over_tcp"] = "tcp"
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65535)
    serial: SerialLine | None = None
    timeout_s: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _rtu_needs_serial(self) -> Gateway:
        # `edge run` opens this line (or connects to host:port); without it the gateway can be checked but never polled
        if self.transport == "rtu" and self.serial is None:
            raise ValueError("transport 'rtu' needs 'serial' (port, baud, parity: e.g. serial: {port: /dev/ttyUSB0, baud: 9600})")
        if self.transport != "rtu" and not self.host.strip():
            raise ValueError(f"transport {self.transport!r} needs 'host' (the gateway's address, e.g. host: 192.168.1.20)")
        return self


class PollSpec(Model):
    fast_s: float = Field(default=60.0, gt=0)
    slow_s: float = Field(default=600.0, gt=0)


class Point(Model):
    id: Id
    name: str = ""
    role: PointRole
    canal: Id
    km: float = Field(ge=0)
    gateway: Id
    unit_id: int = Field(ge=1, le=247)
    profile: str
    ratings: tuple[Rating, ...] = ()  # models and formulas live in canalflow.ratings  # versioned by valid_from; needed for level-only meters
    feeds: Id | None = None  # diversion: the canal it measures into (its head is at `km` of `canal`)
    allocation: Literal["metered", "area"] | None = None  # how units sharing this intake split it (required when shared)
    below: Id | None = None  # a sub-meter on the delivery another point measures (an intake inside a village)
    poll: PollSpec = PollSpec()
    # outfall: what its water is in the canal-system coefficient (canalflow.coefficients); None = spill
    outfall_kind: Literal["spill", "return"] | None = None


class Township(Model):
    id: Id
    name: str


class QuotaRule(Model):
    season_kind: Literal["spring", "summer", "autumn", "winter"]
    m3_per_mu: Decimal = Field(ge=0)
    method: str | None = None  # irrigation method (flood, furrow, drip, ...); None = any
    zone: str | None = None  # quota zone (rainfall frequency, soil); None = any


class Crop(Model):
    id: Id
    name: str = ""
    crop_class: Literal["grain", "cash", "aquaculture", "other"]
    quotas: tuple[QuotaRule, ...] = ()
    net_depth_mm: dict[str, float] = {}  # typical-field net irrigation depth per season kind
    kc: float = Field(default=1.0, gt=0, le=2)  # crop coefficient: crop ET = kc × reference ET (typical plots)


class CropArea(Model):
    crop: Id
    area_mu: Decimal = Field(gt=0)
    method: str = "flood"


class Plot(Model):
    """A typical plot (典型田块) whose soil moisture measures the field coefficient (canalflow.field)."""

    id: Id
    unit: Id  # the billing unit the plot lies in
    crop: Id
    area_mu: Decimal = Field(gt=0)
    wetting_depth_m: float = Field(gt=0, le=3)  # planned wetting depth H
    field_capacity: float = Field(gt=0, lt=1)  # volumetric, m3/m3
    wilting_point: float = Field(gt=0, lt=1)
    inlet: Id  # the plot's inlet meter: a sub-meter (``below:``) on its unit's charging point
    station: Id | None = None  # its soil-moisture station (墒情站); None: the plot cannot be measured
    rain_gauge: Id | None = None
    et0_mm_per_day: float = Field(default=0.0, ge=0, le=20)  # reference ET at the plot (weather station); crop ET = kc × this
    depths_cm: tuple[int, ...] = (10, 20, 40, 60, 80, 100)  # the station's sensor depths


class UnitKind(StrEnum):
    village = "village"
    association = "association"  # water-user association (农民用水协会)
    operator = "operator"  # large land-lease operator
    block = "block"  # a block or water-user group inside a unit (地块, 用水小组)
    household = "household"  # a farm household (农户): a statement, its share of its parent's bill (or its own meter's bill)


ShareMethod = Literal["area", "quota"]
LossMethod = Literal["metered", "area", "quota", "parent"]


class BillingUnit(Model):
    id: Id
    name: str
    kind: UnitKind
    township: Id
    zone: str | None = None
    charging_points: tuple[Id, ...] = ()
    crops: tuple[CropArea, ...] = ()  # required unless the unit has entities below it (then theirs, summed)
    field_efficiency: float = Field(default=0.85, gt=0, le=1)
    parent: Id | None = None  # the entity this one sits below (unit -> blocks -> households)
    share: ShareMethod | None = None  # no meter of its own: its share of the parent's unmetered volume
    loss: LossMethod = "metered"  # the loss below its meter (volume - metered entities below): how shared

    @property
    def area_mu(self) -> Decimal:
        return sum((c.area_mu for c in self.crops), Decimal(0))


class Round(Model):
    id: Id
    start: dt.datetime
    days: float = Field(gt=0)


class Season(Model):
    id: Id
    kind: Literal["spring", "summer", "autumn", "winter"]
    start: dt.date
    end: dt.date  # inclusive
    tariff: Id
    rounds: tuple[Round, ...] = ()


class PriceComponents(Model):
    backbone: Decimal = Field(ge=0)  # 骨干工程水价, yuan/m3
    terminal: Decimal = Field(ge=0)  # 末级渠系水价, yuan/m3
    village_fee: Decimal = Field(default=Decimal(0), ge=0)

    @property
    def total(self) -> Decimal:
        return self.backbone + self.terminal + self.village_fee


class Band(Model):
    up_to: Decimal | None = Field(default=None, gt=0)  # fraction of quota; None = no upper bound
    multiplier: Decimal = Field(ge=1)


CropClass = Literal["grain", "cash", "aquaculture", "other"]


class Budget(Model):
    """A season's money for subsidies or rewards, and the rule when the claims exceed it."""

    yuan: Decimal = Field(ge=0)
    rule: Literal["pro_rata", "priority"] = "pro_rata"
    priority: tuple[CropClass, ...] = ()  # for rule: priority, classes paid first (unlisted ones last)


class Subsidy(Model):
    """Precise subsidy (精准补贴) on in-quota water of eligible crop classes: a flat rate, or the cost gap."""

    grain_per_m3: Decimal = Field(default=Decimal(0), ge=0)  # flat rate per m3 (for the classes below)
    cost: dict[Literal["backbone", "terminal", "village_fee"], Decimal] = {}  # cost price per component (运行维护成本 or 供水成本)
    classes: tuple[CropClass, ...] = ("grain",)
    budget: Budget | None = None


class Reward(Model):
    """Water-saving reward (节水奖励) below quota: per m3 saved, or buy-back of the saved quota (节水回购)."""

    grain_per_m3: Decimal = Field(default=Decimal(0), ge=0)
    other_per_m3: Decimal = Field(default=Decimal(0), ge=0)
    buy_back_per_m3: Decimal | None = Field(default=None, ge=0)  # set: saved quota bought back at this price, every class
    budget: Budget | None = None


class Tariff(Model):
    id: Id
    version: int = Field(default=1, ge=1)
    currency: Literal["CNY"] = "CNY"
    prices: dict[Literal["grain", "cash", "aquaculture", "other"], PriceComponents]
    bands: tuple[Band, ...] = Field(min_length=1)
    subsidy: Subsidy = Subsidy()
    reward: Reward = Reward()
    fixed_per_mu: Decimal = Field(default=Decimal(0), ge=0)  # two-part price (两部制水价): yuan per mu per season


class Targets(Model):
    canal_system: float = Field(default=0.70, gt=0, le=1)
    field: float = Field(default=0.85, gt=0, le=1)


class Tolerances(Model):
    loss_anomaly_factor: float = Field(default=2.0, gt=1)
    max_gap_minutes: float = Field(default=60.0, gt=0)  # longer gaps are not interpolated
    min_coverage: float = Field(default=0.9, gt=0, le=1)  # below: window reported incomplete
    max_storage_share: float = Field(default=0.05, gt=0, le=1)  # |ΔS| above this share of the inflow: window too short


class Station(Model):
    """A telemetry station that dials in (SL 651 or SZY 206) and feeds one metering point (docs/stations.md)."""

    id: Id
    name: str = ""
    protocol: Literal["sl651", "szy206"]
    address: str = Field(pattern=r"^[0-9A-Fa-f]{10}$")  # the 5 address bytes as sent, 10 hex digits
    centre: int | None = Field(default=None, ge=1, le=255)  # SL 651 centre address
    password: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{4}$")  # SL 651, 4 hex digits
    point: Id
    timezone: str | None = None  # the station clock's zone; None = the district's
    elements: dict[str, str] = Field(min_length=1)  # wire quantity -> SL 651 identifier / SZY 206 field
    scale: dict[str, float] = {}  # wire quantity -> factor to its SI unit (e.g. m3/h -> m3/s: 0.000277778)
    max_clock_skew_s: float = Field(default=600.0, gt=0)  # beyond: readings are flagged, not dropped


class DistrictFile(Model):
    version: Literal[1] = 1
    district: Info
    profile_dirs: tuple[str, ...] = ()
    poll_defaults: PollSpec = PollSpec()  # for points that do not set their own poll intervals
    soils: dict[str, Soil]
    headworks: tuple[Headworks, ...] = Field(min_length=1)
    canals: tuple[Canal, ...] = Field(min_length=1)
    gateways: tuple[Gateway, ...] = Field(min_length=1)
    points: tuple[Point, ...] = Field(min_length=1)
    townships: tuple[Township, ...] = ()
    crops: tuple[Crop, ...] = Field(min_length=1)
    units: tuple[BillingUnit, ...] = Field(min_length=1)
    plots: tuple[Plot, ...] = ()
    seasons: tuple[Season, ...] = ()
    tariffs: tuple[Tariff, ...] = ()
    targets: Targets = Targets()
    tolerances: Tolerances = Tolerances()
    stations: tuple[Station, ...] = ()


# ---------------------------------------------------------------------------------------------
# Problems


class DistrictError(CanalflowError, ValueError):
    """The district file has problems; ``problems`` lists each with file, line and field."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        summary = "\n".join(str(p) for p in errors[:20])
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{len(errors)} problem(s) in district file:\n{summary}{more}")


class _Reporter:
    def __init__(self, file: Path, locate: Locator) -> None:
        self.file = file
        self.locate = locate
        self.problems: list[Problem] = []
        # section -> original list index of each item kept after item-wise validation
        self.kept_indexes: dict[str, list[int]] = {}

    def add(
        self, path: Sequence[str | int], message: str, hint: str = "", severity: str = "error"
    ) -> None:
        path = self._original_path(path)
        self.problems.append(Issue(tuple(path), message, hint, severity).at(self.file, self.locate))  # type: ignore[arg-type]

    def _original_path(self, path: Sequence[str | int]) -> Sequence[str | int]:
        if len(path) > 1 and isinstance(path[1], int) and path[0] in self.kept_indexes:
            kept = self.kept_indexes[str(path[0])]
            if path[1] < len(kept):
                return (path[0], kept[path[1]], *path[2:])
        return path


# ---------------------------------------------------------------------------------------------
# The loaded district and its graph


@dataclass(frozen=True)
class ReachRef:
    canal: str
    reach: Reach


class District:
    """A validated district with lookups over its canal graph."""

    def __init__(self, spec: DistrictFile, path: Path, digest: str, profiles: dict[str, Any]):
        self.spec = spec
        self.path = path
        self.sha256 = digest
        self.profiles = profiles

    # --- identity ---
    @property
    def id(self) -> str:
        return self.spec.district.id

    @property
    def name(self) -> str:
        return self.spec.district.name

    # --- time ---
    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.spec.district.timezone)

    def local_date(self, t_ms: int) -> dt.date:
        """The district's local calendar day of an instant (ratings and seasons change at local midnight)."""
        return dt.datetime.fromtimestamp(t_ms / 1000, self.tz).date()

    # --- lookups ---
    @cached_property
    def canals(self) -> dict[str, Canal]:
        return {c.id: c for c in self.spec.canals}

    @cached_property
    def points(self) -> dict[str, Point]:
        return {p.id: p for p in self.spec.points}

    @cached_property
    def gateways(self) -> dict[str, Gateway]:
        return {g.id: g for g in self.spec.gateways}

    @cached_property
    def units(self) -> dict[str, BillingUnit]:
        """Units by id; a unit declared without crops has those of the entities below it, summed."""
        return {u.id: self._with_crops(u) for u in self.spec.units}

    # --- the metering hierarchy (unit -> blocks -> households) ---
    @cached_property
    def sub_entities(self) -> dict[str, list[BillingUnit]]:
        """The entities declared directly below each unit (``parent:``), in the file's order."""
        out: dict[str, list[BillingUnit]] = {}
        for unit in self.spec.units:
            if unit.parent is not None:
                out.setdefault(unit.parent, []).append(unit)
        return out

    def below_of(self, unit_id: str) -> list[BillingUnit]:
        return [self.units[u.id] for u in self.sub_entities.get(unit_id, [])]

    @cached_property
    def root_units(self) -> list[BillingUnit]:
        """Units charged at the canal (no parent), in the file's order."""
        return [self.units[u.id] for u in self.spec.units if u.parent is None]

    def tree_of(self, unit_id: str) -> list[BillingUnit]:
        """The unit and every entity below it, depth first in the file's order."""
        return [self.units[unit_id], *(u for sub in self.below_of(unit_id) for u in self.tree_of(sub.id))]

    def root_of(self, unit_id: str) -> BillingUnit:
        unit = self.units[unit_id]
        while unit.parent is not None:
            unit = self.units[unit.parent]
        return unit

    def is_charged(self, unit_id: str) -> bool:
        """Charged entities get a bill of their own; households get a statement, a share of their parent's.

        A household with its own sub-meter is charged: its bill is what its meter measured.
        """
        unit = self.units[unit_id]
        return unit.kind is not UnitKind.household or bool(unit.charging_points)

    def tariff_unit(self, unit_id: str) -> BillingUnit:
        """The unit as its own tariff lines see it (quota, fixed charge).

        An entity whose own use is shared by households while other entities below it have bills
        of their own (metered households) keeps for itself only the sharing households' crops.
        """
        unit = self.units[unit_id]
        below = self.sub_entities.get(unit_id, [])
        sharing = [u for u in below if not self.is_charged(u.id)]
        if not sharing or len(sharing) == len(below):
            return unit
        crops = tuple(c for u in sharing for c in self.units[u.id].crops)
        return unit.model_copy(update={"crops": crops})

    def _with_crops(self, unit: BillingUnit) -> BillingUnit:
        if unit.crops or unit.id not in self.sub_entities:
            return unit
        summed: dict[tuple[str, str], Decimal] = {}
        for sub in self.sub_entities[unit.id]:
            for crop in self._with_crops(sub).crops:
                key = (crop.crop, crop.method)
                summed[key] = summed.get(key, Decimal(0)) + crop.area_mu
        crops = tuple(CropArea(crop=c, method=m, area_mu=a) for (c, m), a in summed.items())
        return unit.model_copy(update={"crops": crops})

    @cached_property
    def crops(self) -> dict[str, Crop]:
        return {c.id: c for c in self.spec.crops}

    @cached_property
    def plots(self) -> dict[str, Plot]:
        return {p.id: p for p in self.spec.plots}

    @cached_property
    def townships(self) -> dict[str, Township]:
        return {t.id: t for t in self.spec.townships}

    @cached_property
    def seasons(self) -> dict[str, Season]:
        return {s.id: s for s in self.spec.seasons}

    @cached_property
    def tariffs(self) -> dict[str, Tariff]:
        return {t.id: t for t in self.spec.tariffs}

    @cached_property
    def stations(self) -> dict[str, Station]:
        return {s.id: s for s in self.spec.stations}

    @cached_property
    def headworks(self) -> dict[str, Headworks]:
        return {h.id: h for h in self.spec.headworks}

    def profile_of(self, point_id: str) -> Profile:
        return self.profiles[self.points[point_id].profile]

    def points_of_gateway(self, gateway_id: str) -> list[Point]:
        return [p for p in self.spec.points if p.gateway == gateway_id]

    def canal_of_point(self, point_id: str) -> Canal:
        return self.canals[self.points[point_id].canal]

    # --- canal graph ---
    @cached_property
    def children(self) -> dict[str, list[Canal]]:
        """Canals fed by each canal or headworks id, in order of offtake chainage."""
        out: dict[str, list[Canal]] = {}
        for canal in self.spec.canals:
            out.setdefault(canal.source, []).append(canal)
        for kids in out.values():
            kids.sort(key=lambda c: (c.offtake_km, c.id))
        return out

    def is_skip_level(self, canal: Canal) -> bool:
        """A canal taking water from a canal more than one level above it (越级 offtake)."""
        source = self.canals.get(canal.source)
        return source is not None and canal.level.rank - source.level.rank > 1

    @cached_property
    def skip_level_canals(self) -> list[Canal]:
        return [c for c in self.spec.canals if self.is_skip_level(c)]

    def reach_at(self, canal_id: str, km: float) -> Reach:
        """The reach of a canal holding chainage ``km`` (a boundary belongs to the upstream reach)."""
        reaches = self.canals[canal_id].reach_list
        for reach in reaches:
            if reach.from_km <= km <= reach.to_km:
                return reach
        return reaches[-1]

    @cached_property
    def reaches(self) -> list[ReachRef]:
        return [ReachRef(c.id, r) for c in self.spec.canals for r in c.reach_list]

    def diversion_point(self, canal_id: str) -> Point | None:
        """The metering point measuring what a canal takes at its head."""
        for point in self.spec.points:
            if point.role is PointRole.diversion and self.fed_canal(point) == canal_id:
                return point
        return None

    def capacity_m3s(self, point_id: str) -> float:
        """The most water that can pass a point: the capacity of the canal it measures (its own or,
        for a diversion, the canal it feeds), else the smallest headworks capacity."""
        point = self.points[point_id]
        canal = self.canals.get(self.fed_canal(point) or point.canal)
        if canal is not None and canal.capacity_m3s:
            return canal.capacity_m3s
        heads = [h.capacity_m3s for h in self.spec.headworks]
        return min(heads) if heads else DEFAULT_CAPACITY_M3S

    def fed_canal(self, point: Point) -> str | None:
        """For a diversion point, the canal whose inflow it measures."""
        if point.role is not PointRole.diversion:
            return None
        return point.feeds or point.canal

    def reach_balance_points(self, canal_id: str, reach_id: str) -> tuple[list[Point], list[Point]]:
        """Metering points whose volumes make a reach's balance: (inflows, outflows).

        In: the canal's diversion (first reach) or the section point at the reach's upstream end.
        Out: diversions into canals taking off within the reach, intakes and outfalls on it, and
        the section point at its downstream end.
        """
        canal = self.canals[canal_id]
        reach = next(r for r in canal.reach_list if r.id == reach_id)
        first = reach.from_km == canal.reach_list[0].from_km
        inflow: list[Point] = []
        outflow: list[Point] = []
        for point in self.spec.points:
            if point.below is not None or point.role in SENSOR_ROLES:
                continue  # a sub-meter measures water its parent point already took from the canal; no water passes a sensor
            fed = self.fed_canal(point)
            if fed == canal_id:
                if first:
                    inflow.append(point)
                continue
            if point.role is PointRole.section and point.canal == canal_id:
                if point.km == reach.from_km and not first:
                    inflow.append(point)
                elif point.km == reach.to_km:
                    outflow.append(point)
                continue
            on_this_canal = (self.canals[fed].source if fed else point.canal) == canal_id
            km = self.canals[fed].offtake_km if fed else point.km
            if on_this_canal and self.reach_at(canal_id, km).id == reach_id:
                outflow.append(point)
        return inflow, outflow

    def outfall_kind(self, point: Point) -> Literal["spill", "return"]:
        """An outfall's water: ``spill`` (to a drain, a loss; the default) or ``return`` (to the source, not withdrawn)."""
        return point.outfall_kind or "spill"

    @cached_property
    def canal_intakes(self) -> list[Point]:
        """Intakes taking water from a canal; sub-meters (``below:``) measure water an intake already took."""
        return [p for p in self.spec.points if p.role is PointRole.intake and p.below is None]

    def intake_points(self, unit_id: str) -> list[Point]:
        return [self.points[p] for p in self.units[unit_id].charging_points]

    def units_sharing(self, point_id: str) -> list[BillingUnit]:
        return [self.units[u.id] for u in self.spec.units if point_id in u.charging_points]

    def season_for(self, day: dt.date) -> Season | None:
        for season in self.spec.seasons:
            if season.start <= day <= season.end:
                return season
        return None

    def quota_m3(self, unit_id: str, season_kind: str) -> Decimal:
        """A unit's season quota: sum over its crops of the best-matching quota per mu × area."""
        unit = self.units[unit_id]
        total = Decimal(0)
        for crop_area in unit.crops:
            rule = best_quota_rule(self.crops[crop_area.crop], season_kind, crop_area.method, unit.zone)
            if rule is not None:
                total += rule.m3_per_mu * crop_area.area_mu
        return total


def best_quota_rule(crop: Crop, season_kind: str, method: str, zone: str | None) -> QuotaRule | None:
    """The most specific quota rule of a crop for a season, method and zone (None if no rule)."""
    candidates = [
        r
        for r in crop.quotas
        if r.season_kind == season_kind
        and r.method in (None, method)
        and r.zone in (None, zone)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda r: (r.method is not None) + (r.zone is not None))


# ---------------------------------------------------------------------------------------------
# Loading and checking


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _structure_problems(exc: ValidationError, model: type[Model], rep: _Reporter, prefix: tuple[str | int, ...] = ()) -> None:
    for issue in validation_issues(exc, model, docs="docs/district-file.md"):
        rep.add((*prefix, *issue.path), issue.message, issue.hint)


_ITEM_MODELS: dict[str, type[Model]] = {
    "headworks": Headworks, "canals": Canal, "gateways": Gateway, "points": Point, "townships": Township,
    "crops": Crop, "units": BillingUnit, "seasons": Season, "tariffs": Tariff, "stations": Station,
}


def _valid_items(data: dict[str, Any], rep: _Reporter) -> tuple[dict[str, Any], set[str]]:
    """Validate list sections item by item, so one bad item does not hide the problems of the rest.

    Returns the data with invalid items left out, and the ids of those items (references to them
    are not reported again as unknown).
    """
    kept = dict(data)
    invalid_ids: set[str] = set()
    _apply_poll_defaults(kept)
    for section, model in _ITEM_MODELS.items():
        items = kept.get(section)
        if not isinstance(items, list):
            continue
        good, indexes = [], []
        for index, item in enumerate(items):
            try:
                model.model_validate(item)
                good.append(item)
                indexes.append(index)
            except ValidationError as exc:
                _structure_problems(exc, model, rep, prefix=(section, index))
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    invalid_ids.add(item["id"])
        kept[section] = good
        rep.kept_indexes[section] = indexes
    return kept, invalid_ids


def _apply_poll_defaults(data: dict[str, Any]) -> None:
    """Points without their own ``poll`` take the file's ``poll_defaults`` (when it has valid ones)."""
    defaults = data.get("poll_defaults")
    points = data.get("points")
    if not isinstance(defaults, dict) or not isinstance(points, list):
        return
    try:
        PollSpec.model_validate(defaults)
    except ValidationError:
        return  # reported by the structural check of poll_defaults
    data["points"] = [
        {**item, "poll": defaults} if isinstance(item, dict) and "poll" not in item else item for item in points
    ]


def parse_district(data: Any, rep: _Reporter) -> tuple[DistrictFile | None, set[str]]:
    if not isinstance(data, dict):
        rep.add((), "the district file must be a mapping of sections", "start from examples/demo-district.yaml")
        return None, set()
    kept, invalid_ids = _valid_items(data, rep)
    try:
        return DistrictFile.model_validate(kept), invalid_ids
    except ValidationError as exc:
        _structure_problems(exc, DistrictFile, rep)
        return None, invalid_ids


def load_district(path: Path | str, *, profiles: dict[str, Any] | None = None) -> District:
    """Load, validate and return a district; raise :class:`DistrictError` on any error."""
    district, problems = check_district(path, profiles=profiles)
    errors = [p for p in problems if p.severity == "error"]
    if errors or district is None:
        raise DistrictError(problems)
    return district


def check_district(
    path: Path | str, *, profiles: dict[str, Any] | None = None
) -> tuple[District | None, list[Problem]]:
    """Validate a district file; return the district (None if unusable) and every problem found."""
    file = Path(path)
    try:
        data, locate = load_yaml_with_lines(file)
    except YamlSyntaxError as exc:
        return None, [exc.problem()]
    rep = _Reporter(file, locate)
    spec, invalid_ids = parse_district(data, rep)
    if spec is None:
        return None, rep.problems
    if profiles is None:
        profiles = _load_profiles_for(spec, file, rep)
    check_semantics(spec, profiles, rep, invalid_ids)
    if any(p.severity == "error" for p in rep.problems):
        return None, rep.problems
    return District(spec, file, file_sha256(file), profiles), rep.problems


def _load_profiles_for(spec: DistrictFile, file: Path, rep: _Reporter) -> dict[str, Any]:
    """The built-in profiles and those of ``profile_dirs``. A broken profile file is reported and
    left out; the others stay known, so only the points that use it are reported too."""
    from canalflow.profiles import BUILTIN_DIR, check_files, profile_files

    dirs = [BUILTIN_DIR, *((file.parent / d).resolve() for d in spec.profile_dirs)]
    result = check_files(profile_files(dirs))
    rep.problems.extend(p for p in result.problems if p.severity == "error")
    return result.profiles


def _duplicates(items: Iterable[tuple[int, str]], section: str, rep: _Reporter) -> set[str]:
    seen: set[str] = set()
    for index, ident in items:
        if ident in seen:
            rep.add((section, index, "id"), f"duplicate id {ident!r}", "ids must be unique in a section")
        seen.add(ident)
    return seen


def check_semantics(
    spec: DistrictFile, profiles: dict[str, Any], rep: _Reporter, invalid_ids: set[str] | None = None
) -> None:
    """Check references and the shape of the canal graph; add each problem to ``rep``.

    ``invalid_ids`` are ids of items that failed structural validation: references to them are
    not reported again.
    """
    _check_timezone(spec, rep)
    ids = _check_ids(spec, rep)
    for known in ids.values():
        known |= invalid_ids or set()
    _check_canals(spec, ids, rep)
    _check_points(spec, ids, profiles, rep)
    _check_units(spec, ids, rep)
    _check_hierarchy(spec, ids, rep)
    _check_seasons_and_tariffs(spec, ids, rep)
    _check_stations(spec, ids, rep)
    _check_storage(spec, rep)
    _check_plots(spec, rep)


def _check_plots(spec: DistrictFile, rep: _Reporter) -> None:
    units = {u.id: u for u in spec.units}
    seen: set[str] = set()
    for index, plot in enumerate(spec.plots):
        at = ("plots", index)
        if plot.id in seen:
            rep.add((*at, "id"), f"duplicate id {plot.id!r}", "ids must be unique in a section")
        seen.add(plot.id)
        unit = units.get(plot.unit)
        if unit is None:
            rep.add((*at, "unit"), f"unknown billing unit {plot.unit!r}", f"known units: {sorted(units)}")
        elif plot.crop not in {c.crop for c in unit.crops}:
            rep.add((*at, "crop"), f"unit {plot.unit!r} grows no {plot.crop!r}", f"its crops: {sorted(c.crop for c in unit.crops)}")
        if plot.wilting_point >= plot.field_capacity:
            rep.add((*at, "wilting_point"), f"wilting point {plot.wilting_point} is not below field capacity {plot.field_capacity}")
        if not any(d <= plot.wetting_depth_m * 100 for d in plot.depths_cm):
            rep.add((*at, "depths_cm"), f"no sensor depth within the wetting depth of {plot.wetting_depth_m} m", "list the station's depths in cm")
        _check_plot_inlet(spec, rep, (*at, "inlet"), plot, unit)
        _check_plot_meter(spec, rep, (*at, "station"), plot.station, PointRole.soil_moisture)
        _check_plot_meter(spec, rep, (*at, "rain_gauge"), plot.rain_gauge, PointRole.rain_gauge)
        bad = [d for d in plot.depths_cm if d not in SOIL_DEPTHS_CM]
        if bad:
            rep.add((*at, "depths_cm"), f"depths {bad} cm have no soil-moisture quantity", f"stations report at {list(SOIL_DEPTHS_CM)} cm")


SENSOR_ROLES = (PointRole.soil_moisture, PointRole.rain_gauge)  # each is also the profile kind its meter must be


def _check_sensor_profile(point: Point, profile: Any, at: tuple[str | int, ...], rep: _Reporter) -> None:
    """A plot sensor's point reads a sensor of its kind, and a water meter's point no sensor."""
    if profile is None:
        return
    sensor_kinds = {r.value for r in SENSOR_ROLES}
    if (point.role.value in sensor_kinds or profile.kind in sensor_kinds) and profile.kind != point.role.value:
        rep.add(at, f"point {point.id!r} ({point.role.value}) reads {profile.name!r}, a {profile.kind} meter",
                f"a {point.role.value} point needs a profile of kind {point.role.value}" if point.role.value in sensor_kinds
                else "a plot sensor measures no water: give this point a flow or level meter's profile")


def _check_plot_inlet(spec: DistrictFile, rep: _Reporter, at: tuple[str | int, ...], plot: Plot, unit: BillingUnit | None) -> None:
    """A plot's inlet meter is a sub-meter on its unit's water: billed there, outside the canal balance."""
    point = next((p for p in spec.points if p.id == plot.inlet), None)
    if point is None:
        rep.add(at, f"unknown point {plot.inlet!r}", "name the metering point on the plot's inlet")
        return
    charged = unit.charging_points if unit is not None else ()
    if point.role is not PointRole.intake or point.below not in charged:
        rep.add(at, f"point {plot.inlet!r} is not a sub-meter of unit {plot.unit!r}",
                f"give point {plot.inlet!r} role: intake and below: one of {list(charged)}")


def _check_plot_meter(spec: DistrictFile, rep: _Reporter, at: tuple[str | int, ...], point_id: str | None, role: PointRole) -> None:
    """A plot's station or rain gauge, when it is a polled point, has the role that says so."""
    point = next((p for p in spec.points if p.id == point_id), None)
    if point is not None and point.role is not role:
        rep.add(at, f"point {point_id!r} is a {point.role.value} point, not a {role.value}", f"give point {point_id!r} role: {role.value}")


def _check_storage(spec: DistrictFile, rep: _Reporter) -> None:
    points = {p.id: p for p in spec.points}
    for index, canal in enumerate(spec.canals):
        for r_index, reach in enumerate(canal.reaches):
            if reach.storage is None:
                continue
            point = points.get(reach.storage.point)
            if point is None or point.canal != canal.id or not reach.from_km <= point.km <= reach.to_km:
                rep.add(("canals", index, "reaches", r_index, "storage", "point"), f"{reach.storage.point!r} is not a metering point on reach {reach.id!r} of {canal.id!r}",
                        f"name a point with canal: {canal.id} and km between {reach.from_km} and {reach.to_km}")


def _check_timezone(spec: DistrictFile, rep: _Reporter) -> None:
    try:
        ZoneInfo(spec.district.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        rep.add(("district", "timezone"), f"unknown time zone {spec.district.timezone!r}", "use an IANA name such as Asia/Shanghai")


def _check_ids(spec: DistrictFile, rep: _Reporter) -> dict[str, set[str]]:
    sections = ("headworks", "canals", "gateways", "points", "townships", "crops", "units", "seasons", "tariffs")
    ids = {s: _duplicates(enumerate(x.id for x in getattr(spec, s)), s, rep) for s in sections}
    clash = ids["headworks"] & ids["canals"]
    for index, canal in enumerate(spec.canals):
        if canal.id in clash:
            rep.add(("canals", index, "id"), f"{canal.id!r} is both a headworks and a canal id")
    ids["soils"] = set(spec.soils)
    return ids


def _check_canals(spec: DistrictFile, ids: dict[str, set[str]], rep: _Reporter) -> None:
    canals = {c.id: c for c in spec.canals}
    for index, canal in enumerate(spec.canals):
        at = ("canals", index)
        if canal.soil not in ids["soils"]:
            rep.add((*at, "soil"), f"unknown soil {canal.soil!r}", f"define it under soils: (known: {sorted(ids['soils'])})")
        if canal.source in ids["headworks"]:
            if canal.level is not CanalLevel.main:
                rep.add((*at, "source"), f"a {canal.level.value} canal cannot take water straight from headworks {canal.source!r}", "only main canals start at headworks")
        elif canal.source in canals:
            source = canals[canal.source]
            if source.level.rank >= canal.level.rank:
                rep.add((*at, "level"), f"{canal.level.value} canal takes water from {source.level.value} canal {source.id!r}", "a canal must be fed by a canal of a higher level")
            if canal.offtake_km > source.length_km:
                rep.add((*at, "offtake_km"), f"offtake at km {canal.offtake_km} is beyond the end of {source.id!r} ({source.length_km} km)")
        else:
            rep.add((*at, "source"), f"unknown source {canal.source!r}", "name a headworks or canal id")
        _check_reaches(canal, at, rep)
    _check_cycles(spec, rep)


def _check_reaches(canal: Canal, at: tuple[str, int], rep: _Reporter) -> None:
    if not canal.reaches:
        return
    expected_from = 0.0
    for r_index, reach in enumerate(canal.reaches):
        if abs(reach.from_km - expected_from) > 1e-9:
            rep.add((*at, "reaches", r_index, "from_km"), f"reach {reach.id!r} starts at km {reach.from_km}, expected {expected_from}", "reaches must cover the canal from km 0 without gaps or overlaps")
        if reach.to_km <= reach.from_km:
            rep.add((*at, "reaches", r_index, "to_km"), "to_km must be greater than from_km")
        expected_from = reach.to_km
        if reach.storage is not None:
            levels = [h for h, _ in reach.storage.curve]
            if levels != sorted(set(levels)):
                rep.add((*at, "reaches", r_index, "storage", "curve"), "levels of a volume–level curve must increase", "list [level_m, volume_m3] pairs from the lowest level up")
    if abs(expected_from - canal.length_km) > 1e-9:
        rep.add((*at, "reaches"), f"reaches end at km {expected_from} but the canal is {canal.length_km} km long", "make the last reach end at length_km")


def _check_cycles(spec: DistrictFile, rep: _Reporter) -> None:
    source = {c.id: c.source for c in spec.canals}
    index_of = {c.id: i for i, c in enumerate(spec.canals)}
    reported: set[str] = set()
    for start in source:
        path: list[str] = []
        node = start
        while node in source and node not in path:
            path.append(node)
            node = source[node]
        if node in path:
            cycle = path[path.index(node):]
            key = min(cycle)
            if key not in reported:
                reported.add(key)
                chain = " -> ".join([*cycle, cycle[0]])
                rep.add(("canals", index_of[key], "source"), f"cycle in the canal graph: {chain}", "every canal must trace back to a headworks")


def _check_points(spec: DistrictFile, ids: dict[str, set[str]], profiles: dict[str, Any], rep: _Reporter) -> None:
    canals = {c.id: c for c in spec.canals}
    addresses: dict[tuple[str, int], str] = {}
    by_station = {s.point for s in spec.stations}  # reached through a telemetry receiver: no Modbus unit id
    for index, point in enumerate(spec.points):
        at = ("points", index)
        _check_sensor_profile(point, profiles.get(point.profile), ("points", index, "profile"), rep)
        canal = canals.get(point.canal)
        if canal is None:
            rep.add((*at, "canal"), f"unknown canal {point.canal!r}")
        elif point.km > canal.length_km:
            rep.add((*at, "km"), f"km {point.km} is beyond the end of {canal.id!r} ({canal.length_km} km)")
        if point.gateway not in ids["gateways"]:
            rep.add((*at, "gateway"), f"unknown gateway {point.gateway!r}", "declare it under gateways:")
        else:
            key = (point.gateway, point.unit_id)
            if key in addresses and point.id not in by_station:
                rep.add((*at, "unit_id"), f"unit id {point.unit_id} on gateway {point.gateway!r} is already used by point {addresses[key]!r}", "each meter on a bus needs its own unit id")
            addresses[key] = point.id
        profile = profiles.get(point.profile)
        if profile is None:
            hint = f"known profiles: {', '.join(sorted(profiles))}" if profiles else "see docs/meter-profiles.md"
            rep.add((*at, "profile"), f"unknown meter profile {point.profile!r}", hint)
        elif getattr(profile, "kind", None) == "level" and not point.ratings:
            rep.add((*at, "ratings"), f"profile {point.profile!r} measures level only, so the point needs a rating", "add ratings: [{type: parshall, throat_mm: 914}] or a weir/curve")
        if point.feeds is not None:
            if point.role is not PointRole.diversion:
                rep.add((*at, "feeds"), "only a diversion point feeds a canal")
            elif point.feeds not in canals:
                rep.add((*at, "feeds"), f"unknown canal {point.feeds!r}")
            elif canals[point.feeds].source != point.canal:
                rep.add((*at, "feeds"), f"canal {point.feeds!r} does not take water from {point.canal!r}", f"its source is {canals[point.feeds].source!r}")
        if point.role is PointRole.section and canal is not None:
            bounds = {r.from_km for r in canal.reach_list[1:]}
            if point.km not in bounds:
                rep.add((*at, "km"), f"a section point must sit on a reach boundary of {canal.id!r} (km {sorted(bounds) or 'none'})")
        if point.outfall_kind is not None and point.role is not PointRole.outfall:
            rep.add((*at, "outfall_kind"), f"only an outfall declares outfall_kind; {point.id!r} is a {point.role.value} point", "remove outfall_kind or make the point role: outfall")
        _check_rating_order(point, at, rep)
    _check_diversions(spec, rep)


def _check_rating_order(point: Point, at: tuple[str, int], rep: _Reporter) -> None:
    dates = [r.valid_from for r in point.ratings]
    if len(point.ratings) > 1 and (None in dates[1:] or dates[1:] != sorted(dates[1:])):  # type: ignore[type-var]
        rep.add((*at, "ratings"), "later ratings need valid_from dates in increasing order")


def _check_diversions(spec: DistrictFile, rep: _Reporter) -> None:
    fed: dict[str, int] = {}
    for index, point in enumerate(spec.points):
        if point.role is PointRole.diversion:
            canal = point.feeds or point.canal
            if canal in fed:
                rep.add(("points", index, "role"), f"canal {canal!r} already has diversion point {spec.points[fed[canal]].id!r}")
            fed[canal] = index
    for index, canal in enumerate(spec.canals):
        if canal.id not in fed:
            rep.add(("canals", index, "id"), f"canal {canal.id!r} has no diversion point at its head", "without it the canal's balance and efficiency cannot be computed", "warning")


def _check_units(spec: DistrictFile, ids: dict[str, set[str]], rep: _Reporter) -> None:
    points = {p.id: p for p in spec.points}
    for index, unit in enumerate(spec.units):
        at = ("units", index)
        if unit.township not in ids["townships"]:
            rep.add((*at, "township"), f"unknown township {unit.township!r}", "declare it under townships:")
        if not unit.charging_points and unit.parent is None:
            rep.add((*at, "charging_points"), f"unit {unit.id!r} has no charging point", "name the intake point(s) whose meter charges this unit")
        for c_index, point_id in enumerate(unit.charging_points):
            point = points.get(point_id)
            if point is None and point_id in ids["points"]:
                continue  # the point itself failed validation and was reported there
            if point is None:
                rep.add((*at, "charging_points", c_index), f"unknown point {point_id!r}")
            elif point.role is not PointRole.intake:
                rep.add((*at, "charging_points", c_index), f"point {point_id!r} is a {point.role.value} point, not an intake", "charge units at intake points")
        for c_index, crop in enumerate(unit.crops):
            if crop.crop not in ids["crops"]:
                rep.add((*at, "crops", c_index, "crop"), f"unknown crop {crop.crop!r}", f"known crops: {sorted(ids['crops'])}")


def _check_seasons_and_tariffs(spec: DistrictFile, ids: dict[str, set[str]], rep: _Reporter) -> None:
    ordered = sorted(enumerate(spec.seasons), key=lambda s: s[1].start)
    for (i, season), (_, following) in itertools.pairwise(ordered):
        if following.start <= season.end:
            rep.add(("seasons", i, "end"), f"season {season.id!r} overlaps season {following.id!r}")
    for index, season in enumerate(spec.seasons):
        if season.end < season.start:
            rep.add(("seasons", index, "end"), "end is before start")
        if season.tariff not in ids["tariffs"]:
            rep.add(("seasons", index, "tariff"), f"unknown tariff {season.tariff!r}")
    for index, tariff in enumerate(spec.tariffs):
        _check_bands(tariff, index, rep)
        if tariff.subsidy.cost and tariff.subsidy.grain_per_m3:
            rep.add(("tariffs", index, "subsidy"), "the subsidy has both a flat rate (grain_per_m3) and a cost price (cost)", "keep one: cost for cost price - executed price, or grain_per_m3 for a flat rate")
        used = {c.crop_class for c in spec.crops}
        missing = used - set(tariff.prices)
        if missing:
            rep.add(("tariffs", index, "prices"), f"no price for crop class(es) {sorted(missing)}", "add a price for every crop class the district grows")


def _check_bands(tariff: Tariff, index: int, rep: _Reporter) -> None:
    previous = Decimal(0)
    for b_index, band in enumerate(tariff.bands):
        last = b_index == len(tariff.bands) - 1
        if band.up_to is None and not last:
            rep.add(("tariffs", index, "bands", b_index, "up_to"), "only the last band may be open-ended")
        if band.up_to is not None and band.up_to <= previous:
            rep.add(("tariffs", index, "bands", b_index, "up_to"), "bands must rise: up_to must be greater than the band before")
        if last and band.up_to is not None:
            rep.add(("tariffs", index, "bands", b_index, "up_to"), "the last band must be open-ended", "remove up_to from the last band")
        previous = band.up_to or previous
    if tariff.bands[0].multiplier != 1:
        rep.add(("tariffs", index, "bands", 0, "multiplier"), "use within the first band is charged at the base price", "set multiplier: 1.0", "warning")


def _check_stations(spec: DistrictFile, ids: dict[str, set[str]], rep: _Reporter) -> None:
    """Telemetry stations: the point each feeds, unique addresses, protocol fields, element mapping."""
    points = {p.id: p for p in spec.points}
    _duplicates(enumerate(s.id for s in spec.stations), "stations", rep)
    fed: dict[str, str] = {}
    addresses: dict[tuple[str, str], str] = {}
    for index, station in enumerate(spec.stations):
        at = ("stations", index)
        point = points.get(station.point)
        if point is None and station.point not in ids["points"]:
            rep.add((*at, "point"), f"unknown point {station.point!r}", "declare it under points: (its gateway is "
                    "the receiver's, see docs/stations.md)")
        elif station.point in fed:
            rep.add((*at, "point"), f"point {station.point!r} is already fed by station {fed[station.point]!r}",
                    "one station per metering point")
        fed.setdefault(station.point, station.id)
        key = (station.protocol, station.address.upper())
        if key in addresses:
            rep.add((*at, "address"), f"{station.protocol} address {station.address} is already station "
                    f"{addresses[key]!r}'s", "every station needs its own address")
        addresses.setdefault(key, station.id)
        _check_station_protocol(station, at, rep)
        _check_station_elements(station, point, at, rep)
        if station.timezone is not None:
            try:
                ZoneInfo(station.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                rep.add((*at, "timezone"), f"unknown time zone {station.timezone!r}", "use an IANA name such as "
                        "Asia/Shanghai, or leave it out for the district's")


def _check_station_protocol(station: Station, at: tuple[str, int], rep: _Reporter) -> None:
    if station.protocol == "sl651":
        for name in ("centre", "password"):
            if getattr(station, name) is None:
                rep.add((*at, name), f"an SL 651 station needs its {name}", "the centre address (1-255) and the "
                        "4-hex-digit password the RTU is set to")
    elif station.centre is not None:
        rep.add((*at, "centre"), "centre is an SL 651 field", "leave it out for an SZY 206 terminal")


def _check_station_elements(station: Station, point: Point | None, at: tuple[str, int], rep: _Reporter) -> None:
    from canalflow.contract import QUANTITIES
    from canalflow.station_elements import element_problem

    for quantity, ref in station.elements.items():
        if quantity not in QUANTITIES:
            rep.add((*at, "elements", quantity), f"unknown quantity {quantity!r}",
                    f"one of {', '.join(QUANTITIES)}")
            continue
        problem = element_problem(station.protocol, ref)
        if problem:
            rep.add((*at, "elements", quantity), problem[0], problem[1])
    for quantity, factor in station.scale.items():
        if quantity not in station.elements:
            rep.add((*at, "scale", quantity), f"scale for {quantity!r}, which elements does not map")
        elif not factor > 0:
            rep.add((*at, "scale", quantity), f"scale {factor} is not positive", "a factor to the SI unit, e.g. "
                    "0.000277778 for m3/h -> m3/s")
    mapped = set(station.elements)
    if not mapped & {"flow", "totaliser", "level"}:
        rep.add((*at, "elements"), "the station maps none of flow, totaliser, level", "say which element is "
                "the flow, the cumulative volume (totaliser) or the level")
    elif point is not None and not mapped & {"flow", "totaliser"} and not point.ratings:
        rep.add((*at, "elements"), f"the station reports a level only, so point {point.id!r} needs a rating",
                "add ratings: to the point (docs/district-file.md)")

def _check_hierarchy(spec: DistrictFile, ids: dict[str, set[str]], rep: _Reporter) -> None:
    """The metering hierarchy conserves water: every m3 a charging meter measures is billed exactly once."""
    _check_sub_meters(spec, ids, rep)
    units = {u.id: u for u in spec.units}
    if not _parent_chains_ok(spec, ids, rep):
        return
    charged_at: dict[str, list[int]] = {}
    for index, unit in enumerate(spec.units):
        for point_id in unit.charging_points:
            charged_at.setdefault(point_id, []).append(index)
    points = {p.id: p for p in spec.points}
    has_subs = {u.parent for u in spec.units if u.parent is not None}
    for index, unit in enumerate(spec.units):
        _check_entity(unit, ("units", index), units.get(unit.parent or ""), points, unit.id in has_subs, rep)
    for point_id, indexes in charged_at.items():
        point = points.get(point_id)
        if point is None or len(indexes) < 2:
            continue
        names = ", ".join(spec.units[i].id for i in indexes)
        if point.below is not None:
            rep.add(("units", indexes[1], "charging_points"), f"sub-meter {point_id!r} charges {names}: a sub-meter charges one entity", "give the entities a common parent charged at the sub-meter, with share: area on each")
        elif point.allocation is None:
            rep.add(("units", indexes[1], "charging_points"), f"point {point_id!r} charges {names} without a declared split: its volume would be billed to each", f"set allocation: area or allocation: metered on point {point_id!r}")
    _check_share_methods(spec, rep)


def _check_sub_meters(spec: DistrictFile, ids: dict[str, set[str]], rep: _Reporter) -> None:
    points = {p.id: p for p in spec.points}
    for index, point in enumerate(spec.points):
        if point.below is None:
            continue
        at = ("points", index, "below")
        parent = points.get(point.below)
        if parent is None:
            if point.below not in ids["points"]:
                rep.add(at, f"unknown point {point.below!r}", "name the point whose delivery this meter sits on")
            continue
        if point.role is not PointRole.intake or parent.role is not PointRole.intake:
            rep.add(at, f"sub-meter {point.id!r} ({point.role.value}) below {parent.id!r} ({parent.role.value}): both must be intakes", "a sub-meter sits on a delivery inside a billing unit")
        seen = [point.id]
        node: Point | None = parent
        while node is not None and node.below is not None and node.id not in seen:
            seen.append(node.id)
            node = points.get(node.below)
        if node is not None and node.id in seen and node.id == point.id:
            rep.add(at, f"cycle of sub-meters: {' -> '.join([*seen, point.id])}", "a sub-meter must lead up to a point on a canal")


def _parent_chains_ok(spec: DistrictFile, ids: dict[str, set[str]], rep: _Reporter) -> bool:
    units = {u.id: u for u in spec.units}
    ok = True
    for index, unit in enumerate(spec.units):
        if unit.parent is None:
            continue
        if unit.parent not in units:
            if unit.parent not in ids["units"]:
                rep.add(("units", index, "parent"), f"unknown unit {unit.parent!r}", "name the unit or block this entity sits below")
            ok = False
            continue
        seen = [unit.id]
        node: BillingUnit | None = units[unit.parent]
        while node is not None and node.id not in seen:
            seen.append(node.id)
            node = units.get(node.parent) if node.parent else None
        if node is not None:
            rep.add(("units", index, "parent"), f"cycle of parents: {' -> '.join([*seen, node.id])}", "every entity must lead up to a unit charged at the canal")
            ok = False
    return ok


def _check_entity(unit: BillingUnit, at: tuple[str, int], parent: BillingUnit | None, points: dict[str, Point], has_subs: bool, rep: _Reporter) -> None:
    if not unit.crops and not has_subs:
        rep.add((*at, "crops"), f"unit {unit.id!r} has no crops", "list its crops and areas (only a unit with entities below it may leave them out)")
    own = {p for p in unit.charging_points if p in points}
    for c_index, point_id in enumerate(unit.charging_points):
        point = points.get(point_id)
        if point is not None and point.below in own:
            rep.add((*at, "charging_points", c_index), f"sub-meter {point_id!r} is also a charging point of {unit.id!r}, which is charged at {point.below!r}: its water would be billed twice", f"remove {point_id!r} here, or give it to an entity with parent: {unit.id}")
    if parent is None:
        if unit.share is not None:
            rep.add((*at, "share"), f"unit {unit.id!r} has share: {unit.share} but no parent to share", "declare parent:, or remove share:")
        for c_index, point_id in enumerate(unit.charging_points):
            point = points.get(point_id)
            if point is not None and point.below is not None:
                rep.add((*at, "charging_points", c_index), f"point {point_id!r} is a sub-meter below {point.below!r}: its water is billed there already", f"declare parent: <the unit charged at {point.below}>")
        return
    if unit.kind is UnitKind.household and has_subs:
        rep.add((*at, "kind"), f"household {unit.id!r} has entities below it: a household is a leaf", "make it a block (kind: block), or give its entities another parent")
    if unit.charging_points and unit.share is not None:
        rep.add((*at, "share"), f"entity {unit.id!r} has its own meter and a share of {parent.id!r}: its volume must come from one place", "remove share: or charging_points:")
    elif not unit.charging_points and unit.share is None:
        rep.add((*at, "share"), f"entity {unit.id!r} below {parent.id!r} has no meter and no share: its water would be billed nowhere", "set share: area (or quota), or name its sub-meter under charging_points")
    for c_index, point_id in enumerate(unit.charging_points):
        point = points.get(point_id)
        if point is not None and point.below not in parent.charging_points:
            where = f"it is below {point.below!r}" if point.below else "it is not a sub-meter"
            rep.add((*at, "charging_points", c_index), f"point {point_id!r} is not a sub-meter of {parent.id!r} ({where}): its water is not in the volume of {parent.id!r}", f"set below: <a charging point of {parent.id}> on point {point_id!r}")


def _check_share_methods(spec: DistrictFile, rep: _Reporter) -> None:
    method_of: dict[str, tuple[str, str]] = {}
    for index, unit in enumerate(spec.units):
        if unit.parent is None or unit.share is None:
            continue
        first = method_of.setdefault(unit.parent, (unit.share, unit.id))
        if first[0] != unit.share:
            rep.add(("units", index, "share"), f"entities below {unit.parent!r} share its volume by {first[0]} ({first[1]}) and by {unit.share} ({unit.id})", "one method for all the entities sharing a parent's volume")
