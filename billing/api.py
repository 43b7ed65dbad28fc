"""The billing HTTP API (FastAPI): runs, bills, adjustments, efficiency and the water-use ledger.

Every route but ``/health`` needs ``Authorization: Bearer <token>``; tokens come from a tokens
file (YAML list of ``{user, role, sha256}`` or, for development, ``{user, role, token}``) and
carry one role of the web workbench's (``canalflow/roles.py``):

- every role (``auditor``, ``clerk``, ``approver``, ``admin``): read runs, bills, explanations, efficiency, the ledger;
- ``clerk``, ``admin``: + start billing runs, record VEE edits, adjustments and payments;
- ``approver``, ``admin``: + approve (not a run they recorded: four eyes) and issue runs.

A tokens file's old roles still load: ``viewer`` as ``auditor``, ``manager`` as ``admin`` (with a warning).

Lists are paginated with ``offset`` and ``limit`` (≤ 500) and answer ``{items, offset, limit, total}``.
Every answer has a declared model (``billing/schemas.py``; the document is at ``/openapi.json``):
money is a decimal string to the fen (``"-12.50"``), never a float. Errors are JSON
``{"detail": ...}`` (``ErrorResponse``): 401 no/unknown token, 403 the role may not (or four eyes), 404 unknown id,
409 lifecycle conflict (an issued run is final, and no other run may bill its window), 413 body
over 1 MB, 422 invalid input (field and problem, without echoing the input), 503 InfluxDB down.
"""


# No `from __future__ import annotations` here: FastAPI must resolve the closures in route signatures.
import datetime as dt
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode

import yaml
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import models_json_schema

from billing.ledger import FourEyesError, Ledger, LedgerError, open_ledger
from billing.schemas import (
    AdjustmentMade,
    BillDocument,
    Efficiency,
    ErrorResponse,
    Event,
    Explanation,
    Health,
    Page,
    Payment,
    PendingAdjustment,
    RunDetail,
    RunManifest,
    RunSummary,
    StartedRun,
    StoredBill,
    Transition,
    VolumeEdit,
    WaterUse,
)
from billing.service import ServiceConfig
from canalflow.credentials import hash_api_token
from canalflow.errors import CanalflowError
from canalflow.roles import may, needs, role_of

MAX_PAGE = 500
MAX_OFFSET = 1_000_000_000  # SQLite integers are 64-bit: a larger offset would be a 500, not a page
MAX_BODY_BYTES = 1_000_000  # the largest legitimate body (an edit or adjustment) is well under 1 kB
# Date-times outside this range are typos or probes; beyond year 1..9999 they cannot even be converted.
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)
MAX_WINDOW = dt.timedelta(days=366)  # a season or a year; a longer window is a probe that would keep the server reading for long


@dataclass(frozen=True)
class Principal:
    user: str
    role: str


class TokenFileError(CanalflowError, ValueError):
    pass


def read_entries(path: Path, what: str, shape: str, error: type[ValueError] = ValueError) -> list[Any]:
    """The YAML list in an accounts file (``what``: "tokens", "users"), or ``error`` naming the file and the expected ``shape``."""
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"cannot read {what} file {path}: {exc}") from exc
    if not isinstance(entries, list):
        raise error(f"{path}: expected a list of {shape} entries")
    return entries


def load_tokens(path: Path) -> dict[str, Principal]:
    """sha256(token) -> principal, from a YAML list of {user, role, sha256|token}."""
    entries = read_entries(path, "tokens", "{user, role, sha256}", TokenFileError)
    tokens: dict[str, Principal] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: entry {index + 1}"
        if not isinstance(entry, dict) or "user" not in entry:
            raise TokenFileError(f"{where}: needs user and role")
        role = role_of(entry.get("role"), where, TokenFileError)
        digest = entry.get("sha256") or (hash_api_token(str(entry["token"])) if "token" in entry else None)
        if not digest:
            raise TokenFileError(f"{where}: needs sha256 (of the token) or token; make one with: python -c \"import hashlib,sys;print(hashlib.sha256(sys.argv[1].encode()).hexdigest())\" TOKEN")
        tokens[str(digest).lower()] = Principal(str(entry["user"]), role)
    return tokens


def check_window(start: dt.datetime, end: dt.datetime) -> None:
    """Raise ValueError unless ``start < end`` and the window spans at most MAX_WINDOW."""
    if end <= start:
        raise ValueError("to must be after from")
    if end - start > MAX_WINDOW:
        raise ValueError(f"the window from {start.isoformat()} to {end.isoformat()} is longer than {MAX_WINDOW.days} days; bill a season or a year at a time")


def check_datetimes(*values: dt.datetime | None) -> None:
    """Raise ValueError unless every given date-time has a time zone and lies in [EARLIEST, LATEST)."""
    for value in values:
        if value is None:
            continue
        if value.tzinfo is None:
            raise ValueError("date-times need a time zone, e.g. 2026-03-10T00:00:00+08:00")
        if not EARLIEST <= value < LATEST:
            raise ValueError(f"date-time {value.isoformat()} is outside {EARLIEST.year}..{LATEST.year - 1}")


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    season: str | None = Field(default=None, max_length=64, description="season id from the district file")
    start: dt.datetime | None = Field(default=None, alias="from", description="window start (ISO, with time zone)")
    end: dt.datetime | None = Field(default=None, alias="to", description="window end (ISO, with time zone)")
    as_of: dt.datetime | None = None
    source: Literal["readings", "rollups"] = "readings"

    @model_validator(mode="after")
    def _season_or_window(self) -> "RunRequest":
        if bool(self.season) == bool(self.start or self.end):
            raise ValueError("give either season, or from and to")
        if not self.season and not (self.start and self.end):
            raise ValueError("a window needs both from and to")
        check_datetimes(self.start, self.end, self.as_of)
        if self.start and self.end:
            check_window(self.start, self.end)
        return self


class AdjustmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Decimal = Field(description="yuan; negative for a credit", max_digits=14, decimal_places=2)
    reason: str = Field(min_length=3, max_length=500)


class EditRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    point: str = Field(max_length=64)
    start: dt.datetime = Field(alias="from")
    end: dt.datetime = Field(alias="to")
    volume_m3: float = Field(ge=0, allow_inf_nan=False)
    reason: str = Field(min_length=3, max_length=500)

    @model_validator(mode="after")
    def _window(self) -> "EditRequest":
        check_datetimes(self.start, self.end)
        if self.end <= self.start:
            raise ValueError("to must be after from")
        return self


class TransitionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=500)


@dataclass
class ApiConfig:
    service: ServiceConfig
    tokens: dict[str, Principal]


ERRORS = {
    401: "no bearer token, or an unknown one",
    403: "the token's role may not do this (canalflow/roles.py), or its user recorded the run they approve (four eyes)",
    404: "no such run, bill, line or unit",
    409: "the lifecycle does not allow it (an issued run is final; no run may bill again a window an issued run bills)",
    413: "the request body is over 1 MB",
    422: "invalid input: the field and the problem (the input is not echoed)",
    503: "InfluxDB is unreachable, or the API was started without --district or --influx",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route may give, all of them :class:`ErrorResponse`."""
    return {code: {"model": ErrorResponse, "description": ERRORS[code]} for code in codes}


READ = errors(401, 403, 422)  # every route with a token and a parameter
WRITE = errors(401, 403, 413, 422)


def create_app(config: ApiConfig) -> FastAPI:
    app = FastAPI(title="canalflow billing", version="1", description=__doc__)
    app.add_middleware(BodyLimit)
    _influx_down_is_503(app)
    _validation_errors_without_input(app)
    service = config.service
    ledger = open_ledger(service.ledger_url)

    def principal(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "missing bearer token: send Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"})
        digest = hash_api_token(token.strip())
        for known, who in config.tokens.items():
            if hmac.compare_digest(known, digest):
                return who
        raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})

    def require(action: str) -> Callable[[Principal], Principal]:
        def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
            if not may(who.role, action):
                raise HTTPException(403, f"{who.user} ({who.role}) may not do this; it needs the {needs(action)} role")
            return who
        return check

    def role(action: str) -> Any:
        return Annotated[Principal, Depends(require(action))]

    Reader, Starter, Editor, Adjuster = role("read"), role("start_run"), role("edit"), role("adjust")
    Payer, Approver, Issuer = role("pay"), role("approve"), role("issue")
    Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
    Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]

    def district() -> Any:
        if service.district_path is None:
            raise HTTPException(503, "the API was started without --district")
        return service.district()

    def influx() -> Any:
        if not service.influx_url:
            raise HTTPException(503, "the API was started without --influx")
        return service.influx()

    @app.get("/health", tags=["meta"])
    def health() -> Health:
        return Health(status="ok")

    @app.get("/runs", tags=["runs"], responses=READ)
    def list_runs(_: Reader, offset: Offset = 0, limit: Limit = 50) -> Page[RunSummary]:
        rows = ledger.runs(offset=offset, limit=limit)
        return Page[RunSummary](items=[_run_summary(r) for r in rows], offset=offset, limit=limit, total=ledger.count_runs())

    @app.get("/runs/{run_id}", tags=["runs"], responses=READ | errors(404))
    def get_run(run_id: str, _: Reader) -> RunDetail:
        row = ledger_call(lambda: ledger.run(run_id))
        events = [Event(action=e.action, user=e.user, at=e.at, note=e.note) for e in ledger.events(row.id)]
        return RunDetail(**_run_summary(row).model_dump(), events=events)

    @app.get("/runs/{run_id}/bills", tags=["bills"], responses=READ | errors(404))
    def run_bills(run_id: str, _: Reader, offset: Offset = 0, limit: Limit = 100) -> Page[StoredBill]:
        row = ledger_call(lambda: ledger.run(run_id))
        bills = [doc | {"status": row.status} for doc in ledger.bills_of_run(row.id, offset=offset, limit=limit)]
        return Page[StoredBill].model_validate({"items": bills, "offset": offset, "limit": limit, "total": ledger.count_bills(row.id)})

    @app.post("/runs", tags=["runs"], status_code=201, responses=WRITE | errors(409, 503))
    def start_run(body: RunRequest, who: Starter) -> StartedRun:
        d = district()
        with influx() as client:
            run = start_billing_run(d, client, service.ledger_url, body, who.user)
        return StartedRun.model_validate(run.manifest() | {"ledger": run.ledger_status})

    @app.post("/runs/{run_id}/approve", tags=["runs"], responses=WRITE | errors(404, 409))
    def approve(run_id: str, who: Approver, body: TransitionRequest | None = None) -> Transition:
        status = ledger_call(lambda: ledger.advance(run_id, "approved", who.user, body.note if body else ""))
        return Transition(run_id=run_id, status=status)

    @app.post("/runs/{run_id}/issue", tags=["runs"], responses=WRITE | errors(404, 409))
    def issue(run_id: str, who: Issuer, body: TransitionRequest | None = None) -> Transition:
        status = ledger_call(lambda: ledger.advance(run_id, "issued", who.user, body.note if body else ""))
        return Transition(run_id=run_id, status=status)

    @app.get("/bills/{bill_id}", tags=["bills"], responses=READ | errors(404))
    def get_bill(bill_id: str, _: Reader) -> StoredBill:
        return StoredBill.model_validate(ledger_call(lambda: ledger.bill(bill_id)))

    @app.get("/lines/{line_id}/explain", tags=["bills"], responses=READ | errors(404, 409))
    def explain(line_id: str, _: Reader) -> Explanation:
        from billing.explain import explain_line

        return Explanation.model_validate(ledger_call(lambda: explain_line(ledger, line_id)))

    @app.post("/bills/{bill_id}/adjustments", tags=["adjustments"], status_code=201, responses=WRITE | errors(404, 409))
    def adjust(bill_id: str, body: AdjustmentRequest, who: Adjuster) -> AdjustmentMade:
        adj_id = ledger_call(lambda: ledger.add_adjustment(bill_id, body.amount, body.reason, who.user))
        return AdjustmentMade(id=adj_id, bill_id=bill_id, amount=body.amount, reason=body.reason, by=who.user)

    @app.post("/bills/{bill_id}/paid", tags=["bills"], responses=WRITE | errors(404, 409))
    def paid(bill_id: str, who: Payer) -> Payment:
        ledger_call(lambda: ledger.mark_paid(bill_id, who.user))
        return Payment(bill_id=bill_id, paid="yes", by=who.user)

    @app.get("/adjustments", tags=["adjustments"], responses=READ | errors(503))
    def pending(_: Reader, offset: Offset = 0, limit: Limit = 100) -> Page[PendingAdjustment]:
        rows = ledger.pending_adjustments(district().id)
        items = [PendingAdjustment(id=a.id, unit=a.unit_id, bill_id=a.corrects_bill_id, amount=a.amount, reason=a.reason, by=a.created_by, at=a.created_at)
                 for a in rows[offset:offset + limit]]
        return Page[PendingAdjustment](items=items, offset=offset, limit=limit, total=len(rows))

    @app.post("/edits", tags=["vee"], status_code=201, responses=WRITE | errors(409, 503))
    def add_edit(body: EditRequest, who: Editor) -> VolumeEdit:
        return record_edit(ledger, district(), body, who.user)

    @app.get("/edits", tags=["vee"], responses=READ | errors(503))
    def list_edits(_: Reader, offset: Offset = 0, limit: Limit = 100) -> Page[VolumeEdit]:
        edits = ledger.edits(district().id)
        items = [VolumeEdit(id=e.id, point=e.point, start_ms=e.start_ms, end_ms=e.end_ms, volume_m3=e.volume_m3, by=e.user, reason=e.reason)
                 for e in edits[offset:offset + limit]]
        return Page[VolumeEdit](items=items, offset=offset, limit=limit, total=len(edits))

    @app.get("/units/{unit_id}/water-use", tags=["ledger"], responses=READ | errors(404, 503))
    def water_use(unit_id: str, _: Reader, offset: Offset = 0, limit: Limit = 100) -> Page[WaterUse]:
        if service.district_path is not None and unit_id not in district().units:
            raise HTTPException(404, f"no billing unit {unit_id!r} in district {district().id}")
        entries = ledger.water_use(unit_id)
        return Page[WaterUse].model_validate({"items": entries[offset:offset + limit], "offset": offset, "limit": limit, "total": len(entries)})

    @app.get("/efficiency", tags=["efficiency"], responses=READ | errors(503))
    def efficiency(_: Reader, start: Annotated[dt.datetime, Query(alias="from")], end: Annotated[dt.datetime, Query(alias="to")]) -> Efficiency:
        try:
            check_datetimes(start, end)
            check_window(start, end)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        t0, t1 = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
        with influx() as client:
            return Efficiency.model_validate(window_efficiency(district(), client, t0, t1).to_dict())

    app.state.ledger = ledger
    _publish_documents(app)
    return app


def ledger_call(fn: Callable[[], Any]) -> Any:
    """``fn()``, with a ledger refusal as HTTP 404 (no such run, bill, line), 403 (four eyes) or 409 (the lifecycle)."""
    try:
        return fn()
    except FourEyesError as exc:
        raise HTTPException(403, str(exc)) from exc
    except LedgerError as exc:
        text = str(exc)
        raise HTTPException(404 if text.startswith("no ") else 409, text) from exc


def record_edit(ledger: Ledger, district: Any, body: EditRequest, user: str) -> VolumeEdit:
    """Record a VEE edit of one of the district's points (the API's and the web workbench's); unknown point: 422."""
    if body.point not in district.points:
        raise HTTPException(422, f"unknown point {body.point!r}")
    start, end = int(body.start.timestamp() * 1000), int(body.end.timestamp() * 1000)
    edit_id = ledger_call(lambda: ledger.add_edit(district.id, body.point, start, end, body.volume_m3, user, body.reason))
    return VolumeEdit(id=edit_id, point=body.point, start_ms=start, end_ms=end, volume_m3=body.volume_m3, by=user, reason=body.reason)


def window_efficiency(district: Any, client: Any, t0_ms: int, t1_ms: int, *, write_kpis: bool = False, source: str = "readings") -> Any:
    """The efficiency report of a window from InfluxDB (``write_kpis``: also its ``efficiency`` rows)."""
    from billing.efficiency import efficiency_from_influx
    from billing.window import whole_season_kind

    return efficiency_from_influx(district, client, t0_ms, t1_ms, season_kind=whole_season_kind(district, t0_ms, t1_ms),
                                  write_kpis=write_kpis, source=source)


def start_billing_run(district: Any, client: Any, ledger_url: str, body: RunRequest, user: str) -> Any:
    """Bill the request's season or window from InfluxDB into the ledger (the API's and the web workbench's
    ``POST /runs``); an unknown season or a billing error is HTTP 422, a ledger conflict 409.

    Production's runs write the dashboards' KPIs: the run's ``billing`` rows and the window's
    ``efficiency`` rows (the compose stack has no other writer of either)."""
    from billing.run import run_billing
    from billing.window import BillingError, season_window

    if body.season:
        if body.season not in district.seasons:
            raise HTTPException(422, f"unknown season {body.season!r}; known: {', '.join(district.seasons)}")
        t0, t1 = season_window(district, district.seasons[body.season])
    else:
        t0, t1 = int(body.start.timestamp() * 1000), int(body.end.timestamp() * 1000)  # type: ignore[union-attr]
    as_of = int(body.as_of.timestamp() * 1000) if body.as_of else None
    try:
        run = run_billing(district, client, t0, t1, ledger_url=ledger_url, season_id=body.season, as_of_ms=as_of, user=user,
                          source=body.source, write_kpis=True)
        window_efficiency(district, client, t0, t1, write_kpis=True, source=body.source)
        return run
    except BillingError as exc:
        raise HTTPException(422, str(exc)) from exc
    except LedgerError as exc:
        raise HTTPException(409, str(exc)) from exc


def _publish_documents(app: FastAPI) -> None:
    """Add the bill file's and the run manifest's models to the OpenAPI document's schemas.

    The API answers them only extended (``StoredBill``, ``StartedRun``); the files written by
    ``billing run --out`` are the plain ``BillDocument`` and ``RunManifest``."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()  # FastAPI's, made once and kept
        schemas = document["components"]["schemas"]
        if "BillDocument" not in schemas:
            _, found = models_json_schema([(BillDocument, "serialization"), (RunManifest, "serialization")], ref_template="#/components/schemas/{model}")
            for name, schema in found["$defs"].items():
                schemas.setdefault(name, schema)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413 before it is read into memory.

    A declared Content-Length is checked up front; a chunked body is counted as it arrives.
    """

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body over {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _error(413, too_large)(scope, receive, send)
            return
        received = 0

        async def counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, too_large)  # FastAPI turns it into the response while reading the body
            return message

        await self.app(scope, counted, send)


def _influx_down_is_503(app: FastAPI) -> None:
    from canalflow.influx import InfluxUnavailable

    @app.exception_handler(InfluxUnavailable)
    async def unavailable(_: Request, exc: InfluxUnavailable) -> JSONResponse:
        return _error(503, f"{exc}; retry when InfluxDB is back")


def _validation_errors_without_input(app: FastAPI) -> None:
    """422 details name the field and the problem but do not echo the input.

    The echo could be megabytes long, and a NaN or Infinity in it (Python's json accepts them in a
    body) cannot be encoded as JSON, which turned a 422 into a 500.
    """

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        issues = [{k: v for k, v in e.items() if k not in ("input", "url")} for e in exc.errors()]
        return _error(422, jsonable_encoder(issues))


def _error(status: int, detail: str | list[dict[str, Any]]) -> JSONResponse:
    """An error answer of the API's own handlers, in the one error model."""
    return JSONResponse(ErrorResponse.model_validate({"detail": detail}).model_dump(mode="json", exclude_none=True), status_code=status)


def _run_summary(row: Any) -> RunSummary:
    return RunSummary(id=row.id, status=row.status, district=row.district_id, district_sha256=row.district_sha256, season=row.season_id,
                      tariff={"id": row.tariff_id, "version": row.tariff_version}, t0_ms=row.t0_ms, t1_ms=row.t1_ms, as_of_ms=row.as_of_ms,
                      created_at=row.created_at)


def serve(config: ApiConfig, host: str, port: int) -> None:
    """Run the API with uvicorn until SIGINT/SIGTERM, then return (exit status 0)."""
    import signal

    import uvicorn

    # uvicorn shuts down gracefully on these signals, then re-raises them to the handlers it found:
    # let those be no-ops so a requested stop ends the command normally instead of killing it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server_config = uvicorn.Config(create_app(config), host=host, port=port, log_level="info")  # configures uvicorn's loggers
    logging.getLogger("uvicorn.access").addFilter(redact_query_in_access_log)
    uvicorn.Server(server_config).run()


LOGGED_QUERY_PARAMS = frozenset({"offset", "limit", "from", "to"})


def redact_query_in_access_log(record: logging.LogRecord) -> bool:
    """Show only the API's own query parameters in uvicorn's access log; anything else becomes ``***``.

    The API takes no secret in a URL, but a client that puts its token there (``?access_token=...``)
    must not get it written to the log.
    """
    args = record.args
    if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
        path, _, query = args[2].partition("?")
        shown = [(k, v if k in LOGGED_QUERY_PARAMS else "***") for k, v in parse_qsl(query, keep_blank_values=True)]
        record.args = (*args[:2], f"{path}?{urlencode(shown, safe=':+*')}" if shown else f"{path}?***", *args[3:])
    return True


__all__ = ["ApiConfig", "Ledger", "ServiceConfig", "create_app", "ledger_call", "load_tokens", "read_entries", "record_edit", "serve", "start_billing_run", "window_efficiency"]
