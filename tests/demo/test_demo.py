"""`canalflow demo`, as a person runs it: its efficiency figures against the simulator's truth.

The demo polls the demo district for a simulated day of round S1 on which its typical plots take
their turn, so the report has one canal-system figure, the field coefficient measured from the
plots' soil moisture and inlet meters (fleet -> edge -> Mosquitto -> ingest -> InfluxDB -> billing)
and the head-tail figure, each beside the truth: canal system within 1 %, field (per plot and
district) and whole district within 2 % (issue 15's numbers).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from canalflow.district import load_district
from firmware_sim.truth import Truth
from testbed.pipeline import run_canalflow
from testbed.report import field_truth

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-district.yaml"
pytestmark = [pytest.mark.slow, pytest.mark.e2e]  # runs `canalflow demo` whole (~3 min): `make e2e`, not CI


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    run_canalflow("demo", "--out", str(out))  # as a person runs it: the defaults
    efficiency = json.loads((out / "efficiency.json").read_text(encoding="utf-8"))
    district = load_district(DEMO)
    t0, t1 = efficiency["window"]["t0_ms"], efficiency["window"]["t1_ms"]
    return out, efficiency, district, Truth(district, seed=1), (t0, t1)


def test_canal_system_figure_within_1_percent_of_truth(demo):
    _, efficiency, _, truth, (t0, t1) = demo
    official = efficiency["canal_system"]
    assert official["method"] == "official" and official["definition"]
    assert official["value"] == pytest.approx(truth.system_balance(t0, t1).eta, rel=0.01)


def test_field_coefficient_measured_on_every_plot_within_2_percent_of_truth(demo):
    _, efficiency, district, truth, _ = demo
    field = efficiency["field"]
    assert field["method"] == "typical_plots" and field["value"] is not None, field["note"]
    plots = {p["plot"]: p for p in efficiency["plots"]}
    assert set(plots) == set(district.plots)
    for plot_id, irrigations in truth.rootzone.irrigations.items():
        [turn] = [i for i in irrigations if i.observed.day.isoformat() == "2026-03-12"]  # round S1's plot turn
        assert plots[plot_id]["irrigations"] == 1
        assert plots[plot_id]["eta"] == pytest.approx(turn.eta, rel=0.02), plot_id
    assert min(p["eta"] for p in plots.values()) < 0.8  # the shallow cotton plot loses water below its root zone
    assert field["value"] == pytest.approx(field_truth(district, truth, *demo[4]).field, rel=0.02)
    units = efficiency["field_units"]
    assert set(units) == {u.id for u in district.spec.units if u.crops} and all(u["value"] is not None for u in units.values())  # V15, its blocks: their entities' crops


def test_head_tail_figure_within_2_percent_of_truth(demo):
    _, efficiency, district, truth, window = demo
    head_tail = efficiency["whole"]["head_tail"]
    assert head_tail["value"] is not None, head_tail["note"]
    assert head_tail["value"] == pytest.approx(field_truth(district, truth, *window).head_tail, rel=0.02)
    assert "net depths measured on plots for cotton, maize, vegetables, wheat" in head_tail["note"]


def test_report_prints_each_figure_beside_its_truth(demo):
    out, efficiency, *_ = demo
    report = (out / "report.md").read_text(encoding="utf-8")
    section = report.split("## Efficiency against ground truth", 1)[1].split("\n## ", 1)[0]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in section.splitlines() if line.startswith("| ")}
    for label, fig in (("canal system", efficiency["canal_system"]), ("field", efficiency["field"]),
                       ("whole district (head-tail)", efficiency["whole"]["head_tail"])):
        assert rows[label][1] == f"{fig['value']:.3f}" and float(rows[label][2]) > 0, rows[label]
    assert "| P-V09-COTTON | 1 |" in section
