"""``canalflow edge decode`` on the captured frames in protocols.md, text and JSON, and on rejects."""

from __future__ import annotations

import json

import pytest

from canalflow.cli import main

SL651 = "7e7e011090330853a0002f000802009f26020209410003bde3"
SZY206 = "681A68B35303810D00C00059000000826110000001106000004508090A3516"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sl651_keep_alive_as_json_names_the_crc(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "edge", "decode", "--protocol", "sl651", "--json", SL651)
    result = json.loads(out)
    assert code == 0
    assert {k: result[k] for k in ("function", "station", "serial", "sent", "observed", "elements")} == {
        "function": "2F", "station": "1090330853", "serial": 159, "sent": "2026-02-02T09:41:00",
        "observed": None, "elements": []}
    assert result["check"]["ok"] and result["check"]["got"] == "BDE3" and "CRC-16/MODBUS" in result["check"]["kind"]


def test_szy206_example_text_lists_fields_and_cs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "edge", "decode", "--protocol", "szy206", SZY206)
    assert code == 0
    assert "CRC-8 (poly 0xE5" in out and "computed 35, frame has 35 -> OK" in out
    assert "region 530381, station 13" in out and "5.900 m3/s" in out and "106182 m3" in out


def test_szy206_json_elements(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "edge", "decode", "--protocol", "szy206", "--json", SZY206)
    elements = json.loads(out)["elements"]
    assert [(e["code"], e["value"], e["unit"]) for e in elements] == [("flow", 5.9, "m3/s"), ("volume", 106182, "m3")]


def test_spaced_hex_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    spaced = " ".join(SL651[i:i + 2] for i in range(0, len(SL651), 2))
    assert run(capsys, "edge", "decode", "--protocol", "sl651", spaced)[0] == 0


def test_a_bad_crc_exits_1_naming_reason_offset_and_check(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "edge", "decode", "--protocol", "sl651", SL651[:-1] + "4")
    assert code == 1
    assert "bad_crc at byte 23" in err and "computed BDE3, frame has BDE4" in err
    code, out, _ = run(capsys, "edge", "decode", "--protocol", "szy206", "--json", SZY206[:-4] + "3616")
    assert code == 1 and json.loads(out)["error"]["reason"] == "bad_cs"


def test_not_hex_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "edge", "decode", "--protocol", "sl651", "7e7g")
    assert code == 1 and "not hex" in err


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["edge", "decode", "--help"])
    assert "canalflow edge decode --protocol sl651 7e7e01" in capsys.readouterr().out


def test_answers_and_multi_station_reports_are_explained(capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses
    import datetime as dt
    from decimal import Decimal

    from edge.telemetry import sl651

    sent = dt.datetime(2026, 5, 4, 8, 5, 30)
    status = sl651.Report(0, sent, "0012345678", elements=(sl651.Element(0x45, 4, 0, value=Decimal(2),
                                                                         observed=sent),))
    raw = sl651.encode(centre=1, station="0012345678", password=0, function=0x46,
                       body=sl651.encode_body(status, 0x46))
    code, out, _ = run(capsys, "edge", "decode", "--protocol", "sl651", "--json", raw.hex())
    result = json.loads(out)
    assert code == 0 and result["function_name"] == "query status and alarms"
    assert [(e["symbol"], e["value"]) for e in result["elements"]] == [("ZT", 2.0)]
    observed = dt.datetime(2026, 5, 4, 8, 5)
    part = sl651.Report(1, sent, "0012345678", 0x48, observed,
                        (sl651.Element(0x39, 4, 3, value=Decimal("1.5"), observed=observed),))
    both = dataclasses.replace(part, others=(dataclasses.replace(part, station="0012345679"),))
    raw = sl651.encode(centre=1, station="0012345678", password=0, function=0x32, body=sl651.encode_body(both, 0x32))
    code, out, _ = run(capsys, "edge", "decode", "--protocol", "sl651", "--json", raw.hex())
    assert [e["station"] for e in json.loads(out)["elements"]] == ["0012345678", "0012345679"]
