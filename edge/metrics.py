"""Prometheus metrics of one agent (``/metrics`` when ``metrics_port`` is set).

Polls and readings by point and quality, errors by device and kind, Modbus round-trip, buffer
depth and drops, publish latency (buffered -> broker PUBACK), readings confirmed, dead-lettered and
awaiting ingest's confirmation. A private registry per agent, so
several agents (or tests) in one process do not collide.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from canalflow.contract import Reading

log = logging.getLogger("canalflow.edge.metrics")


class EdgeMetrics:
    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.registry = CollectorRegistry()
        r = self.registry
        self.readings = Counter("canalflow_edge_readings", "Readings taken, by point and quality",
                                ["gateway", "point", "quality"], registry=r)
        self.errors = Counter("canalflow_edge_poll_errors", "Failed polls by point and flag",
                              ["gateway", "point", "flag"], registry=r)
        self.rtt = Gauge("canalflow_edge_roundtrip_seconds", "Last Modbus round-trip per request",
                         ["gateway", "point"], registry=r)
        self.depth = Gauge("canalflow_edge_buffer_depth", "Readings in the buffer (not yet confirmed stored)",
                           ["gateway"], registry=r)
        self.dropped = Gauge("canalflow_edge_buffer_dropped", "Readings dropped by the buffer policy",
                             ["gateway"], registry=r)
        self.writable = Gauge("canalflow_edge_buffer_writable",
                              "1 while the buffer's file system takes writes, 0 while it is full or read-only",
                              ["gateway"], registry=r)
        self.task_failures = Counter("canalflow_edge_task_failures", "Background tasks that raised and were restarted",
                                     ["gateway", "task"], registry=r)
        self.late = Gauge("canalflow_edge_polls_late", "Polls started more than one interval late (bus overloaded)",
                          ["gateway"], registry=r)
        self.lag = Gauge("canalflow_edge_poll_max_lag_seconds", "Largest delay of a poll after its due time",
                         ["gateway"], registry=r)
        self.requests = Gauge("canalflow_edge_modbus_requests", "Modbus requests sent since start", ["gateway"],
                              registry=r)
        self.published = Counter("canalflow_edge_published_readings", "Readings acknowledged by the broker",
                                 ["gateway"], registry=r)
        self.latency = Histogram("canalflow_edge_publish_latency_seconds", "Publish to PUBACK",
                                 ["gateway"], registry=r, buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 300))
        self.confirmed_total = Gauge("canalflow_edge_confirmed_readings", "Readings ingest confirmed stored since start",
                                     ["gateway"], registry=r)
        self.dead_total = Gauge("canalflow_edge_dead_lettered_readings",
                                "Readings ingest confirmed as dead-lettered since start (see its dead-letter store)",
                                ["gateway"], registry=r)
        self.unconfirmed = Gauge("canalflow_edge_unconfirmed_readings",
                                 "Readings the broker took that ingest has not confirmed yet", ["gateway"], registry=r)
        self._server: Any = None
        # labelled children looked up once per point: labels() costs more than the increment
        self._reading_children: dict[tuple[str, str], Any] = {}
        self._rtt_children: dict[str, Any] = {}

    def reading(self, point: str, reading: Reading) -> None:
        key = (point, reading.quality.value)
        child = self._reading_children.get(key)
        if child is None:
            child = self._reading_children[key] = self.readings.labels(self.gateway, *key)
        child.inc()
        if not reading.values:
            for flag in reading.flags:
                self.errors.labels(self.gateway, point, flag.value).inc()

    def roundtrip(self, point: str, seconds: float) -> None:
        child = self._rtt_children.get(point)
        if child is None:
            child = self._rtt_children[point] = self.rtt.labels(self.gateway, point)
        child.set(seconds)

    def acked(self, readings: int, latencies_s: list[float]) -> None:
        self.published.labels(self.gateway).inc(readings)
        histogram = self.latency.labels(self.gateway)
        for latency in latencies_s:
            histogram.observe(latency)

    def confirmed(self, readings: int, dead: int, unconfirmed: int) -> None:
        self.confirmed_total.labels(self.gateway).set(readings)
        self.dead_total.labels(self.gateway).set(dead)
        self.unconfirmed.labels(self.gateway).set(unconfirmed)

    def lateness(self, late_polls: int, requests: int, max_lag_s: float) -> None:
        self.late.labels(self.gateway).set(late_polls)
        self.lag.labels(self.gateway).set(max_lag_s)
        self.requests.labels(self.gateway).set(requests)

    def buffer(self, depth: int, dropped: int, storage_error: str | None = None) -> None:
        self.depth.labels(self.gateway).set(depth)
        self.dropped.labels(self.gateway).set(dropped)
        self.writable.labels(self.gateway).set(0 if storage_error else 1)

    def task_failed(self, task: str) -> None:
        self.task_failures.labels(self.gateway, task).inc()

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        bound = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", addr, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
