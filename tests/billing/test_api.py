"""The billing HTTP API: roles on every route, lifecycle, adjustments, pagination, validation."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from billing_synth import DEMO, MIN, Meter, write_meter
from fastapi.testclient import TestClient

from billing.api import ApiConfig, Principal, ServiceConfig, TokenFileError, create_app, load_tokens
from billing.bills import build_run
from billing.ledger import open_ledger
from billing.volumes import PointVolume, charging_points
from billing.window import season_window
from canalflow.credentials import hash_api_token as hash_token
from canalflow.volume import VolumeResult
from testbed.steady import steady_share

TOKENS = {hash_token(t): Principal(u, r) for t, u, r in (("a-token", "zhao", "auditor"), ("c-token", "li", "clerk"), ("p-token", "wang", "approver"))}
H = {role: {"Authorization": f"Bearer {t}-token"} for t, role in (("a", "auditor"), ("c", "clerk"), ("p", "approver"))}


def recorded_run(demo, url):
    t0, t1 = season_window(demo, demo.seasons["2026-spring"])
    steady = steady_share(demo, 250_000.0)
    volumes = {p: PointVolume(p, VolumeResult(steady[p], 1.0, 0.0, "flow", [], False, 99)) for p in charging_points(demo)}
    run = build_run(demo, volumes, t0, t1, season=demo.seasons["2026-spring"], as_of_ms=t1)
    open_ledger(url).record_run(run)
    return run


@pytest.fixture
def api(demo, ledger_url):
    run = recorded_run(demo, ledger_url)
    return TestClient(create_app(ApiConfig(ServiceConfig(ledger_url, DEMO), TOKENS))), run


def test_every_route_needs_a_token_and_the_right_role(api):
    client, run = api
    bill = run.bill_of("V01").bill_id
    reads = ["/runs", f"/runs/{run.run_id}", f"/runs/{run.run_id}/bills", f"/bills/{bill}", f"/lines/{bill}-L1/explain", "/adjustments", "/units/V01/water-use", "/edits"]
    for path in reads:
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
        assert client.get(path, headers=H["auditor"]).status_code == 200, path
    edit = {"point": "V01-IN", "from": "2026-03-12T00:00:00+08:00", "to": "2026-03-13T00:00:00+08:00", "volume_m3": 100, "reason": "gate log"}
    writes = [(f"/runs/{run.run_id}/approve", "approver", {}), (f"/bills/{bill}/adjustments", "clerk", {"amount": "1.00", "reason": "test"}),
              ("/runs", "clerk", {"season": "2026-spring"}), ("/edits", "clerk", edit)]
    for path, needed, body in writes:
        assert client.post(path, json=body).status_code == 401, path
        assert client.post(path, json=body, headers=H["auditor"]).status_code == 403, path
        if needed == "approver":
            answer = client.post(path, json=body, headers=H["clerk"])
            assert answer.status_code == 403 and "needs the approver or admin role" in answer.json()["detail"]
        else:
            answer = client.post(path, json=body, headers=H["approver"])
            assert answer.status_code == 403 and "needs the clerk or admin role" in answer.json()["detail"]
    made = client.post("/edits", json=edit, headers=H["clerk"])
    assert made.status_code == 201 and client.get("/edits", headers=H["auditor"]).json()["items"][0]["by"] == "li"
    assert client.post("/edits", json=edit | {"point": "NOPE"}, headers=H["clerk"]).status_code == 422
    assert client.get("/health").status_code == 200
    assert "/runs/{run_id}/approve" in client.get("/openapi.json").json()["paths"]


def test_lifecycle_and_adjustments_over_http(api):
    client, run = api
    bill = run.bill_of("V03").bill_id
    early = client.post(f"/bills/{bill}/adjustments", json={"amount": "-10.00", "reason": "over-read"}, headers=H["clerk"])
    assert early.status_code == 409 and "rerun the draft" in early.json()["detail"]
    assert client.post(f"/runs/{run.run_id}/issue", headers=H["approver"]).status_code == 409
    assert client.post(f"/runs/{run.run_id[:12]}/approve", json={"note": "checked"}, headers=H["approver"]).json()["status"] == "approved"
    assert client.post(f"/runs/{run.run_id[:12]}/issue", headers=H["approver"]).json()["status"] == "issued"
    made = client.post(f"/bills/{bill}/adjustments", json={"amount": "-10.00", "reason": "meter over-read"}, headers=H["clerk"])
    assert made.status_code == 201 and made.json()["by"] == "li"
    pending = client.get("/adjustments", headers=H["auditor"]).json()
    assert pending["total"] == 1 and pending["items"][0]["amount"] == "-10.00"
    events = client.get(f"/runs/{run.run_id}", headers=H["auditor"]).json()["events"]
    assert [(e["action"], e["user"]) for e in events] == [("created", "system"), ("approved", "wang"), ("issued", "wang"), ("adjustment", "li")]
    assert client.get("/units/V03/water-use", headers=H["auditor"]).json()["items"][0]["bill_id"] == bill


def test_pagination_and_clear_4xx(api):
    client, run = api
    first = client.get(f"/runs/{run.run_id}/bills?offset=0&limit=5", headers=H["auditor"]).json()
    rest = client.get(f"/runs/{run.run_id}/bills?offset=5&limit=500", headers=H["auditor"]).json()
    assert first["total"] == rest["total"] == 18 and len(first["items"]) == 5 and len(rest["items"]) == 13  # 14 units + V15's blocks and metered household
    assert {b["unit"]["id"] for b in first["items"] + rest["items"]} == set(run.unit_volumes)
    assert client.get("/runs?limit=501", headers=H["auditor"]).status_code == 422
    assert client.get("/runs/ffffffff", headers=H["auditor"]).status_code == 404
    assert client.get("/bills/nope", headers=H["auditor"]).status_code == 404
    bad = client.post("/runs", json={"season": "2026-spring", "from": "2026-03-01T00:00:00+08:00"}, headers=H["clerk"])
    assert bad.status_code == 422 and "either season" in bad.text
    naive = client.post("/runs", json={"from": "2026-03-01T00:00:00", "to": "2026-03-02T00:00:00+08:00"}, headers=H["clerk"])
    assert naive.status_code == 422 and "time zone" in naive.text
    money = client.post(f"/bills/{run.bill_of('V01').bill_id}/adjustments", json={"amount": "1.001", "reason": "x y z"}, headers=H["clerk"])
    assert money.status_code == 422


def test_token_file(tmp_path):
    path = tmp_path / "tokens.yaml"
    path.write_text(f"- {{user: li, role: clerk, sha256: {hash_token('s3cret')}}}\n- {{user: dev, role: approver, token: devtoken}}\n", encoding="utf-8")
    tokens = load_tokens(path)
    assert tokens[hash_token("s3cret")] == Principal("li", "clerk") and tokens[hash_token("devtoken")].role == "approver"
    path.write_text("- {role: admin, token: x}\n", encoding="utf-8")
    with pytest.raises(TokenFileError, match="entry 1: needs user and role"):
        load_tokens(path)
    path.write_text("- {user: li, role: clerk, token: x}\n- {user: boss, role: boss, token: y}\n", encoding="utf-8")
    with pytest.raises(TokenFileError, match=r"tokens.yaml: entry 2: role 'boss' is not one of auditor, clerk, approver, admin"):
        load_tokens(path)


def test_a_token_file_of_the_old_roles_still_loads_mapped(demo, ledger_url, tmp_path, caplog):
    """viewer and manager (the API's roles before the workbench's) load as auditor and admin, with a warning naming the entry."""
    run = recorded_run(demo, ledger_url)
    path = tmp_path / "tokens.yaml"
    path.write_text("- {user: zhao, role: viewer, token: old-v}\n- {user: wang, role: manager, token: old-m}\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        tokens = load_tokens(path)
    assert sorted(p.role for p in tokens.values()) == ["admin", "auditor"]
    assert f"{path}: entry 2: role manager is now admin; write role: admin there" in caplog.text
    client = TestClient(create_app(ApiConfig(ServiceConfig(ledger_url, DEMO), tokens)))
    viewer, manager = ({"Authorization": f"Bearer {t}"} for t in ("old-v", "old-m"))
    assert client.get("/runs", headers=viewer).status_code == 200
    assert client.post(f"/runs/{run.run_id}/approve", headers=viewer).status_code == 403
    assert client.post(f"/runs/{run.run_id}/approve", headers=manager).json()["status"] == "approved"  # as a manager could


def test_served_for_real_starts_a_run_and_stops_on_sigterm(influx, demo, tmp_path):
    """`canalflow billing serve` as deployed: uvicorn on a port, a clerk starts a run from InfluxDB."""
    t0 = season_window(demo, demo.seasons["2026-spring"])[0] + 10 * 24 * 60 * MIN
    for point, flow in steady_share(demo, 0.1).items():
        write_meter(influx, demo, point, Meter(flow, swing=0.0), t0 - 60 * MIN, t0 + 25 * 60 * MIN, step_ms=15 * MIN)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("- {user: li, role: clerk, token: c-token}\n", encoding="utf-8")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "canalflow.cli", "billing", "serve", "--district", str(DEMO), "--tokens", str(tokens),
           "--ledger", f"sqlite:///{tmp_path}/api/ledger.db", "--influx", influx.url, "--db", influx.database, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"from": "2026-03-11T00:00:00+08:00", "to": "2026-03-12T00:00:00+08:00"}
        made = httpx.post(f"{base}/runs", json=body, headers=H["clerk"], timeout=60)
        assert made.status_code == 201, made.text
        volumes = {b["unit"]: float(b["volume_m3"]) for b in made.json()["bills"]}
        assert volumes["V01"] == pytest.approx(0.1 * 86_400, abs=1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "billing API on" in err and os.path.exists(tmp_path / "api" / "ledger.db")
