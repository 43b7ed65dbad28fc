"""``canalflow edge receive``: --check, its errors, and the real process answering a station."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from telemetry_testkit import sl651_report, stations_district

from canalflow.cli import main
from edge.telemetry import sl651


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_lists_the_gateways_stations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "edge", "receive", "--district", str(stations_district(tmp_path)), "--gateway", "RX-1",
                       "--check")
    assert code == 0 and "2 stations" in out
    assert "ST-L11" in out and "level=39" in out and "ST-V01" in out and "totaliser=volume" in out


def test_a_gateway_without_stations_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "edge", "receive", "--district", str(stations_district(tmp_path)), "--gateway",
                       "GW-B1", "--check")
    assert code == 1 and "none feeds a point of gateway GW-B1" in err
    code, _, err = run(capsys, "edge", "receive", "--district", str(stations_district(tmp_path)), "--gateway",
                       "RX-1", "--listen", "5651")
    assert code == 1 and "write HOST:PORT" in err


def test_edge_run_refuses_a_receivers_gateway_and_says_to_run_receive(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    district = stations_district(tmp_path)
    code, _, err = run(capsys, "edge", "run", "--district", str(district), "--gateway", "RX-1", "--check")
    assert code != 0
    assert "L11-HEAD (station ST-L11)" in err and "V01-IN (station ST-V01)" in err
    assert f"canalflow edge receive --district {district} --gateway RX-1" in err
    code, out, _ = run(capsys, "edge", "run", "--district", str(district), "--gateway", "GW-B1", "--check")
    assert code == 0 and "L11-HEAD" not in out


@pytest.mark.parametrize("action", ["receive", "stations", "simstations"])
def test_help_has_an_example(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["edge", action, "--help"])
    assert f"canalflow edge {action} --" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_process_answers_a_station_and_stops_on_sigterm(tmp_path: Path, mqtt_url: str) -> None:
    port = _free_port()
    exe = Path(sys.executable).with_name("canalflow")
    log = (tmp_path / "receive.log").open("wb")
    proc = subprocess.Popen([str(exe), "edge", "receive", "--district", str(stations_district(tmp_path)),
                             "--gateway", "RX-1", "--listen", f"127.0.0.1:{port}", "--mqtt", mqtt_url,
                             "--buffer", str(tmp_path / "rx.db"), "--confirm", "broker"], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                station = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "receive.log").read_text()
                time.sleep(0.1)
        with station:
            station.sendall(sl651_report(3, "0.410"))
            answer = station.recv(100)
        assert sl651.decode(answer).report.serial == 3  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    assert code == 0, (tmp_path / "receive.log").read_text()


def test_simstations_process_reports_to_a_receiver(tmp_path: Path, mqtt_url: str) -> None:
    import asyncio

    from canalflow.district import load_district
    from edge.telemetry.receiver import StationReceiver

    path = stations_district(tmp_path)
    receiver = StationReceiver(load_district(path), "RX-1", mqtt_url=mqtt_url, buffer_path=tmp_path / "rx.db")
    receiver.config.publish.confirm = "broker"
    exe = Path(sys.executable).with_name("canalflow")

    async def scenario() -> tuple[int, str]:
        task = asyncio.create_task(receiver.run())
        await asyncio.wait_for(receiver.ready.wait(), 10)
        proc = await asyncio.create_subprocess_exec(
            str(exe), "edge", "simstations", "--district", str(path), "--gateway", "RX-1", "--connect",
            f"127.0.0.1:{receiver.port}", "--interval-s", "1", "--faults", "duplicate=0.5", "--duration", "4",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        receiver.stop()
        await asyncio.wait_for(task, 30)
        return proc.returncode or 0, out.decode()

    code, out = asyncio.run(scenario())
    assert code == 0, out
    assert "2 stations of RX-1 dialling" in out and "ST-L11" in out and "ST-V01" in out
    for station in ("ST-L11", "ST-V01"):
        assert receiver.stats[station].readings >= 2, (station, receiver.stats[station], out)
    assert receiver.stats["ST-L11"].errors["replayed"] + receiver.stats["ST-V01"].errors["replayed"] >= 1


def test_simstations_faults_are_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "edge", "simstations", "--district", str(stations_district(tmp_path)), "--gateway",
                       "RX-1", "--connect", "127.0.0.1:1", "--faults", "lightning=0.5")
    assert code == 1 and "NAME one of bad_crc, clock_skew_s, drop, duplicate" in err


def test_simstations_outage_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zoneinfo import ZoneInfo

    from edge.telemetry.cli import parse_outage

    shanghai = ZoneInfo("Asia/Shanghai")
    start, end = parse_outage("2026-05-01T10:00/2026-05-01T13:00", shanghai)
    assert start == 1777600800000 and end - start == 3 * 3_600_000  # 10:00 +08:00 is 02:00 UTC
    assert parse_outage("2026-05-01T02:00Z/2026-05-01T05:00+00:00", shanghai) == (start, end)
    district = str(stations_district(tmp_path))
    for bad, says in (("2026-05-01T10:00", "write FROM/TO"), ("2026-05-01T13:00/2026-05-01T10:00", "after FROM")):
        code, _, err = run(capsys, "edge", "simstations", "--district", district, "--gateway", "RX-1",
                           "--connect", "127.0.0.1:1", "--outage", bad)
        assert code == 1 and f"--outage {bad!r}" in err and says in err
