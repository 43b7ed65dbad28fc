"""The test that matters for issue 7: every dashboard, variable and alert query of the demo district
runs against a real InfluxDB and returns data of the shape its panel needs; the alert rules fire on
exactly the planted faults."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from dash_synthetic import ANOMALOUS_REACH, OFFLINE_GATEWAY, SILENT_POINT, write_rows

from canalflow.cli import main as canalflow
from canalflow.district import District, load_district
from canalflow.influx import InfluxV1
from dashboards.build import season_start_ms
from dashboards.querycheck import alert_rules, check_dashboard, evaluate_rule
from testbed.services import Influxd

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-district.yaml"
NOW = dt.datetime(2026, 4, 15, 4, 0, tzinfo=dt.UTC)  # 12:00 in Asia/Shanghai, inside spring round S2
NOW_MS = int(NOW.timestamp() * 1000)


@pytest.fixture(scope="module")
def demo() -> District:
    return load_district(DEMO)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grafana")
    assert canalflow(["dashboards", "build", "--district", str(DEMO), "--out", str(out), "--locale", "en"]) == 0
    return out


@pytest.fixture
def filled(influx: InfluxV1, demo: District) -> InfluxV1:
    write_rows(influx, demo, NOW_MS)  # into the database `canalflow ingest setup` made (the fixture)
    return influx


def spring_start(demo: District) -> str:
    return str(season_start_ms(demo.seasons["2026-spring"].start, demo.spec.district.timezone))


def test_every_panel_and_variable_query_returns_data_of_the_expected_shape(built: Path, filled: InfluxV1, demo: District) -> None:
    boards = [json.loads(p.read_text()) for p in sorted((built / "dashboards").glob("*.json"))]
    assert {b["uid"] for b in boards} == {f"cf-demo-{k}" for k in ("overview", "network", "billing", "health")}
    results = []
    for board in boards:
        results += check_dashboard(board, filled, now_ms=NOW_MS, overrides={"season": [spring_start(demo)]})
    failures = [str(r) for r in results if not r.ok]
    assert not failures, "\n".join(failures)
    panel_targets = sum(len(p.get("targets") or []) for b in boards for p in b["panels"])
    query_variables = sum(v["type"] == "query" for b in boards for v in b["templating"]["list"])
    assert len(results) == panel_targets + query_variables  # every target and variable query ran
    assert panel_targets >= 24 and query_variables >= 8


def test_alert_rules_fire_on_exactly_the_planted_faults(built: Path, filled: InfluxV1) -> None:
    document = yaml.safe_load((built / "provisioning" / "alerting" / "canalflow-demo.yaml").read_text())
    evaluations = {rule["uid"]: evaluate_rule(rule, filled, now_ms=NOW_MS) for rule in alert_rules(document)}
    for evaluation in evaluations.values():
        assert all(r.ok for r in evaluation.results), [str(r) for r in evaluation.results]
    silent = evaluations["cf-demo-silent"]
    assert [f["point"] for f in silent.firing] == [SILENT_POINT]
    assert silent.instances == len(load_district(DEMO).points)  # one per metering point of the demo district
    assert [(f["canal"], f["reach"]) for f in evaluations["cf-demo-loss"].firing] == [ANOMALOUS_REACH]
    assert [f["district"] for f in evaluations["cf-demo-eta"].firing] == ["demo"]
    assert [f["gateway"] for f in evaluations["cf-demo-buffer"].firing] == [OFFLINE_GATEWAY]
    assert evaluations["cf-demo-field"].firing == []  # the planted field coefficient meets its target


def test_field_coefficient_alert_fires_below_its_target(built: Path, filled: InfluxV1, demo: District) -> None:
    from canalflow.contract import SCOPE_FIELD, M, line, policy_of

    document = yaml.safe_load((built / "provisioning" / "alerting" / "canalflow-demo.yaml").read_text())
    [rule] = [r for r in alert_rules(document) if r["uid"] == "cf-demo-field"]
    # the configured constant (a district without plots) is not a measurement: no alert however low
    filled.write_lines([line(M.efficiency, {"district": demo.id, "scope": SCOPE_FIELD}, {"eta": 0.10, "method": "units_field_efficiency"}, NOW_MS - 7_200_000)], rp=policy_of(M.efficiency))
    assert evaluate_rule(rule, filled, now_ms=NOW_MS).firing == []
    filled.write_lines([line(M.efficiency, {"district": demo.id, "scope": SCOPE_FIELD}, {"eta": 0.70, "method": "typical_plots"}, NOW_MS - 3_600_000)], rp=policy_of(M.efficiency))
    assert [f["district"] for f in evaluate_rule(rule, filled, now_ms=NOW_MS).firing] == ["demo"]


def test_a_wrong_field_name_is_reported_not_passed(built: Path, filled: InfluxV1) -> None:
    board = json.loads((built / "dashboards" / "cf-demo-health.json").read_text())
    target = board["panels"][0]["targets"][0]
    target["query"] = target["query"].replace('last("qcode")', 'last("qcod")')
    results = check_dashboard(board, filled, now_ms=NOW_MS)
    bad = [r for r in results if not r.ok]
    assert len(bad) == 1 and "no data" in bad[0].problems[0]


def test_queries_on_an_empty_database_report_no_data(built: Path, influx: InfluxV1, influxd: Influxd) -> None:
    board = json.loads((built / "dashboards" / "cf-demo-network.json").read_text())
    results = check_dashboard(board, influx, now_ms=NOW_MS, overrides={"district": ["demo"], "canal": ["M1"]})
    assert results and all(r.problems == ["returned no data"] for r in results)
    with InfluxV1(influxd.url, f"{influx.database}_bare") as bare:  # not made by `ingest setup`: says so
        bare.create_database()
        try:
            results = check_dashboard(board, bare, now_ms=NOW_MS, overrides={"district": ["demo"], "canal": ["M1"]})
        finally:
            bare.drop_database()
    assert results and all("run it" in r.problems[0] and "canalflow ingest setup" in r.problems[0] for r in results)


def test_check_and_preview_commands(filled: InfluxV1, demo: District, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ("--district", str(DEMO), "--influx", filled.url, "--db", filled.database, "--now", NOW.isoformat(),
              "--var", f"season={spring_start(demo)}")
    assert canalflow(["dashboards", "check", *common]) == 0
    captured = capsys.readouterr()
    assert "queries returned data of the expected shape" in captured.err
    assert f"1 of {len(demo.points)} instance(s) firing" in captured.out  # the silent meter
    assert canalflow(["dashboards", "preview", *common, "--out", str(tmp_path / "png"), "--locale", "zh"]) == 0
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert [p.name for p in pngs] == [f"cf-demo-{k}.png" for k in ("billing", "health", "network", "overview")]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 50_000 for p in pngs)


def test_check_fails_on_an_empty_database(influx: InfluxV1, capsys: pytest.CaptureFixture[str]) -> None:
    assert canalflow(["dashboards", "check", "--district", str(DEMO), "--influx", influx.url, "--db", influx.database, "--now", NOW.isoformat()]) == 1
    assert "returned no data" in capsys.readouterr().err


def test_check_names_an_unreachable_influxdb(capsys: pytest.CaptureFixture[str]) -> None:
    from testbed.services import free_port

    url = f"http://127.0.0.1:{free_port()}"
    assert canalflow(["dashboards", "check", "--district", str(DEMO), "--influx", url, "--db", "x"]) == 1
    assert f"cannot reach InfluxDB at {url}" in capsys.readouterr().err


def test_check_with_a_picked_range(filled: InfluxV1, demo: District, capsys: pytest.CaptureFixture[str]) -> None:
    influx = filled
    start = (NOW - dt.timedelta(days=3)).isoformat()
    common = ("--district", str(DEMO), "--influx", influx.url, "--db", influx.database)
    # no --var season: the season holding --to (2026-spring) is chosen, as Grafana would on that day
    assert canalflow(["dashboards", "check", *common, "--from", start, "--to", NOW.isoformat()]) == 0, capsys.readouterr().err
    assert canalflow(["dashboards", "check", *common, "--from", start]) == 1
    assert "--from and --to go together" in capsys.readouterr().err


def test_daily_efficiency_chart_spans_the_picked_range_not_years(influx: InfluxV1, demo: District) -> None:
    """One KPI point (a demo's single window): the preview's axis is the picked range, as in Grafana."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from canalflow.contract import SCOPE_SYSTEM, M, line, policy_of
    from dashboards.build import build_dashboards
    from dashboards.preview import draw_timeseries
    from dashboards.querycheck import TimeRange, panel_range

    influx.write_lines([line(M.efficiency, {"district": demo.id, "scope": SCOPE_SYSTEM}, {"eta": 0.66, "method": "official"}, NOW_MS - 3_600_000)], rp=policy_of(M.efficiency))
    board = build_dashboards(demo, "en")["overview"]
    [panel] = [p for p in board["panels"] if p["title"] == "Canal-system efficiency, official η by day"]
    picked = TimeRange(NOW_MS - 6 * 3_600_000, NOW_MS)
    results = [r for r in check_dashboard(board, influx, now_ms=NOW_MS, time_range=picked) if r.panel_id == panel["id"]]
    assert [len(s["values"]) for r in results for s in r.series] == [1]
    fig, ax = plt.subplots()
    try:
        draw_timeseries(ax, panel, results, demo.tz, panel_range(panel, board, NOW_MS, picked))
        lo, hi = ax.get_xlim()
        assert (hi - lo) <= 1.5  # days: the picked 6 h and the day bucket holding the point, not ±2 years
        assert mdates.num2date(hi).timestamp() * 1000 >= NOW_MS - 1
        assert ax.get_ylim() == (0.0, 100.0)  # the panel's min/max (0–1, shown in percent)
    finally:
        plt.close(fig)


def test_one_local_days_water_is_one_bar_at_local_midnight(built: Path, influx: InfluxV1) -> None:
    from canalflow.contract import Reading, ReadingBatch, reading_lines
    from dashboards.querycheck import TimeRange, iter_panels, render

    day1 = 1_772_294_400_000  # 2026-03-01T00:00+08:00 = 2026-02-28T16:00Z
    batch = ReadingBatch(district="demo", gateway="GW-B1", point="V01-IN", seq=0, readings=tuple(
        Reading(ts=day1 + i * 600_000, values={"totaliser": 100.0 + i}) for i in range(145)))
    influx.write_lines(reading_lines(batch, "L11", "intake"))
    assert canalflow(["ingest", "rollup", "--district", str(DEMO), "--influx", influx.url, "--db", influx.database,
                      "--from", "2026-03-01T00:00:00+08:00", "--to", "2026-03-02T00:00:00+08:00", "--intervals", "1d"]) == 0
    board = json.loads((built / "dashboards" / "cf-demo-billing.json").read_text())
    [query] = [t["query"] for p in iter_panels(board) for t in p.get("targets", []) if 'time(1d)' in t.get("query", "")
               and '"interval" = \'1d\'' in t["query"] and '"role" = \'intake\'' in t["query"]]
    rng = TimeRange(day1 - 2 * 86_400_000, day1 + 2 * 86_400_000)
    rows = influx.query_points(render(query, {"district": ["demo"]}, rng, 86_400_000))
    bars = [(r["time"], r["volume_m3"]) for r in rows if r["point"] == "V01-IN" and r["volume_m3"] is not None]
    assert bars == [(day1, 144.0)]  # the local day's whole volume, drawn on local 1 March
