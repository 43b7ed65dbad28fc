"""What broker security costs: QoS 1 delivery rate and connect time, anonymous vs password+ACL vs TLS.

Each case runs a real Mosquitto: a publisher process (a gateway user) sends QoS 1 messages to its
own readings topic, the ingest user receives them here on a shared subscription, as deployed (the
two clients in separate processes: see pitfalls.md). The anonymous broker without ACL is the raw
ceiling measured in the same run; ratios compare against it.

    python -m benchmarks security
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from canalflow.contract import readings_filter, readings_topic, shared
from canalflow.credentials import generate_credentials, secret_file
from canalflow.district import load_district
from canalflow.mqtt import (
    ENV_PASSWORD,
    MqttTarget,
    add_mqtt_arguments,
    connect,
    connect_blocking,
    make_client,
    target_from_args,
)
from testbed.services import Mosquitto, TlsFiles

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo-district.yaml"
MESSAGES = 10_000
CONNECTS = 30
ROUNDS = 3
PAYLOAD = b'{"v":1,"readings":[{"ts":1772323200000,"values":{"flow":1.5}}]}'


@dataclass
class Case:
    name: str
    publisher: MqttTarget
    subscriber: MqttTarget


def _tls_files(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt, key, csr, crt = (directory / n for n in ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt"))
    (directory / "ext").write_text("subjectAltName = IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-subj", "/CN=bench CA", "-days", "1"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-out", crt, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-days", "1",
         "-extfile", directory / "ext"],
    ):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)
    return TlsFiles(cafile=ca_crt, certfile=crt, keyfile=key)


def _deliver(case: Case, gateway: str, point: str, count: int) -> float:
    """Messages per second received here, from the first message to the last (process start excluded)."""
    received: queue.Queue[float] = queue.Queue()
    counter = {"n": 0}
    first: list[float] = []

    def on_message(*_: object) -> None:
        counter["n"] += 1
        if counter["n"] == 1:
            first.append(time.perf_counter())
        if counter["n"] == count:
            received.put(time.perf_counter())

    subscriber = make_client(case.subscriber, f"bench-sub-{case.name}", clean_session=True)
    subscriber.on_message = on_message
    connect_blocking(subscriber, case.subscriber, 10)
    try:
        done: queue.Queue[object] = queue.Queue()
        subscriber.on_subscribe = lambda *_: done.put(True)
        subscriber.subscribe(shared("ingest", readings_filter("demo")), qos=1)
        done.get(timeout=10)
        command = [sys.executable, "-m", "benchmarks.bench_security", "--publish", str(count),
                   "--topic", readings_topic("demo", gateway, point), *_target_args(case.publisher)]
        env = dict(os.environ)
        if case.publisher.password is not None:
            env[ENV_PASSWORD] = case.publisher.password  # never on the command line
        subprocess.run(command, check=True, timeout=300, cwd=ROOT, env=env)
        finished = received.get(timeout=120)
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()
    return (count - 1) / (finished - first[0])


def _target_args(target: MqttTarget) -> list[str]:
    args = ["--mqtt", f"{target.scheme}://{target.address}"]
    if target.username:
        args += ["--mqtt-username", target.username]
    if target.cafile:
        args += ["--mqtt-cafile", str(target.cafile)]
    return args


def _connect_ms(target: MqttTarget) -> float:
    started = time.perf_counter()
    for i in range(CONNECTS):
        client = connect(target, f"bench-connect-{i}", clean_session=True)
        client.disconnect()
        client.loop_stop()
    return (time.perf_counter() - started) / CONNECTS * 1000


def run() -> list[dict]:
    district = load_district(DEMO)
    gateway = next(iter(district.gateways))
    point = district.points_of_gateway(gateway)[0].id
    with tempfile.TemporaryDirectory(prefix="bench-security-") as tmp:
        root = Path(tmp)
        creds = root / "creds"
        generate_credentials(district, creds)
        tls = _tls_files(root / "tls")
        plain = Mosquitto(root / "plain").start()
        secure = Mosquitto(root / "secure", password_file=creds / "mosquitto.passwd", acl_file=creds / "mosquitto.acl",
                           tls=tls).start()
        try:
            def login(url: str, user: str, cafile: Path | None = None) -> MqttTarget:
                return MqttTarget.from_url(url, username=user, password_file=secret_file(creds, user), cafile=cafile)

            anonymous = MqttTarget.from_url(plain.url)
            assert secure.tls_url is not None
            cases = [
                Case("anonymous, no ACL", anonymous, anonymous),
                Case("password + ACL", login(secure.url, gateway), login(secure.url, "ingest")),
                Case("password + ACL + TLS", login(secure.tls_url, gateway, tls.cafile),
                     login(secure.tls_url, "ingest", tls.cafile)),
            ]
            return _rows(cases, gateway, point)
        finally:
            plain.stop()
            secure.stop()


def _rows(cases: list[Case], gateway: str, point: str) -> list[dict]:
    # Rounds interleave the cases and the best of each is kept: the machine is shared, and load
    # from elsewhere then hits every case alike instead of whichever ran during it.
    rates: dict[str, list[float]] = {c.name: [] for c in cases}
    connects: dict[str, list[float]] = {c.name: [] for c in cases}
    for _ in range(ROUNDS):
        for case in cases:
            rates[case.name].append(_deliver(case, gateway, point, MESSAGES))
            connects[case.name].append(_connect_ms(case.publisher))
    raw_rate, raw_connect = max(rates[cases[0].name]), min(connects[cases[0].name])
    rows: list[dict] = []
    for case in cases:
        rate, connect_ms = max(rates[case.name]), min(connects[case.name])
        rows.append({"name": f"QoS1 delivery, {case.name}", "value": rate, "unit": "msg/s", "ratio": rate / raw_rate,
                     "note": f"gateway process -> broker -> ingest shared sub, best of {ROUNDS}"})
        rows.append({"name": f"connect+CONNACK, {case.name}", "value": connect_ms, "unit": "ms",
                     "ratio": connect_ms / raw_connect, "note": f"mean of {CONNECTS}, best of {ROUNDS}"})
    return rows


def _publish_main(argv: list[str]) -> int:
    """The publisher process: ``--publish N --topic T`` plus the MQTT options; waits for every PUBACK."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--publish", type=int, required=True)
    parser.add_argument("--topic", required=True)
    add_mqtt_arguments(parser)
    args = parser.parse_args(argv)
    target = target_from_args(args)
    client = connect(target, "bench-publisher", clean_session=True)
    try:
        infos = [client.publish(args.topic, PAYLOAD, qos=1) for _ in range(args.publish)]
        for info in infos:
            info.wait_for_publish(timeout=60)
    finally:
        client.disconnect()
        client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(_publish_main(sys.argv[1:]))
