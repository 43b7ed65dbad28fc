"""Bill notes in the reader's language and no 0.00 credit lines: the bill page, its PDF, the public
notice and its PDF, for a round an operator runs in the workbench (a real ledger and InfluxDB).

The clerk records two volumes from the gate logs (VEE edits): V01 one cubic metre short of its
quota for the window, so its cash crops earn a reward of less than half a fen (a 0.00 line), and
V02 far over its quota, so its subsidy and reward are refused.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_web_app import post, sign_in, start_run
from web_accounts import local

from web.app import WebConfig, create_app


def bill_of(client: TestClient, run_id: str, unit: str) -> dict[str, Any]:
    return next(b for b in client.app.state.ledger.bills_of_run(run_id, limit=100) if b["unit"]["id"] == unit)


def pdf_text(content: bytes, path: Path) -> str:
    path.write_bytes(content)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True).stdout


def squeezed(text: str) -> str:
    """Text without white space: a PDF wraps a long note where it likes."""
    return "".join(text.split())


def first_words(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines() if line.split()]


@dataclass(frozen=True)
class Round:
    app: Any
    run_id: str
    v01: dict[str, Any]
    v02: dict[str, Any]
    zero: dict[str, Any]  # V01's reward line of 0.00
    over: str  # V02's note as stored
    over_zh: str  # and as a Chinese reader sees it

    def client(self, user: str | None = None) -> TestClient:
        client = TestClient(self.app)
        if user:
            sign_in(client, user)
        return client


@pytest.fixture
def issued(config: WebConfig, day: tuple[int, int]) -> Round:
    """The round: a first run, the clerk's two edits, the run again, approved and issued by another."""
    app = create_app(config)
    admin, approver = TestClient(app), TestClient(app)
    sign_in(admin, "zhang")
    sign_in(approver, "wang")
    first = start_run(admin, day)
    quota = Decimal(bill_of(admin, first, "V01")["quota_m3"])
    for point, volume in (("V01-IN", math.ceil(quota) - 1), ("V02-IN", 99_999)):
        answer = post(admin, "/vee/edits", "/vee", point=point, **{"from": local(day[0]), "to": local(day[1])}, volume_m3=str(volume), reason="gate log")
        assert answer.status_code == 303, answer.text
    run_id = start_run(admin, day)
    for step in ("approve", "issue"):
        assert post(approver, f"/runs/{run_id}/{step}", f"/runs/{run_id}").status_code == 303
    v01, v02 = bill_of(admin, run_id, "V01"), bill_of(admin, run_id, "V02")
    # the stored bills keep every line and the English notes
    [zero] = [ln for ln in v01["lines"] if ln["kind"] == "reward" and Decimal(ln["amount"]) == 0]
    assert any(ln["kind"] == "reward" and Decimal(ln["amount"]) != 0 for ln in v01["lines"])
    over = f"use {v02['volume_m3']} m3 exceeds quota {v02['quota_m3']} m3: subsidy and reward refused"
    assert over in v02["notes"] and not any(ln["kind"] in ("subsidy", "reward") for ln in v02["lines"])
    over_zh = f"用水量 {v02['volume_m3']} m³ 超过定额 {v02['quota_m3']} m³：不享受精准补贴和节水奖励"
    return Round(app, run_id, v01, v02, zero, over, over_zh)


def test_the_bill_page_shows_notes_in_chinese_and_no_zero_reward_line(issued: Round) -> None:
    clerk = issued.client("li")
    page = clerk.get(f"/bills/{issued.v02['bill_id']}").text
    assert issued.over_zh in page and issued.over not in page
    page = clerk.get(f"/bills/{issued.v01['bill_id']}").text
    assert f"/lines/{issued.zero['id']}\"" not in page
    assert all(f"/lines/{ln['id']}\"" in page for ln in issued.v01["lines"] if ln != issued.zero)
    explained = clerk.get(f"/lines/{issued.zero['id']}").text  # the line is still there to explain
    assert issued.zero["id"] in explained and "定额内节约用水" in explained and "water saved below quota" not in explained
    english = issued.client("zhou")
    english.get("/lang/en")
    assert issued.over in english.get(f"/bills/{issued.v02['bill_id']}").text  # in English: as stored


def test_the_printed_bill_shows_notes_in_chinese_and_no_zero_reward_line(issued: Round, tmp_path: Path) -> None:
    clerk = issued.client("li")
    text = pdf_text(clerk.get(f"/bills/{issued.v02['bill_id']}/bill.pdf").content, tmp_path / "v02.pdf")
    assert squeezed(issued.over_zh) in squeezed(text) and "exceeds quota" not in text
    text = pdf_text(clerk.get(f"/bills/{issued.v01['bill_id']}/bill.pdf").content, tmp_path / "v01.pdf")
    labels = {ln["id"].rsplit("-", 1)[1] for ln in issued.v01["lines"]}
    assert set(first_words(text)) & labels == labels - {issued.zero["id"].rsplit("-", 1)[1]}


def test_the_public_notice_shows_no_zero_credits_and_the_reason_in_chinese(issued: Round) -> None:
    notice = issued.client().get(f"/public/{issued.run_id}").text
    row = re.search(rf'<tr><td><a href="/public/{issued.run_id}/V02">.*?</tr>', notice, re.S)
    assert row, notice
    volume, quota, charge, subsidy, reward, adjustment = re.findall(r'<td class="num">([^<]*)</td>', row.group(0))
    assert (volume, quota) == (issued.v02["volume_m3"], issued.v02["quota_m3"]) and Decimal(charge) > 0
    assert (subsidy, reward, adjustment) == ("", "", "")
    assert issued.over_zh in notice and issued.over not in notice


def test_the_printed_notice_shows_no_zero_credits_and_the_reason_in_chinese(issued: Round, tmp_path: Path) -> None:
    public = issued.client()
    printed = pdf_text(public.get(f"/public/{issued.run_id}/V02/notice.pdf").content, tmp_path / "v02.pdf")
    assert squeezed(issued.over_zh) in squeezed(printed) and "exceeds quota" not in printed
    assert not {"精准补贴", "节水奖励"} & set(first_words(printed))
    printed = pdf_text(public.get(f"/public/{issued.run_id}/V01/notice.pdf").content, tmp_path / "v01.pdf")
    assert {"精准补贴", "节水奖励"} <= set(first_words(printed))  # V01 gets both
