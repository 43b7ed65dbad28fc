"""``canalflow edge buffer replay``: publish a stopped agent's backlog, delete it once acknowledged."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from pathlib import Path

from canalflow.contract import readings_topic
from canalflow.mqtt import MqttTarget, connect_blocking, make_client
from edge.buffer import Buffer

CHUNK = 500


def replay_buffer(path: str | Path, target: MqttTarget, district: str, gateway: str, *,
                  timeout_s: float = 30.0) -> int:
    """Publish every buffered reading (historical, QoS 1); return how many were acknowledged."""
    buffer = Buffer(path, exclusive=True)
    client = make_client(target, f"canalflow-replay-{gateway}-{uuid.uuid4().hex[:6]}", clean_session=True)
    try:
        connect_blocking(client, target, timeout=timeout_s)
    except Exception:
        buffer.close()
        raise
    sent = 0
    try:
        while True:
            rows = buffer.rows_after(0, 5000)
            if not rows:
                break
            by_point = defaultdict(list)
            for row in rows:
                by_point[row.point].append(row)
            chunks = [(p, r[i:i + CHUNK]) for p, r in by_point.items() for i in range(0, len(r), CHUNK)]
            seq = buffer.reserve_seq(len(chunks))
            for offset, (point, chunk) in enumerate(chunks):
                head = json.dumps({"v": 1, "district": district, "gateway": gateway, "point": point,
                                   "seq": seq + offset, "historical": True})
                body = ",".join(r.body for r in sorted(chunk, key=lambda r: r.ts))
                info = client.publish(readings_topic(district, gateway, point),
                                      f'{head[:-1]}, "readings": [{body}]}}'.encode(), qos=1)
                info.wait_for_publish(timeout_s)
                if not info.is_published():
                    raise OSError(f"broker {target.redacted_url} did not acknowledge within {timeout_s} s; the rest stays buffered")
                buffer.acknowledge([r.id for r in chunk])
                sent += len(chunk)
    finally:
        client.disconnect()
        client.loop_stop()
        buffer.close()
    return sent
