"""The ``canalflow fleet`` commands: help, truth export, scenario check, and a real ``run`` process."""

from __future__ import annotations

import csv
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pymodbus.client import ModbusTcpClient

from canalflow.clock import SimClock
from canalflow.district import District
from firmware_sim.cli import main
from firmware_sim.truth import Truth

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-district.yaml"


@pytest.mark.parametrize("command", ["run", "truth", "check"])
def test_help_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"canalflow fleet {command}" in out


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_truth_export(suffix: str, tmp_path: Path, demo_truth: Truth) -> None:
    out = tmp_path / f"truth{suffix}"
    assert main(["truth", "--district", str(DEMO), "--from", "2026-03-10T00:00", "--to", "2026-03-10T12:00",
                 "--step", "1h", "--out", str(out)]) == 0
    if suffix == ".csv":
        with out.open() as handle:
            rows = list(csv.DictReader(handle))
    else:
        rows = pq.read_table(out).to_pylist()
    district = demo_truth.district
    assert len(rows) == 12 * (len(district.points) + len(district.reaches))
    row = next(r for r in rows if r["id"] == "L11-HEAD" and r["start"] == "2026-03-09T22:00:00Z")
    expected = demo_truth.volume_m3("L11-HEAD", int(row["start_ms"]), int(row["end_ms"]))
    assert expected > 0 and float(row["volume_m3"]) == pytest.approx(expected, rel=1e-12)
    loss = next(r for r in rows if r["kind"] == "reach" and r["id"] == "M1-R1" and r["start"] == "2026-03-10T00:00:00Z")
    assert float(loss["volume_m3"]) == pytest.approx(
        demo_truth.reach_loss_m3("M1", "M1-R1", int(loss["start_ms"]), int(loss["end_ms"])), rel=1e-12)


def test_truth_rejects_an_unknown_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["truth", "--district", str(DEMO), "--from", "2026-03-10", "--to", "2026-03-11",
                 "--out", str(tmp_path / "truth.xlsx")]) == 1
    assert ".csv or .parquet" in capsys.readouterr().err


def test_check_names_file_line_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nevents:\n  - {type: breach, canal: M9, km: 3, flow_m3s: 1,"
                   " start: 2026-03-12T02:00:00, end: 2026-03-12T08:00:00}\n")
    assert main(["check", "--district", str(DEMO), str(bad)]) == 1
    assert f"{bad}:3: error: events[0].canal: unknown canal 'M9'" in capsys.readouterr().err
    good = sorted((ROOT / "examples" / "scenarios").glob("*.yaml"))
    assert len(good) >= 5
    assert main(["check", "--district", str(DEMO), *map(str, good)]) == 0


def test_run_serves_until_sigterm(tmp_path: Path, demo: District, demo_truth: Truth) -> None:
    manifest_path = tmp_path / "fleet.json"
    command = [sys.executable, "-m", "firmware_sim", "run", "--district", str(DEMO), "--speed", "60",
               "--start", "2026-03-10T18:00:00+08:00", "--manifest", str(manifest_path), "--progress", "0.2s"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not manifest_path.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no manifest after 20 s"
            time.sleep(0.05)
        manifest = json.loads(manifest_path.read_text())
        clock = SimClock(**manifest["clock"])
        gateway = manifest["gateways"]["GW-B1"]
        unit = next(int(u) for u, p in gateway["units"].items() if p == "V01-IN")
        register = demo.profile_of("V01-IN").register_named("flow")
        with ModbusTcpClient(gateway["host"], port=gateway["port"], timeout=3) as client:
            words = client.read_holding_registers(register.wire_address, count=2, device_id=unit).registers
        truth_flow = demo_truth.flow_m3s("V01-IN", clock.now_ms())
        assert register.decode(words) == pytest.approx(truth_flow, rel=0.005)
        time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "GW-B1" in out and "11=V01-IN" in out
    assert "reads 1 " in err and "stopped after" in err


def test_run_reports_a_bad_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nfaults:\n  - {point: V01-IN, type: melted, start: 2026-03-11T00:00:00,"
                   " end: 2026-03-11T06:00:00}\n")
    assert main(["run", "--district", str(DEMO), "--scenario", str(bad), "--check"]) == 1
    assert f"{bad}:3: error: faults[0].type" in capsys.readouterr().err


def test_run_on_a_taken_district_port_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        district = tmp_path / "district.yaml"
        district.write_text(DEMO.read_text().replace("port: 5020}", f"port: {port}}}"))
        code = main(["run", "--district", str(district), "--use-district-ports", "--manifest",
                     str(tmp_path / "m.json"), "--duration", "1s"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"gateway GW-MAIN: cannot listen on 127.0.0.1:{port}" in err and "without --use-district-ports" in err
    assert not (tmp_path / "m.json").exists()
