"""``canalflow edge buffer replay``: publish a stopped agent's backlog, delete what is seen through.

As in the agent (edge/outstanding.py), a row leaves the buffer when ingest confirms its message
stored (``confirm="ingest"``, the default) or, with ``confirm="broker"``, on the broker's PUBACK.
What ingest has not confirmed when the time is up stays buffered for the agent's next start.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

from canalflow.contract import Confirmation, confirm_topic, readings_topic
from canalflow.errors import CanalflowError
from canalflow.mqtt import MqttTarget, connect_blocking, make_client
from edge.buffer import Buffer, Row, batch_payload
from edge.outstanding import Outstanding

CHUNK = 500


class ReplayError(CanalflowError, OSError):
    pass


def replay_buffer(path: str | Path, target: MqttTarget, district: str, gateway: str, *,
                  timeout_s: float = 30.0, confirm: str = "ingest") -> int:
    """Publish every buffered reading (historical, QoS 1); return how many left the buffer."""
    buffer = Buffer(path, exclusive=True)
    client = make_client(target, f"canalflow-replay-{gateway}-{uuid.uuid4().hex[:6]}", clean_session=True)
    confirmations: queue.Queue[bytes] = queue.Queue()
    subscribed = threading.Event()
    client.on_message = lambda _c, _u, message: confirmations.put(message.payload)
    client.on_subscribe = lambda *_: subscribed.set()
    try:
        connect_blocking(client, target, timeout=timeout_s)
        if confirm == "ingest":
            client.subscribe(confirm_topic(district, gateway), qos=1)
            if not subscribed.wait(timeout_s):
                raise ReplayError(f"broker {target.redacted_url} did not answer the subscription to "
                                  f"{confirm_topic(district, gateway)} within {timeout_s} s")
    except Exception:
        client.loop_stop()
        buffer.close()
        raise
    outstanding = Outstanding(end_to_end=confirm == "ingest")
    removed = 0

    def settle() -> None:
        nonlocal removed
        while True:
            try:
                payload = confirmations.get_nowait()
            except queue.Empty:
                return
            try:
                ids = outstanding.confirm(Confirmation.model_validate_json(payload), time.monotonic()).ids
            except ValueError:
                continue
            buffer.acknowledge(ids)
            removed += len(ids)

    try:
        after = 0
        while rows := buffer.rows_after(after, 5000):
            after = rows[-1].id
            for point, chunk in _chunks(rows):
                seq = buffer.reserve_seq(1)
                info = client.publish(readings_topic(district, gateway, point),
                                      batch_payload(district, gateway, point, seq, chunk, historical=True), qos=1)
                outstanding.published(info.mid, seq, [r.id for r in chunk], time.monotonic())
                info.wait_for_publish(timeout_s)
                if not info.is_published():
                    raise ReplayError(f"broker {target.redacted_url} did not acknowledge within {timeout_s} s; "
                                      "the rest stays buffered")
                acked = outstanding.puback([info.mid], time.monotonic()).ids
                buffer.acknowledge(acked)
                removed += len(acked)
                settle()
        deadline = time.monotonic() + timeout_s
        while outstanding and time.monotonic() < deadline:
            time.sleep(0.05)
            settle()
        if outstanding:
            raise ReplayError(f"ingest did not confirm {outstanding.unconfirmed} published reading(s) within "
                              f"{timeout_s} s; they stay in {path} ({removed} confirmed and removed): is ingest "
                              "running, and may it publish on the confirm topics (docs/security.md)?")
    finally:
        client.disconnect()
        client.loop_stop()
        buffer.close()
    return removed


def _chunks(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    by_point: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_point[row.point].append(row)
    return [(p, r[i:i + CHUNK]) for p, r in by_point.items() for i in range(0, len(r), CHUNK)]

