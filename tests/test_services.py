"""testbed.services against the real Debian mosquitto and influxd binaries."""

from __future__ import annotations

import queue
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from canalflow import binaries
from canalflow.binaries import find_binary
from canalflow.influx import InfluxV1
from testbed import services
from testbed.services import (
    Influxd,
    Mosquitto,
    PortInUse,
    ServiceError,
    ServiceMissing,
    ServiceStack,
    TlsFiles,
    free_port,
)

WAIT = 10.0  # seconds; generous for a loaded 2-core machine
MakeMosquitto = Callable[..., Mosquitto]


# ---------------------------------------------------------------------------------------------
# MQTT helpers: a client with its own network thread, recording what it receives
# ---------------------------------------------------------------------------------------------


class Peer:
    """A paho client (MQTT 3.1.1) that records CONNACK, SUBACK and messages."""

    def __init__(self, client_id: str = "", *, clean_session: bool = True) -> None:
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
        )
        self.connack: queue.Queue[tuple[bool, mqtt.ReasonCode]] = queue.Queue()
        self.subscribed = threading.Event()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)

    def _on_connect(self, _c: object, _u: object, flags: mqtt.ConnectFlags, reason: object, _p: object) -> None:
        self.connack.put((flags.session_present, reason))  # type: ignore[arg-type]

    def connect(self, port: int) -> tuple[bool, mqtt.ReasonCode]:
        """Connect, start the network thread and return (session_present, reason code)."""
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        return self.connack.get(timeout=WAIT)

    def subscribe(self, topic: str) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(WAIT), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published(), f"no PUBACK for {topic}"

    def receive(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=WAIT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def peer(port: int, client_id: str = "", *, clean_session: bool = True) -> Iterator[Peer]:
    p = Peer(client_id, clean_session=clean_session)
    _, reason = p.connect(port)
    assert not reason.is_failure, f"CONNECT refused: {reason}"
    try:
        yield p
    finally:
        p.close()


# ---------------------------------------------------------------------------------------------
# Mosquitto
# ---------------------------------------------------------------------------------------------


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 < port < 65536


def test_qos1_publish_subscribe_round_trip(mosquitto: Mosquitto) -> None:
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    with peer(mosquitto.port) as sub, peer(mosquitto.port) as pub:
        sub.subscribe("canalflow-test/round-trip/#")
        pub.publish("canalflow-test/round-trip/a", b'{"flow": 1.25}')
        message = sub.receive()
    assert message.topic == "canalflow-test/round-trip/a"
    assert message.payload == b'{"flow": 1.25}'
    assert message.qos == 1


def test_restart_keeps_persistent_session_and_queued_qos1(make_mosquitto: MakeMosquitto) -> None:
    broker = make_mosquitto()
    with peer(broker.port, "ingest-1", clean_session=False) as sub:
        sub.subscribe("canalflow-test/queued")
    # The subscriber is offline: the broker queues the QoS 1 messages for its session.
    with peer(broker.port) as pub:
        for n in range(3):
            pub.publish("canalflow-test/queued", f"m{n}".encode())
    port = broker.port
    broker.restart()
    assert broker.port == port
    sub = Peer("ingest-1", clean_session=False)
    session_present, _ = sub.connect(broker.port)
    try:
        assert session_present, "the broker forgot the persistent session across restart"
        received = [sub.receive().payload for _ in range(3)]
    finally:
        sub.close()
    assert received == [b"m0", b"m1", b"m2"]


def test_kill_then_start_on_the_same_port(make_mosquitto: MakeMosquitto) -> None:
    broker = make_mosquitto()
    pid, port = broker.pid, broker.port
    broker.kill()
    assert not broker.running
    broker.start()
    assert broker.pid != pid and broker.port == port
    with peer(broker.port) as p:
        p.subscribe("canalflow-test/after-kill")


def test_context_manager_stops_the_broker(tmp_path: Path) -> None:
    with Mosquitto(tmp_path) as broker:
        assert broker.running
    assert not broker.running
    assert broker.pid is None
    assert (tmp_path / "mosquitto.db").exists(), "a graceful stop saves the persistence file"


def test_bad_config_fails_with_the_log_tail(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path, extra_conf="no_such_option 1\n")
    with pytest.raises(ServiceError) as caught:
        broker.start(timeout=WAIT)
    message = str(caught.value)
    assert "exited with status" in message
    assert "no_such_option" in message  # mosquitto names the bad line; the error passes its log on
    assert not broker.running


def test_password_file_refuses_anonymous(tmp_path: Path, make_mosquitto: MakeMosquitto) -> None:
    password_file = tmp_path / "passwd"
    password_file.touch(mode=0o600)
    mosquitto_passwd = find_binary("mosquitto_passwd", "mosquitto")
    subprocess.run([mosquitto_passwd, "-b", str(password_file), "gateway-1", "s3cret"], check=True)
    broker = make_mosquitto(password_file=password_file)
    anonymous = Peer()
    _, reason = anonymous.connect(broker.port)
    anonymous.close()
    assert reason.is_failure, "anonymous client was let in"
    user = Peer()
    user.client.username_pw_set("gateway-1", "s3cret")
    _, reason = user.connect(broker.port)
    user.close()
    assert not reason.is_failure, f"valid user refused: {reason}"


def _make_tls_files(directory: Path) -> TlsFiles:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl not found: `sudo apt-get install openssl`", pytrace=False)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sign = ["-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-days", "2", "-extfile", ext]
    commands = [
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-subj", "/CN=canalflow test CA", "-days", "2"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-out", crt, *sign],
    ]
    for args in commands:
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True)
    return TlsFiles(cafile=ca_crt, certfile=crt, keyfile=key)


def test_tls_listener(tmp_path: Path, make_mosquitto: MakeMosquitto) -> None:
    tls = _make_tls_files(tmp_path)
    broker = make_mosquitto(tls=tls)
    assert broker.tls_port and broker.tls_port != broker.port
    assert broker.tls_url == f"mqtts://127.0.0.1:{broker.tls_port}"
    client = Peer()
    client.client.tls_set(ca_certs=str(tls.cafile))
    _, reason = client.connect(broker.tls_port)
    client.close()
    assert not reason.is_failure


# ---------------------------------------------------------------------------------------------
# Missing binaries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "hint"),
    [(Mosquitto, "sudo apt-get install mosquitto"), (Influxd, "sudo apt-get install influxdb")],
)
def test_missing_binary_names_the_install_command(
    service: type[Mosquitto] | type[Influxd], hint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(binaries, "SYSTEM_DIRS", ())  # /usr/sbin is searched after PATH
    with pytest.raises(ServiceMissing) as caught:
        service(tmp_path)
    assert hint in str(caught.value)
    assert service.binary_name in str(caught.value)


# ---------------------------------------------------------------------------------------------
# Influxd and the stack
# ---------------------------------------------------------------------------------------------


def test_influxd_restart_keeps_data(make_influxd: Callable[..., Influxd]) -> None:
    server = make_influxd()
    with InfluxV1(server.url, "keep") as db:
        db.create_database()
        db.write_lines("reading,point=P1 flow=2.5 1700000000000")
        port = server.port
        server.restart()
        assert server.port == port
        assert db.query_points("SELECT flow FROM reading") == [{"time": 1700000000000, "flow": 2.5}]
    server.stop()
    assert not server.running


def test_service_stack_starts_both_and_cleans_up() -> None:
    with ServiceStack() as stack:
        workdir = stack.workdir
        assert InfluxV1(stack.influx_url, "x").ping()
        with peer(stack.mosquitto.port) as p:
            p.subscribe("canalflow-test/stack")
    assert not stack.mosquitto.running
    assert not stack.influxd.running
    assert not workdir.exists()


def test_lost_port_race_is_retried_on_a_fresh_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_mosquitto: MakeMosquitto
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        ports = iter([busy])
        real_free_port = services.free_port
        monkeypatch.setattr(services, "free_port", lambda: next(ports, None) or real_free_port())
        broker = make_mosquitto()
        assert broker.port != busy
        assert broker.running
        # A port given explicitly is not silently replaced.
        with pytest.raises(PortInUse, match=r"(?i)address already in use"):
            Mosquitto(tmp_path / "explicit", port=busy).start()
