"""One ingest worker: one paho-mqtt client on the shared subscription, InfluxDB writers.

Threads: paho's network loop receives messages into a queue; the main thread takes them in
batches and validates them; ``writes_in_flight`` writer threads write their lines to InfluxDB
(dead-lettering what is refused), two batches at once by default so that a worker does not wait
for one HTTP round trip before it starts the next; each batch is then finished in the order it
was received (the MQTT spec wants PUBACKs in order): it is confirmed to their gateways (``.../confirm``, contract.Confirmation: the edge deletes a
reading only then) and acknowledges each message (QoS 1, manual ack). When InfluxDB is down the writer retries and
nothing is acknowledged, so the broker stops sending after its in-flight window: memory stays
bounded and the backlog waits on the broker. A crash means redelivery; the rewrite of a redelivered
message lands on the same rows (same series, same timestamp), so nothing is duplicated.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from canalflow.contract import Confirmation, M, confirm_topic, policy_of, readings_filter, shared, status_filter
from canalflow.district import load_district
from canalflow.influx import InfluxError, InfluxV1
from canalflow.mqtt import MqttTarget, make_client, refusal_error
from ingest.deadletter import DeadLetterStore, NewDeadLetter
from ingest.dirty import DirtyWindows, touched_days
from ingest.stats import PENDING, WorkerStats, serve_metrics
from ingest.validate import LINES_RP, Accepted, MessageValidator, Rejected, confirmation_address
from ingest.writer import ResilientWriter, WriteReport, WriterStopped

log = logging.getLogger("canalflow.ingest.worker")


@dataclass
class WorkerConfig:
    district: Path
    mqtt: MqttTarget
    influx_url: str
    db: str
    deadletter: Path
    group: str = "ingest"
    index: int = 0
    instance: str = field(default_factory=socket.gethostname)
    token: str | None = None
    subscribe_status: bool = True
    batch_lines: int = 5000
    max_delay_s: float = 0.2
    stats_interval_s: float = 10.0
    metrics_port: int = 0
    backoff_max_s: float = 5.0
    write_stats: bool = True
    inflight: int = 1000  # MQTT v5 Receive Maximum: unacknowledged messages the broker may send us
    session_expiry_s: int = 7 * 24 * 3600  # how long the broker keeps our session (and backlog) while we are away
    writes_in_flight: int = 2  # InfluxDB writes at once; batches are still confirmed and acknowledged in order

    @property
    def name(self) -> str:
        return f"{self.instance}-{self.index}"


def ingest_client_id(district_id: str, group: str, instance: str, index: int) -> str:
    """The MQTT client id of worker ``index``: stable across restarts, so the broker keeps its session
    and redelivers its unacknowledged messages; the district's id in it, so the ingests of two districts
    on one broker and host do not take each other's session."""
    return f"canalflow-ingest-{district_id}-{group}-{instance}-{index}"[:128]


@dataclass
class _Received:
    generation: int
    message: mqtt.MQTTMessage


@dataclass
class _Job:
    """One InfluxDB write: the lines of a batch of messages, with what to dead-letter and acknowledge."""

    items: list[_Received]
    lines: list[str]
    owners: list[int]  # index in items of the message each line came from
    dead: dict[int, NewDeadLetter]
    readings: int
    newest_live_ms: int
    spans: dict[str, tuple[int, int]]  # point -> (oldest, newest) reading time, for rollup late-data tracking
    order: int = 0  # its place among the jobs submitted: jobs are finished (confirmed, acked) in this order


class IngestWorker:
    """Validation and encoding on the main thread, writes and acks on writer threads, so they overlap."""

    def __init__(self, config: WorkerConfig, stop: threading.Event | None = None) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self.district = load_district(config.district)
        self.client_id = ingest_client_id(self.district.id, config.group, config.instance, config.index)
        self.validator = MessageValidator(self.district)
        self.store = DeadLetterStore(config.deadletter, worker=config.name)
        self.dirty = DirtyWindows(config.deadletter)  # same state file: rollup --dirty finds it with --store
        self._tz = ZoneInfo(self.district.spec.district.timezone)
        self._margin_ms = int(self.district.spec.tolerances.max_gap_minutes * 60_000)
        self.influx = InfluxV1(config.influx_url, config.db, token=config.token, timeout=30)
        self._writer_stop = threading.Event()
        self.stats = WorkerStats()
        self.inbox: queue.Queue[_Received] = queue.Queue()
        self.jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=2)
        self._submitted = 0
        self._finished = 0  # order of the next job to finish
        self._turn = threading.Condition()
        self.generation = 0
        self._failed = False
        self.client = self._make_client()

    # -- MQTT -------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        target = self.config.mqtt
        client = make_client(target, self.client_id, manual_ack=True, protocol=mqtt.MQTTv5)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._target = target
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        # A persistent session: unacknowledged messages wait for this worker id across restarts.
        props.SessionExpiryInterval = self.config.session_expiry_s
        # Our own in-flight window, whatever the broker's max_inflight_messages: the memory bound.
        props.ReceiveMaximum = self.config.inflight
        return props

    def _on_connect(self, client: mqtt.Client, _userdata: object, _flags: object, reason: object, _props: object) -> None:
        if getattr(reason, "is_failure", False):
            error = refusal_error(self._target, reason)
            log.error("worker %s: %s", self.config.name, error)
            if not error.retryable:
                self._failed = True
                self.stop.set()
            return
        self.generation += 1
        topics = [(shared(self.config.group, readings_filter(self.district.id)), SubscribeOptions(qos=1))]
        if self.config.subscribe_status:
            # Retained messages are not sent to shared subscriptions, so status is a plain one (idempotent rows).
            topics.append((status_filter(self.district.id), SubscribeOptions(qos=1)))
        client.subscribe(topics)
        log.info("worker %s: connected to %s as %s", self.config.name, self._target.redacted_url, self.client_id)

    def _on_subscribe(self, _client: mqtt.Client, _userdata: object, _mid: int, reasons: list, _props: object) -> None:
        failed = [r for r in reasons if getattr(r, "is_failure", False)]
        if failed:
            log.error("worker %s: subscription refused by the broker: %s (check the broker ACL)", self.config.name, failed)
        else:
            log.info("worker %s: subscribed (ready)", self.config.name)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: object, reason: object, _props: object) -> None:
        if not self.stop.is_set():
            log.warning("worker %s: MQTT connection lost (%s); paho reconnects", self.config.name, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        self.inbox.put(_Received(self.generation, message))

    def _connect(self) -> bool:
        delay = 0.2
        while not self.stop.is_set():
            try:
                # clean_start False on every connect, the first included: the session (and backlog) must survive restarts
                self.client.connect(self._target.host, self._target.port, keepalive=self._target.keepalive,
                                    clean_start=False, properties=self._connect_properties())
                return True
            except OSError as exc:
                log.warning("worker %s: cannot reach MQTT broker %s (%s); retrying in %.1fs", self.config.name, self._target.redacted_url, exc, delay)
                self.stop.wait(delay)
                delay = min(5.0, delay * 2)
        return False

    # -- main loop ----------------------------------------------------------------------------
    def run(self, grace_s: float = 10.0) -> int:
        serve_metrics(self.config.metrics_port)
        if not self._connect():
            return 0
        self.client.loop_start()
        writers = [threading.Thread(target=self._write_loop, name=f"influx-writer-{i}", daemon=True)
                   for i in range(max(1, self.config.writes_in_flight))]
        for writer in writers:
            writer.start()
        next_report = time.monotonic() + self.config.stats_interval_s
        try:
            while not self.stop.is_set() and all(w.is_alive() for w in writers) and self._network_alive():
                batch = self._collect(timeout=0.5)
                if batch:
                    self._submit(self._prepare(batch))
                if time.monotonic() >= next_report:
                    self._report()
                    next_report = time.monotonic() + self.config.stats_interval_s
            if not self._network_alive():
                log.critical("worker %s: the MQTT network thread died (its traceback is above); stopping so that the "
                             "supervisor restarts this worker", self.config.name)
                self._failed = True
            self._drain(writers, grace_s)
            self._report()  # the final counts, so ingest_stats adds up after a clean stop
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            self.influx.close()
            self.store.close()
            self.dirty.close()
        log.info("worker %s: stopped", self.config.name)
        return 1 if self._failed else 0

    def _network_alive(self) -> bool:
        """paho's loop thread: an exception in a callback ends it, and the worker would wait forever."""
        thread = getattr(self.client, "_thread", None)  # paho keeps it private; loop_start() set it
        return thread is not None and thread.is_alive()

    def _submit(self, job: _Job) -> None:
        job.order = self._submitted
        self._submitted += 1
        while True:  # the queue is short: waiting here is the back-pressure on validation
            try:
                self.jobs.put(job, timeout=0.5)
                return
            except queue.Full:
                if self._writer_stop.is_set():
                    return

    def _drain(self, writers: list[threading.Thread], grace_s: float) -> None:
        """On stop: write and acknowledge what was already received, giving up after ``grace_s``."""
        timer = threading.Timer(grace_s, self._writer_stop.set)
        timer.start()
        try:
            while (batch := self._collect(timeout=0.0)) and not self._writer_stop.is_set():
                self._submit(self._prepare(batch))
            for _ in writers:
                self._submit_end()
            for writer in writers:
                writer.join(grace_s + 5)
        finally:
            timer.cancel()

    def _submit_end(self) -> None:
        with contextlib.suppress(queue.Full):
            self.jobs.put(None, timeout=max(1.0, self.config.backoff_max_s))

    def _collect(self, timeout: float) -> list[_Received]:
        """Messages for one write: up to ``batch_lines`` readings or ``max_delay_s``, or until the inbox is empty."""
        try:
            first = self.inbox.get(timeout=timeout) if timeout else self.inbox.get_nowait()
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.config.max_delay_s
        size = _size_hint(first)
        while size < self.config.batch_lines and time.monotonic() < deadline:
            try:
                item = self.inbox.get(timeout=0.002)
            except queue.Empty:
                break
            batch.append(item)
            size += _size_hint(item)
        PENDING.set(len(batch) + self.inbox.qsize())
        return batch

    def _prepare(self, batch: list[_Received]) -> _Job:
        job = _Job(batch, [], [], {}, 0, 0, {})
        for i, item in enumerate(batch):
            result = self.validator.validate(item.message.topic, item.message.payload)
            if isinstance(result, Rejected):
                job.dead[i] = NewDeadLetter(result.reason, result.detail, item.message.topic, item.message.payload)
                continue
            assert isinstance(result, Accepted)
            job.lines.extend(result.lines)
            job.owners.extend([i] * len(result.lines))
            job.readings += result.readings
            if result.point is not None:
                low, high = job.spans.get(result.point, (result.oldest_ts_ms, result.newest_ts_ms))
                job.spans[result.point] = (min(low, result.oldest_ts_ms), max(high, result.newest_ts_ms))
            if not result.historical and result.readings:
                job.newest_live_ms = max(job.newest_live_ms, result.newest_ts_ms)
        return job

    def _write_loop(self) -> None:
        # one ResilientWriter per thread (its retry counts are per write); the HTTP client is shared
        writer = ResilientWriter(self.influx, backoff_max_s=self.config.backoff_max_s, stop=self._writer_stop, rp=LINES_RP)
        while (job := self.jobs.get()) is not None:
            try:
                report = writer.write(job.lines)
                self._in_turn(job, lambda job=job, report=report: self._finish(job, report))
            except WriterStopped:
                log.warning("worker %s: stopped before InfluxDB took the batch; its messages will be redelivered", self.config.name)
                return
            except Exception:  # never die silently: the main loop sees the thread gone and stops the worker
                log.exception("worker %s: writer failed; stopping so the supervisor restarts this worker", self.config.name)
                self._failed = True
                self.stop.set()
                self._writer_stop.set()  # the other writers stop too: nothing after this batch is acknowledged
                return

    def _in_turn(self, job: _Job, finish: Callable[[], None]) -> None:
        """Run ``finish`` once every job submitted before ``job`` has finished (acks go out in order)."""
        with self._turn:
            while self._finished != job.order:
                if self._writer_stop.is_set():
                    raise WriterStopped(f"stopped while batch {job.order} waited for batch {self._finished}")
                self._turn.wait(0.2)
            try:
                finish()
            finally:
                self._finished += 1
                self._turn.notify_all()

    def _finish(self, job: _Job, report: WriteReport) -> None:
        readings = job.readings
        for refused in report.refused:
            i = job.owners[refused.index]
            if i not in job.dead:
                item = job.items[i]
                job.dead[i] = NewDeadLetter("influx_rejected", f"line {refused.line[:300]!r}: {refused.error}", item.message.topic, item.message.payload)
            readings -= 1
        self.store.add_many(job.dead.values())
        self._mark_dirty(job.spans)
        self._confirm(job)
        self._ack(job.items)
        for letter in job.dead.values():
            self.stats.count_dead(letter.reason)
        self.stats.count_written(len(job.items) - len(job.dead), readings, len(job.lines), report.seconds, report.retries)
        if job.newest_live_ms:
            self.stats.note_lag(job.newest_live_ms)

    def _mark_dirty(self, spans: dict[str, tuple[int, int]]) -> None:
        pairs = [(point, day) for point, (oldest, newest) in spans.items()
                 for day in touched_days(oldest, newest, self._tz, self._margin_ms)]
        self.dirty.mark(pairs)

    def _confirm(self, job: _Job) -> None:
        """Tell each gateway which of its messages are now durable (written, or dead-lettered with a reason).

        Sent before the broker is acknowledged: a crash in between redelivers, rewrites the same
        rows and confirms again, which the edge ignores. A lost confirmation only makes the edge
        publish those readings again."""
        confirmed: dict[str, tuple[list[int], list[int]]] = {}
        for i, item in enumerate(job.items):
            address = confirmation_address(item.message.topic, item.message.payload)
            if address is not None:
                gateway, seq = address
                confirmed.setdefault(gateway, ([], []))[1 if i in job.dead else 0].append(seq)
        for gateway, (written, dead) in confirmed.items():
            payload = Confirmation(written=tuple(written), dead=tuple(dead)).to_json()
            self.client.publish(confirm_topic(self.district.id, gateway), payload, qos=1)

    def _ack(self, batch: list[_Received]) -> None:
        current = self.generation
        for item in batch:
            # After a reconnect the broker redelivers unacked messages under new ids; acking an old
            # id could acknowledge a different, unwritten message.
            if item.generation == current and item.message.qos > 0:
                self.client.ack(item.message.mid, item.message.qos)

    def _report(self) -> None:
        msg_rate, reading_rate = self.stats.rates()
        log.info("%s", self.stats.progress(self.config.name, msg_rate, reading_rate))
        if self.config.write_stats:
            try:
                self.influx.write_lines([self.stats.influx_line(self.district.id, self.config.name, msg_rate, reading_rate)],
                                        rp=policy_of(M.ingest_stats))
            except InfluxError as exc:
                log.warning("worker %s: could not write ingest_stats: %s", self.config.name, exc)


def _size_hint(item: _Received) -> int:
    # Lines a message will make, without parsing it: about one reading per 90 payload bytes.
    return max(1, len(item.message.payload) // 90)
