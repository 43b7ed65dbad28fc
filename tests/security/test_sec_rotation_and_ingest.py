"""Rotation on a live broker (SIGHUP reload), and ingest's own check behind a misconfigured broker."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from sec_helpers import POINT, WAIT, Peer, start_broker

from canalflow.contract import Reading, ReadingBatch, readings_filter, readings_topic
from canalflow.credentials import generate_credentials, secret_file
from canalflow.district import District
from canalflow.mqtt import MqttConnectError, MqttTarget, connect
from ingest.validate import MessageValidator
from testbed.services import Mosquitto

D = "demo"


def _wait_until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_rotation_and_sighup_lock_out_the_old_secret_only(district: District, tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    generate_credentials(district, creds)
    broker = start_broker(tmp_path / "broker", password_file=creds / "mosquitto.passwd", acl_file=creds / "mosquitto.acl")
    peers: list[Peer] = []
    try:
        def login(user: str, password: str | None = None) -> Peer:
            target = MqttTarget.from_url(broker.url, username=user, password=password, password_file=secret_file(creds, user))
            peers.append(Peer(target, f"{user}-{len(peers)}"))
            return peers[-1]

        old = secret_file(creds, "GW-B2").read_text().strip()
        rotated, ingest = login("GW-B2"), login("ingest")
        generate_credentials(district, creds, rotate=["GW-B2"])
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGHUP)  # what `systemctl reload mosquitto` does
        _wait_until(lambda: not rotated.client.is_connected(), "the broker kept a client whose secret was rotated")
        with pytest.raises(MqttConnectError, match="not authorised"):
            connect(MqttTarget.from_url(broker.url, username="GW-B2", password=old), "old-secret", timeout=WAIT)
        ingest.subscribe(readings_filter(D))
        login("GW-B2").publish(readings_topic(D, "GW-B2", POINT["GW-B2"]), b"new-secret")
        assert [m.payload for m in ingest.receive_until(b"new-secret")] == [b"new-secret"]
        assert ingest.client.is_connected()  # users whose secret did not change stay connected
    finally:
        for p in peers:
            p.close()
        broker.stop()


def _batch(gateway: str, point: str) -> bytes:
    batch = ReadingBatch(district=D, gateway=gateway, point=point, seq=1,
                         readings=(Reading(ts=1_772_323_200_000, values={"flow": 1.5}),))
    return batch.to_json()


def test_ingest_rejects_what_a_gateway_may_publish_for_another_gateways_point(
    district: District, secure_broker: Mosquitto, creds: Path
) -> None:
    """Within its own prefix a gateway can claim another gateway's point; ingest dead-letters it."""
    validator = MessageValidator(district)

    def login(user: str) -> Peer:
        target = MqttTarget.from_url(secure_broker.url, username=user, password_file=secret_file(creds, user))
        return Peer(target, f"{user}-defence")

    ingest, intruder = login("ingest"), login("GW-B1")
    try:
        ingest.subscribe(readings_filter(D))
        intruder.publish(readings_topic(D, "GW-B1", POINT["GW-MAIN"]), _batch("GW-B1", POINT["GW-MAIN"]))  # a point of GW-MAIN
        intruder.publish(readings_topic(D, "GW-B1", POINT["GW-B1"]), _batch("GW-MAIN", POINT["GW-B1"]))
        intruder.publish(readings_topic(D, "GW-B1", POINT["GW-B1"]), _batch("GW-B1", POINT["GW-B1"]))
        received = ingest.receive_until(_batch("GW-B1", POINT["GW-B1"]))
    finally:
        ingest.close()
        intruder.close()
    verdicts = [validator.validate(m.topic, m.payload) for m in received]
    assert [getattr(v, "reason", "accepted") for v in verdicts] == ["wrong_gateway", "topic_mismatch", "accepted"]
    assert json.loads(received[2].payload)["gateway"] == "GW-B1"
