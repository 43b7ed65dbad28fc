"""The workbench in a real browser: Debian's chromium driven by Playwright, against the app served by uvicorn
on a loopback port, over a real ledger and a real InfluxDB with readings.

Screenshots go to ``$CANALFLOW_WEB_SCREENSHOTS`` (default: the test's tmp dir); Chinese must render
in them (fonts-wqy-zenhei, installed by scripts/install-system-deps.sh).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from web_accounts import HOSTILE, local, password

from testbed.screens import CHROMIUM, chromium, new_page, served, sign_in
from web.app import WebConfig, create_app


@pytest.fixture
def server(config: WebConfig) -> Iterator[tuple[str, Any]]:
    """The workbench served by uvicorn on a free loopback port; yields (base URL, the app)."""
    app = create_app(config)
    with served(app) as base:
        yield base, app


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-system-deps.sh (it installs Debian's chromium)")
    with chromium() as browser:
        yield browser


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("CANALFLOW_WEB_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


def signed_in(browser: Any, base: str, user: str, **context: Any) -> Any:
    return sign_in(browser, base, user, password(user), **context)


def start_run(page: Any, base: str, window: tuple[int, int]) -> str:
    page.fill("#start-run input[name=from]", local(window[0]))
    page.fill("#start-run input[name=to]", local(window[1]))
    page.click("#start-run button")
    page.wait_for_url(f"{base}/runs/*", timeout=120_000)
    return page.url.rsplit("/", 1)[1]


def test_a_billing_round_in_the_browser(server: tuple[str, Any], browser: Any, day: tuple[int, int], shots: Path) -> None:
    base, app = server
    anonymous = new_page(browser)
    for url in ("/runs", "/vee", "/audit"):
        anonymous.goto(base + url)
        assert "/login" in anonymous.url, url
    clerk = signed_in(browser, base, "li")
    clerk.screenshot(path=str(shots / "runs.png"), full_page=True)
    run_id = start_run(clerk, base, day)
    # the run: bills per township, the hostile unit name shown as text, no script run
    assert clerk.inner_text("#status") == "草稿"
    assert "朝城镇" in clerk.content()
    assert clerk.get_by_text(HOSTILE).count() == 1 and clerk.title() != "pwned"
    assert clerk.locator("#approve").count() == 0  # a clerk is offered no approval
    clerk.screenshot(path=str(shots / "run.png"), full_page=True)
    clerk.set_viewport_size({"width": 390, "height": 844})
    assert clerk.evaluate("document.documentElement.scrollWidth") <= 390, "the run page scrolls sideways at phone width"
    clerk.screenshot(path=str(shots / "run-phone.png"), full_page=True)
    clerk.set_viewport_size({"width": 1280, "height": 800})
    bills = app.state.ledger.bills_of_run(run_id, limit=100)
    v02 = next(b for b in bills if b["unit"]["id"] == "V02")
    clerk.click(f"a[href='/bills/{v02['bill_id']}']")
    assert clerk.inner_text("#bill-total") == v02["total"]
    clerk.screenshot(path=str(shots / "bill.png"), full_page=True)
    clerk.click(f"a[href='/lines/{v02['bill_id']}-L1']")
    assert "rounded half up" in clerk.inner_text("#arithmetic")
    assert "V02-IN" in clerk.inner_text("#points")
    clerk.screenshot(path=str(shots / "explain.png"), full_page=True)
    # a clerk's own approval, posted with the clerk's own session and token, is refused
    token = clerk.locator("#sign-out").locator("xpath=..").locator("input[name=csrf]").get_attribute("value")
    refused = clerk.request.post(f"{base}/runs/{run_id}/approve", form={"csrf": token, "note": "mine"})
    assert refused.status == 403 and app.state.ledger.run(run_id).status == "draft"
    # drafts never reach the public page
    anonymous.goto(f"{base}/public")
    assert anonymous.locator(f"a[href='/public/{run_id}']").count() == 0
    assert anonymous.goto(f"{base}/public/{run_id}").status == 404
    # a second person approves and issues
    approver = signed_in(browser, base, "wang")
    approver.goto(f"{base}/runs/{run_id}")
    approver.fill("#approve input[name=note]", "核对无误")
    approver.click("#approve button")
    expect(approver.locator("#status")).to_have_text("已审核")  # the run page after the post, not the one before it
    assert anonymous.goto(f"{base}/public/{run_id}").status == 404
    approver.click("#issue button")
    expect(approver.locator("#status")).to_have_text("已出具")
    # the public page shows the issued numbers, at phone width too
    phone = new_page(browser, viewport={"width": 390, "height": 844})
    phone.goto(f"{base}/public")
    phone.click(f"a[href='/public/{run_id}']")
    shown = phone.locator("td.total").all_inner_texts()
    assert sorted(shown) == sorted(b["total"] for b in bills if not b["blocked"])
    assert sum(Decimal(x) for x in shown) > 0
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways at phone width"
    assert phone.get_by_text(HOSTILE).count() == 1 and phone.title() != "pwned"
    phone.screenshot(path=str(shots / "public-phone.png"), full_page=True)
    phone.click("#lang")  # a redirect back to this page: wait for the English one (content() mid-way was '')
    expect(phone.locator("body")).to_contain_text("Township")
    phone.screenshot(path=str(shots / "public-en.png"), full_page=True)


def test_four_eyes_and_csrf_in_the_browser(server: tuple[str, Any], browser: Any, day: tuple[int, int], shots: Path) -> None:
    base, app = server
    admin = signed_in(browser, base, "zhang")
    run_id = start_run(admin, base, day)
    assert "另一人" in admin.inner_text("#approve")  # the warning is shown to the creator
    admin.click("#approve button")
    assert "另一人" in admin.inner_text("#message")
    assert app.state.ledger.run(run_id).status == "draft"
    admin.screenshot(path=str(shots / "four-eyes.png"), full_page=True)
    # the same form without its CSRF token is refused
    approver = signed_in(browser, base, "chen")
    approver.goto(f"{base}/runs/{run_id}")
    approver.evaluate("document.querySelector('#approve input[name=csrf]').remove()")
    approver.click("#approve button")
    assert "表单已过期" in approver.inner_text("#message")
    assert app.state.ledger.run(run_id).status == "draft"
    approver.goto(f"{base}/runs/{run_id}")
    approver.click("#approve button")  # with it, a second person may
    expect(approver.locator("#status")).to_have_text("已审核")
