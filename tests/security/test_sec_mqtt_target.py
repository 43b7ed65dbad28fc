"""canalflow.mqtt: MqttTarget parsing, redaction, and connection errors against real sockets."""

from __future__ import annotations

import argparse
import logging
import socket
import time
from pathlib import Path

import pytest
from sec_helpers import WAIT

from canalflow.mqtt import (
    ENV_PASSWORD,
    ENV_USERNAME,
    MqttConfigError,
    MqttConnectError,
    MqttTarget,
    add_mqtt_arguments,
    connect,
    redact_url,
    target_from_args,
)
from testbed.services import Mosquitto, free_port

SECRET = "s3cr3t-Value-that-must-never-show"


@pytest.fixture(autouse=True)
def _no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_USERNAME, raising=False)
    monkeypatch.delenv(ENV_PASSWORD, raising=False)


def _secret_file(tmp_path: Path, text: str = SECRET + "\nsecond line ignored\n") -> Path:
    path = tmp_path / "gw.password"
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("url", "host", "port", "tls"),
    [
        ("mqtt://broker.example", "broker.example", 1883, False),
        ("mqtts://broker.example", "broker.example", 8883, True),
        ("mqtt://127.0.0.1:1884", "127.0.0.1", 1884, False),
        ("mqtts://10.0.0.5:9883/", "10.0.0.5", 9883, True),
        ("tcp://h:1", "h", 1, False),
        ("ssl://h:2", "h", 2, True),
    ],
)
def test_from_url_host_port_and_tls(url: str, host: str, port: int, tls: bool) -> None:
    target = MqttTarget.from_url(url)
    assert (target.host, target.port, target.tls) == (host, port, tls)
    assert target.username is None and target.password is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h:1883", "scheme 'http' is not supported"),
        ("h:1883", "is not supported"),
        ("mqtt://:1883", "has no host"),
        ("mqtt://h:99999", "port is not a number"),
        ("mqtt://h:abc", "port is not a number"),
        ("mqtt://h:1883/topic", "a path, query or fragment is not allowed"),
        ("mqtt://h:1883?cafile=x", "a path, query or fragment is not allowed"),
    ],
)
def test_bad_urls_are_named_with_a_fix(url: str, expected: str) -> None:
    with pytest.raises(MqttConfigError, match="MQTT URL") as caught:
        MqttTarget.from_url(url)
    assert expected in str(caught.value)
    assert "mqtt" in str(caught.value)  # every message says what a good URL looks like


def test_bad_url_error_redacts_the_password() -> None:
    with pytest.raises(MqttConfigError) as caught:
        MqttTarget.from_url(f"http://gw:{SECRET}@h:1883")
    assert SECRET not in str(caught.value)
    assert "gw:***@h" in str(caught.value)


def test_redact_url() -> None:
    assert redact_url(f"mqtts://u:{SECRET}@h:8883") == "mqtts://u:***@h:8883"
    assert redact_url("mqtt://u@h:1883") == "mqtt://u@h:1883"
    assert redact_url("mqtt://h:1883") == "mqtt://h:1883"


def test_password_precedence_argument_url_file_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = _secret_file(tmp_path)
    monkeypatch.setenv(ENV_PASSWORD, "from-env")
    assert MqttTarget.from_url("mqtt://gw@h", password="arg", password_file=file).password == "arg"
    assert MqttTarget.from_url("mqtt://gw:url-pw@h", password_file=file).password == "url-pw"
    assert MqttTarget.from_url("mqtt://gw@h", password_file=file).password == SECRET
    assert MqttTarget.from_url("mqtt://gw@h").password == "from-env"
    assert MqttTarget.from_url("mqtt://h").password is None  # no user: the env password is not used


def test_username_from_argument_url_or_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MqttTarget.from_url("mqtt://url-user@h", username="arg").username == "arg"
    assert MqttTarget.from_url("mqtt://url%40user@h").username == "url@user"
    monkeypatch.setenv(ENV_USERNAME, "env-user")
    assert MqttTarget.from_url("mqtt://h").username == "env-user"


def test_password_without_username_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MqttConfigError, match="no username"):
        MqttTarget.from_url("mqtt://h", password_file=_secret_file(tmp_path))


def test_password_file_problems_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.password"
    with pytest.raises(MqttConfigError, match=f"{missing} does not exist.*canalflow credentials"):
        MqttTarget.from_url("mqtt://gw@h", password_file=missing)
    empty = _secret_file(tmp_path, "")
    with pytest.raises(MqttConfigError, match=f"{empty} is empty"):
        MqttTarget.from_url("mqtt://gw@h", password_file=empty)


def test_world_readable_password_file_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    file = _secret_file(tmp_path)
    file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="canalflow.mqtt"):
        MqttTarget.from_url("mqtt://gw@h", password_file=file)
    assert "chmod 600" in caplog.text and str(file) in caplog.text
    assert SECRET not in caplog.text


def test_tls_files_need_mqtts_and_must_exist(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    with pytest.raises(MqttConfigError, match="use mqtts://h:1883"):
        MqttTarget.from_url("mqtt://h", cafile=ca)
    with pytest.raises(MqttConfigError, match=r"CA file .* does not exist"):
        MqttTarget.from_url("mqtts://h", cafile=tmp_path / "missing.crt")
    with pytest.raises(MqttConfigError, match="needs its certfile"):
        MqttTarget.from_url("mqtts://h", keyfile=ca)
    assert MqttTarget.from_url("mqtts://h", cafile=ca).cafile == ca


def test_password_never_in_repr_str_or_url(tmp_path: Path) -> None:
    target = MqttTarget.from_url("mqtts://gw@h:8883", password_file=_secret_file(tmp_path))
    assert target.password == SECRET
    for text in (repr(target), str(target), target.redacted_url, f"{target}", f"{target!r}"):
        assert SECRET not in text
    assert target.redacted_url == "mqtts://gw:***@h:8883"
    assert "password='***'" in repr(target)
    assert MqttTarget.from_url("mqtt://gw@h").redacted_url == "mqtt://gw@h:1883"


def test_cli_options_build_the_target(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_mqtt_arguments(parser)
    file = _secret_file(tmp_path)
    args = parser.parse_args(["--mqtt", "mqtt://h:1999", "--mqtt-username", "GW-B1", "--mqtt-password-file", str(file)])
    target = target_from_args(args)
    assert (target.host, target.port, target.username, target.password) == ("h", 1999, "GW-B1", SECRET)
    assert target_from_args(parser.parse_args([])).address == "127.0.0.1:1883"


def test_connect_to_a_closed_port_names_it() -> None:
    port = free_port()  # nothing listens on it
    with pytest.raises(MqttConnectError, match=f"nothing listens on 127.0.0.1:{port}") as caught:
        connect(MqttTarget.from_url(f"mqtt://127.0.0.1:{port}"), "probe", timeout=WAIT)
    assert caught.value.retryable  # the broker may not be up yet


def test_silent_server_times_out_with_a_hint() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with pytest.raises(MqttConnectError, match=f"no answer \\(CONNACK\\) from MQTT broker 127.0.0.1:{port} within 0.5 s") as caught:
            connect(MqttTarget.from_url(f"mqtt://127.0.0.1:{port}"), "probe", timeout=0.5)
        assert caught.value.retryable


def test_connect_keeps_callbacks_and_delivers(mosquitto: Mosquitto) -> None:
    """The caller's on_connect runs (e.g. to subscribe), and the client works after connect_blocking."""
    from canalflow.mqtt import connect_blocking, make_client

    target = MqttTarget.from_url(mosquitto.url)
    client = make_client(target, "sec-callbacks", clean_session=True)
    calls: list[str] = []
    client.on_connect = lambda c, _u, _f, reason, _p: calls.append(str(reason))
    connect_blocking(client, target, WAIT)
    try:
        assert calls == ["Success"]
        assert client.is_connected()
    finally:
        client.disconnect()
        client.loop_stop()


def test_connect_without_starting_the_loop_for_callers_that_run_their_own(mosquitto: Mosquitto) -> None:
    from canalflow.mqtt import connect_blocking, make_client

    target = MqttTarget.from_url(mosquitto.url)
    client = make_client(target, "sec-own-loop", clean_session=True, manual_ack=True)
    connect_blocking(client, target, WAIT, start_loop=False)
    got: list[bytes] = []
    client.on_message = lambda _c, _u, message: got.append(message.payload)
    client.subscribe("canalflow-test/own-loop", qos=1)
    client.publish("canalflow-test/own-loop", b"mine", qos=1)
    deadline = time.monotonic() + WAIT
    while not got and time.monotonic() < deadline:
        client.loop(timeout=0.05)  # the caller's own loop (as loop_forever would)
    client.disconnect()
    assert got == [b"mine"]
