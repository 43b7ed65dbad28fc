"""Helpers for the security tests: a recording MQTT peer, a broker starter and TLS files (openssl)."""

from __future__ import annotations

import queue
import shutil
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from canalflow.mqtt import MqttTarget, connect_blocking, make_client
from testbed.services import Mosquitto, ServiceError, TlsFiles

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-district.yaml"
WAIT = 10.0  # seconds: generous for a loaded 2-core machine


class Peer:
    """A client connected through canalflow.mqtt that records SUBACKs and messages."""

    def __init__(self, target: MqttTarget, client_id: str) -> None:
        self.target = target
        self.client = make_client(target, client_id, clean_session=True)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.subacks: queue.Queue[list[mqtt.ReasonCode]] = queue.Queue()
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.put(codes)
        connect_blocking(self.client, target, WAIT)

    def subscribe(self, topic: str) -> mqtt.ReasonCode:
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=WAIT)[0]

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the PUBACK (Mosquitto acknowledges even what its ACL drops)."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published(), f"no PUBACK for {topic}"

    def receive_until(self, payload: bytes) -> list[mqtt.MQTTMessage]:
        """Every message received up to and including the one carrying ``payload`` (the control)."""
        seen: list[mqtt.MQTTMessage] = []
        while True:
            try:
                message = self.messages.get(timeout=WAIT)
            except queue.Empty:
                got = [m.payload for m in seen]
                raise AssertionError(f"control message {payload!r} not delivered; got {got}") from None
            seen.append(message)
            if message.payload == payload:
                return seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_broker(workdir: Path, **kwargs: object) -> Mosquitto:
    try:
        return Mosquitto(workdir, **kwargs).start()  # type: ignore[arg-type]
    except ServiceError as exc:  # includes ServiceMissing with its install hint
        pytest.fail(str(exc), pytrace=False)


def make_tls_files(directory: Path, *, cn: str = "canalflow test CA") -> TlsFiles:
    """A self-signed CA and a server certificate for 127.0.0.1 signed by it (the commands of docs/security.md)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl not found: install it with `sudo apt-get install openssl`", pytrace=False)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-subj", f"/CN={cn}", "-days", "2"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-out", crt, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
         "-days", "2", "-extfile", ext],
    ]
    for args in commands:
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True, timeout=30)
    return TlsFiles(cafile=ca_crt, certfile=crt, keyfile=key)


def first_points() -> dict[str, str]:
    """The first metering point of each gateway of the demo district (gateway id -> point id)."""
    from canalflow.district import load_district

    district = load_district(DEMO)
    return {gateway: district.points_of_gateway(gateway)[0].id for gateway in district.gateways}


POINT = first_points()


def make_client_cert(tls: TlsFiles, directory: Path, name: str) -> tuple[Path, Path]:
    """A client certificate (CN=name) signed by the CA of ``make_tls_files``; returns (certfile, keyfile)."""
    ca_key = Path(tls.cafile).with_name("ca.key")
    key, csr, crt = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={name}"],
        ["x509", "-req", "-in", csr, "-out", crt, "-CA", tls.cafile, "-CAkey", ca_key, "-CAcreateserial", "-days", "2"],
    ):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)
    return crt, key
