"""TLS with a self-signed CA against a real Mosquitto TLS listener (certificates made with openssl)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sec_helpers import POINT, WAIT, Peer, make_client_cert, make_tls_files, start_broker

from canalflow.contract import readings_filter, readings_topic
from canalflow.credentials import CredentialsError, check_tls, generate_tls, secret_file
from canalflow.credentials import tls_files as generated_tls_files
from canalflow.mqtt import MqttConnectError, MqttTarget, connect
from testbed.services import Mosquitto, TlsFiles


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_broker(creds: Path, tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Mosquitto:
    broker = start_broker(
        tmp_path_factory.mktemp("tls-mosquitto"),
        password_file=creds / "mosquitto.passwd",
        acl_file=creds / "mosquitto.acl",
        tls=tls_files,
    )
    yield broker  # type: ignore[misc]
    broker.stop()


def _target(broker: Mosquitto, creds: Path, user: str, cafile: Path) -> MqttTarget:
    assert broker.tls_url is not None
    return MqttTarget.from_url(broker.tls_url, username=user, password_file=secret_file(creds, user), cafile=cafile)


def test_mqtts_with_the_right_ca_carries_readings(tls_broker: Mosquitto, creds: Path, tls_files: TlsFiles) -> None:
    ingest = Peer(_target(tls_broker, creds, "ingest", tls_files.cafile), "tls-ingest")
    gateway = Peer(_target(tls_broker, creds, "GW-B1", tls_files.cafile), "tls-gw")
    try:
        ingest.subscribe(readings_filter("demo"))
        gateway.publish(readings_topic("demo", "GW-B1", POINT["GW-B1"]), b"over-tls")
        [message] = ingest.receive_until(b"over-tls")
        assert ingest.client.socket().version().startswith("TLS")  # type: ignore[union-attr]
    finally:
        gateway.close()
        ingest.close()
    assert message.topic == readings_topic("demo", "GW-B1", POINT["GW-B1"])


def test_wrong_ca_is_refused_with_a_clear_error(tls_broker: Mosquitto, creds: Path, tmp_path: Path) -> None:
    stranger = make_tls_files(tmp_path / "other", cn="some other CA")
    target = _target(tls_broker, creds, "GW-B1", stranger.cafile)
    with pytest.raises(MqttConnectError) as caught:
        connect(target, "tls-wrong-ca", timeout=WAIT)
    text = str(caught.value)
    assert f"TLS to 127.0.0.1:{tls_broker.tls_port}" in text
    assert "certificate verify failed (self-signed certificate in certificate chain)" in text
    assert "--mqtt-cafile" in text
    assert not caught.value.retryable
    assert target.password is not None and target.password not in text


def test_plain_client_on_the_tls_port_gets_a_hint(tls_broker: Mosquitto, creds: Path) -> None:
    target = MqttTarget.from_url(
        f"mqtt://127.0.0.1:{tls_broker.tls_port}", username="GW-B1", password_file=secret_file(creds, "GW-B1")
    )
    with pytest.raises(MqttConnectError, match="use mqtts://") as caught:
        connect(target, "plain-on-tls", timeout=WAIT)
    assert not caught.value.retryable


def test_tls_client_on_the_plain_port_gets_a_hint(tls_broker: Mosquitto, creds: Path, tls_files: TlsFiles) -> None:
    target = MqttTarget.from_url(
        tls_broker.url.replace("mqtt://", "mqtts://"), username="GW-B1",
        password_file=secret_file(creds, "GW-B1"), cafile=tls_files.cafile,
    )
    with pytest.raises(MqttConnectError, match=r"TLS handshake with 127\.0\.0\.1:.* use mqtt://"):
        connect(target, "tls-on-plain", timeout=WAIT)


# ---------------------------------------------------------------------------------------------
# TLS files made by `canalflow credentials --tls-host`


def _broker_tls(out: Path) -> TlsFiles:
    files = generated_tls_files(out)
    return TlsFiles(cafile=files["ca.crt"], certfile=files["server.crt"], keyfile=files["server.key"])


def test_generated_ca_and_certificate_serve_a_real_broker(creds: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = generate_tls(out, ["127.0.0.1", "localhost"])
    assert len(done) == 2 and "new CA" in done[0]
    files = generated_tls_files(out)
    assert stat.S_IMODE(files["ca.key"].stat().st_mode) == 0o600
    assert stat.S_IMODE(files["server.key"].stat().st_mode) == 0o600
    assert check_tls(out) == []
    broker = start_broker(tmp_path / "broker", password_file=creds / "mosquitto.passwd", tls=_broker_tls(out))
    try:
        client = connect(_target(broker, creds, "GW-B3", files["ca.crt"]), "generated-tls", timeout=WAIT)
        client.disconnect()
        client.loop_stop()
    finally:
        broker.stop()


def test_rerun_keeps_the_ca_and_reissues_only_for_new_hosts(tmp_path: Path) -> None:
    generate_tls(tmp_path, ["127.0.0.1"])
    files = generated_tls_files(tmp_path)
    ca, cert = files["ca.crt"].read_bytes(), files["server.crt"].read_bytes()
    assert generate_tls(tmp_path, ["127.0.0.1"]) == [f"kept TLS files in {files['ca.crt'].parent}"]
    assert files["server.crt"].read_bytes() == cert
    assert generate_tls(tmp_path, ["127.0.0.1", "broker.example"])[0].endswith("for 127.0.0.1, broker.example")
    assert files["ca.crt"].read_bytes() == ca and files["server.crt"].read_bytes() != cert
    assert check_tls(tmp_path) == []
    generate_tls(tmp_path, ["127.0.0.1"], rotate=True)
    assert files["ca.crt"].read_bytes() != ca


def test_certificate_for_another_name_is_refused_by_hostname_check(creds: Path, tmp_path: Path) -> None:
    generate_tls(tmp_path / "out", ["broker.example"])
    broker = start_broker(tmp_path / "broker", password_file=creds / "mosquitto.passwd", tls=_broker_tls(tmp_path / "out"))
    try:
        target = _target(broker, creds, "GW-B3", generated_tls_files(tmp_path / "out")["ca.crt"])
        with pytest.raises(MqttConnectError, match=r"certificate verify failed \(IP address mismatch") as caught:
            connect(target, "wrong-name", timeout=WAIT)
        assert not caught.value.retryable
    finally:
        broker.stop()


def test_check_tls_names_each_problem(tmp_path: Path) -> None:
    generate_tls(tmp_path / "a", ["127.0.0.1"])
    generate_tls(tmp_path / "b", ["127.0.0.1"])
    a, b = generated_tls_files(tmp_path / "a"), generated_tls_files(tmp_path / "b")
    b["ca.crt"].replace(a["ca.crt"])  # a's server certificate no longer matches a's CA
    b["server.key"].replace(a["server.key"])
    a["ca.key"].chmod(0o644)
    problems = "\n".join(check_tls(tmp_path / "a"))
    assert f"{a['server.crt']}: not signed by {a['ca.crt']}" in problems
    assert f"{a['server.key']}: is not the key of {a['server.crt']}" in problems
    assert f"{a['ca.key']}: mode 644" in problems
    a["ca.key"].unlink()
    with pytest.raises(CredentialsError, match=r"ca\.key is missing.*--rotate-tls"):
        generate_tls(tmp_path / "a", ["127.0.0.1", "localhost"])
    with pytest.raises(CredentialsError, match="not a host name"):
        generate_tls(tmp_path / "c", ["bad host"])


def test_client_certificate_when_the_broker_requires_one(creds: Path, tls_files: TlsFiles, tmp_path: Path) -> None:
    required = TlsFiles(tls_files.cafile, tls_files.certfile, tls_files.keyfile, require_certificate=True)
    broker = start_broker(tmp_path / "broker", password_file=creds / "mosquitto.passwd", tls=required)
    certfile, keyfile = make_client_cert(tls_files, tmp_path, "GW-B1")
    try:
        assert broker.tls_url is not None
        with_cert = MqttTarget.from_url(broker.tls_url, username="GW-B1", password_file=secret_file(creds, "GW-B1"),
                                        cafile=tls_files.cafile, certfile=certfile, keyfile=keyfile)
        client = connect(with_cert, "mtls-ok", timeout=WAIT)
        client.disconnect()
        client.loop_stop()
        without = _target(broker, creds, "GW-B1", tls_files.cafile)
        with pytest.raises(MqttConnectError, match=f"127.0.0.1:{broker.tls_port}") as caught:
            connect(without, "mtls-missing", timeout=WAIT)
        # TLS 1.3 reports the missing certificate after the handshake, so it shows as a closed connection
        assert "client certificate (--mqtt-certfile, --mqtt-keyfile)" in str(caught.value)
    finally:
        broker.stop()
