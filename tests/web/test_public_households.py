"""Household names on the public notice only where the district file enables them (``public_household_names``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from billing_synth import issued
from fastapi.testclient import TestClient
from grid_layouts import write_grid
from test_grid import G1, run_of

from billing.ledger import open_ledger
from billing.service import ServiceConfig
from canalflow.cli import main
from canalflow.district import load_district
from web.app import WebConfig, create_app

HOUSEHOLDS = ("王大户", "王二户")  # G1-B1's households in the grid layout


def public_notice(tmp_path: Path, district_path: Path) -> tuple[str, str, dict[str, str]]:
    """The issued run's public page, G1-B1's A4 notice as text, and G1-B1's households' totals, from a workbench on ``district_path``."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    run = issued(open_ledger(url), run_of(load_district(district_path), G1))
    client = TestClient(create_app(WebConfig(ServiceConfig(url, district_path), {})))
    page = client.get(f"/public/{run.run_id}")
    pdf = client.get(f"/public/{run.run_id}/G1-B1/notice.pdf")
    assert page.status_code == 200 and pdf.status_code == 200
    (tmp_path / "notice.pdf").write_bytes(pdf.content)
    text = subprocess.run(["pdftotext", str(tmp_path / "notice.pdf"), "-"], check=True, capture_output=True, text=True).stdout
    return page.text, text, {s.unit_name: str(s.total) for s in run.statements if s.parent_id == "G1-B1"}


def test_by_default_no_household_reaches_the_public_notice(tmp_path: Path) -> None:
    page, pdf, _ = public_notice(tmp_path, write_grid(tmp_path))
    assert "王家村一组" in page  # the block's own bill is public
    for name in HOUSEHOLDS:
        assert name not in page and name not in pdf
    assert "G1-B1-H1" not in page


def test_a_district_that_enables_names_shows_each_household_and_its_share(tmp_path: Path) -> None:
    path = write_grid(tmp_path, ("  locale: zh\n", "  locale: zh\n  public_household_names: true\n"))
    page, pdf, totals = public_notice(tmp_path, path)
    assert sorted(totals) == sorted(HOUSEHOLDS)
    for name, total in totals.items():
        assert name in page and name in pdf
        assert f">{total}<" in page and total in pdf  # the statement's total, as the block's bill lists it


@pytest.mark.parametrize("value", ["maybe", "1", '"yes"'])
def test_district_check_refuses_anything_but_true_or_false(tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_grid(tmp_path, ("  locale: zh\n", f"  locale: zh\n  public_household_names: {value}\n"))
    assert main(["district", "check", str(path)]) == 1
    assert f"{path}:16: error" in (err := capsys.readouterr().err) and "public_household_names" in err
