"""The edge agent: poll the gateway's meters, buffer every reading durably, publish with QoS 1.

    agent = EdgeAgent(district, "GW-B1", mqtt_url="mqtt://127.0.0.1:1883", buffer_path="edge.db",
                      clock=SimClock.real())
    await agent.run()          # until agent.stop()

Data path: BusPoller -> Reading -> SQLite buffer (committed) -> publish loop -> broker PUBACK ->
ingest's confirmation (``publish.confirm: ingest``, the default; see edge/outstanding.py) -> row
deleted; what ingest does not confirm is published again. Live rows (stored since the current
MQTT connection began) go first; the backlog (stored before it, or before a restart) is replayed
marked ``historical`` at ``replay_rate`` readings per second in the room the live data leaves in
the in-flight window.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

from canalflow import __version__
from canalflow.clock import SimClock
from canalflow.contract import (
    Confirmation,
    GatewayStatus,
    Reading,
    cmd_result_topic,
    cmd_topic,
    confirm_topic,
    readings_topic,
    status_topic,
)
from canalflow.errors import CanalflowError
from canalflow.supervise import RESTART_DELAY_S, RestartBudget
from edge.buffer import Buffer, BufferStorageError, Row, batch_payload
from edge.config import EdgeConfig, EndpointSpec, edge_config_from_district
from edge.metrics import EdgeMetrics
from edge.modbus import ModbusLink
from edge.mqtt import MqttLink
from edge.outstanding import Outstanding, Settled
from edge.poller import BusPoller, nap

if TYPE_CHECKING:
    from canalflow.district import District

log = logging.getLogger("canalflow.edge.agent")
T = TypeVar("T")


def edge_client_id(district_id: str, gateway: str) -> str:
    """A gateway's default MQTT client id: stable, so that its session (and confirmations sent while
    it was away) survives a reconnect."""
    return f"canalflow-edge-{district_id}-{gateway}"


class AgentFailed(CanalflowError, RuntimeError):
    """A background task kept failing: the agent stopped so that systemd (Restart=) starts it afresh."""


class EdgeAgent:
    """One agent for one gateway (one bus). ``run()`` until ``stop()``."""

    def __init__(
        self,
        district: District | Path | str | None,
        gateway_id: str | None = None,
        *,
        mqtt_url: str | None = None,
        buffer_path: Path | str | None = None,
        clock: SimClock | None = None,
        endpoints: Path | str | EndpointSpec | None = None,
        config: EdgeConfig | None = None,
        metrics_port: int | None = None,
    ) -> None:
        if config is None:
            if district is None or gateway_id is None:
                raise ValueError("give a district and a gateway id, or an EdgeConfig")
            manifest = endpoints if isinstance(endpoints, str | Path) else None
            config = edge_config_from_district(district, gateway_id, manifest=manifest)
        if isinstance(endpoints, EndpointSpec):
            config.endpoint = endpoints
        if mqtt_url:
            config.mqtt = config.mqtt.model_copy(update={"url": mqtt_url})
        if metrics_port is not None:
            config.metrics_port = metrics_port
        self.config = config
        self.clock = clock or SimClock.real()
        self.buffer_path = config.buffer_file(buffer_path)
        self.metrics = EdgeMetrics(config.gateway)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._db = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="edge-buffer")
        self._pending: list[tuple[str, int, str]] = []
        self._out = self._outstanding()
        self._inflight_ids: set[int] = set()  # rows in a message not yet settled: no backlog query re-sends them
        self._resend_check = 0.0
        self._acked: list[int] = []
        self._connected_epoch = 0
        self._boundary: int | None = None
        self._live_after = 0
        self._backlog_after = 0
        self._replay_tokens = 0.0
        self._seq = 0
        self._seq_end = 0
        self._commands: set[asyncio.Future[None]] = set()
        self._closing = False
        self._flush_lock = asyncio.Lock()
        self.published_readings = 0
        self.readings_taken = 0
        self.published_messages = 0
        self.buffer: Buffer | None = None
        self.pollers: list[BusPoller] = []
        self._polling: list[asyncio.Task[None]] = []
        self.reloader: Callable[[], EdgeConfig] | None = None  # set by whoever built the config from a file
        self._health_index: dict[str, Any] = {}
        self.link: MqttLink | None = None
        self.metrics_port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failure: str | None = None  # set when a task failed too often; run() then raises AgentFailed
        self.task_restarts = 0

    # ---- lifecycle ----------------------------------------------------------------------------
    @property
    def district_id(self) -> str:
        return self.config.district_id

    @property
    def gateway(self) -> str:
        return self.config.gateway

    def stop(self) -> None:
        """Ask ``run()`` to finish (safe from a signal handler in the loop's thread)."""
        self._stop.set()
        self._wake.set()
        for poller in self.pollers:
            poller.stop()

    async def _in_db(self, func: Callable[..., T], *args: Any) -> T:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._db, func, *args)

    def _outstanding(self) -> Outstanding:
        publish = self.config.publish
        return Outstanding(end_to_end=publish.confirm == "ingest", timeout_s=publish.confirm_timeout_s,
                           resend_s=publish.resend_unconfirmed_s)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._out = self._outstanding()  # the publish options as they are now
        buf = self.config.buffer
        self.buffer = await self._in_db(lambda: Buffer(self.buffer_path, max_rows=buf.max_rows,
                                                       max_age_s=buf.max_age_h * 3600, when_full=buf.when_full,
                                                       synchronous=buf.synchronous, exclusive=True))
        log.info("gateway %s: %d meters on %s, buffer %s holds %d readings", self.gateway, len(self.config.points),
                 self.config.endpoint.target(), self.buffer_path, self.buffer.depth)
        self.pollers = self._make_pollers()
        self._health_index = {point: h for p in self.pollers for point, h in p.health.items()}
        self.link = self._make_link()
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.config.metrics_port)
        self.link.start()
        self._polling = self._start_polling()
        loops = (("store", self._store_loop), ("publish", self._publish_loop), ("status", self._status_loop))
        tasks = [asyncio.create_task(self._supervise(name, loop)) for name, loop in loops]
        try:
            await self._stop.wait()
        finally:
            for poller in self.pollers:
                poller.stop()
            await self._finish(tasks)
        if self.failure:
            raise AgentFailed(self.failure)

    def _start_polling(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._supervise(f"poller {p.name}", p.run)) for p in self.pollers]

    async def _supervise(self, name: str, loop: Callable[[], Any]) -> None:
        """Run a background loop; when it raises, log it and start it again, and stop the agent if it keeps failing.

        A loop that returns has finished on purpose (stopping); cancelling is how the agent ends one."""
        budget = RestartBudget()
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                budget.failed()
                self.metrics.task_failed(name)
                if budget.exhausted:
                    self.failure = budget.verdict(f"{name} task", repr(exc))
                    log.critical("gateway %s: %s; stopping the agent (exit 1) so that its service manager restarts it",
                                 self.gateway, self.failure, exc_info=exc)
                    self.stop()
                    return
                self.task_restarts += 1
                log.error("gateway %s: the %s task failed; restarting it in %.0f s", self.gateway, name,
                          RESTART_DELAY_S, exc_info=exc)
                await asyncio.sleep(RESTART_DELAY_S)

    async def _stop_polling(self) -> None:
        for poller in self.pollers:
            poller.stop()
        if self._polling:
            await asyncio.wait(self._polling, timeout=self.config.poll.timeout_s * 3 + 1)

    async def reload(self) -> dict[str, Any]:
        """Re-read the configuration (``reloader``) and restart polling with it; MQTT and buffer stay."""
        if self.reloader is None:
            raise ValueError("this agent was not started from a file it can re-read")
        config = self.reloader()
        if (config.district_id, config.gateway) != (self.district_id, self.gateway):
            raise ValueError(f"the new config is for {config.district_id}/{config.gateway}, not "
                             f"{self.district_id}/{self.gateway}: restart the agent to change gateway")
        await self._stop_polling()
        config.mqtt, config.buffer = self.config.mqtt, self.config.buffer  # a reconnect is a restart
        self.config = config
        self.pollers = self._make_pollers()
        self._health_index = {point: h for p in self.pollers for point, h in p.health.items()}
        self._polling = self._start_polling()
        log.info("configuration reloaded: %d meters on %d bus(es)", len(config.points), len(self.pollers))
        return {"meters": len(config.points), "buses": len(self.pollers)}

    async def _finish(self, tasks: list[asyncio.Task[None]]) -> None:
        polling = self._polling
        await self._stop_polling()
        await self._flush_pending()
        # while connected, give the publish loop a moment to drain (the rest waits for the next start)
        self._wake.set()
        deadline = time.monotonic() + self.config.publish.drain_s
        while self.link is not None and self.link.connected and time.monotonic() < deadline:
            if self.buffer is not None and self.buffer.depth == 0 and not self._out:
                break
            await asyncio.sleep(0.02)
        self._closing = True
        tasks[-1].cancel()  # the status loop only sleeps; the others see _closing
        await asyncio.gather(*polling, *tasks, return_exceptions=True)
        await self._apply_acks()
        if self.link is not None:
            if self.link.connected:
                info = self.link.client.publish(status_topic(self.district_id, self.gateway),
                                                self._status("offline"), qos=1, retain=True)
                with contextlib.suppress(Exception):
                    info.wait_for_publish(1.0)
            self.link.stop()
        self.metrics.close()
        if self.buffer is not None:
            await self._in_db(self.buffer.close)
        self._db.shutdown(wait=True)
        log.info("gateway %s stopped: %d readings taken, %d published, %d left in the buffer", self.gateway,
                 self.readings_taken, self.published_readings, self.buffer.depth if self.buffer else 0)

    def _make_pollers(self) -> list[BusPoller]:
        """One poller per bus: the gateway's endpoint, plus any point-level endpoint (own TCP meter)."""
        buses: dict[str, tuple[EndpointSpec, list[Any]]] = {}
        for plan in self.config.points:
            ep = plan.endpoint or self.config.endpoint
            buses.setdefault(ep.target(), (ep, []))[1].append(plan)
        pollers = []
        for target, (ep, plans) in buses.items():
            link = ModbusLink(target, baud=ep.baud, parity=ep.parity, stopbits=ep.stopbits,
                              pause_after_connect_s=self.config.poll.pause_after_connect_s)
            pollers.append(BusPoller(target, link, plans, clock=self.clock, options=self.config.poll,
                                     quality=self.config.quality, on_reading=self._on_reading,
                                     device_tz=ZoneInfo(self.config.timezone)))
        return pollers

    def poller_of(self, point: str) -> BusPoller:
        for poller in self.pollers:
            if point in poller.plans:
                return poller
        raise KeyError(f"no point {point!r} on gateway {self.gateway} (points: {', '.join(self.config.point_ids)})")

    @property
    def outstanding(self) -> Outstanding:
        """Published messages not yet seen through (counts of confirmed, dead-lettered, resent readings)."""
        return self._out

    @property
    def polls(self) -> int:
        return sum(p.polls for p in self.pollers)

    def _make_link(self) -> MqttLink:
        opts = self.config.mqtt
        assert self._loop is not None
        return MqttLink(
            opts.target(), opts.client_id or edge_client_id(self.district_id, self.gateway), loop=self._loop,
            will=(status_topic(self.district_id, self.gateway), self._status("offline")),
            subscribe=[cmd_topic(self.district_id, self.gateway), self._confirm_topic], on_connect=self._on_connect,
            on_disconnect=self._on_disconnect, on_ack=self._on_ack, on_message=self._on_message,
            max_inflight=self.config.publish.max_inflight,
        )

    # ---- readings into the buffer -------------------------------------------------------------
    def _on_reading(self, point: str, reading: Reading) -> None:
        self.metrics.reading(point, reading)
        health = self._health_index.get(point)
        if health is not None and health.rtt_ms is not None:
            self.metrics.roundtrip(point, health.rtt_ms / 1000)
        self.readings_taken += 1
        self._pending.append((point, reading.ts, reading.model_dump_json(exclude_none=True)))

    async def _flush_pending(self) -> bool:
        async with self._flush_lock:  # so a caller knows the rows handed over so far are stored
            if self._pending and self.buffer is not None:
                rows, self._pending = self._pending, []
                await self._in_db(self.buffer.add, rows)
                return True
            return False

    async def _store_loop(self) -> None:
        expire_at = time.monotonic() + 60
        while not self._closing:
            if await self._flush_pending():
                self._wake.set()  # one publish round per batch of stored readings, not per reading
            if self.buffer is not None:
                self.metrics.buffer(self.buffer.depth, self.buffer.dropped, self.buffer.storage_error)
                self.metrics.lateness(sum(p.late for p in self.pollers),
                                      sum(p.link.stats.requests for p in self.pollers),
                                      max((p.max_lag_s for p in self.pollers), default=0.0))
            if time.monotonic() > expire_at and self.buffer is not None:
                await self._in_db(self.buffer.expire)
                expire_at = time.monotonic() + 60
            await asyncio.sleep(0.02)

    # ---- MQTT events (in the loop's thread) -----------------------------------------------------
    def _on_connect(self) -> None:
        self._connected_epoch += 1
        self._boundary = None  # set by the publish loop: everything stored so far is backlog
        log.info("connected to %s", self.link.target.redacted_url if self.link else "?")
        assert self.link is not None
        self.link.publish(status_topic(self.district_id, self.gateway), self._status("online"), retain=True)
        self._wake.set()

    def _on_disconnect(self) -> None:
        if self._closing:
            return
        log.warning("lost the broker %s; buffering (%d readings in the buffer)",
                    self.link.target.redacted_url if self.link else "?",
                    self.buffer.depth if self.buffer else 0)

    @property
    def _confirm_topic(self) -> str:
        return confirm_topic(self.district_id, self.gateway)

    def _take_acks(self) -> None:
        """PUBACKs collected by the paho thread (drained here, not one loop wake-up per ack)."""
        assert self.link is not None
        acks = self.link.acks
        mids = [acks.popleft() for _ in range(len(acks))]
        if mids:
            self._settle(self._out.puback(mids, time.monotonic()))

    def _settle(self, settled: Settled) -> None:
        full = self._room() <= 0
        self._acked.extend(settled.ids)  # they stay in _inflight_ids until deleted, so no query re-sends them
        if settled.acked_readings:
            self.metrics.acked(settled.acked_readings, settled.latencies)
        if settled.dead_readings:
            log.warning("ingest dead-lettered %d reading(s) of message(s) seq %s: see `canalflow ingest deadletter "
                        "list` for the reason", settled.dead_readings, ", ".join(map(str, settled.dead_seqs[:10])))
        if full and self._room() > 0:
            self._wake.set()

    def _on_ack(self) -> None:
        self._take_acks()

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self._confirm_topic:
            self._on_confirm(payload)
            return
        task = asyncio.ensure_future(self._command(payload))
        self._commands.add(task)
        task.add_done_callback(self._command_done)

    def _command_done(self, task: asyncio.Future[None]) -> None:
        self._commands.discard(task)
        if not task.cancelled() and task.exception() is not None:  # retrieved here: no task dies unseen
            log.error("gateway %s: a command on %s failed", self.gateway, cmd_topic(self.district_id, self.gateway),
                      exc_info=task.exception())

    def _on_confirm(self, payload: bytes) -> None:
        try:
            confirmation = Confirmation.model_validate_json(payload)
        except ValueError as exc:
            log.warning("ignoring a malformed confirmation on %s: %s", self._confirm_topic, str(exc)[:200])
            return
        self._settle(self._out.confirm(confirmation, time.monotonic()))
        self.metrics.confirmed(self._out.confirmed, self._out.dead, self._out.unconfirmed)

    # ---- publishing --------------------------------------------------------------------------
    async def _apply_acks(self) -> None:
        if self.link is not None:
            self._take_acks()
        if self._acked and self.buffer is not None:
            ids, self._acked = self._acked, []
            if not await self._in_db(self.buffer.acknowledge, ids):
                self._acked = ids + self._acked  # the storage refused the delete: they stay in flight, tried again
                return
            self._inflight_ids.difference_update(ids)

    def _resend_unconfirmed(self) -> None:
        """Hand rows ingest has not confirmed in time back to the backlog replay (historical, rate-limited)."""
        now = time.monotonic()
        if now < self._resend_check or self._boundary is None:
            return
        self._resend_check = now + 1.0
        ids = self._out.due(now)
        if not ids:
            return
        self._inflight_ids.difference_update(ids)
        self._backlog_after = min(self._backlog_after, min(ids) - 1)
        self._boundary = max(self._boundary, max(ids))
        log.warning("publishing %d reading(s) again: ingest has not confirmed them %.0f s after the broker took "
                    "them (%d resent since start)", len(ids), self._out.timeout_s, self._out.resent)

    async def _publish_loop(self) -> None:
        last = time.monotonic()
        while not self._closing:
            await nap(self._wake, 0.05 if self._room() > 0 else 0.005)
            self._wake.clear()
            await self._apply_acks()
            now = time.monotonic()
            rate = self.config.publish.replay_rate
            self._replay_tokens = min(self._replay_tokens + (now - last) * rate, max(rate, 1.0))
            last = now
            assert self.link is not None and self.buffer is not None
            if not self.link.connected:
                continue
            if self._boundary is None:
                self._boundary = await self._in_db(self.buffer.max_id)
                self._live_after = self._boundary
                self._backlog_after = 0
            self._resend_unconfirmed()
            await self._publish_live()
            await self._publish_backlog()

    def _room(self) -> int:
        """Messages the agent may publish now: the broker's in-flight window, and end to end no more
        than ``max_unconfirmed`` readings waiting for ingest (the rest waits in the buffer, on disk)."""
        if self._out.unconfirmed >= self.config.publish.max_unconfirmed:
            return 0
        return self.config.publish.max_inflight - self._out.in_flight

    async def _publish_live(self) -> None:
        assert self.buffer is not None
        while self._room() > 0 and self.buffer.last_id > self._live_after:
            rows = await self._in_db(self.buffer.rows_after, self._live_after, self._room())
            if not rows:
                return
            self._live_after = rows[-1].id
            if not await self._send(rows, historical=False, per_message=8):
                return

    async def _publish_backlog(self) -> None:
        assert self.buffer is not None and self._boundary is not None
        while self._room() > 0 and self._replay_tokens >= 1 and self._backlog_after < self._boundary:
            limit = int(min(self._replay_tokens, self._room() * self.config.publish.max_batch))
            rows = await self._in_db(self.buffer.rows_after, self._backlog_after, limit, self._boundary)
            if not rows:
                self._backlog_after = self._boundary
                return
            self._backlog_after = rows[-1].id
            fresh = [r for r in rows if r.id not in self._inflight_ids]
            self._replay_tokens -= len(fresh)
            if not await self._send(fresh, historical=True, per_message=self.config.publish.max_batch):
                return

    async def _ensure_seq(self, n: int) -> bool:
        """Message numbers for ``n`` messages; False when the buffer's storage cannot record a new block."""
        if self._seq + n > self._seq_end:
            block = max(n, 10 * self.config.publish.max_inflight)
            assert self.buffer is not None
            try:
                self._seq = await self._in_db(self.buffer.reserve_seq, block)
            except BufferStorageError:
                return False  # the buffer logged it; publishing resumes when a block can be saved
            self._seq_end = self._seq + block
        return True

    async def _send(self, rows: list[Row], *, historical: bool, per_message: int) -> bool:
        """Publish ``rows``; False (nothing sent, cursors back before them) when no message numbers are available."""
        by_point: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            by_point[row.point].append(row)
        if not await self._ensure_seq(sum(-(-len(r) // per_message) for r in by_point.values())):
            if rows:
                before = rows[0].id - 1
                if historical:
                    self._backlog_after = min(self._backlog_after, before)
                else:
                    self._live_after = min(self._live_after, before)
            return False
        assert self.link is not None and self.buffer is not None
        for point, point_rows in by_point.items():
            for start in range(0, len(point_rows), per_message):
                chunk = point_rows[start:start + per_message]
                seq = self._next_seq()
                payload = self._payload(point, seq, chunk, historical)
                mid = self.link.publish(readings_topic(self.district_id, self.gateway, point), payload)
                ids = [r.id for r in chunk]
                self._out.published(mid, seq, ids, time.monotonic())
                self._inflight_ids.update(ids)
                self.published_messages += 1
                self.published_readings += len(chunk)
        return True

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def _payload(self, point: str, seq: int, rows: list[Row], historical: bool) -> bytes:
        return batch_payload(self.district_id, self.gateway, point, seq, rows, historical=historical,
                             sent_ms=self.clock.now_ms())

    # ---- status and commands ----------------------------------------------------------------------
    def health(self) -> dict[str, dict[str, Any]]:
        return {point: h.as_status() for point, h in self._health_index.items()}

    def _status(self, state: str) -> bytes:
        depth = self.buffer.depth if self.buffer else None
        return GatewayStatus(
            state=state, agent_version=__version__, ts=self.clock.now_ms(), meters=len(self.config.points),
            buffer_depth=depth, buffer_dropped=self.buffer.dropped if self.buffer else None,
            unconfirmed=self._out.unconfirmed if self._out.end_to_end else None,
            health=self.health() if state == "online" else {},
            buffer_error=self.buffer.storage_error if self.buffer else None,  # an extra field: why readings are dropped
        ).model_dump_json(exclude_none=True).encode()

    async def _status_loop(self) -> None:
        interval = self.config.publish.status_interval_s
        while True:
            await asyncio.sleep(interval)
            assert self.buffer is not None
            self.metrics.buffer(self.buffer.depth, self.buffer.dropped, self.buffer.storage_error)
            unwritable = f" NOT WRITABLE: {self.buffer.storage_error}" if self.buffer.storage_error else ""
            (log.error if unwritable else log.info)(
                "polls %d (late %d), published %d readings in %d messages, buffer %d (dropped %d)%s, "
                "in flight %d, %s, %s", self.polls, sum(p.late for p in self.pollers), self.published_readings,
                self.published_messages, self.buffer.depth, self.buffer.dropped, unwritable, self._out.in_flight,
                self._confirm_summary(), "connected" if self.link and self.link.connected else "DISCONNECTED")
            if self.link is not None and self.link.connected:
                self.link.publish(status_topic(self.district_id, self.gateway), self._status("online"), retain=True)

    def _confirm_summary(self) -> str:
        out = self._out
        if not out.end_to_end:
            return "deleted on PUBACK"
        oldest = out.oldest_unconfirmed_s(time.monotonic())
        waiting = f"{out.unconfirmed} awaiting ingest" + (f" (oldest {oldest:.0f} s)" if oldest else "")
        return f"confirmed {out.confirmed} (dead-lettered {out.dead}, resent {out.resent}), {waiting}"

    async def _command(self, payload: bytes) -> None:
        from edge.commands import run_command

        result = await run_command(self, payload)
        if self.link is not None:
            self.link.publish(cmd_result_topic(self.district_id, self.gateway), json.dumps(result).encode())
