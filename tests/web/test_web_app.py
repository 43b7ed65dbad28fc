"""The workbench's pages and rules through FastAPI's TestClient, on a real ledger and a real InfluxDB."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from web_accounts import HOSTILE, local, password

from billing.exports import BILL_COLUMNS, LINE_COLUMNS
from billing.service import ServiceConfig
from canalflow.influx import InfluxV1
from web.app import WebConfig, create_app
from web.auth import MAX_FAILURES, load_users


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path, users_file: Path, district_path: Path, influx: InfluxV1) -> WebConfig:
    """The workbench's configuration on each ledger backend we deploy (a fresh PostgreSQL database per test)."""
    url = f"sqlite:///{tmp_path}/ledger.db" if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))
    return WebConfig(ServiceConfig(url, district_path, influx.url, influx.database), load_users(users_file))


CLERK_PAGES = ("/runs", "/vee", "/audit", "/runs/abc", "/bills/abc-V01", "/bills/abc-V01/bill.pdf", "/lines/abc-V01-L1", "/runs/abc/bills.csv", "/jobs/abc")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def sign_in(client: TestClient, user: str, secret: str | None = None) -> None:
    form = client.get("/login")
    answer = client.post("/login", data={"csrf": csrf_of(form.text), "user": user, "password": secret or password(user), "next": "/runs"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text


def post(client: TestClient, url: str, page: str, **fields: str) -> object:
    return client.post(url, data={"csrf": csrf_of(client.get(page).text), **fields}, follow_redirects=False)



def start_run(client: TestClient, window: tuple[int, int]) -> str:
    """Start a run from the form and follow its job page until it names the run."""
    answer = post(client, "/runs", "/runs", **{"from": local(window[0]), "to": local(window[1])})
    assert answer.status_code == 303 and answer.headers["location"].startswith("/jobs/"), answer.text
    job = answer.headers["location"]
    deadline = time.monotonic() + 120
    while (state := client.get(job, follow_redirects=False)).status_code == 200:
        assert "正在计费" in state.text and time.monotonic() < deadline
        time.sleep(0.2)
    assert state.status_code == 303, state.text
    return state.headers["location"].rsplit("/", 1)[1]


def test_anonymous_visitors_reach_no_clerk_page(config: WebConfig) -> None:
    client = TestClient(create_app(config))
    for url in CLERK_PAGES:
        answer = client.get(url, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login"), url
    for url in ("/runs", "/runs/abc/approve", "/runs/abc/issue", "/bills/abc/paid", "/vee/edits", "/logout"):
        assert client.post(url, data={}, follow_redirects=False).status_code == 303, url
    assert client.get("/public").status_code == 200
    unknown = client.get("/no/such/page")
    assert unknown.status_code == 404 and "<html" in unknown.text  # a page, like every other error
    assert client.get("/runs/abc", follow_redirects=False).headers["location"] == "/login?next=/runs/abc"


def test_sign_in_cookies_csrf_and_lockout(config: WebConfig) -> None:
    client = TestClient(create_app(config), base_url="https://testserver")
    form = client.get("/login")
    assert client.post("/login", data={"user": "li", "password": password("li")}, follow_redirects=False).status_code == 403  # no token
    answer = client.post("/login", data={"csrf": csrf_of(form.text), "user": "li", "password": password("li")}, follow_redirects=False)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "cf_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie
    assert client.get("/runs").status_code == 200
    # a form without its token, or with another session's, is refused and changes nothing
    assert client.post("/runs", data={"season": "2026-spring"}, follow_redirects=False).status_code == 403
    assert client.post("/runs", data={"season": "2026-spring", "csrf": "forged"}, follow_redirects=False).status_code == 403
    assert client.app.state.ledger.count_runs() == 0
    assert post(client, "/logout", "/runs").status_code == 303
    assert client.get("/runs", follow_redirects=False).status_code == 303
    # lockout: after MAX_FAILURES wrong passwords even the right one is refused
    other = TestClient(client.app)
    for _ in range(MAX_FAILURES):
        form = other.get("/login")
        assert other.post("/login", data={"csrf": csrf_of(form.text), "user": "wang", "password": "wrong-password"}).status_code == 401
    form = other.get("/login")
    locked = other.post("/login", data={"csrf": csrf_of(form.text), "user": "wang", "password": password("wang")})
    assert locked.status_code == 401 and "锁定" in locked.text
    sign_in(other, "chen")  # another account is not locked


def test_a_billing_round_four_eyes_and_the_public_notice(config: WebConfig, day: tuple[int, int], tmp_path: Path) -> None:
    app = create_app(config)
    admin, approver, clerk = TestClient(app), TestClient(app), TestClient(app)
    sign_in(admin, "zhang")
    sign_in(approver, "wang")
    sign_in(clerk, "li")
    run_id = start_run(admin, day)
    run_page = admin.get(f"/runs/{run_id}").text
    assert "朝城镇" in run_page and "&lt;script&gt;" in run_page and HOSTILE not in run_page
    bills = app.state.ledger.bills_of_run(run_id, limit=100)
    total = sum(Decimal(b["total"]) for b in bills)
    assert total > 0 and f">{total}<" in run_page
    # a bill and a line explained down to its readings
    v01 = next(b for b in bills if b["unit"]["id"] == "V01")
    bill_page = admin.get(f"/bills/{v01['bill_id']}").text
    assert v01["total"] in bill_page and "骨干工程水价" in bill_page and "定额 0%–100% ×1.0" in bill_page  # the band by name, as printed
    shared = next(b for b in bills if any(ln["kind"] == "loss" and Decimal(ln["amount"]) for ln in b["lines"]))  # a block below V15-IN
    assert "骨干工程水价（分摊损失）" in admin.get(f"/bills/{shared['bill_id']}").text  # a loss line says so, as printed
    printed = admin.get(f"/bills/{v01['bill_id']}/bill.pdf")
    assert printed.status_code == 200 and printed.content.startswith(b"%PDF")
    explained = admin.get(f"/lines/{v01['bill_id']}-L1").text
    assert "rounded half up" in explained and "V01-IN" in explained and "good 97" in explained
    # draft: not public; the creator cannot approve it, a clerk may not, an approver may
    assert run_id not in admin.get("/public").text
    assert admin.get(f"/public/{run_id}").status_code == 404
    assert "另一人" in post(admin, f"/runs/{run_id}/approve", f"/runs/{run_id}").text
    assert post(clerk, f"/runs/{run_id}/approve", f"/runs/{run_id}").status_code == 403
    assert post(approver, f"/runs/{run_id}/approve", f"/runs/{run_id}", note="checked").status_code == 303
    assert app.state.ledger.run(run_id).status == "approved"
    assert admin.get(f"/public/{run_id}").status_code == 404
    assert post(approver, f"/runs/{run_id}/issue", f"/runs/{run_id}").status_code == 303
    # the public page shows exactly the issued bills' figures, without signing in
    public = TestClient(app)
    listing = public.get("/public").text
    assert f"/public/{run_id}" in listing
    notice = public.get(f"/public/{run_id}").text
    for b in bills:
        assert f">{b['total']}<" in notice and f">{b['volume_m3']}<" in notice
    assert "&lt;script&gt;" in notice and HOSTILE not in notice
    # payment, adjustment, audit trail
    assert post(clerk, f"/bills/{v01['bill_id']}/paid", f"/bills/{v01['bill_id']}").status_code == 303
    assert post(clerk, f"/bills/{v01['bill_id']}/adjustments", f"/bills/{v01['bill_id']}", amount="-1.5", reason="meter over-read").status_code == 303
    assert post(clerk, f"/bills/{v01['bill_id']}/adjustments", f"/bills/{v01['bill_id']}", amount="1.234", reason="too fine").status_code == 422
    assert clerk.get("/audit").status_code == 403
    auditor = TestClient(app)
    sign_in(auditor, "zhou")
    trail = auditor.get("/audit").text
    assert all(who in trail for who in ("zhang", "wang", "li")) and "meter over-read" in trail
    # the notice PDF embeds the CJK font and renders
    pdf = public.get(f"/public/{run_id}/V01/notice.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF") and b"FontFile2" in pdf.content
    (tmp_path / "notice.pdf").write_bytes(pdf.content)
    subprocess.run(["pdftoppm", "-png", "-r", "50", str(tmp_path / "notice.pdf"), str(tmp_path / "notice")], check=True)
    assert list(tmp_path.glob("notice*.png"))
    # and it shows exactly the issued bill's figures: use, quota, each kind's sum and the total
    text = subprocess.run(["pdftotext", str(tmp_path / "notice.pdf"), "-"], check=True, capture_output=True, text=True).stdout.split()
    sums = {kind: str(sum((Decimal(ln["amount"]) for ln in v01["lines"] if ln["kind"] == kind), Decimal(0))) for kind in ("charge", "subsidy", "reward")}
    for figure in (v01["volume_m3"], v01["quota_m3"], v01["total"], *sums.values()):
        assert figure in text, f"{figure} not on the printed notice: {' '.join(text)}"
    # the CSV download: the columns of bills.csv, the ledger's totals
    rows = list(csv.reader(io.StringIO(admin.get(f"/runs/{run_id}/bills.csv").text)))
    assert tuple(rows[0]) == BILL_COLUMNS and len(rows) == len(bills) + 1
    assert {r[0]: r[8] for r in rows[1:]} == {b["bill_id"]: b["total"] for b in bills}
    # the XLSX downloads (the workbook of billing run --out): the run's and one bill's figures are the ledger's
    book = load_workbook(io.BytesIO(admin.get(f"/runs/{run_id}/bills.xlsx").content), read_only=True)
    sheet = list(book["Bills"].values)
    assert sheet[0] == BILL_COLUMNS
    assert {r[0]: (Decimal(str(r[6])), Decimal(str(r[8])).quantize(Decimal("0.01"))) for r in sheet[1:]} == {
        b["bill_id"]: (Decimal(b["volume_m3"]), Decimal(b["total"])) for b in bills}
    assert dict(book["Run"].values)["total_yuan"] == str(total)
    one = load_workbook(io.BytesIO(admin.get(f"/bills/{v01['bill_id']}/bill.xlsx").content), read_only=True)
    lines = list(one["Lines"].values)[1:]
    assert [(r[0], Decimal(str(r[9])).quantize(Decimal("0.01"))) for r in lines] == [(ln["id"], Decimal(ln["amount"])) for ln in v01["lines"]]
    assert dict(one["Run"].values)["total_yuan"] == v01["total"] and [r[0] for r in list(one["Bills"].values)[1:]] == [v01["bill_id"]]
    bill_csv = list(csv.reader(io.StringIO(admin.get(f"/bills/{v01['bill_id']}/bill.csv").text)))
    assert tuple(bill_csv[0]) == LINE_COLUMNS and [r[9] for r in bill_csv[1:]] == [ln["amount"] for ln in v01["lines"]]


def test_a_rerun_of_a_draft_window_is_compared_with_the_previous_run(config: WebConfig, day: tuple[int, int]) -> None:
    app = create_app(config)
    clerk = TestClient(app)
    sign_in(clerk, "li")
    first = start_run(clerk, day)
    assert "同一时段没有更早的批次" in clerk.get(f"/runs/{first}").text
    answer = post(clerk, "/vee/edits", "/vee", point="V01-IN", **{"from": local(day[0]), "to": local(day[1])}, volume_m3="99999", reason="gate log")
    assert answer.status_code == 303, answer.text
    second = start_run(clerk, day)
    assert second != first
    page = clerk.get(f"/runs/{second}").text
    assert first[:12] in page and 'class="changed"><td>V01<' in page
    assert "gate log" in clerk.get("/vee").text


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_no_open_redirect(config: WebConfig, target: str) -> None:
    client = TestClient(create_app(config))
    assert client.get(f"/lang/en?next={target}", follow_redirects=False).headers["location"] == "/"


def test_a_run_with_influxdb_down_says_so_on_its_job_page(config: WebConfig, day: tuple[int, int]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    client = TestClient(create_app(dataclasses.replace(config, service=dataclasses.replace(config.service, influx_url=closed))))
    sign_in(client, "li")
    answer = post(client, "/runs", "/runs", **{"from": local(day[0]), "to": local(day[1])})
    job = answer.headers["location"]
    deadline = time.monotonic() + 60
    while (state := client.get(job)).status_code == 200 and "正在计费" in state.text:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert state.status_code == 503 and "InfluxDB is back" in state.text
    assert client.app.state.ledger.count_runs() == 0


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted() -> None:
    from web.app import _cell

    assert [_cell(x) for x in ("=HYPERLINK(\"http://x\")", "+1", "-2", "@A1", "张庄村", "")] == ["'=HYPERLINK(\"http://x\")", "'+1", "'-2", "'@A1", "张庄村", ""]
