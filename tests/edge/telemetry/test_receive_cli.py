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


@pytest.mark.parametrize("action", ["receive", "stations"])
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
