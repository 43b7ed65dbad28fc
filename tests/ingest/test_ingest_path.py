"""The thin path: a batch published on real Mosquitto lands in real InfluxDB with the right tags and fields."""

from __future__ import annotations

import time

from ingest_helpers import DEMO, publish, rows_per_point, wait_for_rows

from canalflow.contract import GatewayStatus, status_topic
from canalflow.district import load_district
from canalflow.influx import InfluxV1
from testbed.loadgen import Publisher, reading_values

START = 1_772_323_200_000  # 2026-03-01T00:00:00Z


def test_published_batch_becomes_rows_with_tags_and_fields(mqtt_url: str, influx: InfluxV1, start_ingest) -> None:
    ingest = start_ingest(mqtt_url, influx)
    sent = publish(mqtt_url, "--district", str(DEMO), "--points", "V01-IN,M1-HEAD", "--messages", "3", "--readings", "4",
                   "--start-ms", str(START), "--step-ms", "60000")
    assert sent == {"messages": 6, "readings": 24, "seconds": sent["seconds"]}
    wait_for_rows(influx, 24, ingest=ingest)
    assert rows_per_point(influx) == {"V01-IN": 12, "M1-HEAD": 12}

    rows = influx.query(
        'SELECT "flow", "totaliser", "quality", "qcode", "seq", "historical" FROM "reading" '
        'WHERE "point" = \'V01-IN\' GROUP BY "district", "gateway", "canal", "role", "point"'
    )
    assert len(rows) == 1
    assert rows[0]["tags"] == {"district": "demo", "gateway": "GW-B1", "canal": "L11", "role": "intake", "point": "V01-IN"}
    values = [dict(zip(rows[0]["columns"], v, strict=True)) for v in rows[0]["values"]]
    # V01-IN is the first point published, so its values come from reading_values(0, n)
    for n, row in enumerate(values):
        expected = reading_values(0, n)
        assert row["time"] == START + n * 60_000
        assert row["flow"] == expected["flow"]
        assert row["totaliser"] == expected["totaliser"]
        assert (row["quality"], row["qcode"], row["historical"]) == ("good", 0, False)
        assert row["seq"] == n // 4
    assert ingest.stop() == 0


def test_gateway_status_becomes_a_gateway_status_row(mqtt_url: str, influx: InfluxV1, start_ingest) -> None:
    district = load_district(DEMO)
    ingest = start_ingest(mqtt_url, influx)
    status = GatewayStatus(state="online", agent_version="0.1.0", ts=START, meters=9, buffer_depth=17, buffer_dropped=0)
    publisher = Publisher(mqtt_url)
    publisher.publish(status_topic(district.id, "GW-B2"), status.model_dump_json(exclude_none=True).encode(), retain=True)
    publisher.wait_acked(1)
    publisher.close()
    rows = []
    for _ in range(200):
        # this status's own row: an earlier test's agent may have left its GW-B2 status retained on the broker
        rows = influx.query_points(f'SELECT * FROM "gateway_status" WHERE "gateway" = \'GW-B2\' AND time = {START}ms')
        if rows:
            break
        time.sleep(0.1)
    assert rows, ingest.output()[-2000:]
    row = rows[0]
    assert (row["time"], row["state"], row["online"], row["buffer_depth"], row["meters"]) == (START, "online", 1, 17, 9)
    # clear the retained message so other tests' status subscriptions do not see it
    publisher = Publisher(mqtt_url)
    publisher.publish(status_topic(district.id, "GW-B2"), b"", retain=True)
    publisher.wait_acked(1)
    publisher.close()
