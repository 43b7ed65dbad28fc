"""Billing API security (issue 8 item 3): tokens and roles on every route, issued bills immutable,
hostile inputs refused without a change, no secret in the served logs.

The bulk runs through FastAPI's TestClient on a real SQLite ledger (and a real InfluxDB for the
routes that read readings); the log test serves the API for real (`canalflow billing serve`,
uvicorn on a free port). "Nothing changed" is a digest of every table of the SQLite file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sec_helpers import DEMO

from billing.api import ApiConfig, Principal, ServiceConfig, create_app
from billing.bills import BillingRun, build_run
from billing.ledger import open_ledger
from billing.volumes import PointVolume, charging_points
from billing.window import season_window
from canalflow.contract import Quality, Reading, ReadingBatch, reading_lines
from canalflow.credentials import hash_api_token
from canalflow.district import District
from canalflow.influx import InfluxV1
from canalflow.volume import VolumeResult
from testbed.steady import steady_share

DAY_MS = 86_400_000
SECRET = {role: f"{role}-{secrets.token_urlsafe(18)}" for role in ("auditor", "clerk", "approver", "admin")}
TOKENS = {hash_api_token(token): Principal(f"{role}-user", role) for role, token in SECRET.items()}
AUTH = {role: {"Authorization": f"Bearer {token}"} for role, token in SECRET.items()}
# Who may use a route of each kind (canalflow/roles.py, written out here so that a change of it shows).
ALLOWED = {"read": ("auditor", "clerk", "approver", "admin"), "clerk": ("clerk", "admin"), "approver": ("approver", "admin")}

# The kind of each route. A route in the OpenAPI schema but not here fails the first test until it is classified.
NEEDS: dict[tuple[str, str], str | None] = {
    ("GET", "/health"): None,
    ("GET", "/runs"): "read",
    ("POST", "/runs"): "clerk",
    ("GET", "/runs/{run_id}"): "read",
    ("GET", "/runs/{run_id}/bills"): "read",
    ("POST", "/runs/{run_id}/approve"): "approver",
    ("POST", "/runs/{run_id}/issue"): "approver",
    ("GET", "/bills/{bill_id}"): "read",
    ("GET", "/lines/{line_id}/explain"): "read",
    ("POST", "/bills/{bill_id}/adjustments"): "clerk",
    ("POST", "/bills/{bill_id}/paid"): "clerk",
    ("GET", "/adjustments"): "read",
    ("POST", "/edits"): "clerk",
    ("GET", "/edits"): "read",
    ("GET", "/units/{unit_id}/water-use"): "read",
    ("GET", "/efficiency"): "read",
}
LATER_DAY = {"from": "2026-03-11T00:00:00+08:00", "to": "2026-03-12T00:00:00+08:00"}
EDIT = {"point": "V01-IN", "from": "2026-03-03T00:00:00+08:00", "to": "2026-03-04T00:00:00+08:00", "volume_m3": 100, "reason": "gate log"}
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/runs"): LATER_DAY,
    ("POST", "/runs/{run_id}/approve"): {"note": "checked"},
    ("POST", "/runs/{run_id}/issue"): {"note": "sent"},
    ("POST", "/bills/{bill_id}/adjustments"): {"amount": "-1.00", "reason": "probe"},
    ("POST", "/edits"): EDIT,
}
QUERY = {"from": "2026-03-01T00:00:00+08:00", "to": "2026-03-02T00:00:00+08:00"}
MALFORMED = ["", "Bearer", "Bearer ", "Basic dmlld2VyOnBhc3N3b3Jk", "{manager}", "Token {manager}", "Bearer\t{manager}", "Bearer {manager} {manager}"]
UNKNOWN = ["Bearer not-a-token", "Bearer {manager_digest}", "Bearer {manager_upper}", "bearer {manager}x"]


@dataclass
class Api:
    client: TestClient
    db: Path
    issued: BillingRun
    twin: BillingRun  # a draft over the issued run's window, made before the issue
    draft: BillingRun  # a draft over a later window
    influx: InfluxV1

    def ids(self) -> dict[str, str]:
        bill = self.issued.bill_of("V01").bill_id
        return {"run_id": self.draft.run_id, "bill_id": bill, "line_id": f"{bill}-L1", "unit_id": "V01"}


def fixed_run(district: District, t0: int, t1: int, volume_m3: float) -> BillingRun:
    steady = steady_share(district, volume_m3)
    volumes = {p: PointVolume(p, VolumeResult(steady[p], 1.0, 0.0, "flow", [], False, 99)) for p in charging_points(district)}
    return build_run(district, volumes, t0, t1, season=district.seasons["2026-spring"], as_of_ms=t1)


@pytest.fixture
def api(district: District, influx: InfluxV1, tmp_path: Path) -> Iterator[Api]:
    """A ledger with an issued run (10 days), a draft twin of it, and a later draft; the app on it."""
    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}"
    t0 = season_window(district, district.seasons["2026-spring"])[0]
    issued, twin = fixed_run(district, t0, t0 + 10 * DAY_MS, 250_000.0), fixed_run(district, t0, t0 + 10 * DAY_MS, 200_000.0)
    draft = fixed_run(district, t0 + 20 * DAY_MS, t0 + 21 * DAY_MS, 30_000.0)
    ledger = open_ledger(url)
    for run in (issued, twin, draft):
        ledger.record_run(run)
    ledger.advance(issued.run_id, "approved", "setup")
    ledger.advance(issued.run_id, "issued", "setup")
    app = create_app(ApiConfig(ServiceConfig(url, DEMO, influx.url, influx.database), TOKENS))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, db, issued, twin, draft, influx)


def ledger_digest(db: Path) -> str:
    """SHA-256 of the schema and every row of every table of the SQLite ledger."""
    digest = hashlib.sha256()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
        for name, sql in tables:
            digest.update(sql.encode())
            for row in sorted(repr(r) for r in conn.execute(f'SELECT * FROM "{name}"')):
                digest.update(row.encode())
    return digest.hexdigest()


def schema_routes(client: TestClient) -> list[tuple[str, str]]:
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    return sorted((method.upper(), path) for path, ops in paths.items() for method in ops)


def request_of(api: Api, method: str, path: str, ids: dict[str, str] | None = None) -> dict[str, Any]:
    """A valid request for a route (path parameters filled, required query, body): only the credentials vary."""
    operation = api.client.app.openapi()["paths"][path][method.lower()]  # type: ignore[attr-defined]
    params = {p["name"]: QUERY[p["name"]] for p in operation.get("parameters", []) if p["in"] == "query" and p.get("required")}
    url = path.format(**(ids or api.ids()))
    request: dict[str, Any] = {"method": method, "url": url, "params": params}
    if (method, path) in BODIES:
        request["json"] = BODIES[(method, path)]
    return request


def header_values(template: list[str]) -> list[str]:
    manager = SECRET["admin"]
    fill = {"manager": manager, "manager_digest": hash_api_token(manager), "manager_upper": manager.upper()}
    return [t.format(**fill) for t in template]


def test_every_route_refuses_missing_malformed_unknown_and_lower_role_tokens(api: Api) -> None:
    routes = schema_routes(api.client)
    assert set(routes) == set(NEEDS), f"classify the role each new route needs in NEEDS: {set(routes) ^ set(NEEDS)}"
    hidden = {route.path for route in api.client.app.routes} - {path for _, path in routes}  # type: ignore[attr-defined]
    assert hidden == {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}, f"a route outside the schema escapes this test: {hidden}"
    before = ledger_digest(api.db)
    for method, path in routes:
        need = NEEDS[(method, path)]
        if need is None:
            continue
        request = request_of(api, method, path)
        where = f"{method} {path}"
        answer = api.client.request(**request)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer", where
        for value in header_values(MALFORMED + UNKNOWN):
            answer = api.client.request(**request, headers={"Authorization": value})
            assert answer.status_code == 401, f"{where} with Authorization: {value[:20]}: {answer.status_code}"
        answer = api.client.request(**request, headers={"Authorization": b"Bearer \xff\xfe\x00"})  # type: ignore[dict-item]
        assert answer.status_code == 401, where
        for token_param in ("access_token", "token", "api_key"):  # tokens are accepted in the header only
            leaked = request | {"params": request["params"] | {token_param: SECRET["admin"]}}
            assert api.client.request(**leaked).status_code == 401, f"{where} ?{token_param}="
        assert api.client.request(**request, headers={"X-Api-Key": SECRET["admin"]}).status_code == 401, where
        for role in sorted(set(SECRET) - set(ALLOWED[need])):
            answer = api.client.request(**request, headers=AUTH[role])
            assert answer.status_code == 403 and f"needs the {' or '.join(ALLOWED[need])} role" in answer.json()["detail"], f"{where} as {role}"
    assert ledger_digest(api.db) == before, "a refused request changed the ledger"
    # positive control: the needed role gets through (so the refusals above are about credentials)
    for method, path in routes:
        need = NEEDS[(method, path)]
        for role in ALLOWED[need] if need else ("",):
            answer = api.client.request(**request_of(api, method, path), headers=AUTH[role] if role else {})
            assert answer.status_code not in (401, 403) and answer.status_code < 500, f"{method} {path} as {role}: {answer.status_code} {answer.text[:200]}"


def issued_snapshot(api: Api) -> dict[str, Any]:
    """Everything about the issued run's bills as the API answers it and as the ledger stores it."""
    client, run_id = api.client, api.issued.run_id
    bills = {b.bill_id: client.get(f"/bills/{b.bill_id}", headers=AUTH["auditor"]).content for b in api.issued.bills}
    listing = client.get(f"/runs/{run_id}/bills", params={"limit": 500}, headers=AUTH["auditor"]).content
    run = client.get(f"/runs/{run_id}", headers=AUTH["auditor"]).json()
    with sqlite3.connect(f"file:{api.db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT id, unit_id, volume_l, quota_l, total_fen, blocked, document FROM bills WHERE run_id = ? ORDER BY id", (run_id,)).fetchall()
        lines = conn.execute("SELECT l.* FROM bill_lines l JOIN bills b ON b.id = l.bill_id WHERE b.run_id = ? ORDER BY l.id", (run_id,)).fetchall()
    return {"bills": bills, "listing": listing, "run": run | {"events": None}, "rows": rows, "lines": lines}


def write_readings(influx: InfluxV1, district: District, t0: int, t1: int, flow_m3s: float = 0.1, step_ms: int = 900_000) -> None:
    """A steady flow at every charging point (flow and totaliser; sub-meters by :func:`steady_share`), through the wire contract."""
    lines: list[str] = []
    for point, flow in steady_share(district, flow_m3s).items():
        p = district.points[point]
        readings = tuple(Reading(ts=t, values={"flow": flow, "totaliser": 1000.0 + flow * (t - t0) / 1000}, quality=Quality.good)
                         for t in range(t0, t1 + 1, step_ms))
        lines += reading_lines(ReadingBatch(district=district.id, gateway=p.gateway, point=point, seq=0, readings=readings), p.canal, p.role.value)
    influx.write_lines(lines)


def test_issued_bills_cannot_be_changed_through_any_route(api: Api, district: District) -> None:
    client, issued = api.client, api.issued
    bill = issued.bill_of("V01").bill_id
    before = issued_snapshot(api)
    window = {"from": dt.datetime.fromtimestamp(issued.t0_ms / 1000, dt.UTC).isoformat(), "to": dt.datetime.fromtimestamp(issued.t1_ms / 1000, dt.UTC).isoformat()}
    overlap = {"from": "2026-03-05T00:00:00+08:00", "to": "2026-03-15T00:00:00+08:00"}
    refused = [
        ("POST", f"/runs/{issued.run_id}/approve", "approver", {}, "issued is final"),
        ("POST", f"/runs/{issued.run_id}/issue", "approver", {}, "issued is final"),
        ("POST", f"/runs/{issued.run_id[:12]}/issue", "approver", {"note": "again"}, "issued is final"),
        ("POST", f"/runs/{api.twin.run_id}/approve", "approver", {}, "already bills part of this window"),
        ("POST", "/runs", "clerk", window, "already bills part of this window"),
        ("POST", "/runs", "clerk", overlap, "already bills part of this window"),
        ("POST", "/runs", "clerk", {"season": "2026-spring"}, "already bills part of this window"),
        ("POST", f"/bills/{api.draft.bill_of('V01').bill_id}/paid", "clerk", None, "only issued bills are paid"),
        ("POST", f"/bills/{api.draft.bill_of('V01').bill_id}/adjustments", "clerk", {"amount": "-5.00", "reason": "over-read"}, "rerun the draft"),
    ]
    ledger_before = ledger_digest(api.db)
    for method, url, role, body, why in refused:
        answer = client.request(method, url, json=body, headers=AUTH[role])
        assert answer.status_code == 409 and why in answer.json()["detail"], f"{method} {url}: {answer.status_code} {answer.text[:300]}"
    assert ledger_digest(api.db) == ledger_before
    # allowed, and none of them touches the issued bill: an edit (for later runs), payment once, an adjustment
    assert client.post("/edits", json=EDIT, headers=AUTH["clerk"]).status_code == 201
    assert client.post(f"/bills/{bill}/paid", headers=AUTH["clerk"]).status_code == 200
    again = client.post(f"/bills/{bill}/paid", headers=AUTH["clerk"])
    assert again.status_code == 409 and "already paid" in again.json()["detail"]
    made = client.post(f"/bills/{bill}/adjustments", json={"amount": "-12.34", "reason": "meter over-read"}, headers=AUTH["clerk"])
    assert made.status_code == 201, made.text
    assert issued_snapshot(api) == before
    # the adjustment is a NEW line on the unit's next bill (a later window, billed from real readings)
    t0 = issued.t1_ms
    write_readings(api.influx, district, t0 - 3_600_000, t0 + 2 * DAY_MS)
    later = client.post("/runs", json=LATER_DAY, headers=AUTH["clerk"])
    assert later.status_code == 201, later.text
    new_run = later.json()["run_id"]
    bills = client.get(f"/runs/{new_run}/bills", params={"limit": 500}, headers=AUTH["auditor"]).json()["items"]
    v01 = next(b for b in bills if b["unit"]["id"] == "V01")
    adjustment = [line for line in v01["lines"] if line["kind"] == "adjustment"]
    assert v01["bill_id"] != bill and len(adjustment) == 1 and Decimal(adjustment[0]["amount"]) == Decimal("-12.34") and bill in adjustment[0]["note"]
    assert issued_snapshot(api) == before
    assert client.get(f"/bills/{bill}", headers=AUTH["auditor"]).json()["status"] == "issued"


def adjustment_lines(api: Api, run_id: str, unit: str) -> list[dict[str, Any]]:
    bills = api.client.get(f"/runs/{run_id}/bills", params={"limit": 500}, headers=AUTH["auditor"]).json()["items"]
    return [line for b in bills if b["unit"]["id"] == unit for line in b["lines"] if line["kind"] == "adjustment"]


def test_an_adjustment_survives_a_rerun_of_the_draft_that_carries_it(api: Api, district: District) -> None:
    bill = api.issued.bill_of("V01").bill_id
    assert api.client.post(f"/bills/{bill}/adjustments", json={"amount": "-7.00", "reason": "over-read"}, headers=AUTH["clerk"]).status_code == 201
    write_readings(api.influx, district, api.issued.t1_ms - 3_600_000, api.issued.t1_ms + 2 * DAY_MS)
    first = api.client.post("/runs", json=LATER_DAY, headers=AUTH["clerk"]).json()["run_id"]
    assert len(adjustment_lines(api, first, "V01")) == 1
    rerun = api.client.post("/runs", json=LATER_DAY | {"as_of": "2026-03-12T06:00:00+08:00"}, headers=AUTH["clerk"]).json()["run_id"]
    # same inputs give the same run (idempotent); either way the rerun still carries the adjustment
    assert len(adjustment_lines(api, rerun, "V01")) == 1


HOSTILE_IDS = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/etc/passwd", "....//....//etc/passwd",
               "' OR 1=1 --", "1; DROP TABLE bills", "x' UNION SELECT document FROM bills --", "%25", "_", "%00", "V01%00", "x" * 5000]


def test_hostile_path_ids_get_a_4xx_and_change_nothing(api: Api) -> None:
    before = ledger_digest(api.db)
    statuses: dict[int, int] = {}
    for method, path in schema_routes(api.client):
        need = NEEDS[(method, path)]
        names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
        for name in names:
            for hostile in HOSTILE_IDS:
                request = request_of(api, method, path, api.ids() | {name: hostile})
                answer = api.client.request(**request, headers=AUTH[ALLOWED[need or "read"][0]])
                assert 400 <= answer.status_code < 500, f"{method} {request['url'][:80]}: {answer.status_code} {answer.text[:200]}"
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
    # run ids may be abbreviated to a prefix; LIKE wildcards in it are literal characters, not patterns
    for wildcard in (api.draft.run_id[:20] + "%", api.draft.run_id[:20] + "_" * 10, api.draft.run_id[:19] + "_"):
        assert api.client.get(f"/runs/{wildcard.replace('%', '%25')}", headers=AUTH["auditor"]).status_code == 404, wildcard
        assert api.client.post(f"/runs/{wildcard.replace('%', '%25')}/approve", headers=AUTH["approver"]).status_code == 404, wildcard
    assert ledger_digest(api.db) == before
    assert sum(statuses.values()) >= 9 * len(HOSTILE_IDS)  # every path parameter of every route was tried


def raw(body: str) -> dict[str, Any]:
    return {"content": body.encode(), "headers": {"content-type": "application/json"}}


def chunks(total: int, size: int = 1 << 16) -> Iterator[bytes]:
    yield b'{"reason": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b'"}'


def hostile_requests(api: Api) -> list[tuple[str, str, str, dict[str, Any]]]:
    run, bill = api.draft.run_id, api.issued.bill_of("V01").bill_id
    sql = ["' OR 1=1 --", "1; DROP TABLE bills", "V01' --"]
    lists = ["/runs", f"/runs/{run}/bills", "/adjustments", "/edits", "/units/V01/water-use"]
    pages = [{"offset": -1}, {"offset": 10**30}, {"offset": "abc"}, {"offset": "1e3"}, {"limit": 0}, {"limit": 501}, {"limit": -5},
             {"limit": 10**30}, {"limit": sql[0]}, {"offset": sql[1]}]
    out: list[tuple[str, str, str, dict[str, Any]]] = [("GET", url, "auditor", {"params": p}) for url in lists for p in pages]
    out += [("GET", "/efficiency", "auditor", {"params": QUERY | q}) for q in
            [{"from": sql[0]}, {"to": sql[1]}, {"from": "0001-01-01T00:00:00+08:00"}, {"to": "9999-12-31T00:00:00+08:00"},
             {"from": "2026-03-01T00:00:00"}, {"from": "2026-03-05T00:00:00+08:00"}, {"from": "1970-01-02T00:00:00Z", "to": "2199-12-31T00:00:00Z"}]]
    out += [("GET", f"/units/{u}/water-use", "auditor", {}) for u in sql]
    huge = json.dumps({"reason": "x" * 10_000_000, "amount": "1.00"})
    big_list = json.dumps(list(range(100_000)))
    runs = [{"season": s} for s in sql] + [
        {"season": 123}, {"season": ["2026-spring"]}, {"from": True, "to": False}, LATER_DAY | {"source": "rollups; DROP TABLE bills"},
        LATER_DAY | {"admin": True}, {"from": "2026-03-01T00:00:00", "to": "2026-03-02T00:00:00+08:00"},
        {"from": "0001-01-01T00:00:00+08:00", "to": "2026-03-02T00:00:00+08:00"}, {"from": "2026-03-02T00:00:00+08:00", "to": "2026-03-01T00:00:00+08:00"},
        LATER_DAY | {"as_of": "9999-12-31T23:59:59+14:00"}, {"from": "2026-03-11T00:00:00+08:00", "to": "x" * 100_000},
        {"from": "2026-03-01T00:00:00+08:00", "to": "2199-01-01T00:00:00+08:00"},
    ]
    out += [("POST", "/runs", "clerk", {"json": body}) for body in runs]
    edits = [EDIT | {"point": p} for p in [*sql, "../../etc/passwd", "x" * 100_000]] + [
        EDIT | {"volume_m3": v} for v in ("abc", -1, [1], None)] + [
        EDIT | {"reason": "x" * 501}, EDIT | {"reason": "ab"}, EDIT | {"from": EDIT["to"]}, EDIT | {"from": "1900-01-01T00:00:00+08:00"}]
    out += [("POST", "/edits", "clerk", {"json": body}) for body in edits]
    out += [("POST", "/edits", "clerk", raw(json.dumps(EDIT)[:-1] + f', "volume_m3": {v}}}')) for v in ("NaN", "Infinity", "-Infinity", "1e400")]
    adjustments = [{"amount": a, "reason": "probe"} for a in ("1; DROP TABLE bills", [], {"$gt": 0}, "1e999", "NaN", "0.001", "1" * 20)] + [
        {"amount": "1.00", "reason": "x" * 100_000}, {"amount": "1.00"}, {"amount": "1.00", "reason": "ok!", "by": "manager"}]
    out += [("POST", f"/bills/{bill}/adjustments", "clerk", {"json": body}) for body in adjustments]
    out += [("POST", f"/runs/{run}/approve", "approver", {"json": body}) for body in ({"note": "x" * 501}, {"note": 5}, {"status": "issued"}, [1, 2])]
    posts = ["/runs", "/edits", f"/bills/{bill}/adjustments", f"/runs/{run}/approve", f"/runs/{run}/issue"]
    for url in posts:
        out += [("POST", url, "approver", raw(big_list)), ("POST", url, "approver", raw("{'not': json}")),
                ("POST", url, "approver", {"content": b'{"note": "\xff\xfe"}', "headers": {"content-type": "application/json"}})]
    for url in posts:
        out += [("POST", url, "approver", raw(huge)), ("POST", url, "approver", {"content": chunks(10_000_000), "headers": {"content-type": "application/json"}})]
    # paid takes no body (a chunked one is never read); a declared oversized one is refused before it is read
    return [*out, ("POST", f"/bills/{bill}/paid", "clerk", raw(huge))]


def test_hostile_query_and_body_values_get_a_4xx_and_change_nothing(api: Api) -> None:
    before = ledger_digest(api.db)
    for method, url, role, kwargs in hostile_requests(api):
        answer = api.client.request(method, url, **(kwargs | {"headers": AUTH[role] | kwargs.get("headers", {})}))
        shown = {k: (str(v)[:80] if k != "content" else "<bytes>") for k, v in kwargs.items()}
        assert 400 <= answer.status_code < 500, f"{method} {url[:60]} {shown}: {answer.status_code} {answer.text[:300]}"
        assert len(answer.content) < 100_000, f"{method} {url[:60]} {shown}: a {len(answer.content)}-byte error echoes the input"
    assert ledger_digest(api.db) == before
    oversized = api.client.post("/edits", content=json.dumps(EDIT | {"reason": "x" * 2_000_000}), headers=AUTH["clerk"] | {"content-type": "application/json"})
    assert oversized.status_code == 413 and "request body over" in oversized.json()["detail"]


def test_sql_text_in_free_text_fields_is_stored_verbatim(api: Api) -> None:
    """Reasons and notes are free text: SQL in them is data (bound parameters), the tables stay intact."""
    reason = "'); DROP TABLE bills; -- \" OR 1=1"
    bill = api.issued.bill_of("V02").bill_id
    made = api.client.post(f"/bills/{bill}/adjustments", json={"amount": "3.00", "reason": reason}, headers=AUTH["clerk"])
    assert made.status_code == 201
    assert api.client.post(f"/runs/{api.draft.run_id}/approve", json={"note": reason}, headers=AUTH["approver"]).status_code == 200
    pending = api.client.get("/adjustments", headers=AUTH["auditor"]).json()["items"]
    assert [a["reason"] for a in pending] == [reason]
    events = api.client.get(f"/runs/{api.draft.run_id}", headers=AUTH["auditor"]).json()["events"]
    assert events[-1]["note"] == reason
    assert api.client.get(f"/bills/{bill}", headers=AUTH["auditor"]).status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_get(port: int, target: str, token: str) -> int:
    """An HTTP request with the target sent byte for byte (clients normalise ``..`` away); its status."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
        head = conn.recv(4096).decode("latin-1")
    return int(head.split(" ", 2)[1])


def test_served_api_never_logs_a_token(tmp_path: Path) -> None:
    """`canalflow billing serve` for real: stdout, stderr and uvicorn's access log hold no token."""
    tokens = tmp_path / "tokens.yaml"
    wrong = f"wrong-{secrets.token_urlsafe(18)}"
    # a tokens file of the roles before canalflow/roles.py: viewer and manager load as auditor and admin
    tokens.write_text(f"- {{user: zhao, role: viewer, token: {SECRET['auditor']}}}\n"
                      f"- {{user: li, role: clerk, sha256: {hash_api_token(SECRET['clerk'])}}}\n"
                      f"- {{user: wang, role: manager, token: {SECRET['admin']}}}\n", encoding="utf-8")
    port = free_port()
    cmd = [sys.executable, "-m", "canalflow.cli", "billing", "serve", "--district", str(DEMO), "--tokens", str(tokens),
           "--ledger", f"sqlite:///{tmp_path}/ledger.db", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, proc)
        with httpx.Client(base_url=base, timeout=10) as http:
            for role in ("auditor", "clerk", "admin"):
                assert http.get("/runs", headers=AUTH[role]).status_code == 200
                assert http.get("/runs", params={"offset": 0, "limit": 5}, headers=AUTH[role]).status_code == 200
            assert http.post("/runs/nope/approve", headers=AUTH["admin"]).status_code == 404
            assert http.post("/runs/nope/approve", headers=AUTH["clerk"]).status_code == 403
            assert http.get("/runs", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
            assert http.get("/runs", headers={"Authorization": wrong}).status_code == 401
            assert http.get("/runs", headers={"X-Api-Key": SECRET["admin"]}).status_code == 401
            for name in ("access_token", "token"):
                assert http.get("/runs", params={"offset": 0, name: SECRET["admin"]}).status_code == 401
            assert http.get("/edits", params={"limit": 5, "access_token": wrong}, headers=AUTH["auditor"]).status_code == 200
            json_type = {"content-type": "application/json"}
            assert http.post("/edits", content=b"x" * 2_000_000, headers=AUTH["clerk"] | json_type).status_code == 413
            assert http.post("/edits", content=chunks(10_000_000), headers=AUTH["clerk"] | json_type).status_code == 413
        assert raw_get(port, "/runs/../../etc/passwd", SECRET["auditor"]) == 404
        assert raw_get(port, "/units/..%2F..%2Fetc%2Fpasswd/water-use", SECRET["auditor"]) == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    logs = out + err
    assert proc.returncode == 0, err
    assert '"GET /runs?offset=0&limit=5 HTTP/1.1" 200' in logs and '"GET /runs HTTP/1.1" 401' in logs, logs[-2000:]
    assert "access_token=***" in logs and "limit=5&access_token=***" in logs
    for secret in [*SECRET.values(), wrong]:
        assert secret not in logs, "a token was written to the server's output"


def wait_for_health(base: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"billing serve exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("billing serve did not answer /health within 30 s")
