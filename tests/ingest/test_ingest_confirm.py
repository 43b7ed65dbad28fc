"""Ingest confirms to each gateway the seqs it made durable: written, or dead-lettered with a reason.

The edge deletes a buffered reading only on this confirmation (tests/edge/test_confirm.py), so a
message ingest rejects must be confirmed too, or the edge would send it forever.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path

from ingest_helpers import publish, wait_for_dead_letters, wait_for_rows, write_raw

from canalflow.contract import Confirmation, Reading, ReadingBatch, confirm_topic, readings_topic
from canalflow.influx import InfluxV1
from canalflow.mqtt import MqttTarget, connect_blocking, make_client

TS = 1_772_323_200_000


def batch(seq: int, point: str = "V02-IN", gateway: str = "GW-B1") -> bytes:
    reading = Reading(ts=TS + seq, values={"flow": 0.2})
    return ReadingBatch(district="demo", gateway=gateway, point=point, seq=seq, readings=(reading,)).to_json()


def test_written_and_dead_lettered_messages_are_confirmed_to_their_gateway(
    mqtt_url: str, influx: InfluxV1, start_ingest, tmp_path: Path
) -> None:
    target = MqttTarget.from_url(mqtt_url)
    listener = make_client(target, "confirm-listener", clean_session=True)
    received: queue.Queue[tuple[str, Confirmation]] = queue.Queue()
    listener.on_message = lambda _c, _u, m: received.put((m.topic, Confirmation.model_validate_json(m.payload)))
    connect_blocking(listener, target, 10)
    subscribed: queue.Queue[bool] = queue.Queue()
    listener.on_subscribe = lambda *_: subscribed.put(True)
    listener.subscribe(confirm_topic("demo", "+"), qos=1)
    subscribed.get(timeout=10)
    store = tmp_path / "dl.sqlite"
    ingest = start_ingest(mqtt_url, influx, deadletter=store)
    b1 = lambda point: readings_topic("demo", "GW-B1", point)  # noqa: E731
    messages = [
        (b1("V02-IN"), batch(7)),  # written
        (b1("V01-IN"), b'{"v":1,"district":"demo","gateway":"GW-B1","point":"V01-IN","seq":8,"readings":[{'),  # malformed
        (b1("V02-IN"), b'{"v":1,"district":"demo","gateway":"GW-B1","point":"V02-IN","seq":9,'
                       b'"readings":[{"ts":1772323200009,"values":{"flow":5000.0}}]}'),  # impossible value
        (b1("V13-IN"), batch(10, point="V13-IN")),  # unknown point
        (readings_topic("demo", "GW-B2", "V01-IN"), batch(11, gateway="GW-B2", point="V01-IN")),  # wrong gateway
        (b1("V01-IN"), b"\xff\xfe no seq here"),  # nothing to confirm it by
    ]
    publish(mqtt_url, "--raw", str(write_raw(tmp_path / "mixed.jsonl", messages)))
    wait_for_dead_letters(store, 5, ingest=ingest)
    wait_for_rows(influx, 1, ingest=ingest)
    written: dict[str, set[int]] = {}
    dead: dict[str, set[int]] = {}
    deadline = time.monotonic() + 20
    while (written, dead) != ({"GW-B1": {7}}, {"GW-B1": {8, 9, 10}, "GW-B2": {11}}) and time.monotonic() < deadline:
        try:
            topic, confirmation = received.get(timeout=0.5)
        except queue.Empty:
            continue
        gateway = topic.split("/")[3]
        for seqs, found in ((confirmation.written, written), (confirmation.dead, dead)):
            if seqs:
                found.setdefault(gateway, set()).update(seqs)
    listener.disconnect()
    listener.loop_stop()
    assert written == {"GW-B1": {7}}
    # the wrong-gateway message is confirmed on the topic's gateway: the broker's ACL vouches for who published there
    assert dead == {"GW-B1": {8, 9, 10}, "GW-B2": {11}}
