"""The one place that turns MQTT configuration into a connected paho-mqtt 2.x client.

Edge agents, ingest workers, load generators and tests all connect through here, so TLS,
credentials, the Last Will, reconnect back-off and error messages behave the same everywhere::

    target = MqttTarget.from_url("mqtts://broker:8883", username="GW-MAIN",
                                 password_file="secrets/GW-MAIN.password", cafile="ca.crt")
    client = make_client(target, "edge-GW-MAIN", will=(status_topic("demo", "GW-MAIN"), b"...", 1, True))
    client.on_message = ...
    connect_blocking(client, target, timeout=10)   # raises MqttConnectError with the broker's reason

A password never appears in a ``repr``, ``str``, log line or error message: use
:attr:`MqttTarget.redacted_url` to show where a client connects.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

from canalflow.errors import CanalflowError

__all__ = [
    "ENV_PASSWORD",
    "ENV_USERNAME",
    "MqttConfigError",
    "MqttConnectError",
    "MqttTarget",
    "add_mqtt_arguments",
    "connect",
    "connect_blocking",
    "make_client",
    "read_password_file",
    "redact_url",
    "refusal_error",
    "target_from_args",
]

log = logging.getLogger(__name__)

ENV_USERNAME = "CANALFLOW_MQTT_USERNAME"
ENV_PASSWORD = "CANALFLOW_MQTT_PASSWORD"
PLAIN_SCHEMES = ("mqtt", "tcp")
TLS_SCHEMES = ("mqtts", "ssl")
DEFAULT_PORT = {False: 1883, True: 8883}
# paho doubles the delay after each failed reconnect between these bounds (seconds).
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 10
# QoS 1 messages in flight per client; paho's default of 20 caps a publisher far below what
# Mosquitto accepts on loopback.  0 queued = unbounded: the edge's durable buffer bounds it.
MAX_INFLIGHT = 100
MAX_QUEUED = 0
REDACTED = "***"

Will = tuple[str, bytes | str, int, bool]


class MqttConfigError(CanalflowError, ValueError):
    """The MQTT configuration (URL, password file, TLS files) is unusable; the message says why."""


class MqttConnectError(CanalflowError, ConnectionError):
    """Connecting failed; the message names host:port and the reason, never the password.

    ``retryable`` is True when trying again later may succeed (broker down, unreachable, busy)
    and False when it cannot until the configuration changes (refused credentials, untrusted
    certificate, wrong scheme): a service should retry the first kind and stop on the second.
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def redact_url(url: str) -> str:
    """``url`` with any password in its userinfo replaced by ``***`` (works on malformed URLs too)."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^:/@?#]*):[^@/?#]*@", rf"\1:{REDACTED}@", url)


@dataclass(frozen=True)
class MqttTarget:
    """Where and how to connect: broker address, TLS files and credentials."""

    host: str
    port: int = 1883
    tls: bool = False
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False, compare=False)
    keepalive: int = 30

    def __post_init__(self) -> None:
        if not self.host:
            raise MqttConfigError("MQTT target has no host")
        if not 0 < self.port < 65536:
            raise MqttConfigError(f"MQTT port {self.port} is outside 1..65535")
        if self.password is not None and not self.username:
            raise MqttConfigError(
                f"a password is set for {self.address} but no username: give one in the URL "
                f"(mqtt://USER@host:port), with --mqtt-username or in ${ENV_USERNAME}"
            )
        if not self.tls and (self.cafile or self.certfile or self.keyfile):
            raise MqttConfigError(
                f"TLS files given for {self.address} but the URL is plain mqtt://: use mqtts://{self.address}"
            )
        if self.keyfile and not self.certfile:
            raise MqttConfigError(f"a client keyfile ({self.keyfile}) needs its certfile as well")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def scheme(self) -> str:
        return "mqtts" if self.tls else "mqtt"

    @property
    def redacted_url(self) -> str:
        """The URL to show in logs and errors: the username but never the password."""
        user = ""
        if self.username:
            user = f"{self.username}:{REDACTED}@" if self.password is not None else f"{self.username}@"
        return f"{self.scheme}://{user}{self.address}"

    def __str__(self) -> str:
        return self.redacted_url

    def __repr__(self) -> str:
        password = REDACTED if self.password is not None else None
        return (
            f"MqttTarget(host={self.host!r}, port={self.port}, tls={self.tls}, cafile={self.cafile!r}, "
            f"certfile={self.certfile!r}, keyfile={self.keyfile!r}, username={self.username!r}, "
            f"password={password!r}, keepalive={self.keepalive})"
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        password_file: Path | str | None = None,
        cafile: Path | str | None = None,
        certfile: Path | str | None = None,
        keyfile: Path | str | None = None,
        keepalive: int = 30,
    ) -> MqttTarget:
        """Parse ``mqtt://[user@]host[:port]`` or ``mqtts://...`` (TLS); raise :class:`MqttConfigError`.

        Username: the argument, else the URL's userinfo, else ``$CANALFLOW_MQTT_USERNAME``.
        Password: the argument, else the URL's userinfo (discouraged: it shows in process lists),
        else the first line of ``password_file``, else ``$CANALFLOW_MQTT_PASSWORD`` (read only
        when there is a username).
        """
        shown = redact_url(url)
        parts = _split_url(url, shown)
        tls = parts.scheme in TLS_SCHEMES
        user = username or (unquote(parts.username) if parts.username else None) or os.environ.get(ENV_USERNAME) or None
        secret = _choose_password(password, parts.password, password_file, user)
        return cls(
            host=parts.hostname or "",
            port=_url_port(parts, shown) or DEFAULT_PORT[tls],
            tls=tls,
            cafile=_existing_file(cafile, "CA file (--mqtt-cafile)"),
            certfile=_existing_file(certfile, "client certificate (--mqtt-certfile)"),
            keyfile=_existing_file(keyfile, "client key (--mqtt-keyfile)"),
            username=user,
            password=secret,
            keepalive=keepalive,
        )


def _split_url(url: str, shown: str) -> Any:
    parts = urlsplit(url.strip())
    if parts.scheme not in PLAIN_SCHEMES + TLS_SCHEMES:
        raise MqttConfigError(
            f"MQTT URL {shown!r}: scheme {parts.scheme or '(none)'!r} is not supported: "
            "use mqtt://host:1883 (plain) or mqtts://host:8883 (TLS)"
        )
    if not parts.hostname:
        raise MqttConfigError(f"MQTT URL {shown!r} has no host: try mqtt://127.0.0.1:1883")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise MqttConfigError(
            f"MQTT URL {shown!r}: a path, query or fragment is not allowed; give TLS files and "
            "credentials as options (--mqtt-cafile, --mqtt-password-file)"
        )
    return parts


def _url_port(parts: Any, shown: str) -> int | None:
    try:
        return parts.port
    except ValueError:
        raise MqttConfigError(f"MQTT URL {shown!r}: the port is not a number in 1..65535") from None


def _choose_password(
    password: str | None, url_password: str | None, password_file: Path | str | None, username: str | None
) -> str | None:
    if password is not None:
        return password
    if url_password is not None:
        return unquote(url_password)
    if password_file is not None:
        return read_password_file(password_file)
    if username:
        return os.environ.get(ENV_PASSWORD)
    return None


def read_password_file(path: Path | str) -> str:
    """The first line of a secret file, without its line ending; warn if others can read it."""
    file = Path(path)
    try:
        first = file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise MqttConfigError(
            f"password file {file} does not exist: create it with `canalflow credentials --district FILE --out DIR`"
        ) from None
    except OSError as exc:
        raise MqttConfigError(f"password file {file} cannot be read: {exc.strerror}") from None
    if not first or not first[0]:
        raise MqttConfigError(f"password file {file} is empty: its first line must be the password")
    mode = file.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("password file %s is readable by other users (mode %o): chmod 600 it", file, stat.S_IMODE(mode))
    return first[0]


def _existing_file(path: Path | str | None, what: str) -> Path | None:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise MqttConfigError(f"{what} {file} does not exist or is not a file")
    return file


# ---------------------------------------------------------------------------------------------
# Client


def make_client(
    target: MqttTarget,
    client_id: str,
    *,
    clean_session: bool = False,
    manual_ack: bool = False,
    will: Will | None = None,
    protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv311,
    max_inflight: int = MAX_INFLIGHT,
    max_queued: int = MAX_QUEUED,
) -> mqtt.Client:
    """A configured (not yet connected) paho client: TLS, credentials, Last Will, back-off, limits."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if protocol == mqtt.MQTTv5 else clean_session,
        protocol=protocol,
        manual_ack=manual_ack,
    )
    if target.tls:
        client.tls_set(
            ca_certs=str(target.cafile) if target.cafile else None,
            certfile=str(target.certfile) if target.certfile else None,
            keyfile=str(target.keyfile) if target.keyfile else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if target.username:
        client.username_pw_set(target.username, target.password)
    if will is not None:
        topic, payload, qos, retain = will
        client.will_set(topic, payload, qos=qos, retain=retain)
    client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)  # type: ignore[arg-type]
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(max_queued)
    return client


def connect_blocking(
    client: mqtt.Client, target: MqttTarget, timeout: float = 10.0, *, start_loop: bool = True
) -> None:
    """Connect and wait for the broker's CONNACK; raise :class:`MqttConnectError` if refused.

    With ``start_loop`` (default) the network loop keeps running in paho's background thread
    (``loop_start``) and reconnects on its own; with ``start_loop=False`` this drives
    ``client.loop()`` itself and returns with the loop stopped, for callers that run their own
    (``loop_forever``).  Callbacks set on ``client`` are kept and called as usual.
    """
    outcome = _ConnackWaiter(client)
    try:
        _open_socket(client, target, timeout)
        if start_loop:
            client.loop_start()
            outcome.done.wait(timeout)
        else:
            deadline = time.monotonic() + timeout
            while not outcome.done.is_set() and time.monotonic() < deadline:
                client.loop(timeout=0.05)
    finally:
        outcome.restore()
    failure = outcome.failure(target, timeout)
    if failure is not None:
        _abandon(client, start_loop)
        raise failure
    log.info("MQTT connected to %s", target.redacted_url)


def connect(target: MqttTarget, client_id: str, *, timeout: float = 10.0, **options: Any) -> mqtt.Client:
    """``make_client`` + ``connect_blocking`` with the loop running in the background."""
    client = make_client(target, client_id, **options)
    connect_blocking(client, target, timeout)
    return client


def _open_socket(client: mqtt.Client, target: MqttTarget, timeout: float) -> None:
    client.connect_timeout = timeout
    try:
        client.connect(target.host, target.port, keepalive=target.keepalive)
    except OSError as exc:  # ssl.SSLError and socket errors are OSErrors
        raise _socket_failure(exc, target, timeout) from None


def _socket_failure(exc: OSError, target: MqttTarget, timeout: float) -> MqttConnectError:
    """What went wrong opening the connection, and what to try (the password is never known here)."""
    where = target.address
    if isinstance(exc, ssl.SSLCertVerificationError):
        return MqttConnectError(
            f"TLS to {where}: certificate verify failed ({exc.verify_message}): check that --mqtt-cafile is the CA "
            "that signed the broker's certificate and that the certificate names this host",
            retryable=False,
        )
    if target.tls and isinstance(exc, ConnectionResetError | ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return MqttConnectError(
            f"TLS handshake with {where} failed (connection closed by the broker): "
            "is this a plain MQTT port? use mqtt:// for it, or check the broker's TLS listener",
            retryable=False,
        )
    if isinstance(exc, ssl.SSLError):
        text = str(exc).upper()
        if "WRONG_VERSION" in text:
            hint = "is this a plain MQTT port? use mqtt:// for it"
        elif "CERTIFICATE_REQUIRED" in text:
            hint = "the broker requires a client certificate (--mqtt-certfile, --mqtt-keyfile)"
        else:
            hint = "check the TLS files and the broker's TLS listener"
        return MqttConnectError(f"TLS handshake with {where} failed ({exc.reason}): {hint}", retryable=False)
    if isinstance(exc, ConnectionRefusedError):
        why = f"nothing listens on {where} (connection refused): is the broker running and the port right?"
    elif isinstance(exc, socket.gaierror):
        why = f"cannot resolve MQTT host {target.host!r}: {exc.strerror}"
    elif isinstance(exc, TimeoutError):
        why = f"connecting to {where} timed out after {timeout:g} s: check host, port and firewall"
    else:
        why = f"cannot connect to {where}: {exc.strerror or exc}"
    return MqttConnectError(why, retryable=True)


def _abandon(client: mqtt.Client, loop_started: bool) -> None:
    """Stop a failed client so that paho does not keep reconnecting in the background."""
    client.disconnect()
    if loop_started:
        client.loop_stop()
    sock = client.socket()
    if sock is not None:
        sock.close()


# CONNACK reason codes (MQTT 5 numbering; paho maps 3.1.1 return codes onto them).
_REFUSALS: dict[int, str] = {
    0x84: "unsupported protocol version: the broker may be too old for this MQTT version",
    0x85: "client id rejected: use a shorter id with letters, digits and '-'",
    0x86: "bad user name or password: check the username and the password file",
    0x87: "not authorised: check the username and the password file, and that the broker's password_file has this user",
    0x88: "server unavailable: retry later",
    0x8A: "banned",
    0x8C: "bad authentication method",
}
_RETRYABLE_REFUSALS = {0x88, 0x89, 0x97}  # server unavailable, server busy, quota exceeded


def refusal_error(target: MqttTarget, reason: Any) -> MqttConnectError:
    """The error for a CONNACK refusal ``reason`` (a paho ReasonCode), e.g. from your own ``on_connect``.

    For clients that connect with ``connect_async`` (an agent that starts while the broker is
    down) and so learn of a refusal in ``on_connect``: log ``str(error)``, stop if not ``retryable``.
    """
    who = f"as user {target.username!r}" if target.username else "anonymously"
    code = int(reason.value)
    why = _REFUSALS.get(code, f"{reason} (reason code 0x{code:02X})")
    if code in (0x86, 0x87) and not target.username:
        why = "not authorised: this broker refuses anonymous clients; give a username and a password file"
    message = f"MQTT broker {target.address} refused the connection {who}: {why}"
    return MqttConnectError(message, retryable=code in _RETRYABLE_REFUSALS)


class _ConnackWaiter:
    """Wraps the client's on_connect/on_disconnect to learn the outcome of the first CONNACK."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.done = threading.Event()
        self.reason: Any = None
        self.closed_before_connack = False
        self._on_connect: Callable[..., Any] | None = client.on_connect
        self._on_disconnect: Callable[..., Any] | None = client.on_disconnect
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected

    def _connected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.reason = reason
        self.done.set()
        if self._on_connect is not None and not reason.is_failure:
            self._on_connect(client, userdata, flags, reason, properties)

    def _disconnected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self.reason is None:
            self.closed_before_connack = True
            self.done.set()
        elif self._on_disconnect is not None:
            self._on_disconnect(client, userdata, flags, reason, properties)

    def restore(self) -> None:
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def failure(self, target: MqttTarget, timeout: float) -> MqttConnectError | None:
        who = f"as user {target.username!r}" if target.username else "anonymously"
        if self.reason is not None and not self.reason.is_failure:
            return None
        if self.reason is not None:
            return refusal_error(target, self.reason)
        if self.closed_before_connack:
            if not target.tls:
                hint = "is it a TLS port? use mqtts://"
            elif target.certfile is None:
                hint = "does the broker require a client certificate (--mqtt-certfile, --mqtt-keyfile)?"
            else:
                hint = "was the client certificate signed by a CA the broker trusts?"
            message = f"{target.address} closed the connection before answering the MQTT CONNECT ({who}): {hint}"
            return MqttConnectError(message, retryable=target.tls)  # a TLS broker may be restarting
        message = f"no answer (CONNACK) from MQTT broker {target.address} within {timeout:g} s: is it an MQTT broker?"
        return MqttConnectError(message, retryable=True)


# ---------------------------------------------------------------------------------------------
# Command-line options shared by every component that connects to the broker


def add_mqtt_arguments(parser: argparse.ArgumentParser, *, default_url: str = "mqtt://127.0.0.1:1883") -> None:
    """Add ``--mqtt URL`` and its credential/TLS options to a subcommand's parser."""
    group = parser.add_argument_group("MQTT broker")
    group.add_argument("--mqtt", default=default_url, metavar="URL", help=f"mqtt://host:port or mqtts://host:port (TLS) (default {default_url})")
    group.add_argument("--mqtt-username", metavar="USER", help=f"broker user (or in the URL, or ${ENV_USERNAME})")
    group.add_argument("--mqtt-password-file", type=Path, metavar="FILE", help=f"file whose first line is the password (else ${ENV_PASSWORD})")
    group.add_argument("--mqtt-cafile", type=Path, metavar="PEM", help="CA certificate that signed the broker's certificate (mqtts)")
    group.add_argument("--mqtt-certfile", type=Path, metavar="PEM", help="client certificate, if the broker requires one (mqtts)")
    group.add_argument("--mqtt-keyfile", type=Path, metavar="PEM", help="client private key for --mqtt-certfile")


def target_from_args(args: argparse.Namespace) -> MqttTarget:
    """The :class:`MqttTarget` described by the options of :func:`add_mqtt_arguments`."""
    return MqttTarget.from_url(
        args.mqtt,
        username=args.mqtt_username,
        password_file=args.mqtt_password_file,
        cafile=args.mqtt_cafile,
        certfile=args.mqtt_certfile,
        keyfile=args.mqtt_keyfile,
    )
