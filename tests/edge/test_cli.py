"""The technician CLI against simulated meters on a real socket, and the offline tools."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from edge_testkit import DEMO, BusThread, Collector, gateway_bus

from canalflow.cli import main
from canalflow.clock import SimClock
from canalflow.contract import Reading
from canalflow.district import load_district
from edge.buffer import Buffer
from edge.config import load_edge_config
from testbed.services import Mosquitto


@pytest.fixture
def gateway() -> Iterator[tuple[BusThread, int]]:
    bus = BusThread(gateway_bus(load_district(DEMO), "GW-B1"))
    port = bus.start_tcp()
    yield bus, port
    bus.stop()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_action_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    actions = ["run", "scan", "read", "probe", "watch", "commission", "buffer", "rating", "buffer status",
               "buffer export", "buffer replay", "rating parshall", "rating weir", "rating curve"]
    for action in actions:
        with pytest.raises(SystemExit) as exit_info:
            main(["edge", *action.split(), "--help"])
        assert exit_info.value.code == 0
        assert "canalflow edge" in capsys.readouterr().out.split("example:\n")[-1].split("examples:\n")[-1], action


def test_probe_words_offline_every_type_and_order(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "edge", "probe", "--words", "0x806B,0x4212", "--json")
    assert code == 0
    decoded = json.loads(out)["decoded"]
    assert decoded["float32"]["CDAB"] == pytest.approx(36.6254, rel=1e-5)  # low word first
    assert set(decoded["uint32"]) == {"ABCD", "CDAB", "BADC", "DCBA"}
    code, _, err = run(capsys, "edge", "probe", "--words", "0x1FFFF")
    assert code == 1 and "16 bits" in err


def test_probe_live_with_4xxxx_notation_and_plain_word_exceptions(
    capsys: pytest.CaptureFixture[str], gateway: tuple[BusThread, int]
) -> None:
    _, port = gateway
    # V01-IN (unit 11, em-pipe): flow float32 ABCD at wire address 2 = 40003 in 4xxxx notation
    code, out, _ = run(capsys, "edge", "probe", "--host", f"127.0.0.1:{port}", "--unit", "11", "--address", "40003",
                       "--count", "2", "--json")
    assert code == 0
    result = json.loads(out)
    assert "wire address 2" in result["address"]
    assert result["decoded"]["float32"]["ABCD"] == pytest.approx(0.05 * 3600, rel=1e-6)  # m3/h on the meter
    code, _, err = run(capsys, "edge", "probe", "--host", f"127.0.0.1:{port}", "--unit", "11", "--address", "500")
    assert code == 1 and "illegal data address" in err and "address - 1" in err
    code, _, err = run(capsys, "edge", "probe", "--host", f"127.0.0.1:{port}", "--unit", "99", "--timeout", "0.2")
    assert code == 1 and "unit 99" in err and "no answer" in err


def test_scan_finds_and_identifies_the_meters(capsys: pytest.CaptureFixture[str], gateway: tuple[BusThread, int]) -> None:
    _, port = gateway
    code, out, _ = run(capsys, "edge", "scan", "--host", f"127.0.0.1:{port}", "--units", "1-4,10-15", "--json")
    assert code == 0
    found = {f["unit"]: f["model"] for f in json.loads(out)}
    assert found == {1: "radar-parshall", 2: "radar-parshall", 3: "radar-parshall", 11: "em-pipe", 12: "em-pipe",
                     13: "em-pipe", 14: "em-pipe"}
    code, out, err = run(capsys, "edge", "scan", "--host", f"127.0.0.1:{port}", "--units", "11")
    assert code == 0 and "em-pipe" in out and "scanning" in err  # table out, progress on stderr


@pytest.mark.parametrize("absent", ["0x0B", "silent"])
def test_scan_of_a_simulated_tcp_gateway_lists_exactly_its_meters(capsys: pytest.CaptureFixture[str], absent: str) -> None:
    """The fleet's TCP gateway answers 0x0B for ids with no meter (or nothing, as some gateways do):
    neither counts as a device, so GW-B1 with its meters among ids 1-42 shows exactly those, each with why it counts."""
    from firmware_sim.fleet import FleetThread

    district = load_district(DEMO)
    with FleetThread(district, clock=SimClock.real(), gateways=["GW-B1"], absent_units=absent) as fleet:
        endpoint = fleet.endpoints["GW-B1"]
        host = f"{endpoint.host}:{endpoint.port}"
        code, out, _ = run(capsys, "edge", "scan", "--host", host, "--units", "1-42", "--timeout", "0.3", "--json")
        assert code == 0
        found = {f["unit"]: f for f in json.loads(out)}
        assert set(found) == set(endpoint.units) and len(found) == len(district.points_of_gateway("GW-B1"))  # incl. V15's and the plots' meters at 31..38
        assert all(f["model"] == district.profile_of(endpoint.units[u]).name for u, f in found.items())
        assert all("matches profile" in f["why"] for f in found.values())
        code, out, err = run(capsys, "edge", "scan", "--host", host, "--units", "10-16", "--timeout", "0.3")
        _, _, quiet = run(capsys, "edge", "scan", "--host", host, "--units", "10-16", "--timeout", "0.3", "--quiet")
    assert code == 0 and "why it counts" in out and "unknown" not in out
    assert "4 of 7 unit id(s) answered" in err
    # not a terminal: one progress line per 10 % (7 ids cross 7 tenths), no carriage returns; --quiet: none
    assert "scanning 100% 7/7 unit  16" in err and err.count("scanning ") == 7 and "\r" not in err
    assert "scanning" not in quiet


def test_read_shows_a_meter_calendar_as_local_time_with_its_zone_and_offset(capsys: pytest.CaptureFixture[str]) -> None:
    """A TUF-2000M keeps a BCD calendar in local time (Beijing): read with the district's zone it is on
    time; read as if it were UTC it is 8 hours ahead, and the tool says the zone looks wrong."""
    from firmware_sim.fleet import FleetThread

    district = load_district(DEMO)
    point = next(p for p in district.spec.points if district.profile_of(p.id).name == "tuf2000m")
    with FleetThread(district, clock=SimClock.real(), gateways=[point.gateway]) as fleet:
        endpoint = fleet.endpoints[point.gateway]
        where = ("--host", f"{endpoint.host}:{endpoint.port}", "--unit", str(point.unit_id), "--profile", "tuf2000m")
        code, out, _ = run(capsys, "edge", "read", *where, "--district", str(DEMO), "--json")
        clock = next(r for r in json.loads(out)["registers"] if r["name"] == "device_time")
        code_utc, out_utc, _ = run(capsys, "edge", "read", *where, "--tz", "UTC")
    assert code == 0 and "Asia/Shanghai (UTC+0800)" in clock["local_time"] and abs(clock["clock_offset_s"]) < 5
    assert code_utc == 0 and re.search(r"UTC \(UTC\+0000\), 28[78]\d\d s ahead of this edge's clock", out_utc)
    assert "is the meter's zone right?" in out_utc


def test_read_one_meter_decoded_with_units(capsys: pytest.CaptureFixture[str], gateway: tuple[BusThread, int]) -> None:
    _, port = gateway
    code, out, _ = run(capsys, "edge", "read", "--host", f"127.0.0.1:{port}", "--unit", "11", "--profile", "em-pipe",
                       "--json")
    assert code == 0
    regs = {r["name"]: r for r in json.loads(out)["registers"]}
    assert regs["flow"]["value"] == pytest.approx(0.05) and regs["flow"]["unit"] == "m3/s"
    assert regs["total"]["value"] == pytest.approx(1234.5)
    code, _, err = run(capsys, "edge", "read", "--host", f"127.0.0.1:{port}", "--unit", "11", "--profile", "nope")
    assert code == 1 and "unknown profile 'nope'" in err


def test_rating_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "edge", "rating", "parshall", "--throat-mm", "610", "--ha-m", "0.35", "--hb-m", "0.3",
                       "--json")
    data = json.loads(out)
    assert code == 0 and data["regime"] == "submerged" and data["flow_m3s"] == pytest.approx(1.428 * 0.35**1.55)
    code, out, _ = run(capsys, "edge", "rating", "weir", "--width-m", "1", "--head-m", "0.2")
    assert code == 0 and "free flow" in out
    code, out, _ = run(capsys, "edge", "rating", "curve", "--district", str(DEMO), "--point", "L12-HEAD",
                       "--level-m", "0.3", "--json")
    assert code == 0 and json.loads(out)["method"] == "parshall-si-457mm"
    code, out, _ = run(capsys, "edge", "rating", "curve", "--a", "2", "--h0", "0.1", "--b", "1.5", "--level-m", "0.5")
    assert code == 0 and "0.50596" in out  # 2 * 0.4^1.5
    code, _, err = run(capsys, "edge", "rating", "parshall", "--throat-mm", "100", "--ha-m", "0.3")
    assert code == 1 and "throat" in err


def test_buffer_status_export_and_replay(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         make_mosquitto: object) -> None:
    db = tmp_path / "edge.db"
    clock = SimClock.starting_at(1_772_323_200_000)
    with Buffer(db) as buffer:
        buffer.add((p, clock.sim_start_ms + i * 60_000, Reading(ts=clock.sim_start_ms + i * 60_000,
                    values={"flow": 0.1 * i}).model_dump_json()) for p in ("A", "B") for i in range(50))
    code, out, _ = run(capsys, "edge", "buffer", "status", "--buffer", str(db), "--json")
    assert code == 0 and json.loads(out)["depth"] == 100 and json.loads(out)["points"] == {"A": 50, "B": 50}
    code, out, _ = run(capsys, "edge", "buffer", "export", "--buffer", str(db))
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 100 and lines[0]["reading"]["values"] == {"flow": 0.0}
    broker: Mosquitto = make_mosquitto()  # type: ignore[operator]
    with Buffer(db, exclusive=True):  # an agent running on this buffer
        code, _, err = run(capsys, "edge", "buffer", "replay", "--buffer", str(db), "--mqtt", broker.url,
                           "--district", str(DEMO), "--gateway", "GW-B1")
        assert code == 1 and "in use by pid" in err
    collector = Collector(broker.url, ["canalflow/v1/demo/+/+/readings"])
    code, out, _ = run(capsys, "edge", "buffer", "replay", "--buffer", str(db), "--mqtt", broker.url,
                       "--district", str(DEMO), "--gateway", "GW-B1", "--confirm", "broker")
    assert code == 0 and "replayed 100" in out
    assert collector.wait_for(lambda: len(collector.readings()) == 100, 10)
    collector.close()
    assert all(b.historical for b in collector.batches)
    assert Buffer(db).depth == 0
    code, _, err = run(capsys, "edge", "buffer", "status", "--buffer", str(tmp_path / "missing.db"))
    assert code == 1 and "no buffer file" in err


def test_commission_adds_a_point_that_answered_and_validates_the_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, gateway: tuple[BusThread, int]
) -> None:
    bus, port = gateway
    from canalflow.profiles import load_profiles
    from testbed.simdevice import meter_from_profile

    bus.call(lambda: bus.bus.add(meter_from_profile(21, load_profiles()["em-pipe"], {"flow": 0.07, "battery": 3.6})))
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({"district": str(DEMO), "gateway": "GW-B1",
                                      "endpoint": {"host": "127.0.0.1", "port": port}}))
    code, out, _ = run(capsys, "edge", "commission", "--config", str(config), "--point", "V13-IN", "--unit", "21",
                       "--profile", "em-pipe")
    assert code == 0 and "added" in out
    assert yaml.safe_load(config.read_text())["points"][0]["id"] == "V13-IN"
    code, out, _ = run(capsys, "edge", "run", "--config", str(config), "--check")
    on_gateway = len(load_district(DEMO).points_of_gateway("GW-B1"))
    assert code == 0 and "V13-IN" in out and f"{on_gateway + 1} meters" in out
    code, _, err = run(capsys, "edge", "commission", "--config", str(config), "--point", "V14-IN", "--unit", "1",
                       "--profile", "em-pipe")  # unit 1 is a radar sensor
    assert code == 1 and "signature" in err
    assert len(yaml.safe_load(config.read_text())["points"]) == 1


def test_config_errors_name_file_line_and_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(f"district: {DEMO}\ngateway: GW-B1\npublish:\n  replay_rat: 5\n")
    code, _, err = run(capsys, "edge", "run", "--config", str(config), "--check")
    assert code == 1 and f"{config}:4: error: publish.replay_rat: unknown field 'replay_rat' (hint: remove it, or did you mean 'replay_rate'?" in err
    assert err.startswith("canalflow edge run: error: ") and "see docs/edge.md" in err
    code, _, err = run(capsys, "edge", "run", "--district", str(DEMO), "--gateway", "GW-X", "--check")
    assert code == 1 and "no gateway 'GW-X'" in err
    config.write_text(f"district: {DEMO}\ngateway: GW-B1\ntimezone: Asia/Beijing\n")
    code, _, err = run(capsys, "edge", "run", "--config", str(config), "--check")
    assert code == 1 and f"{config}:3: error: timezone: unknown time zone 'Asia/Beijing'" in err
    config.write_text(f"district: {DEMO}\ngateway: GW-B1\n")
    assert load_edge_config(config).timezone == "Asia/Shanghai"  # the district's
    # an edge config goes through the same loader as the district file: alias bombs and unclosed brackets
    laughs = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"{x}: &{x} [{','.join([f'*{prev}'] * 9)}]\n" for prev, x in zip("abcdefgh", "bcdefghi", strict=True))
    config.write_text(f"district: {DEMO}\ngateway: GW-B1\n{laughs}")
    code, _, err = run(capsys, "edge", "run", "--config", str(config), "--check")
    assert code == 1 and f"{config}:4: " in err and "alias bomb" in err
    config.write_text(f"district: {DEMO}\ngateway: GW-B1\npublish: {{replay_rate: 5,\n  status_interval_s: 10\n")
    code, _, err = run(capsys, "edge", "run", "--config", str(config), "--check")
    assert code == 1 and f"{config}:3: the '{{' opened on this line is never closed" in err


def test_watch_shows_the_latest_reading_of_each_point(capsys: pytest.CaptureFixture[str], mosquitto: Mosquitto) -> None:
    import threading
    import time

    import paho.mqtt.client as mqtt

    from canalflow.contract import ReadingBatch, readings_topic

    batch = ReadingBatch(district="demo", gateway="GW-B1", point="V01-IN", seq=1,
                         readings=(Reading(ts=1_772_323_200_000, values={"flow": 0.05}),))

    def publish_soon() -> None:
        time.sleep(1.0)
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
        client.connect(mosquitto.host, mosquitto.port)
        client.loop_start()
        client.publish(readings_topic("demo", "GW-B1", "V01-IN"), batch.to_json(), qos=1).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()

    thread = threading.Thread(target=publish_soon)
    thread.start()
    code, out, _ = run(capsys, "edge", "watch", "--mqtt", mosquitto.url, "--district", str(DEMO),
                       "--duration", "2.5")
    thread.join()
    assert code == 0
    assert "V01-IN" in out and "0.05" in out and "good" in out


@pytest.mark.parametrize("action", [["watch", "--duration", "1"], ["stations", "--gateway", "RX-1"],
                                    ["buffer", "replay", "--buffer", "edge.db", "--gateway", "GW-B1"]])
def test_district_is_the_file_and_an_id_is_refused_saying_so(capsys: pytest.CaptureFixture[str],
                                                              action: list[str]) -> None:
    code, _, err = run(capsys, "edge", *action, "--mqtt", "mqtt://127.0.0.1:9", "--district", "demo")
    assert code == 1
    assert "--district demo: no such file: --district is the district file in every command" in err
