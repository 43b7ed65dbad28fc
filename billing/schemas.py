"""The shapes of billing's answers: the bill document, the run manifest and every HTTP API answer.

One model per shape, used by everything that writes it, so the bill file (``out/bills/<unit>.json``),
the ledger's stored documents (a bill's ``document``, a run's ``manifest``) and the API's answers
cannot drift apart: :func:`bill_document` and :func:`run_manifest` build the documents from a
billing run, and the API declares these models as its response models (see ``/openapi.json``).

Money (yuan) is a JSON *string* of a decimal with at most two places, to the fen (``"-12.50"``,
``"0"``), never a float; volumes, rates, weights and shares from the tariff are decimal strings
too. Volumes measured from readings and efficiency figures are floats (they are estimates, not
money). Every model refuses keys it does not declare, so a new field has to be added here first.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from billing.efficiency import ReachBalance

FEN = Decimal("0.01")
MONEY_PATTERN = r"^-?\d+(\.\d{1,2})?$"
DECIMAL_PATTERN = r"^-?\d+(\.\d+)?$"


def _not_a_float(value: object) -> object:
    if isinstance(value, float):
        raise ValueError("decimals are written as strings, e.g. \"-12.50\", never as floats (a float cannot hold 0.1 exactly)")
    return value


def _not_a_number_of_fen(value: object) -> object:
    if isinstance(value, int):
        raise ValueError(f"{value!r}: give yuan as a decimal string or Decimal (\"12.50\"); a bare integer could be fen (integer fen are Decimal(fen) / 100)")
    return _not_a_float(value)


def _to_the_fen(value: Decimal) -> Decimal:
    try:
        exact = value.is_finite() and value == value.quantize(FEN)
    except InvalidOperation:  # more digits than Decimal's precision
        exact = False
    if not exact:
        raise ValueError(f"{value} is not an amount of yuan to the fen (0.01)")
    return value


def _fixed_point(value: Decimal) -> str:
    """``str`` without exponents (``1E+2`` -> ``100``); identical to ``str`` for every amount to the fen."""
    return format(value.quantize(FEN) if value.as_tuple().exponent < -2 and value == value.quantize(FEN) else value, "f")


Money = Annotated[
    Decimal,
    BeforeValidator(_not_a_number_of_fen),
    AfterValidator(_to_the_fen),
    PlainSerializer(_fixed_point, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": MONEY_PATTERN, "examples": ["-12.50", "1234.07", "0"],
                    "description": "yuan, a decimal string to the fen (at most two places); never a float; negative for a credit"}),
]
DecimalText = Annotated[
    Decimal,
    BeforeValidator(_not_a_float),
    PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": DECIMAL_PATTERN, "examples": ["8571.360", "0.0875"],
                    "description": "an exact decimal as a string (volume in m3, rate in yuan/m3, weight or share); never a float"}),
]
EpochMs = Annotated[int, Field(description="milliseconds since 1970-01-01 UTC")]
RunStatus = Literal["draft", "approved", "issued"]


class Schema(BaseModel):
    """Base of every answer: an undeclared key is an error, so documents and API answers cannot grow fields silently."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------
# Shared parts


class Window(Schema):
    t0_ms: EpochMs
    t1_ms: EpochMs = Field(description="end of the window (exclusive), ms since 1970-01-01 UTC")


class TariffRef(Schema):
    id: str
    version: int


class UnitRef(Schema):
    id: str
    name: str
    kind: str = Field(description="billing unit kind from the district file (village, cooperative, ...)")
    township: str


class SeasonRef(Schema):
    id: str
    kind: str


class RatingUse(Schema):
    """One rating version (stage-discharge law) that turned a point's levels into flows."""

    version: int = Field(description="index in the point's list of ratings")
    rating: str
    valid_from: str | None
    first_ms: EpochMs
    last_ms: EpochMs
    readings: int
    submerged: int
    extrapolated: int


class PointSummary(Schema):
    """A charging point's volume in the window, as computed from its readings (or rollups)."""

    point: str
    volume_m3: float
    method: str = Field(description="totaliser | totaliser+flow | flow | none, or an estimate")
    coverage: float = Field(ge=0, le=1, description="share of the window measured")
    estimated_share: float = Field(ge=0, le=1)
    incomplete: bool
    n_readings: int
    gaps: list[tuple[EpochMs, EpochMs]] = Field(description="uncovered stretches (start_ms, end_ms)")
    flags: list[str] = Field(description="totaliser_rollover, totaliser_reset, totaliser_decrease")
    monthly_m3: dict[str, float] = Field(description="volume by local month YYYY-MM")
    ratings: list[RatingUse]


class BillLine(Schema):
    """One line of a bill; ``amount`` = ``volume_m3`` × ``rate`` rounded half up to the fen."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "3f2a9c1d04e5-V01-L1", "kind": "charge", "crop_class": "grain", "component": "backbone", "band": 0,
        "volume_m3": "8571", "rate": "0.0875", "amount": "749.96", "note": ""}]})

    id: str = Field(description="<run id prefix>-<unit>-L<n>, as printed on the bill")
    kind: Literal["charge", "loss", "fixed", "subsidy", "reward", "adjustment"]
    crop_class: str
    component: str = Field(description="backbone | terminal | village_fee | fixed | subsidy | reward | buy_back | budget (a cut by the season budget) | adjustment")
    band: int | None = Field(description="index of the tariff band (above quota) of a charge; null otherwise")
    volume_m3: DecimalText
    rate: DecimalText = Field(description="yuan per m3 after the band multiplier, negative for credits: an exact decimal string, never a float")
    amount: Money
    note: str


class Allocation(Schema):
    """A unit's share of one charging point's volume."""

    point: str
    volume_m3: DecimalText
    method: str = Field(description="sole | area | metered")
    weight: DecimalText


class LossShare(Schema):
    """A bill's share of the loss below a meter of the metering hierarchy (or the loss its unit bears)."""

    below: str = Field(description="the entity whose meter the loss is below")
    points: list[str] = Field(description="that entity's charging points")
    method: str = Field(description="metered | area | quota | parent (borne by the entity itself)")
    weight: DecimalText
    volume_m3: DecimalText


class EntitySummary(Schema):
    """An entity below the billed unit (a block on its village's bill, a household on its block's)."""

    unit: str
    name: str
    kind: str
    source: str = Field(description="meter | share:area | share:quota | passed down | statement")
    inflow_m3: DecimalText = Field(description="measured at its sub-meter, or its share of the parent's")
    loss_m3: DecimalText
    billed_m3: DecimalText
    total: Money


# ---------------------------------------------------------------------------------------------
# Documents: the bill file and the ledger's copy of it, the run manifest

NOTE_CODES = ("each note's code in the catalogue (billing/notes.py) and its parameters, by the note's English text as it "
              "stands in notes and in the lines' note; a note without one (older ledgers) has no code")


class NoteCode(Schema):
    """A note's code in the catalogue of notes and its parameters: how a reader sees it in their language."""

    code: str = Field(description="e.g. tariff.over_quota")
    params: dict[str, str | list[NoteCode]] = Field(description="values as they read; a list: notes of their own (the reasons a bill is blocked)")


class BillDocument(Schema):
    """A bill: the file ``out/bills/<unit>.json`` and the ledger's stored document are this model."""

    bill_id: str
    run_id: str
    unit: UnitRef
    season: SeasonRef
    window: Window
    volume_m3: DecimalText
    quota_m3: DecimalText
    lines: list[BillLine] = Field(description="empty when the bill is blocked")
    total: Money = Field(description="yuan, a decimal string to the fen (never a float): the sum of the lines' amounts")
    blocked: bool
    blocked_reason: str
    allocations: list[Allocation]
    sources: list[PointSummary]
    notes: list[str]
    parent: str | None = Field(default=None, description="the entity this one sits below in the metering hierarchy")
    own_m3: DecimalText | None = Field(default=None, description="the entity's own use, billed through its tariff (volume_m3 less its loss lines)")
    losses: list[LossShare] = Field(default=[], description="its loss lines' shares, each with its method")
    entities: list[EntitySummary] = Field(default=[], description="the entities below it and what each is billed")
    monthly_m3: dict[str, float] = Field(description="the unit's use by local month YYYY-MM, for the chart")
    note_codes: dict[str, NoteCode] = Field(default={}, description=NOTE_CODES)


class BillSummary(Schema):
    bill_id: str
    unit: str
    volume_m3: DecimalText
    total: Money
    blocked: bool


class Finding(Schema):
    point: str
    rule: str
    start_ms: EpochMs
    end_ms: EpochMs
    detail: str


class VeeEdit(Schema):
    id: int
    point: str
    start_ms: EpochMs
    end_ms: EpochMs
    volume_m3: float
    user: str
    reason: str


class VeeOutcome(Schema):
    findings: list[Finding]
    estimates: list[str]
    edits: list[VeeEdit]


class DistrictRef(Schema):
    id: str
    sha256: str = Field(description="SHA-256 of the district file the run billed from")


class RunManifest(Schema):
    """A billing run: ``out/run.json``, the ledger's stored manifest of the run."""

    run_id: str = Field(description="SHA-256 of every input of the run")
    district: DistrictRef
    season: str
    tariff: TariffRef
    window: Window
    as_of_ms: EpochMs
    points: list[PointSummary]
    bills: list[BillSummary]
    total: Money
    allocation_notes: list[str]
    adjustments: list[int] = Field(description="ids of the adjustments the run carries")
    vee: VeeOutcome
    unpaid_units: list[str]
    quota_share: DecimalText
    note_codes: dict[str, NoteCode] = Field(default={}, description=NOTE_CODES)


def document_json(document: BaseModel) -> str:
    """A document as written to a file and stored in the ledger: sorted keys, UTF-8 text, indented, one final newline.

    The same run gives the same bytes (a run is reproducible)."""
    return json.dumps(document.model_dump(mode="json"), sort_keys=True, ensure_ascii=False, indent=2) + "\n"


# ---------------------------------------------------------------------------------------------
# API answers

Item = TypeVar("Item")


class Page(Schema, Generic[Item]):
    """One page of a list: ``items`` from ``offset``, at most ``limit`` of them, out of ``total``."""

    items: list[Item]
    offset: int = Field(ge=0)
    limit: int = Field(ge=1)
    total: int = Field(ge=0)


class Health(Schema):
    status: Literal["ok"]


class RunSummary(Schema):
    """A billing run as the ledger lists it."""

    id: str
    status: RunStatus
    district: str
    district_sha256: str
    season: str | None
    tariff: TariffRef
    t0_ms: EpochMs
    t1_ms: EpochMs
    as_of_ms: EpochMs
    created_at: str = Field(description="ISO 8601, UTC")


class Event(Schema):
    """One entry of a run's audit trail: who did what, when."""

    action: str = Field(description="created | approved | issued | adjustment | paid")
    user: str
    at: str = Field(description="ISO 8601, UTC")
    note: str


class RunDetail(RunSummary):
    events: list[Event]


class StartedRun(RunManifest):
    """The manifest of the run just made, and what the ledger did with it."""

    ledger: Literal["created", "unchanged"] = Field(description="unchanged: the same inputs were billed before (the same run id)")


class Transition(Schema):
    run_id: str
    status: RunStatus


class StoredBill(BillDocument):
    """A bill from the ledger: its document and the status of its run."""

    status: RunStatus


class Payment(Schema):
    bill_id: str
    paid: Literal["yes"]
    by: str


class AdjustmentMade(Schema):
    id: int
    bill_id: str
    amount: Money
    reason: str
    by: str


class PendingAdjustment(Schema):
    """A correction of an issued bill that no issued run carries yet (the unit's next run will)."""

    id: int
    unit: str
    bill_id: str = Field(description="the issued bill it corrects")
    amount: Money
    reason: str
    by: str
    at: str = Field(description="ISO 8601, UTC")


class VolumeEdit(Schema):
    """A manual edit (VEE): the point's volume over [start_ms, end_ms) replaced."""

    id: int
    point: str
    start_ms: EpochMs
    end_ms: EpochMs
    volume_m3: float
    by: str
    reason: str


class WaterUse(Schema):
    """One issued bill of a unit: a row of its water-use ledger (用水台账)."""

    run_id: str
    season: str | None
    t0_ms: EpochMs
    t1_ms: EpochMs
    bill_id: str
    volume_m3: DecimalText
    quota_m3: DecimalText
    total: Money


class ExplainedBill(Schema):
    id: str
    unit: UnitRef
    volume_m3: DecimalText
    quota_m3: DecimalText
    total: Money
    status: RunStatus


class ExplainedRun(Schema):
    id: str
    status: RunStatus
    district_sha256: str
    tariff: str = Field(description="tariff id and version, e.g. 'standard v3'")
    season: str | None
    t0_ms: EpochMs
    t1_ms: EpochMs
    as_of_ms: EpochMs


class ReadingsSummary(Schema):
    counts: dict[str, int] = Field(description="readings in the window by quality")
    first: dict[str, Any] | None
    last: dict[str, Any] | None
    query: str = Field(description="the InfluxQL query that lists them all")


class Explanation(Schema):
    """How one bill line was made: its arithmetic, bill, run, the unit's allocations and the points' volumes."""

    line: BillLine
    arithmetic: str
    bill: ExplainedBill
    run: ExplainedRun
    allocations: list[Allocation]
    points: list[PointSummary]
    readings: dict[str, ReadingsSummary] | None = Field(default=None, description="per point, when InfluxDB was given (the CLI)")


class Figure(Schema):
    """An efficiency figure; ``value`` is null when the data are incomplete."""

    name: str
    value: float | None
    method: str
    coverage: float
    incomplete: bool
    target: float | None
    flags: list[str]
    note: str
    meets_target: bool | None


class SystemBalance(Schema):
    """The volumes (m3) behind the official canal-system figure (canalflow.coefficients.SystemBalance)."""

    diverted_m3: float
    delivered_m3: float
    returned_m3: float = Field(description="outfall water declared return: deducted from the gross diversion")
    spilled_m3: float = Field(description="outfall water declared spill (the default): a loss of the system")


class PlotFigure(Schema):
    """A typical plot's measured field coefficient over the window's irrigations (canalflow.field.PlotResult)."""

    plot: str
    irrigations: int
    applied_mm: float
    stored_mm: float
    eta: float | None = Field(description="stored ÷ applied; null when a soil-moisture reading is missing")
    note: str


class CanalSystem(Figure):
    """The official canal-system coefficient (the headline), its definition and balance."""

    definition: str
    balance: SystemBalance | None
    storage_m3: float | None = Field(description="Σ storage change ΔS of the reaches whose levels tell it; null when none does")


class Efficiency(Schema):
    """Water-use efficiency of a window: reach balances, canal and system figures (floats: estimates, not money).

    ``canal_system`` is the official figure (also ``system.official``); the other ``system`` methods are diagnostics."""

    district: str
    window: Window
    reaches: list[ReachBalance] = Field(description="the water balance of each canal reach (the fields of billing.efficiency.ReachBalance)")
    canals: dict[str, Figure]
    levels: dict[str, Figure]
    system: dict[str, Figure]
    field: Figure = Field(description="method typical_plots (measured) or units_field_efficiency (the configured fallback, labelled in note)")
    field_units: dict[str, Figure] = Field(description="η_f per billing unit, from the typical plots by crop area (empty without plots)")
    plots: list[PlotFigure]
    whole: dict[str, Figure]
    warnings: list[str]
    canal_system: CanalSystem


class ValidationIssue(Schema):
    """One problem of an invalid request: where (``loc``) and what; the input itself is not echoed."""

    type: str
    loc: list[str | int]
    msg: str
    ctx: dict[str, Any] | None = None


class ErrorResponse(Schema):
    """Every error answer (4xx, 5xx): a sentence saying what is wrong and what to do, or, for invalid input (422), the problems."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"detail": "run 3f2a9c1d04e5 is issued; it can only become nothing (issued is final); corrections go in adjustments"},
        {"detail": [{"type": "less_than_equal", "loc": ["query", "limit"], "msg": "Input should be less than or equal to 500", "ctx": {"le": 500}}]},
    ]})

    detail: str | list[ValidationIssue]
