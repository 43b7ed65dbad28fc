"""One ``--from/--to`` rule and one InfluxDB option set for every command (canalflow.cliopts).

Each command's window is computed through its own parser and handler code (``canalflow.cli``),
and for ingest and billing from the rows they wrote or the volumes they queried.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from billing.cli import resolve_window
from canalflow.cli import build_parser, main
from canalflow.cliopts import OptionError, Window, parse_window, window_from_args
from canalflow.contract import M, Reading, ReadingBatch, reading_lines, source_of
from canalflow.district import load_district
from canalflow.influx import InfluxV1
from dashboards.cli import parse_window as dashboards_window
from testbed.services import free_port

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo-district.yaml"
DISTRICT = load_district(DEMO)
TZ = ZoneInfo("Asia/Shanghai")  # the demo district's zone: eight hours from UTC
D = "2026-03-12"
DAY_START = int(dt.datetime(2026, 3, 12, tzinfo=TZ).timestamp() * 1000)
DAY_END = int(dt.datetime(2026, 3, 13, tzinfo=TZ).timestamp() * 1000)
LOCAL_DAY = Window(DAY_START, DAY_END)
STEP = 600_000
# m3/s on the local days before, of and after D: a window off by hours mixes two rates
RATES = {DAY_START - 86_400_000: 0.1, DAY_START: 0.2, DAY_END: 0.4}
DAY_M3 = 0.2 * 86_400


def parse(*argv: str) -> argparse.Namespace:
    return build_parser(argv[0]).parse_args(list(argv))


# ---- the rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "end", "expected"), [
    (D, D, LOCAL_DAY),  # a date as --to is the end of that local day
    ("2026-03-12T00:00", "2026-03-13T00:00", LOCAL_DAY),  # naive: district time
    ("2026-03-11T16:00:00Z", "2026-03-12T16:00:00Z", LOCAL_DAY),  # Z: that instant
    ("2026-03-12T00:00:00+08:00", D, LOCAL_DAY),
    ("2026-03-12", "2026-03-19", Window(DAY_START, DAY_START + 8 * 86_400_000)),  # 12th..19th: eight days
    ("2026-03-12T06:00", "2026-03-12T07:30+08:00", Window(DAY_START + 6 * 3_600_000, DAY_START + 27_000_000)),
])
def test_one_rule_for_dates_naive_times_and_offsets(start: str, end: str, expected: Window) -> None:
    assert parse_window(start, end, TZ) == expected


def test_a_window_must_not_be_empty_and_must_be_iso() -> None:
    with pytest.raises(OptionError, match="--to must be after --from"):
        parse_window("2026-03-13", "2026-03-12", TZ)
    with pytest.raises(OptionError, match="--to must be after --from"):
        parse_window("2026-03-12T10:00", "2026-03-12T10:00", TZ)
    with pytest.raises(OptionError, match=r"--from 'yesterday' is not ISO 8601.*or a date alone"):
        parse_window("yesterday", D, TZ)
    with pytest.raises(OptionError, match="go together"):
        window_from_args(argparse.Namespace(start=D, end=None), TZ)


def _billing(*argv: str) -> Window:
    t0, t1, _ = resolve_window(parse("billing", *argv, "--district", str(DEMO), "--from", D, "--to", D), DISTRICT)
    return Window(t0, t1)


def _window_of(args: argparse.Namespace) -> Window:
    window = window_from_args(args, DISTRICT.tz)
    assert window is not None
    return window


def _dashboards(action: str) -> Window:
    extra = ["--out", "png"] if action == "preview" else []
    _, chosen = dashboards_window(parse("dashboards", action, "--district", str(DEMO), "--from", D, "--to", D, *extra), DISTRICT.tz)
    assert chosen is not None
    return Window(chosen.from_ms, chosen.to_ms)


@pytest.mark.parametrize("window_of", [
    pytest.param(lambda: _billing("run"), id="billing run"),
    pytest.param(lambda: _billing("efficiency"), id="billing efficiency"),
    pytest.param(lambda: _window_of(parse("billing", "edit", "V01-IN", "--district", str(DEMO), "--from", D, "--to", D,
                                          "--volume", "1", "--user", "u", "--reason", "r")), id="billing edit"),
    pytest.param(lambda: _window_of(parse("ingest", "rollup", "--district", str(DEMO), "--from", D, "--to", D)), id="ingest rollup"),
    pytest.param(lambda: _dashboards("check"), id="dashboards check"),
    pytest.param(lambda: _dashboards("preview"), id="dashboards preview"),
    pytest.param(lambda: _window_of(parse("fleet", "truth", "--district", str(DEMO), "--from", D, "--to", D, "--out", "x.csv")), id="fleet truth"),
])
def test_every_command_reads_from_d_to_d_as_the_local_day(window_of) -> None:
    assert window_of() == LOCAL_DAY


# ---- the same instants in what the commands write and query ------------------------------------


def _flow_at(t_ms: int) -> float:
    return next(rate for start, rate in sorted(RATES.items(), reverse=True) if t_ms >= start)


def _write_three_days(influx: InfluxV1) -> list[str]:
    """Every point with a totaliser flows 0.1, 0.2 and 0.4 m3/s on the local days around D
    (readings every 10 minutes, as ingest writes them); returns those points."""
    lines: list[str] = []
    # meters on the canals only: sub-meters measuring as much as their intake would stop the billing run
    totalised = [p for p, point in DISTRICT.points.items() if DISTRICT.profile_of(p).by_quantity("totaliser") is not None and point.below is None]
    first = min(RATES)
    for point_id in totalised:
        point = DISTRICT.points[point_id]
        total, readings = 1000.0, []
        for t in range(first, DAY_END + 86_400_000 + 1, STEP):
            readings.append(Reading(ts=t, values={"flow": _flow_at(t), "totaliser": total}))
            total += _flow_at(t) * STEP / 1000
        batch = ReadingBatch(district=DISTRICT.id, gateway=point.gateway, point=point_id, seq=0, readings=tuple(readings))
        lines += reading_lines(batch, point.canal, point.role.value)
    influx.write_lines(lines)
    return totalised


def test_billing_ingest_dashboards_and_fleet_cover_the_same_instants_for_from_d_to_d(
        influx: InfluxV1, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    totalised = _write_three_days(influx)
    # InfluxDB from the environment, as the billing container gets it (no --influx/--db below)
    monkeypatch.setenv("CANALFLOW_INFLUX_URL", influx.url)
    monkeypatch.setenv("CANALFLOW_INFLUX_DB", influx.database)

    assert main(["ingest", "rollup", "--district", str(DEMO), "--from", D, "--to", D, "--intervals", "1d"]) == 0
    capsys.readouterr()
    rows = influx.query_points(f'SELECT "volume_m3" FROM {source_of(M.volume)} WHERE "interval" = \'1d\' GROUP BY "point"')
    assert {r["time"] for r in rows} == {DAY_START}  # one local day: D, and not the day before or after
    by_point = {r["point"]: r["volume_m3"] for r in rows}
    assert set(by_point) >= set(totalised)
    assert all(by_point[p] == pytest.approx(DAY_M3) for p in totalised)

    assert main(["billing", "run", "--district", str(DEMO), "--from", D, "--to", D, "--as-of", "2026-03-20", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["window"] == {"t0_ms": DAY_START, "t1_ms": DAY_END}
    queried = {p["point"]: p["volume_m3"] for p in manifest["points"]}
    assert all(queried[p] == pytest.approx(DAY_M3, abs=0.01) for p in totalised if p in queried)
    assert set(queried) & set(totalised)

    assert _dashboards("check") == Window(DAY_START, DAY_END)

    truth = tmp_path / "truth.csv"
    assert main(["fleet", "truth", "--district", str(DEMO), "--from", D, "--to", D, "--step", "1d", "--out", str(truth)]) == 0
    with truth.open(encoding="utf-8") as f:
        spans = {(int(r["start_ms"]), int(r["end_ms"])) for r in csv.DictReader(f)}
    assert spans == {(DAY_START, DAY_END)}


# ---- InfluxDB options --------------------------------------------------------------------------

INFLUX_COMMANDS = [
    ["ingest", "run", "--district", str(DEMO)],
    ["ingest", "setup"],
    ["ingest", "deadletter", "replay", "--district", str(DEMO)],
    ["ingest", "rollup", "--district", str(DEMO), "--dirty"],
    ["billing", "run", "--district", str(DEMO), "--season", "2026-spring"],
    ["billing", "efficiency", "--district", str(DEMO), "--season", "2026-spring"],
    ["billing", "serve", "--tokens", "tokens.yaml"],
    ["billing", "explain", "L1"],
    ["dashboards", "check", "--district", str(DEMO)],
    ["dashboards", "preview", "--district", str(DEMO), "--out", "png"],
]


@pytest.mark.parametrize("argv", INFLUX_COMMANDS, ids=lambda a: " ".join(a[:2]) if a[1] != "deadletter" else "ingest deadletter")
def test_every_influx_command_takes_the_same_options_and_environment(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CANALFLOW_INFLUX_URL", "CANALFLOW_INFLUX_DB", "CANALFLOW_INFLUX_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    args = parse(*argv)
    assert (args.influx, args.db, args.token) == (None if argv[1] == "explain" else "http://127.0.0.1:8086", "canalflow", None)
    monkeypatch.setenv("CANALFLOW_INFLUX_URL", "http://influx.example:8086")
    monkeypatch.setenv("CANALFLOW_INFLUX_DB", "district7")
    monkeypatch.setenv("CANALFLOW_INFLUX_TOKEN", "tok")
    args = parse(*argv)
    assert (args.influx, args.db, args.token) == ("http://influx.example:8086", "district7", "tok")
    args = parse(*argv, "--influx", "http://other:8086", "--db", "x", "--token", "t2")  # an option beats the environment
    assert (args.influx, args.db, args.token) == ("http://other:8086", "x", "t2")


def test_each_family_connects_where_the_environment_says(influx: InfluxV1, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CANALFLOW_INFLUX_URL", influx.url)
    monkeypatch.setenv("CANALFLOW_INFLUX_DB", influx.database)
    assert main(["ingest", "setup", "--raw-retention", "400d"]) == 0
    assert {r["name"] for r in influx.query_points("SHOW RETENTION POLICIES")} >= {"raw", "rollups"}
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("CANALFLOW_INFLUX_URL", dead)
    capsys.readouterr()
    for argv in (["billing", "efficiency", "--district", str(DEMO), "--from", D, "--to", D],
                 ["dashboards", "check", "--district", str(DEMO)],
                 ["ingest", "setup"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"canalflow {argv[0]} {argv[1]}: error: " in err and dead in err, err


# ---- one error handler -------------------------------------------------------------------------


def test_the_handler_prints_command_message_and_hint_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["billing", "ledger", "water-use", "--ledger", f"sqlite:///{tmp_path / 'ledger.db'}"]) == 1
    assert capsys.readouterr().err == "canalflow billing ledger: error: name a billing unit, e.g. `ledger water-use V01`\n"
    dead = f"http://127.0.0.1:{free_port()}"
    assert main(["ingest", "setup", "--influx", dead, "--db", "x"]) == 1
    first, hint = capsys.readouterr().err.splitlines()
    assert first.startswith(f"canalflow ingest setup: error: cannot reach InfluxDB at {dead}")
    assert hint == f"  hint: is InfluxDB running at {dead}? for 2.x pass --token and create the bucket + DBRP mapping"


def test_an_unexpected_exception_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import billing.cli

    def broken(args: argparse.Namespace) -> int:
        raise RuntimeError("a bug, not an operator's mistake")

    monkeypatch.setattr(billing.cli, "cmd_ledger", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["billing", "ledger", "runs"])


# ---- one ledger default ------------------------------------------------------------------------


def test_billing_run_records_in_the_documented_ledger_default_or_canalflow_ledger(
        influx: InfluxV1, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/billing.md: the ledger defaults to sqlite:///out/ledger.db, or $CANALFLOW_LEDGER (the billing container)."""
    _write_three_days(influx)
    monkeypatch.setenv("CANALFLOW_INFLUX_URL", influx.url)
    monkeypatch.setenv("CANALFLOW_INFLUX_DB", influx.database)
    monkeypatch.chdir(tmp_path)
    run = ["billing", "run", "--district", str(DEMO), "--from", D, "--to", D, "--as-of", "2026-03-20", "--json"]

    def recorded_run() -> str:
        assert main(run) == 0
        run_id = json.loads(capsys.readouterr().out)["run_id"]
        assert main(["billing", "ledger", "runs"]) == 0
        assert run_id[:12] in capsys.readouterr().out
        return run_id

    monkeypatch.delenv("CANALFLOW_LEDGER")
    recorded_run()
    assert (tmp_path / "out" / "ledger.db").is_file()
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("CANALFLOW_LEDGER", f"sqlite:///{elsewhere}")
    recorded_run()
    assert elsewhere.is_file()
