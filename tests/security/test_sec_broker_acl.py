"""The generated password file and ACL, enforced by a real Mosquitto 2.

Mosquitto 2.0 with MQTT 3.1.1 grants every SUBSCRIBE and acknowledges every QoS 1 PUBLISH; what
its ACL denies it silently does not deliver.  So each "refused" below is shown as non-delivery,
next to a positive control sent afterwards on the same connections: MQTT keeps one publisher's
messages in order, so once the control has arrived a forbidden message would have arrived too.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from pathlib import Path

import pytest
from sec_helpers import POINT, WAIT, Peer

from canalflow.contract import (
    cmd_result_topic,
    cmd_topic,
    confirm_topic,
    readings_filter,
    readings_topic,
    shared,
    status_topic,
)
from canalflow.credentials import secret_file
from canalflow.mqtt import MqttConnectError, MqttTarget, connect_blocking, make_client, refusal_error
from testbed.services import Mosquitto

Connect = Callable[[str], Peer]
D = "demo"


def _refused(target: MqttTarget) -> MqttConnectError:
    client = make_client(target, "intruder", clean_session=True)
    with pytest.raises(MqttConnectError) as caught:
        connect_blocking(client, target, WAIT)
    return caught.value


def test_anonymous_client_is_refused(secure_broker: Mosquitto) -> None:
    error = _refused(MqttTarget.from_url(secure_broker.url))
    assert f"127.0.0.1:{secure_broker.port}" in str(error)
    assert "refuses anonymous clients" in str(error)
    assert not error.retryable


def test_wrong_password_is_refused_with_a_clear_error_and_no_secret_in_logs(
    secure_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "definitely-not-the-GW-MAIN-secret-4711"
    caplog.set_level(logging.DEBUG)
    error = _refused(MqttTarget.from_url(secure_broker.url, username="GW-MAIN", password=wrong))
    text = str(error)
    assert f"127.0.0.1:{secure_broker.port}" in text
    assert "'GW-MAIN'" in text and "not authorised" in text and "password file" in text
    assert wrong not in text and wrong not in repr(error)
    assert not error.retryable  # a service must stop and say so, not retry forever
    assert wrong not in caplog.text
    assert wrong not in secure_broker.log_file.read_text()


def test_gateway_publishes_its_own_readings_to_ingest_shared_subscription(peer: Connect) -> None:
    ingest = peer("ingest")
    ingest.subscribe(shared("ingest", readings_filter(D)))
    gateway = peer("GW-B1")
    topic = readings_topic(D, "GW-B1", POINT["GW-B1"])
    gateway.publish(topic, b"own-1")
    [message] = ingest.receive_until(b"own-1")
    assert message.topic == topic


def test_gateway_cannot_publish_under_another_gateways_prefix(peer: Connect) -> None:
    ingest = peer("ingest")
    ingest.subscribe(shared("ingest", readings_filter(D)))
    ingest.subscribe(status_topic(D, "+"))
    intruder = peer("GW-B1")
    intruder.publish(readings_topic(D, "GW-MAIN", POINT["GW-MAIN"]), b"forged-reading")
    intruder.publish(status_topic(D, "GW-MAIN"), b"forged-status")
    intruder.publish(readings_topic(D, "GW-B1", POINT["GW-B1"]), b"control")
    payloads = [m.payload for m in ingest.receive_until(b"control")]
    assert payloads == [b"control"]


def test_gateway_reads_only_its_own_commands(peer: Connect) -> None:
    gateway = peer("GW-B1")
    gateway.subscribe(cmd_topic(D, "GW-MAIN"))
    gateway.subscribe(cmd_topic(D, "+"))
    gateway.subscribe("canalflow/#")
    operator = peer("ops")
    operator.publish(cmd_topic(D, "GW-MAIN"), b"cmd-for-main")
    operator.publish(cmd_topic(D, "GW-B1"), b"cmd-for-b1")
    received = gateway.receive_until(b"cmd-for-b1")
    assert {m.payload for m in received} == {b"cmd-for-b1"}
    assert {m.topic for m in received} == {cmd_topic(D, "GW-B1")}


def test_ingest_publishes_confirmations_and_nothing_else(peer: Connect) -> None:
    listener = peer("ingest")
    listener.subscribe(readings_filter(D))
    ingest = peer("ingest")
    ingest.publish(readings_topic(D, "GW-MAIN", POINT["GW-MAIN"]), b"ingest-forgery")
    ingest.publish(status_topic(D, "GW-MAIN"), b"ingest-status-forgery")
    peer("GW-MAIN").publish(readings_topic(D, "GW-MAIN", POINT["GW-MAIN"]), b"control")
    assert [m.payload for m in listener.receive_until(b"control")] == [b"control"]


def test_a_gateway_reads_only_its_own_confirmations(peer: Connect) -> None:
    gateway = peer("GW-B1")
    assert gateway.subscribe(confirm_topic(D, "+")) == 1  # granted; delivery is filtered per message
    ingest = peer("ingest")
    ingest.publish(confirm_topic(D, "GW-B2"), b"for-b2")
    peer("GW-B2").publish(confirm_topic(D, "GW-B1"), b"forged-by-b2")  # only ingest writes B1's confirmations
    ingest.publish(confirm_topic(D, "GW-B1"), b"for-b1")
    received = gateway.receive_until(b"for-b1")
    assert [m.payload for m in received] == [b"for-b1"]


def test_ingest_reads_readings_and_status_but_not_commands(peer: Connect) -> None:
    ingest = peer("ingest")
    ingest.subscribe("canalflow/#")  # granted by Mosquitto 2.0, filtered per message by the ACL
    operator, gateway = peer("ops"), peer("GW-B2")
    operator.publish(cmd_topic(D, "GW-B2"), b"cmd")
    gateway.publish(cmd_result_topic(D, "GW-B2"), b"cmd-result")
    gateway.publish(status_topic(D, "GW-B2"), b"status")
    gateway.publish(readings_topic(D, "GW-B2", POINT["GW-B2"]), b"reading")
    assert [m.payload for m in ingest.receive_until(b"reading")] == [b"status", b"reading"]


def test_billing_reads_status_only(peer: Connect) -> None:
    billing = peer("billing")
    billing.subscribe("canalflow/#")
    gateway = peer("GW-B3")
    gateway.publish(readings_topic(D, "GW-B3", POINT["GW-B3"]), b"reading")
    gateway.publish(status_topic(D, "GW-B3"), b"status")
    assert [m.payload for m in billing.receive_until(b"status")] == [b"status"]


def test_operator_gets_command_results(peer: Connect) -> None:
    operator = peer("ops")
    operator.subscribe(cmd_result_topic(D, "+"))
    gateway = peer("GW-MAIN")
    gateway.publish(cmd_result_topic(D, "GW-MAIN"), b"done")
    [message] = operator.receive_until(b"done")
    assert message.topic == cmd_result_topic(D, "GW-MAIN")


def test_another_users_secret_is_refused(creds: Path, secure_broker: Mosquitto) -> None:
    """Every user's generated secret works; a secret of another user does not."""
    other = secret_file(creds, "GW-B2").read_text().strip()
    error = _refused(MqttTarget.from_url(secure_broker.url, username="GW-B1", password=other))
    assert "not authorised" in str(error) and other not in str(error)


def test_last_will_on_another_gateways_status_is_not_delivered(peer: Connect, secure_broker: Mosquitto, creds: Path) -> None:
    ingest = peer("ingest")
    ingest.subscribe(status_topic(D, "+"))
    for user, will_on, payload in (("GW-B1", "GW-MAIN", b"forged-will"), ("GW-B2", "GW-B2", b"own-will")):
        target = MqttTarget.from_url(secure_broker.url, username=user, password_file=secret_file(creds, user))
        client = make_client(target, f"{user}-will", clean_session=True, will=(status_topic(D, will_on), payload, 1, False))
        client.reconnect_delay_set(60, 60)  # no reconnect inside the test after the socket is cut
        connect_blocking(client, target, WAIT)
        client.socket().close()  # type: ignore[union-attr]  # an abrupt loss: the broker publishes the will
        client.loop_stop()
    received = ingest.receive_until(b"own-will")
    assert [m.payload for m in received] == [b"own-will"]
    assert received[0].topic == status_topic(D, "GW-B2")


def test_async_connect_refusal_gets_the_same_clear_error(secure_broker: Mosquitto) -> None:
    """An agent that connects with connect_async learns of a refusal in on_connect: refusal_error names it."""
    target = MqttTarget.from_url(secure_broker.url, username="GW-B3", password="stale-secret-0815")
    client = make_client(target, "async-agent", clean_session=True)
    reasons: queue.Queue[object] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, reason, _p: reasons.put(reason)
    client.connect_async(target.host, target.port, target.keepalive)
    client.loop_start()
    try:
        error = refusal_error(target, reasons.get(timeout=WAIT))
    finally:
        client.loop_stop()
    assert str(error) == (
        f"MQTT broker 127.0.0.1:{secure_broker.port} refused the connection as user 'GW-B3': not authorised: "
        "check the username and the password file, and that the broker's password_file has this user"
    )
    assert not error.retryable


def test_right_password_is_not_logged_even_with_paho_debug_logging(
    secure_broker: Mosquitto, creds: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = secret_file(creds, "GW-MAIN").read_text().strip()
    caplog.set_level(logging.DEBUG)
    target = MqttTarget.from_url(secure_broker.url, username="GW-MAIN", password_file=secret_file(creds, "GW-MAIN"))
    client = make_client(target, "logged-gw", clean_session=True)
    client.enable_logger(logging.getLogger("paho.test"))  # paho's packet log at DEBUG
    connect_blocking(client, target, WAIT)
    client.publish(status_topic(D, "GW-MAIN"), b"x", qos=1).wait_for_publish(WAIT)
    client.disconnect()
    client.loop_stop()
    assert "Sending CONNECT" in caplog.text and f"MQTT connected to {target.redacted_url}" in caplog.text
    assert secret not in caplog.text
    assert secret not in secure_broker.log_file.read_text()
