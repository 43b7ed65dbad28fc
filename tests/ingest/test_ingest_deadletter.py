"""Malformed, unknown and mismatched messages end in the dead-letter store with a reason; replay works."""

from __future__ import annotations

import json
from pathlib import Path

from ingest_helpers import DEMO, publish, rows_per_point, run_cli, wait_for_dead_letters, wait_for_rows, write_raw

from canalflow.contract import MAX_PAYLOAD_BYTES, Reading, ReadingBatch, readings_topic
from canalflow.influx import InfluxV1

TS = 1_772_323_200_000


def batch(gateway: str = "GW-B1", point: str = "V01-IN", district: str = "demo", **values: float) -> bytes:
    reading = Reading(ts=TS, values=values or {"flow": 0.2})
    return ReadingBatch(district=district, gateway=gateway, point=point, seq=1, readings=(reading,)).to_json()


def raw_batch(values: str, ts: str = str(TS), extra: str = "") -> bytes:
    return (
        '{"v":1,"district":"demo","gateway":"GW-B1","point":"V01-IN","seq":1,"readings":'
        f'[{{"ts":{ts},"values":{values}}}{extra}]}}'
    ).encode()


CASES: list[tuple[str, str, bytes]] = [
    ("malformed_json", readings_topic("demo", "GW-B1", "V01-IN"), b'{"v":1,"district":'),
    ("malformed_json", readings_topic("demo", "GW-B1", "V01-IN"), b"\xff\xfe not utf-8"),
    ("schema", readings_topic("demo", "GW-B1", "V01-IN"), b'{"v":1,"district":"demo"}'),
    ("schema", readings_topic("demo", "GW-B1", "V01-IN"), raw_batch('{"flow":"lots"}')),
    ("unknown_quantity", readings_topic("demo", "GW-B1", "V01-IN"), raw_batch('{"flow_gpm":3.0}')),
    ("impossible_value", readings_topic("demo", "GW-B1", "V01-IN"), raw_batch('{"flow":5000.0}')),
    ("impossible_value", readings_topic("demo", "GW-B1", "V01-IN"), raw_batch('{"level":1e400}')),
    ("duplicate_timestamp", readings_topic("demo", "GW-B1", "V01-IN"), raw_batch('{"flow":1.0}', extra=f',{{"ts":{TS},"values":{{}}}}')),
    ("oversize", readings_topic("demo", "GW-B1", "V01-IN"), b" " * (MAX_PAYLOAD_BYTES + 1)),
    ("bad_topic", "canalflow/v1/demo/GW-B1/V01-IN/readingz", batch()),
    ("wrong_district", readings_topic("other", "GW-B1", "V01-IN"), batch(district="other")),
    ("unknown_gateway", readings_topic("demo", "GW-X", "V01-IN"), batch(gateway="GW-X")),
    ("unknown_point", readings_topic("demo", "GW-B1", "V13-IN"), batch(point="V13-IN")),
    ("wrong_gateway", readings_topic("demo", "GW-B2", "V01-IN"), batch(gateway="GW-B2")),
    ("topic_mismatch", readings_topic("demo", "GW-B1", "V02-IN"), batch(point="V01-IN")),
    ("bad_status", "canalflow/v1/demo/GW-B1/status", b'{"state":"sleeping"}'),
]


def test_bad_messages_are_dead_lettered_with_reason_topic_and_payload(
    mqtt_url: str, influx: InfluxV1, start_ingest, tmp_path: Path
) -> None:
    store = tmp_path / "dl.sqlite"
    ingest = start_ingest(mqtt_url, influx, deadletter=store)
    good = (readings_topic("demo", "GW-B1", "V02-IN"), batch(point="V02-IN"))
    # bad_topic (".../readingz") and wrong_district are outside the subscription, so the broker never
    # delivers them: ingest cannot dead-letter what it does not receive; the unit test below checks them.
    delivered = [c for c in CASES if c[0] not in ("bad_topic", "wrong_district")]
    publish(mqtt_url, "--raw", str(write_raw(tmp_path / "bad.jsonl", [(t, p) for _, t, p in delivered] + [good])))
    letters = wait_for_dead_letters(store, len(delivered), ingest=ingest)
    wait_for_rows(influx, 1, ingest=ingest)
    assert rows_per_point(influx) == {"V02-IN": 1}, "the good message behind the bad ones is written"
    got = sorted((x.reason, x.topic, x.payload) for x in letters)
    assert got == sorted(delivered)
    assert all(x.detail for x in letters)
    by_reason = {x.reason: x.detail for x in letters}
    assert "V13-IN" in by_reason["unknown_point"] and "demo-district.yaml" in by_reason["unknown_point"]
    assert "GW-B1" in by_reason["wrong_gateway"]
    assert "readings[0].values" in by_reason["unknown_quantity"]

    listing = run_cli("ingest", "deadletter", "list", "--store", str(store), "--json")
    assert listing.returncode == 0, listing.stderr
    counts = json.loads(listing.stdout)["counts"]
    assert counts["malformed_json"] == 2 and counts["unknown_point"] == 1 and sum(counts.values()) == len(delivered)
    first = letters[0]
    shown = run_cli("ingest", "deadletter", "show", str(first.id), "--store", str(store))
    assert shown.returncode == 0 and json.loads(shown.stdout)["topic"] == first.topic
    missing = run_cli("ingest", "deadletter", "show", "99999", "--store", str(store))
    assert missing.returncode == 1 and "no dead letter #99999" in missing.stderr


def test_replay_after_the_operator_adds_the_point(mqtt_url: str, influx: InfluxV1, start_ingest, tmp_path: Path) -> None:
    store = tmp_path / "dl.sqlite"
    ingest = start_ingest(mqtt_url, influx, deadletter=store)
    publish(mqtt_url, "--raw", str(write_raw(tmp_path / "m.jsonl", [(readings_topic("demo", "GW-B1", "V13-IN"), batch(point="V13-IN"))])))
    wait_for_dead_letters(store, 1, ingest=ingest)
    ingest.stop()

    influx_args = ["--influx", influx.url, "--db", influx.database, "--store", str(store)]
    still = run_cli("ingest", "deadletter", "replay", "--district", str(DEMO), *influx_args)
    assert still.returncode == 1 and "still rejected: unknown_point" in still.stdout
    assert rows_per_point(influx) == {}

    fixed = tmp_path / "district-fixed.yaml"
    text = DEMO.read_text(encoding="utf-8")
    anchor = "  - {id: V12-IN,"
    extra = "  - {id: V13-IN, name: 新村进水口, role: intake, canal: L11, km: 2.5, gateway: GW-B1, unit_id: 16, profile: em-pipe}\n"
    fixed.write_text(text.replace(anchor, extra + anchor, 1), encoding="utf-8")
    done = run_cli("ingest", "deadletter", "replay", "--reason", "unknown_point", "--district", str(fixed), *influx_args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replayed 1, still failing 0" in done.stdout
    assert rows_per_point(influx) == {"V13-IN": 1}
    again = run_cli("ingest", "deadletter", "replay", "--district", str(fixed), *influx_args)
    assert again.returncode == 0 and "nothing to replay" in again.stdout


def test_a_line_influxdb_refuses_is_isolated_and_the_rest_written(
    mqtt_url: str, influx: InfluxV1, start_ingest, tmp_path: Path
) -> None:
    old = 978_307_200_000  # 2001-01-01: its own shard
    # A string `flow` in the 2001 shard makes every float `flow` there a field type conflict (HTTP 400).
    influx.write_lines([f'reading,point=X flow="text" {old}'])
    store = tmp_path / "dl.sqlite"
    ingest = start_ingest(mqtt_url, influx, deadletter=store)
    messages = [
        (readings_topic("demo", "GW-B1", "V01-IN"), batch()),
        (readings_topic("demo", "GW-B1", "V02-IN"), ReadingBatch(
            district="demo", gateway="GW-B1", point="V02-IN", seq=7,
            readings=(Reading(ts=old + 1000, values={"flow": 0.3}),)).to_json()),
        (readings_topic("demo", "GW-B1", "V03-IN"), batch(point="V03-IN")),
    ]
    publish(mqtt_url, "--raw", str(write_raw(tmp_path / "m.jsonl", messages)))
    letters = wait_for_dead_letters(store, 1, ingest=ingest)
    wait_for_rows(influx, 2, ingest=ingest)  # V01-IN + V03-IN (the X row has no qcode)
    assert rows_per_point(influx) == {"V01-IN": 1, "V03-IN": 1}
    assert [(x.reason, x.topic) for x in letters] == [("influx_rejected", messages[1][0])]
    assert "field type conflict" in letters[0].detail


def test_validator_rejects_topics_outside_the_contract() -> None:
    from canalflow.district import load_district
    from ingest.validate import MessageValidator, Rejected

    validator = MessageValidator(load_district(DEMO))
    result = validator.validate("canalflow/v1/demo/GW-B1/V01-IN/readingz", batch())
    assert isinstance(result, Rejected) and result.reason == "bad_topic"
    result = validator.validate("canalflow/v1/demo/GW-B1/cmd", b"{}")
    assert isinstance(result, Rejected) and result.reason == "bad_topic"
    result = validator.validate(readings_topic("other", "GW-B1", "V01-IN"), batch(district="other"))
    assert isinstance(result, Rejected) and result.reason == "wrong_district"
