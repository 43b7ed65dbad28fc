"""``canalflow edge watch``: a live table of an agent's points, read from the broker."""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from canalflow.contract import QUANTITIES, TOPIC_ROOT, parse_batch
from canalflow.mqtt import MqttConnectError, MqttTarget, connect_blocking, make_client


def watch(target: MqttTarget, district: str, gateway: str = "+", *, duration: float | None = None,
          as_json: bool = False) -> int:
    latest: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    client = make_client(target, f"canalflow-watch-{uuid.uuid4().hex[:8]}", clean_session=True)
    topic = f"{TOPIC_ROOT}/{district}/{gateway}/+/readings"
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            batch = parse_batch(msg.payload)
        except ValueError as exc:
            print(f"{msg.topic}: invalid payload: {exc}", file=sys.stderr)
            return
        if as_json:
            print(batch.model_dump_json(), flush=True)
        with lock:
            last = batch.readings[-1]
            latest[batch.point] = {"gateway": batch.gateway, "ts": last.ts, "values": last.values,
                                   "quality": last.quality.value, "flags": [f.value for f in last.flags],
                                   "historical": batch.historical, "count": latest.get(batch.point, {}).get("count", 0)
                                   + len(batch.readings)}

    client.on_message = on_message
    try:
        connect_blocking(client, target, timeout=10)
    except MqttConnectError as exc:
        print(f"canalflow edge watch: {exc}", file=sys.stderr)
        return 1
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(1.0)
            if not as_json:
                with lock:
                    _render(latest, topic)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    return 0


def _render(latest: dict[str, dict[str, Any]], topic: str) -> None:
    if sys.stdout.isatty():
        print("\x1b[2J\x1b[H", end="")
    print(f"{topic}  {dt.datetime.now(dt.UTC):%H:%M:%S} UTC  {len(latest)} points")
    names = [q for q in QUANTITIES if any(q in e["values"] for e in latest.values())]
    header = ["point", "time (UTC)", *names, "quality", "flags", "n"]
    rows = []
    for point, e in sorted(latest.items()):
        stamp = dt.datetime.fromtimestamp(e["ts"] / 1000, dt.UTC).strftime("%m-%d %H:%M:%S")
        rows.append([point, stamp, *(_num(e["values"].get(q)) for q in names), e["quality"],
                     ",".join(e["flags"]), str(e["count"])])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print(flush=True)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.5g}"
