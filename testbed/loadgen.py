"""A publisher process for tests and benchmarks: readings batches (or given raw messages) at QoS 1.

Publishers run as their own processes, as edge agents do (two paho clients in one process are slow,
see pitfalls.md)::

    python -m testbed.loadgen --mqtt mqtt://127.0.0.1:1883 --district examples/demo-district.yaml \\
        --messages 100 --readings 50 --start-ms 1772323200000 --step-ms 1000
    python -m testbed.loadgen --mqtt mqtt://127.0.0.1:1883 --raw messages.jsonl   # {"topic", "payload_b64"}

It prints one JSON line: messages and readings published (all acknowledged by the broker) and seconds.
Values are a deterministic function of the point and the reading index (see :func:`reading_values`),
so a test can recompute what it sent.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt

from canalflow.contract import Reading, ReadingBatch, readings_topic
from canalflow.district import load_district
from canalflow.mqtt import MqttTarget, make_client


def reading_values(point_index: int, reading_index: int) -> dict[str, float]:
    flow = 0.5 + point_index * 0.01 + (reading_index % 60) * 0.001
    return {"flow": round(flow, 6), "totaliser": round(1000.0 + reading_index * 0.6, 3)}


def batches(
    district_id: str, points: list[tuple[str, str]], messages: int, readings: int, start_ms: int, step_ms: int,
    *, historical: bool = False, first_index: int = 0,
) -> Iterator[tuple[str, bytes, int]]:
    """(topic, payload, readings) for ``messages`` batches of ``readings`` readings per point, interleaved.

    Reading number n (from ``first_index``) is at ``start_ms + n * step_ms``."""
    for m in range(messages):
        for p_index, (gateway, point) in enumerate(points):
            items = []
            for r in range(readings):
                n = first_index + m * readings + r
                items.append(Reading(ts=start_ms + n * step_ms, values=reading_values(p_index, n)))
            batch = ReadingBatch(
                district=district_id, gateway=gateway, point=point, seq=m, historical=historical, readings=tuple(items)
            )
            yield readings_topic(district_id, gateway, point), batch.to_json(), readings


def raw_messages(path: Path) -> Iterator[tuple[str, bytes, int]]:
    with path.open() as handle:
        for line in handle:
            if line.strip():
                item = json.loads(line)
                yield item["topic"], base64.b64decode(item["payload_b64"]), 0


class Publisher:
    """One paho client publishing at QoS 1, counting broker acknowledgements."""

    def __init__(self, url: str, client_id: str = "", inflight: int = 1000) -> None:
        target = MqttTarget.from_url(url)
        self.client = make_client(target, client_id, clean_session=True, max_inflight=inflight)
        self._acked = 0
        self._lock = threading.Condition()
        self.client.on_publish = self._on_publish
        self.client.connect(target.host, target.port, keepalive=60)
        self.client.loop_start()

    def _on_publish(self, *_args: object) -> None:
        with self._lock:
            self._acked += 1
            self._lock.notify_all()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish to {topic!r} failed: {mqtt.error_string(info.rc)}")

    def wait_acked(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._acked < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"only {self._acked} of {count} publishes acknowledged by the broker")
                self._lock.wait(min(left, 0.5))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def count_messages(url: str, topic_filter: str, group: str | None, expect: int, timeout: float) -> int:
    """A bare QoS 1 subscriber (the raw MQTT limit): print when the first and last message arrived."""
    from canalflow.contract import shared
    target = MqttTarget.from_url(url)
    client = make_client(target, "", clean_session=True)
    state = {"n": 0, "first": 0.0, "last": 0.0, "last_wall": 0.0}
    done = threading.Event()

    def on_message(*_args: object) -> None:
        now = time.monotonic()
        state["first"] = state["first"] or now
        state["n"] += 1
        state["last"] = now
        state["last_wall"] = time.time()
        if expect and state["n"] >= expect:
            done.set()

    ready = threading.Event()
    client.on_message = on_message
    client.on_subscribe = lambda *_args: ready.set()
    client.connect(target.host, target.port, keepalive=60)
    client.subscribe(shared(group, topic_filter) if group else topic_filter, qos=1)
    client.loop_start()
    ready.wait(10)
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.monotonic() + timeout
    # Without --expect (a member of a shared group does not know its share): stop 2 s after the last message.
    while not done.wait(0.2) and time.monotonic() < deadline:
        if not expect and state["n"] and time.monotonic() - state["last"] > 2.0:
            break
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"messages": state["n"], "seconds": round(state["last"] - state["first"], 4),
                      "last_wall": state["last_wall"]}), flush=True)
    return 0 if done.is_set() or (not expect and state["n"]) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.loadgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mqtt", required=True)
    parser.add_argument("--district", type=Path, help="district file: publish for its points")
    parser.add_argument("--points", help="comma-separated point ids (default: all points of the district)")
    parser.add_argument("--messages", type=int, default=10, help="messages per point")
    parser.add_argument("--readings", type=int, default=1, help="readings per message")
    parser.add_argument("--start-ms", type=int, default=1_772_323_200_000)
    parser.add_argument("--step-ms", type=int, default=1000)
    parser.add_argument("--historical", action="store_true")
    parser.add_argument("--first-index", type=int, default=0, help="number of the first reading (continues a series)")
    parser.add_argument("--raw", type=Path, help="JSON-lines file of {topic, payload_b64} to publish as is")
    parser.add_argument("--client-id", default="")
    parser.add_argument("--retain", action="store_true")
    parser.add_argument("--subscribe", metavar="FILTER", help="instead of publishing: count messages on FILTER (QoS 1)")
    parser.add_argument("--group", help="with --subscribe: join this shared-subscription group")
    parser.add_argument("--expect", type=int, default=0, help="with --subscribe: stop after this many messages")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock time (epoch s) to start publishing at")
    args = parser.parse_args(argv)

    messages: Iterator[tuple[str, bytes, int]] = iter(())
    if args.subscribe:
        pass
    elif args.raw:
        messages = raw_messages(args.raw)
    elif args.district:
        district = load_district(args.district)
        wanted = args.points.split(",") if args.points else list(district.points)
        points = [(district.points[p].gateway, p) for p in wanted]
        messages = batches(district.id, points, args.messages, args.readings, args.start_ms, args.step_ms,
                           historical=args.historical, first_index=args.first_index)
    else:
        parser.error("give --district (generated batches) or --raw FILE")
    if args.subscribe:
        return count_messages(args.mqtt, args.subscribe, args.group, args.expect, args.timeout)
    prepared = list(messages)  # built before the clock starts: we measure the pipeline, not this generator
    publisher = Publisher(args.mqtt, args.client_id)
    if args.start_at:
        time.sleep(max(0.0, args.start_at - time.time()))
    started = time.monotonic()
    count = readings = 0
    for topic, payload, n in prepared:
        publisher.publish(topic, payload, retain=args.retain)
        count += 1
        readings += n
    publisher.wait_acked(count)
    seconds = time.monotonic() - started
    publisher.close()
    print(json.dumps({"messages": count, "readings": readings, "seconds": round(seconds, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
