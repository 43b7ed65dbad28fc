"""The web workbench (FastAPI, server-rendered Jinja2 pages, plain forms): billing clerks' pages and
the public water-use notice, over the same ledger, InfluxDB and request models as the billing API.

Clerk pages need a session (``/login``); every form carries the session's CSRF token, and a post
without it is refused (403). The public notice (``/public``) needs none and shows issued runs only.
Pages are Chinese unless the ``lang`` cookie says ``en`` (the switch in the header).
"""

# No `from __future__ import annotations` here: FastAPI must resolve the route signatures.
import csv
import datetime as dt
import io
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from billing.api import AdjustmentRequest, EditRequest, RunRequest, ledger_call, record_edit, start_billing_run
from billing.exports import BILL_COLUMNS, LINE_COLUMNS, bill_row, line_rows, write_xlsx
from billing.ledger import FourEyesError, open_ledger
from billing.notes import localize, money_lines, note_codes
from billing.service import ServiceConfig
from canalflow.influx import InfluxUnavailable
from web.auth import Account, Session, Sessions, same_token
from web.i18n import LANGS, words
from web.notice import by_township, issued_run, issued_runs, notice_pdf, notice_rows

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "cf_session"
LOGIN_COOKIE = "cf_login"  # the sign-in form's CSRF token, before there is a session
MAX_RUNS = 200
MAX_BILLS = 100_000
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass
class WebConfig:
    service: ServiceConfig  # the ledger, district and InfluxDB, as the billing API's
    accounts: dict[str, Account]
    secure_cookies: bool = False  # set behind a TLS proxy that does not send X-Forwarded-Proto


@dataclass
class Job:
    user: str
    started: float
    run_id: str | None = None
    error: HTTPException | None = None


class Jobs:
    """Billing runs started from the browser, each on its own thread: a season can take minutes, longer
    than a reverse proxy waits for an answer, so the form answers at once with a page that follows the job."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, work: Callable[[], str], user: str) -> str:
        job_id = secrets.token_urlsafe(12)
        job = Job(user, time.monotonic())
        with self._lock:
            self._jobs[job_id] = job

        def run() -> None:
            try:
                job.run_id = work()
            except HTTPException as exc:
                job.error = exc
            except InfluxUnavailable as exc:
                job.error = HTTPException(503, f"{exc}; start the run again when InfluxDB is back")
            except Exception as exc:  # shown on the job's page instead of dying silently in a thread
                logging.getLogger(__name__).exception("billing job %s failed", job_id)
                job.error = HTTPException(500, f"{type(exc).__name__}: {exc}")

        threading.Thread(target=run, name=f"billing-job-{job_id}", daemon=True).start()
        return job_id

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)


class SignIn(Exception):
    """Raised on a clerk page without a session: the answer is a redirect to the sign-in page."""


def create_app(config: WebConfig) -> FastAPI:
    app = FastAPI(title="canalflow web", docs_url=None, redoc_url=None, openapi_url=None)
    service = config.service
    ledger = open_ledger(service.ledger_url)
    sessions = Sessions(config.accounts)
    jobs = Jobs()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    district = service.district

    def tz() -> ZoneInfo:
        d = district()
        return d.tz if d is not None else ZoneInfo("UTC")

    def local(ms: int | None) -> str:
        return "—" if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz()).strftime("%Y-%m-%d %H:%M")

    def township_name(township_id: str) -> str:
        d = district()
        t = d.townships.get(township_id) if d is not None else None
        return t.name if t is not None and t.name else township_id

    templates.env.filters["local"] = local
    templates.env.filters["township"] = township_name
    templates.env.filters["money_lines"] = money_lines
    templates.env.filters["note"] = lambda text, document, lang: localize(text, note_codes(document), lang)

    def lang_of(request: Request) -> str:
        lang = request.cookies.get("lang", "zh")
        return lang if lang in LANGS else "zh"

    def session_of(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(SESSION_COOKIE))

    def signed_in(request: Request, action: str | None = None) -> Session:
        session = session_of(request)
        if session is None:
            raise SignIn()
        if action is not None and not session.may(action):
            raise HTTPException(403, words(lang_of(request))["forbidden"] + f" ({session.user}: {session.role})")
        return session

    async def posted(request: Request, session: Session) -> dict[str, str]:
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not same_token(session.csrf, form.get("csrf")):
            raise HTTPException(403, words(lang_of(request))["csrf"])
        return form

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        lang = lang_of(request)
        session = session_of(request)
        context |= {"t": words(lang), "lang": lang, "session": session, "csrf": session.csrf if session else "", "path": request.url.path}
        return templates.TemplateResponse(request, name, context, status_code=status)

    def secure(request: Request) -> bool:
        return config.secure_cookies or request.url.scheme == "https"

    def back_to(target: str) -> RedirectResponse:
        return RedirectResponse(target, status_code=303)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if request.url.path != "/public" and not request.url.path.startswith(("/public/", "/static/")):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(SignIn)
    async def to_sign_in(request: Request, _: SignIn) -> Response:
        # after signing in, back to the page asked for; a refused post goes back to the runs instead
        return back_to(f"/login?next={quote(request.url.path if request.method == 'GET' else '/runs')}")

    @app.exception_handler(StarletteHTTPException)  # FastAPI's and the router's own (unknown path: 404)
    async def error_page(request: Request, exc: StarletteHTTPException) -> Response:
        return page(request, "error.html", exc.status_code, message=exc.detail, code=exc.status_code)

    # --- sign-in ---------------------------------------------------------------------------

    @app.get("/")
    def home(request: Request) -> Response:
        return back_to("/runs" if session_of(request) else "/public")

    @app.get("/lang/{lang}")
    def switch_language(request: Request, lang: str, next: str = "/") -> Response:
        response = back_to(_local_path(next))
        response.set_cookie("lang", lang if lang in LANGS else "zh", max_age=365 * 86400, samesite="lax", secure=secure(request))
        return response

    @app.get("/login")
    def login_form(request: Request, next: str = "/runs") -> Response:
        return _login_page(request, next, 200, "")

    def _login_page(request: Request, next: str, status: int, message: str) -> Response:
        token = secrets.token_urlsafe(32)
        response = page(request, "login.html", status, login_csrf=token, next=_local_path(next), message=message)
        response.set_cookie(LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict", secure=secure(request))
        return response

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not same_token(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
            raise HTTPException(403, words(lang_of(request))["csrf"])
        signed = sessions.sign_in(form.get("user", ""), form.get("password", ""))
        if signed is None:
            return _login_page(request, form.get("next", "/runs"), 401, words(lang_of(request))["bad_login"])
        session_id, _ = signed
        response = back_to(_local_path(form.get("next", "/runs")))
        response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="strict", secure=secure(request))
        response.delete_cookie(LOGIN_COOKIE)
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        session = signed_in(request)
        await posted(request, session)
        sessions.sign_out(request.cookies.get(SESSION_COOKIE))
        response = back_to("/login")
        response.delete_cookie(SESSION_COOKIE)
        return response

    # --- runs --------------------------------------------------------------------------------

    @app.get("/runs")
    def runs(request: Request) -> Response:
        signed_in(request)
        d = district()
        return page(request, "runs.html", runs=ledger.runs(limit=MAX_RUNS), seasons=list(d.seasons) if d else [])

    @app.post("/runs")
    async def start_run(request: Request) -> Response:
        session = signed_in(request, "start_run")
        form = await posted(request, session)
        d = district()
        if d is None or not service.influx_url:
            raise HTTPException(503, "the workbench was started without --district and --influx: it can show runs but not start them")
        body = _validated(RunRequest, _run_fields(form, tz()))
        return back_to(f"/jobs/{jobs.start(lambda: _bill(d, body, session.user), session.user)}")

    def _bill(d: Any, body: RunRequest, user: str) -> str:
        with service.influx() as client:
            return start_billing_run(d, client, service.ledger_url, body, user).run_id

    @app.get("/jobs/{job_id}")
    def job_page(request: Request, job_id: str) -> Response:
        signed_in(request)
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no billing job {job_id!r} (jobs are kept in memory until the server restarts)")
        if job.error is not None:
            raise HTTPException(job.error.status_code, job.error.detail)
        if job.run_id is not None:
            return back_to(f"/runs/{job.run_id}")
        return page(request, "job.html", job=job, elapsed=int(time.monotonic() - job.started))

    @app.get("/runs/{run_id}")
    def run_page(request: Request, run_id: str) -> Response:
        signed_in(request)
        row = ledger_call(lambda: ledger.run(run_id))
        bills = ledger.bills_of_run(row.id, limit=MAX_BILLS)
        townships: dict[str, list[dict[str, Any]]] = {}
        for bill in sorted(bills, key=lambda b: (b["unit"]["township"], b["unit"]["id"])):
            townships.setdefault(bill["unit"]["township"], []).append(bill)
        previous = ledger.previous_run(row.id)
        diff = _diff(ledger.bills_of_run(previous.id, limit=MAX_BILLS), bills) if previous else []
        return page(request, "run.html", run=row, events=ledger.events(row.id), townships=townships, creator=ledger.creator(row.id),
                    total=sum((Decimal(b["total"]) for b in bills), Decimal(0)), previous=previous, diff=diff)

    @app.post("/runs/{run_id}/approve")
    async def approve(request: Request, run_id: str) -> Response:
        session = signed_in(request, "approve")
        form = await posted(request, session)
        row = ledger_call(lambda: ledger.run(run_id))

        def approved() -> str:
            try:
                return ledger.advance(row.id, "approved", session.user, form.get("note", "")[:500])
            except FourEyesError:  # the ledger keeps four eyes; this only says it in the page's language
                raise HTTPException(403, words(lang_of(request))["four_eyes"]) from None

        ledger_call(approved)
        return back_to(f"/runs/{row.id}")

    @app.post("/runs/{run_id}/issue")
    async def issue(request: Request, run_id: str) -> Response:
        session = signed_in(request, "issue")
        form = await posted(request, session)
        row = ledger_call(lambda: ledger.run(run_id))
        ledger_call(lambda: ledger.advance(row.id, "issued", session.user, form.get("note", "")[:500]))
        return back_to(f"/runs/{row.id}")

    @app.get("/runs/{run_id}/bills.csv")
    def bills_csv(request: Request, run_id: str) -> Response:
        signed_in(request)
        row = ledger_call(lambda: ledger.run(run_id))
        rows = map(bill_row, ledger.bills_of_run(row.id, limit=MAX_BILLS))  # the columns of the run's bills.csv (billing run --out)
        return _csv(BILL_COLUMNS, rows, f"bills-{row.id[:12]}.csv")

    @app.get("/runs/{run_id}/bills.xlsx")
    def bills_xlsx(request: Request, run_id: str) -> Response:
        signed_in(request)
        row = ledger_call(lambda: ledger.run(run_id))
        return _xlsx(row, ledger.bills_of_run(row.id, limit=MAX_BILLS), f"bills-{row.id[:12]}.xlsx")

    # --- bills -------------------------------------------------------------------------------

    @app.get("/bills/{bill_id}")
    def bill_page(request: Request, bill_id: str) -> Response:
        signed_in(request)
        bill = ledger_call(lambda: ledger.bill(bill_id))
        return page(request, "bill.html", bill=bill, bands=bill_bands(bill, lang_of(request)))

    def bill_bands(bill: Any, lang: str) -> list[str]:
        """The tariff's band names as the PDF prints them (none without the district file)."""
        from billing.pdf import band_labels, bill_context

        d = district()
        if d is None:
            return []
        return band_labels(bill_context(d, ledger_call(lambda: ledger.run(bill["run_id"])), lang)["bands"], lang)

    @app.get("/bills/{bill_id}/bill.pdf")
    def bill_pdf(request: Request, bill_id: str) -> Response:
        signed_in(request)
        import tempfile

        from billing.pdf import bill_context, render_bill

        d = district()
        if d is None:
            raise HTTPException(503, "the workbench was started without --district: bills cannot be printed")
        bill = ledger_call(lambda: ledger.bill(bill_id))
        run = ledger_call(lambda: ledger.run(bill["run_id"]))
        with tempfile.TemporaryDirectory() as tmp:
            path = render_bill(bill, bill_context(d, run, lang_of(request)), Path(tmp) / "bill.pdf")
            content = path.read_bytes()
        return Response(content, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="bill-{bill["unit"]["id"]}.pdf"'})

    @app.get("/bills/{bill_id}/bill.csv")
    def bill_csv(request: Request, bill_id: str) -> Response:
        signed_in(request)
        bill = ledger_call(lambda: ledger.bill(bill_id))
        return _csv(LINE_COLUMNS, line_rows(bill), f"bill-{bill['unit']['id']}.csv")

    @app.get("/bills/{bill_id}/bill.xlsx")
    def bill_xlsx(request: Request, bill_id: str) -> Response:
        signed_in(request)
        bill = ledger_call(lambda: ledger.bill(bill_id))
        return _xlsx(ledger_call(lambda: ledger.run(bill["run_id"])), [bill], f"bill-{bill['unit']['id']}.xlsx")

    @app.get("/lines/{line_id}")
    def explain_page(request: Request, line_id: str) -> Response:
        signed_in(request)
        from billing.explain import explain_line

        explained = None
        if service.influx_url:
            try:
                with service.influx() as client:
                    explained = ledger_call(lambda: explain_line(ledger, line_id, client))
            except InfluxUnavailable:
                explained = None  # shown without the readings
        if explained is None:
            explained = ledger_call(lambda: explain_line(ledger, line_id))
        return page(request, "explain.html", ex=explained, bill=ledger_call(lambda: ledger.bill(explained["bill"]["id"])))

    @app.post("/bills/{bill_id}/paid")
    async def paid(request: Request, bill_id: str) -> Response:
        session = signed_in(request, "pay")
        await posted(request, session)
        ledger_call(lambda: ledger.mark_paid(bill_id, session.user))
        return back_to(f"/bills/{bill_id}")

    @app.post("/bills/{bill_id}/adjustments")
    async def adjust(request: Request, bill_id: str) -> Response:
        session = signed_in(request, "adjust")
        form = await posted(request, session)
        body = _validated(AdjustmentRequest, {"amount": form.get("amount", ""), "reason": form.get("reason", "")})
        ledger_call(lambda: ledger.add_adjustment(bill_id, body.amount, body.reason, session.user))
        return back_to(f"/bills/{bill_id}")

    # --- VEE, audit --------------------------------------------------------------------------

    @app.get("/vee")
    def vee(request: Request) -> Response:
        signed_in(request)
        d = district()
        latest = next(iter(ledger.runs(limit=1)), None)
        import json

        manifest = json.loads(latest.manifest) if latest else {}
        blocked = [b for b in (ledger.bills_of_run(latest.id, limit=MAX_BILLS) if latest else []) if b["blocked"]]
        return page(request, "vee.html", run=latest, manifest=manifest, vee=manifest.get("vee", {}), blocked=blocked,
                    edits=ledger.edits(d.id) if d else [], points=list(d.points) if d else [])

    @app.post("/vee/edits")
    async def add_edit(request: Request) -> Response:
        session = signed_in(request, "edit")
        form = await posted(request, session)
        d = district()
        if d is None:
            raise HTTPException(503, "the workbench was started without --district")
        fields = _run_fields(form, tz()) | {"point": form.get("point", ""), "volume_m3": form.get("volume_m3", ""), "reason": form.get("reason", "")}
        record_edit(ledger, d, _validated(EditRequest, fields), session.user)
        return back_to("/vee")

    @app.get("/audit")
    def audit(request: Request) -> Response:
        signed_in(request, "audit")
        d = district()
        events = sorted(((e, r) for r in ledger.runs(limit=MAX_RUNS) for e in ledger.events(r.id)), key=lambda er: er[0].at, reverse=True)
        return page(request, "audit.html", events=events, edits=ledger.edits(d.id) if d else [],
                    adjustments=ledger.pending_adjustments(d.id) if d else [])

    # --- the public notice -------------------------------------------------------------------

    @app.get("/public")
    def public(request: Request) -> Response:
        return page(request, "public.html", runs=issued_runs(ledger))

    @app.get("/public/{run_id}")
    def public_run(request: Request, run_id: str) -> Response:
        row = ledger_call(lambda: issued_run(ledger, run_id))
        return page(request, "public_run.html", run=row, townships=by_township(notice_rows(ledger, row.id, district())))

    @app.get("/public/{run_id}/{unit_id}")
    def public_unit(request: Request, run_id: str, unit_id: str) -> Response:
        row, notice = _notice_of(run_id, unit_id)
        return page(request, "public_run.html", run=row, townships=by_township([notice]), unit=notice)

    @app.get("/public/{run_id}/{unit_id}/notice.pdf")
    def public_pdf(request: Request, run_id: str, unit_id: str) -> Response:
        row, notice = _notice_of(run_id, unit_id)
        url = str(request.url_for("public_unit", run_id=row.id, unit_id=notice.unit_id))
        pdf = notice_pdf(notice, row, url, words(lang_of(request)), township_name(notice.township), lang_of(request))
        return Response(pdf, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="notice-{row.id[:12]}.pdf"'})

    def _notice_of(run_id: str, unit_id: str) -> tuple[Any, Any]:
        row = ledger_call(lambda: issued_run(ledger, run_id))
        found = [n for n in notice_rows(ledger, row.id, district()) if n.unit_id == unit_id]
        if not found:
            raise HTTPException(404, f"no issued bill of unit {unit_id!r} in run {row.id[:12]}")
        return row, found[0]

    app.state.ledger = ledger
    app.state.sessions = sessions
    return app


def _local_path(target: str) -> str:
    """``target`` if it is a path on this site, else ``/`` (no open redirect to another host)."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


def _cell(text: str) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


TEXT_COLUMNS = frozenset({"unit_name", "blocked_reason", "note"})  # free text from the district file or a clerk; the rest are ids and numbers


def _csv(columns: tuple[str, ...], rows: Any, filename: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    text = [c in TEXT_COLUMNS for c in columns]
    writer.writerows([_cell(v) if t else v for v, t in zip(r, text, strict=True)] for r in rows)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _xlsx(run: Any, bills: list[dict[str, Any]], filename: str) -> Response:
    """The workbook of ``billing run --out`` (billing/exports.py) of stored bill documents."""
    import json

    out = io.BytesIO()
    write_xlsx(json.loads(run.manifest), bills, out)
    return Response(out.getvalue(), media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _run_fields(form: dict[str, str], tz: ZoneInfo) -> dict[str, Any]:
    """A run request's fields from a form: the season, or the window's local date-times (``datetime-local``)."""
    if form.get("season"):
        return {"season": form["season"]}
    fields: dict[str, Any] = {}
    for key in ("from", "to"):
        value = form.get(key, "")
        try:
            when = dt.datetime.fromisoformat(value) if value else None
        except ValueError:
            raise HTTPException(422, f"{key}: {value[:40]!r} is not a date-time like 2026-03-11T00:00") from None
        if when is not None:
            fields[key] = when if when.tzinfo else when.replace(tzinfo=tz)
    return fields


def _validated(model: Any, fields: dict[str, Any]) -> Any:
    """The API's request model of the form's fields; what is wrong is a 422 page naming the fields."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors())
        raise HTTPException(422, problems) from None


def _diff(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per unit, the totals of the previous run and this one, where they differ."""
    old = {b["unit"]["id"]: Decimal(b["total"]) for b in before}
    new = {b["unit"]["id"]: Decimal(b["total"]) for b in after}
    rows = []
    for unit in sorted(old.keys() | new.keys()):
        a, b = old.get(unit), new.get(unit)
        if a != b:
            rows.append({"unit": unit, "before": a, "after": b, "change": (b or Decimal(0)) - (a or Decimal(0))})
    return rows


__all__ = ["WebConfig", "create_app"]
