"""One role model (canalflow/roles.py): the same person with the same role is allowed and refused the same
actions by the web workbench and by the billing API, and four eyes is the ledger's refusal in both."""

from __future__ import annotations

import re
from pathlib import Path

from billing_synth import fixed_run
from fastapi.testclient import TestClient
from web_accounts import ACCOUNTS, password

from billing.api import ApiConfig, load_tokens
from billing.api import create_app as create_api
from billing.ledger import open_ledger
from canalflow.credentials import API_TOKENS_FILE, generate_api_tokens, secret_file
from canalflow.district import District
from web.app import WebConfig, create_app

# What each account may do here, written out (not derived from canalflow/roles.py, so that a change of it shows).
ALLOWED = {"li": {"adjust", "edit"}, "wang": {"approve"}, "chen": {"approve"}, "zhou": set(), "zhang": {"adjust", "edit", "approve"}}
EDIT = {"point": "V01-IN", "from": "2026-03-12T00:00", "to": "2026-03-13T00:00", "volume_m3": "10", "reason": "gate log"}


def web_client(app: object, user: str) -> TestClient:
    client = TestClient(app)
    form = client.get("/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    assert client.post("/login", data={"csrf": token, "user": user, "password": password(user)}, follow_redirects=False).status_code == 303
    return client


def web_post(client: TestClient, url: str, **fields: str) -> int:
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/runs").text).group(1)  # type: ignore[union-attr]
    return client.post(url, data={"csrf": token, **fields}, follow_redirects=False).status_code


def api_tokens(tmp_path: Path) -> tuple[dict, dict[str, dict[str, str]]]:
    """Tokens made as an operator makes them (``canalflow credentials --api-user``), for the web's accounts."""
    generate_api_tokens(tmp_path / "cred", sorted(ACCOUNTS.items()))
    headers = {u: {"Authorization": f"Bearer {secret_file(tmp_path / 'cred', f'api-{u}').read_text().strip()}"} for u in ACCOUNTS}
    return load_tokens(tmp_path / "cred" / API_TOKENS_FILE), headers


def test_web_and_api_allow_and_refuse_the_same(config: WebConfig, district: District, tmp_path: Path) -> None:
    run = fixed_run(district, day=3)
    open_ledger(config.service.ledger_url).record_run(run, user="zhang")
    bill = run.bill_of("V01").bill_id
    web = create_app(config)
    tokens, headers = api_tokens(tmp_path)
    api = TestClient(create_api(ApiConfig(config.service, tokens)))
    answers: dict[str, dict[str, tuple[bool, bool]]] = {}
    for user in ACCOUNTS:
        client = web_client(web, user)
        by_web = {"adjust": web_post(client, f"/bills/{bill}/adjustments", amount="1.00", reason="meter over-read"),
                  "edit": web_post(client, "/vee/edits", **EDIT),
                  "approve": web_post(client, "/runs/nope/approve")}  # an unknown run: 404 once the role may
        by_api = {"adjust": api.post(f"/bills/{bill}/adjustments", json={"amount": "1.00", "reason": "meter over-read"}, headers=headers[user]).status_code,
                  "edit": api.post("/edits", json=EDIT | {"from": "2026-03-12T00:00+08:00", "to": "2026-03-13T00:00+08:00", "volume_m3": 10},
                                   headers=headers[user]).status_code,
                  "approve": api.post("/runs/nope/approve", headers=headers[user]).status_code}
        answers[user] = {action: (by_web[action] != 403, by_api[action] != 403) for action in by_web}
    assert answers == {u: {a: (a in ALLOWED[u],) * 2 for a in ("adjust", "edit", "approve")} for u in ACCOUNTS}


def test_four_eyes_is_the_ledgers_refusal_in_both(config: WebConfig, district: District, tmp_path: Path) -> None:
    run = fixed_run(district, day=4)
    ledger = open_ledger(config.service.ledger_url)
    ledger.record_run(run, user="zhang")
    tokens, headers = api_tokens(tmp_path)
    api = TestClient(create_api(ApiConfig(config.service, tokens)))
    refused = api.post(f"/runs/{run.run_id}/approve", headers=headers["zhang"])
    assert refused.status_code == 403 and "four eyes" in refused.json()["detail"]
    web = web_client(create_app(config), "zhang")
    token = re.search(r'name="csrf" value="([^"]+)"', web.get(f"/runs/{run.run_id}").text).group(1)  # type: ignore[union-attr]
    page = web.post(f"/runs/{run.run_id}/approve", data={"csrf": token})
    assert page.status_code == 403 and "审核须由另一人完成" in page.text
    web.cookies.set("lang", "en")
    page = web.post(f"/runs/{run.run_id}/approve", data={"csrf": token})
    assert page.status_code == 403 and "another approver must" in page.text
    assert ledger.run(run.run_id).status == "draft"
    assert api.post(f"/runs/{run.run_id}/approve", headers=headers["chen"]).json()["status"] == "approved"
