"""What Debian's Mosquitto (2.0.11) does with sessions across a restart — the ground the proof stands on.

A persistent plain subscription survives a broker restart: QoS 1 messages published while its
client is away are queued and delivered. A persistent *shared* subscription does not: after a
restart it is gone until the client subscribes again, and what is published meanwhile is
acknowledged to the publisher and dropped. This is why test_broker_restarted_under_load is a known
failure; if a broker upgrade changes the behaviour, this test says so.
"""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from canalflow.contract import readings_topic, shared


def persistent_subscriber(port: int, received: list[bytes]) -> mqtt.Client:
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="ingest-probe",
                         protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, message: received.append(message.payload)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.loop_start()
    return client


def publish_once(port: int, topic: str, payload: bytes) -> None:
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="edge-probe")
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(5)  # PUBACK: the broker took it
    client.disconnect()
    client.loop_stop()


def wait_until(predicate, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.05)


@pytest.mark.parametrize(("share", "survives"), [(False, True), (True, False)])
def test_mosquitto_restart_forgets_shared_subscriptions(make_mosquitto, share, survives):
    topic = readings_topic("demo", "GW-B1", "V01-IN")
    broker = make_mosquitto()
    received: list[bytes] = []
    subscriber = persistent_subscriber(broker.port, received)
    subscription = shared("ingest", topic) if share else topic
    subscriber.subscribe(subscription, qos=1)
    publish_once(broker.port, topic, b"before")  # positive control: the subscription works
    wait_until(lambda: received == [b"before"])
    assert received == [b"before"]
    subscriber.disconnect()
    subscriber.loop_stop()

    broker.restart()
    publish_once(broker.port, topic, b"while away")
    subscriber = persistent_subscriber(broker.port, received)  # resumes its session, does not subscribe
    wait_until(lambda: len(received) == 2, seconds=2.0)
    subscriber.disconnect()
    subscriber.loop_stop()
    assert (received == [b"before", b"while away"]) is survives, received
