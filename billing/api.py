"""The billing HTTP API (FastAPI): runs, bills, adjustments, efficiency and the water-use ledger.

Every route but ``/health`` needs ``Authorization: Bearer <token>``; tokens come from a tokens
file (YAML list of ``{user, role, sha256}`` or, for development, ``{user, role, token}``) and
carry one role:

- ``viewer``: read runs, bills, explanations, efficiency, the ledger;
- ``clerk``: + start billing runs and record adjustments;
- ``manager``: + approve and issue runs.

Lists are paginated with ``offset`` and ``limit`` (≤ 500) and answer ``{items, offset, limit, total}``.
Errors are JSON ``{"detail": ...}``: 401 no/unknown token, 403 role too low, 404 unknown id,
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

from billing.ledger import Ledger, LedgerError, open_ledger
from canalflow.credentials import hash_api_token

ROLES = ("viewer", "clerk", "manager")
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


class TokenFileError(ValueError):
    pass


def load_tokens(path: Path) -> dict[str, Principal]:
    """sha256(token) -> principal, from a YAML list of {user, role, sha256|token}."""
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except (OSError, yaml.YAMLError) as exc:
        raise TokenFileError(f"cannot read tokens file {path}: {exc}") from exc
    if not isinstance(entries, list):
        raise TokenFileError(f"{path}: expected a list of {{user, role, sha256}} entries")
    tokens: dict[str, Principal] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: entry {index + 1}"
        if not isinstance(entry, dict) or "user" not in entry or entry.get("role") not in ROLES:
            raise TokenFileError(f"{where}: needs user and role (one of {', '.join(ROLES)})")
        digest = entry.get("sha256") or (hash_api_token(str(entry["token"])) if "token" in entry else None)
        if not digest:
            raise TokenFileError(f"{where}: needs sha256 (of the token) or token; make one with: python -c \"import hashlib,sys;print(hashlib.sha256(sys.argv[1].encode()).hexdigest())\" TOKEN")
        tokens[str(digest).lower()] = Principal(str(entry["user"]), entry["role"])
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
    ledger_url: str
    tokens: dict[str, Principal]
    district_path: Path | None = None
    influx_url: str | None = None
    influx_db: str = "canalflow"
    influx_token: str | None = None


def page(items: list[Any], offset: int, limit: int, total: int) -> dict[str, Any]:
    return {"items": items, "offset": offset, "limit": limit, "total": total}


def create_app(config: ApiConfig) -> FastAPI:
    app = FastAPI(title="canalflow billing", version="1", description=__doc__)
    app.add_middleware(BodyLimit)
    _influx_down_is_503(app)
    _validation_errors_without_input(app)
    ledger = open_ledger(config.ledger_url)
    state: dict[str, Any] = {}

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

    def require(role: str) -> Callable[[Principal], Principal]:
        def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
            if ROLES.index(who.role) < ROLES.index(role):
                raise HTTPException(403, f"{who.user} is a {who.role}; this needs the {role} role")
            return who
        return check

    Viewer = Annotated[Principal, Depends(require("viewer"))]
    Clerk = Annotated[Principal, Depends(require("clerk"))]
    Manager = Annotated[Principal, Depends(require("manager"))]
    Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
    Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]

    def district() -> Any:
        if config.district_path is None:
            raise HTTPException(503, "the API was started without --district")
        if "district" not in state:
            from canalflow.district import load_district

            state["district"] = load_district(config.district_path)
        return state["district"]

    def influx() -> Any:
        if not config.influx_url:
            raise HTTPException(503, "the API was started without --influx")
        from canalflow.influx import InfluxV1

        return InfluxV1(config.influx_url, config.influx_db, token=config.influx_token)

    def ledger_call(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except LedgerError as exc:
            text = str(exc)
            raise HTTPException(404 if text.startswith("no ") else 409, text) from exc

    @app.get("/health", tags=["meta"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/runs", tags=["runs"])
    def list_runs(_: Viewer, offset: Offset = 0, limit: Limit = 50) -> dict[str, Any]:
        rows = ledger.runs(offset=offset, limit=limit)
        return page([_run_dict(r) for r in rows], offset, limit, ledger.count_runs())

    @app.get("/runs/{run_id}", tags=["runs"])
    def get_run(run_id: str, _: Viewer) -> dict[str, Any]:
        row = ledger_call(lambda: ledger.run(run_id))
        return _run_dict(row) | {"events": [{"action": e.action, "user": e.user, "at": e.at, "note": e.note} for e in ledger.events(row.id)]}

    @app.get("/runs/{run_id}/bills", tags=["bills"])
    def run_bills(run_id: str, _: Viewer, offset: Offset = 0, limit: Limit = 100) -> dict[str, Any]:
        row = ledger_call(lambda: ledger.run(run_id))
        return page(ledger.bills_of_run(row.id, offset=offset, limit=limit), offset, limit, ledger.count_bills(row.id))

    @app.post("/runs", tags=["runs"], status_code=201)
    def start_run(body: RunRequest, who: Clerk) -> dict[str, Any]:
        from billing.run import BillingError, run_billing, season_window

        d = district()
        if body.season:
            if body.season not in d.seasons:
                raise HTTPException(422, f"unknown season {body.season!r}; known: {', '.join(d.seasons)}")
            t0, t1 = season_window(d, d.seasons[body.season])
        else:
            t0, t1 = int(body.start.timestamp() * 1000), int(body.end.timestamp() * 1000)  # type: ignore[union-attr]
        as_of = int(body.as_of.timestamp() * 1000) if body.as_of else None
        try:
            with influx() as client:
                run = run_billing(d, client, t0, t1, ledger_url=config.ledger_url, season_id=body.season, as_of_ms=as_of, user=who.user, source=body.source)
        except BillingError as exc:
            raise HTTPException(422, str(exc)) from exc
        except LedgerError as exc:
            raise HTTPException(409, str(exc)) from exc
        return run.manifest() | {"ledger": run.ledger_status}

    @app.post("/runs/{run_id}/approve", tags=["runs"])
    def approve(run_id: str, who: Manager, body: TransitionRequest | None = None) -> dict[str, str]:
        status = ledger_call(lambda: ledger.advance(run_id, "approved", who.user, body.note if body else ""))
        return {"run_id": run_id, "status": status}

    @app.post("/runs/{run_id}/issue", tags=["runs"])
    def issue(run_id: str, who: Manager, body: TransitionRequest | None = None) -> dict[str, str]:
        status = ledger_call(lambda: ledger.advance(run_id, "issued", who.user, body.note if body else ""))
        return {"run_id": run_id, "status": status}

    @app.get("/bills/{bill_id}", tags=["bills"])
    def get_bill(bill_id: str, _: Viewer) -> dict[str, Any]:
        return ledger_call(lambda: ledger.bill(bill_id))

    @app.get("/lines/{line_id}/explain", tags=["bills"])
    def explain(line_id: str, _: Viewer) -> dict[str, Any]:
        from billing.explain import explain_line

        return ledger_call(lambda: explain_line(ledger, line_id))

    @app.post("/bills/{bill_id}/adjustments", tags=["adjustments"], status_code=201)
    def adjust(bill_id: str, body: AdjustmentRequest, who: Clerk) -> dict[str, Any]:
        adj_id = ledger_call(lambda: ledger.add_adjustment(bill_id, body.amount, body.reason, who.user))
        return {"id": adj_id, "bill_id": bill_id, "amount": str(body.amount), "reason": body.reason, "by": who.user}

    @app.post("/bills/{bill_id}/paid", tags=["bills"])
    def paid(bill_id: str, who: Clerk) -> dict[str, str]:
        ledger_call(lambda: ledger.mark_paid(bill_id, who.user))
        return {"bill_id": bill_id, "paid": "yes", "by": who.user}

    @app.get("/adjustments", tags=["adjustments"])
    def pending(_: Viewer, offset: Offset = 0, limit: Limit = 100) -> dict[str, Any]:
        rows = ledger.pending_adjustments(district().id)
        items = [{"id": a.id, "unit": a.unit_id, "bill_id": a.corrects_bill_id, "amount": str(a.amount), "reason": a.reason, "by": a.created_by, "at": a.created_at}
                 for a in rows[offset:offset + limit]]
        return page(items, offset, limit, len(rows))

    @app.post("/edits", tags=["vee"], status_code=201)
    def add_edit(body: EditRequest, who: Clerk) -> dict[str, Any]:
        d = district()
        if body.point not in d.points:
            raise HTTPException(422, f"unknown point {body.point!r}")
        start, end = int(body.start.timestamp() * 1000), int(body.end.timestamp() * 1000)
        edit_id = ledger_call(lambda: ledger.add_edit(d.id, body.point, start, end, body.volume_m3, who.user, body.reason))
        return {"id": edit_id, "point": body.point, "start_ms": start, "end_ms": end, "volume_m3": body.volume_m3, "by": who.user}

    @app.get("/edits", tags=["vee"])
    def list_edits(_: Viewer, offset: Offset = 0, limit: Limit = 100) -> dict[str, Any]:
        edits = ledger.edits(district().id)
        items = [{"id": e.id, "point": e.point, "start_ms": e.start_ms, "end_ms": e.end_ms, "volume_m3": e.volume_m3, "by": e.user, "reason": e.reason}
                 for e in edits[offset:offset + limit]]
        return page(items, offset, limit, len(edits))

    @app.get("/units/{unit_id}/water-use", tags=["ledger"])
    def water_use(unit_id: str, _: Viewer, offset: Offset = 0, limit: Limit = 100) -> dict[str, Any]:
        if config.district_path is not None and unit_id not in district().units:
            raise HTTPException(404, f"no billing unit {unit_id!r} in district {district().id}")
        entries = ledger.water_use(unit_id)
        return page(entries[offset:offset + limit], offset, limit, len(entries))

    @app.get("/efficiency", tags=["efficiency"])
    def efficiency(_: Viewer, start: Annotated[dt.datetime, Query(alias="from")], end: Annotated[dt.datetime, Query(alias="to")]) -> dict[str, Any]:
        from billing.efficiency import efficiency_from_influx

        try:
            check_datetimes(start, end)
            check_window(start, end)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        d = district()
        t0, t1 = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
        from billing.run import season_window

        # head-tail needs whole-season net depths: a season kind only when the window covers a season
        whole = [s for s in d.spec.seasons if t0 <= season_window(d, s)[0] and season_window(d, s)[1] <= t1]
        with influx() as client:
            return efficiency_from_influx(d, client, t0, t1, season_kind=whole[0].kind if len(whole) == 1 else None).to_dict()

    app.state.ledger = ledger
    return app


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
            await JSONResponse({"detail": too_large}, status_code=413)(scope, receive, send)
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
        return JSONResponse({"detail": f"{exc}; retry when InfluxDB is back"}, status_code=503)


def _validation_errors_without_input(app: FastAPI) -> None:
    """422 details name the field and the problem but do not echo the input.

    The echo could be megabytes long, and a NaN or Infinity in it (Python's json accepts them in a
    body) cannot be encoded as JSON, which turned a 422 into a 500.
    """

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k not in ("input", "url")} for e in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def _run_dict(row: Any) -> dict[str, Any]:
    return {"id": row.id, "status": row.status, "district": row.district_id, "district_sha256": row.district_sha256, "season": row.season_id,
            "tariff": {"id": row.tariff_id, "version": row.tariff_version}, "t0_ms": row.t0_ms, "t1_ms": row.t1_ms, "as_of_ms": row.as_of_ms,
            "created_at": row.created_at}


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


__all__ = ["ApiConfig", "Ledger", "create_app", "load_tokens", "serve"]
