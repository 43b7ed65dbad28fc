"""ResilientWriter against a real InfluxDB: 413 split, Retry-After, outage back-off, stop while blocked.

InfluxDB 1.6 never answers 429/503 itself (2.x/3.x and proxies do), so those cases put a small
HTTP relay in front of the real server that answers the scripted statuses for the first requests
and relays the rest unchanged.
"""

from __future__ import annotations

import http.server
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from canalflow.influx import InfluxV1
from ingest.writer import ResilientWriter, WriterStopped
from testbed.services import Influxd, free_port


def lines(n: int, point: str = "P1") -> list[str]:
    return [f"reading,point={point} flow={i * 0.5},qcode=0i {1_772_323_200_000 + i * 1000}" for i in range(n)]


def count(client: InfluxV1) -> int:
    rows = client.query_points('SELECT COUNT("flow") AS n FROM "reading"')
    return int(rows[0]["n"]) if rows else 0


class SmallBodyInfluxd(Influxd):
    """A real influxd refusing request bodies over ``max_body`` bytes with 413."""

    max_body = 4096

    def config_text(self) -> str:
        return super().config_text().replace("  auth-enabled = false", f"  auth-enabled = false\n  max-body-size = {self.max_body}")


def test_413_splits_the_batch_until_every_line_is_written(tmp_path: Path) -> None:
    server = SmallBodyInfluxd(tmp_path / "influxd").start()
    try:
        client = InfluxV1(server.url, "small")
        client.create_database()
        batch = lines(3000)
        with pytest.raises(Exception, match="413"):
            client.write_lines(batch, gzip=False)  # the server really refuses it as one body
        report = ResilientWriter(client).write(batch)
        assert report.refused == [] and report.requests > 1
        assert count(client) == 3000
        client.close()
    finally:
        server.stop()


class Relay(http.server.ThreadingHTTPServer):
    """Relays requests to ``target``; answers ``script`` statuses (with headers) to the first /write calls."""

    def __init__(self, target: str, script: list[tuple[int, dict[str, str]]]) -> None:
        self.target = target
        self.script = list(script)
        self.write_times: list[float] = []
        super().__init__(("127.0.0.1", free_port()), _RelayHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RelayHandler(http.server.BaseHTTPRequestHandler):
    server: Relay

    def log_message(self, *_args: object) -> None:
        pass

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/write"):
            self.server.write_times.append(time.monotonic())
            if self.server.script:
                status, headers = self.server.script.pop(0)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                payload = b'{"error":"overloaded"}'
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
        request = urllib.request.Request(self.server.target + self.path, data=body or None, method=self.command)
        for key in ("Content-Type", "Content-Encoding"):
            if self.headers.get(key):
                request.add_header(key, self.headers[key])
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, data = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _relay


@pytest.fixture
def relay(influxd: Influxd) -> Iterator[Callable[[list[tuple[int, dict[str, str]]]], Relay]]:
    started: list[Relay] = []

    def start(script: list[tuple[int, dict[str, str]]]) -> Relay:
        server = Relay(influxd.url, script)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def test_retry_after_on_503_and_429_is_honoured(influx: InfluxV1, relay) -> None:
    proxy = relay([(503, {"Retry-After": "1"}), (429, {"Retry-After": "0.5"})])
    client = InfluxV1(proxy.url, influx.database)
    writer = ResilientWriter(client, backoff_initial_s=0.01)
    report = writer.write(lines(10))
    assert report.retries == 2 and report.refused == []
    first, second, third = proxy.write_times
    assert 0.85 <= second - first <= 1.3, "waited as Retry-After: 1 asked (not the 0.01 s back-off)"
    assert 0.4 <= third - second <= 0.8
    assert count(influx) == 10


def test_5xx_without_retry_after_backs_off_exponentially(influx: InfluxV1, relay) -> None:
    proxy = relay([(500, {}), (502, {}), (504, {})])
    writer = ResilientWriter(InfluxV1(proxy.url, influx.database), backoff_initial_s=0.1, backoff_max_s=1.0)
    report = writer.write(lines(5))
    assert report.retries == 3 and count(influx) == 5
    gaps = [b - a for a, b in zip(proxy.write_times, proxy.write_times[1:], strict=False)]
    assert gaps[0] < gaps[1] < gaps[2], gaps


def test_unreachable_influxdb_blocks_until_stopped_and_nothing_counts_as_written() -> None:
    client = InfluxV1(f"http://127.0.0.1:{free_port()}", "nowhere", timeout=1)
    stop = threading.Event()
    writer = ResilientWriter(client, backoff_initial_s=0.05, backoff_max_s=0.2, stop=stop)
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    with pytest.raises(WriterStopped):
        writer.write(lines(3))
    assert 0.9 <= time.monotonic() - started < 3
