"""The demo's web workbench: accounts, a billing round in Debian's chromium with screenshots of the main
pages into ``out/web/``, and the command that opens the workbench on the demo's ledger.

The round (approve, issue) is done on a copy of the ledger (``out/web/round.sqlite``): the demo's own
``out/ledger.db`` keeps its draft run, for a clerk to go through the round themselves
(docs/web.md). Chromium is driven by Playwright (the dev extra) with Debian's binary; Playwright's
own browser download is not used.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from canalflow.district import District

CHROMIUM = Path("/usr/bin/chromium")
DEMO_ACCOUNTS = {"li": "clerk", "wang": "approver"}  # the demo's clerk and approver (four eyes: two people)
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}


@contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    try:
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium under Playwright (``--no-sandbox``: the demo may run as root)."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/install-system-deps.sh (it installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


PAGE_TIMEOUT_MS = 60_000  # Playwright's 30 s default is short for argon2 and a billing run on a loaded 2-core machine


def new_page(browser: Any, **context: Any) -> Any:
    """A page in a new browser context (desktop size unless ``context`` says otherwise)."""
    ctx = browser.new_context(**(DESKTOP | context))
    ctx.set_default_timeout(PAGE_TIMEOUT_MS)
    return ctx.new_page()


def sign_in(browser: Any, base: str, user: str, password: str, **context: Any) -> Any:
    """A new browser context signed in as ``user``; returns its page (on the runs)."""
    page = new_page(browser, **context)
    page.goto(f"{base}/login")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    page.click("#sign-in")
    page.wait_for_url(f"{base}/runs")
    return page


def demo_accounts(web: Path) -> dict[str, str]:
    """The demo's accounts in ``web/users.yaml`` (as ``canalflow web add-user`` writes them), their passwords in
    ``web/passwords.txt`` (0600); returns user -> password."""
    from web.auth import add_user

    passwords = {user: secrets.token_urlsafe(9) for user in DEMO_ACCOUNTS}
    for user, role in DEMO_ACCOUNTS.items():
        add_user(web / "users.yaml", user, role, passwords[user])
    listing = web / "passwords.txt"
    listing.write_text("".join(f"{u} ({DEMO_ACCOUNTS[u]}): {p}\n" for u, p in passwords.items()), encoding="utf-8")
    listing.chmod(0o600)
    return passwords


def workbench_screens(district: District, influx_url: str, database: str, out: Path) -> str:
    """Accounts, the screenshots of a billing round (while InfluxDB still runs) and the command to open the
    workbench on the demo's ledger; returns the text the demo prints at its end."""
    web = out / "web"
    web.mkdir(parents=True, exist_ok=True)
    passwords = demo_accounts(web)
    ledger = (out / "ledger.db").resolve()
    shutil.copy(ledger, web / "round.sqlite")
    try:
        shots = billing_round(district, f"sqlite:///{(web / 'round.sqlite').resolve()}", influx_url, database, web, passwords)
        taken = f"{len(shots)} screenshots of the workbench in {web}/ ({', '.join(p.name for p in shots)})"
    except Exception as exc:  # the demo's bills and report stand without them; say why there are none
        taken = f"no workbench screenshots: {type(exc).__name__}: {exc}"
    return (f"\n## Web workbench\n\n{taken}\n\nOpen the workbench on the demo's ledger (its run is a draft, for you to approve and issue):\n\n"
            f"    canalflow web serve --users {web / 'users.yaml'} --ledger sqlite:///{ledger} --district {district.path}\n\n"
            f"then http://127.0.0.1:8700/ and sign in as li (clerk) or wang (approver): passwords in {web / 'passwords.txt'}.\n")


def billing_round(district: District, ledger_url: str, influx_url: str, database: str, web: Path, passwords: dict[str, str]) -> list[Path]:
    """Sign-in, runs, the run, a bill, a line explained, the VEE queue; approve and issue as the approver; the
    public notice at desktop and phone width. Returns the screenshots."""
    from playwright.sync_api import expect

    from billing.ledger import open_ledger
    from billing.service import ServiceConfig
    from web.app import WebConfig, create_app
    from web.auth import load_users
    from web.i18n import words

    ledger = open_ledger(ledger_url)
    run = ledger.runs(limit=1)[0]
    bills = [b for b in ledger.bills_of_run(run.id, limit=10_000) if b["lines"] and not b["blocked"]]
    bill = next((b for b in bills if b["unit"]["kind"] == "village"), bills[0])
    app = create_app(WebConfig(ServiceConfig(ledger_url, district.path, influx_url, database), load_users(web / "users.yaml")))
    shots: list[Path] = []

    def shot(page: Any, name: str) -> None:
        shots.append(web / f"{name}.png")
        page.screenshot(path=str(shots[-1]), full_page=True)

    with served(app) as base, chromium() as browser:
        anonymous = new_page(browser)
        anonymous.goto(f"{base}/login")
        shot(anonymous, "sign-in")
        clerk = sign_in(browser, base, "li", passwords["li"])
        shot(clerk, "runs")
        for name, path in (("run", f"/runs/{run.id}"), ("bill", f"/bills/{bill['bill_id']}"), ("explain", f"/lines/{bill['lines'][0]['id']}"), ("vee", "/vee")):
            clerk.goto(base + path)
            shot(clerk, name)
        approver = sign_in(browser, base, "wang", passwords["wang"])
        approver.goto(f"{base}/runs/{run.id}")
        approver.click("#approve button")
        approver.click("#issue button")
        with suppress(AssertionError):  # the issued page, not the one before the post (checked below)
            expect(approver.locator("#status")).to_have_text(words("zh")["issued"])
        if ledger.run(run.id).status != "issued":
            raise RuntimeError(f"the run was not issued: {approver.inner_text('main')[:300]}")
        shot(approver, "run-issued")
        anonymous.goto(f"{base}/public/{run.id}")
        shot(anonymous, "public")
        phone = new_page(browser, **PHONE)
        phone.goto(f"{base}/public/{run.id}")
        shot(phone, "public-phone")
    return shots
