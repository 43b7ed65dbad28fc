"""The agent's one MQTT client (paho-mqtt 2.x, ``loop_start()``), bridged into asyncio.

Built with ``canalflow.mqtt`` (TLS, credentials, back-off as everywhere else). One client publishes readings and status and receives commands: two clients in one process
starve each other (see pitfalls.md). Persistent session (``clean_session=False``) so QoS 1
commands queue while the link is down; paho resends unacknowledged publishes after a reconnect.
Callbacks run in paho's thread and are handed to the event loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from canalflow.mqtt import MqttTarget, make_client, refusal_error

log = logging.getLogger("canalflow.edge.mqtt")


class MqttLink:
    def __init__(
        self,
        target: MqttTarget,
        client_id: str,
        *,
        loop: asyncio.AbstractEventLoop,
        will: tuple[str, bytes],
        subscribe: list[str],
        on_connect: Callable[[], None],
        on_disconnect: Callable[[], None],
        on_ack: Callable[[], None],
        on_message: Callable[[str, bytes], None],
        max_inflight: int = 200,
    ) -> None:
        self.target = target
        self.acks: collections.deque[int] = collections.deque()  # PUBACKed mids, drained by the agent
        self.host, self.port = target.host, target.port
        self.loop = loop
        self.connected = False
        self.subscribe = subscribe
        self._handlers = (on_connect, on_disconnect, on_ack, on_message)
        client = make_client(target, client_id, clean_session=False, will=(will[0], will[1], 1, True),
                             max_inflight=max_inflight + 20)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self.client = client

    def start(self) -> None:
        # connect_async: the agent starts (and buffers) while the broker is unreachable
        self.client.connect_async(self.host, self.port, keepalive=self.target.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        return self.client.publish(topic, payload, qos=1, retain=retain).mid

    # ---- paho thread -> event loop ------------------------------------------------------------
    def _call(self, func: Callable[..., None], *args: Any) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(func, *args)

    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("%s", refusal_error(self.target, reason))
            return
        for topic in self.subscribe:
            client.subscribe(topic, qos=1)
        self.connected = True
        self._call(self._handlers[0])

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        self.connected = False
        self._call(self._handlers[1])

    def _on_publish(self, _c: Any, _u: Any, mid: int, _reason: Any, _p: Any) -> None:
        # collected, not forwarded one by one: a loop wake-up per PUBACK costs more than the ack
        self.acks.append(mid)
        if len(self.acks) == 1:
            self._call(self._handlers[2])

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        self._call(self._handlers[3], message.topic, message.payload)
