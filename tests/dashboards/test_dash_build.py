"""Dashboard JSON shape, provisioning files and alert settings, without a server."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.models.dashboard import Dashboard

from canalflow.cli import main as canalflow
from canalflow.contract import M
from canalflow.district import load_district
from dashboards.alerts import AlertSettingsError, load_alert_settings
from dashboards.build import DATASOURCE_UID, build_dashboards
from dashboards.influxql import InfluxQLQuery
from dashboards.layout import schematic_places
from dashboards.texts import Texts, TextsError, load_texts
from dashboards.validate import round_trip, validate_dashboard

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-district.yaml"
TODAY = dt.date(2026, 4, 15)


@pytest.fixture(scope="module")
def boards() -> dict[str, dict]:
    return build_dashboards(load_district(DEMO), "en", today=TODAY)


def test_every_dashboard_round_trips_through_the_sdk_models(boards: dict[str, dict]) -> None:
    for kind, board in boards.items():
        assert validate_dashboard(board) == [], kind
        assert round_trip(board) == board
        decoded = Dashboard.from_json(board)
        targets = [t for p in decoded.panels or [] for t in getattr(p, "targets", None) or []]
        assert targets and all(isinstance(t, InfluxQLQuery) for t in targets)


def test_validation_catches_broken_dashboards(boards: dict[str, dict]) -> None:
    board = json.loads(json.dumps(boards["network"]))
    board["panels"][1]["id"] = board["panels"][0]["id"]
    board["panels"][2]["gridPos"]["x"] = 20
    board["panels"][3]["targets"][0]["query"] += " AND $township"
    board["panels"][4]["targets"][0]["datasource"] = {"type": "prometheus", "uid": "other"}
    problems = "\n".join(validate_dashboard(board))
    assert "duplicate panel id" in problems
    assert "does not fit the 24-column grid" in problems
    assert "$township, which is neither" in problems
    assert "another datasource" in problems


def test_queries_use_only_contract_measurements_and_our_datasource(boards: dict[str, dict]) -> None:
    known = {v for k, v in vars(M).items() if not k.startswith("_")}
    for board in boards.values():
        for panel in board["panels"]:
            for target in panel.get("targets") or []:
                assert target["datasource"]["uid"] == DATASOURCE_UID
                for name in re.findall(r'FROM (?:"\w+"\.)?"(\w+)"', target["query"]):
                    assert name in known, target["query"]


def test_thresholds_come_from_the_district_file(boards: dict[str, dict]) -> None:
    eta = next(p for p in boards["overview"]["panels"] if "η (target" in p["title"])
    steps = eta["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 0.70] and eta["fieldConfig"]["defaults"]["unit"] == "percentunit"
    share = next(p for p in boards["billing"]["panels"] if p["title"] == "Use against quota")
    assert [s["value"] for s in share["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 1.0, 1.2]  # tariff bands
    ratio = next(p for p in boards["network"]["panels"] if p["title"].startswith("Loss / expected"))
    assert ratio["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 2.0  # loss_anomaly_factor


def test_each_typical_plot_shows_its_soil_moisture_against_wilting_point_and_field_capacity(boards: dict[str, dict]) -> None:
    district = load_district(DEMO)
    panels = {p["title"]: p for p in boards["overview"]["panels"] if p["title"].startswith("Soil moisture of typical plot")}
    assert len(panels) == len(district.spec.plots) == 4
    for plot in district.spec.plots:
        [panel] = [p for t, p in panels.items() if f" {plot.id} " in t]
        assert f"wilting point {plot.wilting_point:.0%}, field capacity {plot.field_capacity:.0%}" in panel["title"]
        steps = [(s["value"], s["color"]) for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]
        assert steps == [(None, "red"), (plot.wilting_point, "green"), (plot.field_capacity, "blue")]
        query = panel["targets"][0]["query"]
        assert f"~ /^({plot.station})$/" in query and all(f'"vwc_{d}cm"' in query for d in plot.depths_cm if d <= plot.wetting_depth_m * 100)
    assert any(p["title"].startswith("Field coefficient η_f per unit") for p in boards["overview"]["panels"])


def test_template_variables_and_season_default(boards: dict[str, dict]) -> None:
    names = {kind: [v["name"] for v in b["templating"]["list"]] for kind, b in boards.items()}
    assert names == {"overview": ["district", "season"], "network": ["district", "canal"],
                     "billing": ["district", "township", "unit"], "health": ["district", "canal"]}
    season = boards["overview"]["templating"]["list"][1]
    assert season["current"]["text"] == "2026-spring"  # the season that holds TODAY


def test_chinese_titles(tmp_path: Path) -> None:
    zh = build_dashboards(load_district(DEMO), "zh", today=TODAY)
    assert zh["overview"]["title"].endswith("灌区总览")
    assert all(re.search(r"[\u4e00-\u9fff]", p["title"]) for b in zh.values() for p in b["panels"])


def test_every_text_has_both_locales(tmp_path: Path) -> None:
    assert len(load_texts()) > 30
    broken = tmp_path / "texts.yaml"
    broken.write_text("overview.title: {en: Overview}\n")
    load_texts.cache_clear()
    with pytest.raises(TextsError, match=r"texts.yaml: key 'overview.title' has no text for locale\(s\) zh"):
        load_texts(broken)
    with pytest.raises(TextsError, match="unknown locale 'fr'"):
        Texts("fr")


def test_schematic_places_follow_the_canal_graph() -> None:
    district = load_district(DEMO)
    places = {p.key: p for p in schematic_places(district)}
    assert len(places) == len(district.points)
    head, tail = places["M1-HEAD"], places["M1-TAIL"]
    assert tail.x_km - head.x_km == pytest.approx(30.0)  # the main canal runs east for its 30 km
    b1 = places["B1-HEAD"]
    assert (b1.x_km, b1.y_km) == pytest.approx((8.0, 0.0))  # the branch takes off at km 8


def test_build_writes_provisioning_that_grafana_reads(tmp_path: Path) -> None:
    assert canalflow(["dashboards", "build", "--district", str(DEMO), "--out", str(tmp_path)]) == 0
    datasource = yaml.safe_load((tmp_path / "provisioning/datasources/canalflow.yaml").read_text())["datasources"][0]
    assert datasource["uid"] == DATASOURCE_UID and datasource["type"] == "influxdb"
    assert datasource["jsonData"]["dbName"] == "${INFLUX_DB}"
    assert datasource["secureJsonData"]["httpHeaderValue1"] == "Token ${INFLUX_TOKEN}"
    provider = yaml.safe_load((tmp_path / "provisioning/dashboards/canalflow.yaml").read_text())["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/var/lib/grafana/dashboards")
    alerts = yaml.safe_load((tmp_path / "provisioning/alerting/canalflow-demo.yaml").read_text())
    rules = alerts["groups"][0]["rules"]
    assert alerts["apiVersion"] == 1 and len(rules) == 5
    for rule in rules:
        assert rule["condition"] == "C" and {d["refId"] for d in rule["data"]} == {"A", "B", "C"}
        assert "folderUID" not in rule and rule["data"][0]["datasourceUid"] == DATASOURCE_UID
    gazetteer = json.loads((tmp_path / "gazetteer/canalflow-demo.json").read_text())
    assert {"key", "latitude", "longitude", "name"} <= set(gazetteer[0])


def test_build_fails_clearly_on_a_broken_district(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(DEMO.read_text().replace("profile: em-pipe}", "profile: em-pipx}", 1))
    assert canalflow(["dashboards", "build", "--district", str(broken), "--out", str(tmp_path / "out")]) == 1
    assert "broken.yaml:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_alert_settings_file_errors_name_file_and_key(tmp_path: Path) -> None:
    settings = tmp_path / "alerts.yaml"
    settings.write_text("silent_minutes: 1\nbuffer_window: 30 minutes\nsilent_minute: 3\n")
    with pytest.raises(AlertSettingsError) as caught:
        load_alert_settings(settings)
    text = str(caught.value)
    assert f"{settings}:1: error: silent_minutes: " in text and f"{settings}:2: error: buffer_window: " in text
    assert f"{settings}:3: error: silent_minute: unknown field 'silent_minute' (hint: remove it, or did you mean 'silent_minutes'?" in text
    settings.write_text("silent_minutes: 45\n")
    assert load_alert_settings(settings).silent_minutes == 45
