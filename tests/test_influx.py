"""canalflow.influx against a real InfluxDB 1.6 (Debian's influxd, started by conftest)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import pytest

from canalflow.influx import (
    InfluxQueryError,
    InfluxUnavailable,
    InfluxV1,
    InfluxWriteError,
    encode_write_body,
    parse_retry_after,
    quote_ident,
)
from testbed.services import Influxd, free_port

T0 = 1_700_000_000_123  # epoch ms with a non-zero millisecond part


def test_ping(influx: InfluxV1) -> None:
    assert influx.ping()


def test_ping_false_when_nothing_listens() -> None:
    with InfluxV1(f"http://127.0.0.1:{free_port()}", "x", timeout=2) as db:
        assert not db.ping()


def test_write_query_round_trip_ms_precision(influx: InfluxV1) -> None:
    influx.write_lines(
        [
            f"reading,point=P1,canal=main flow=1.25,level=0.5 {T0}",
            f"reading,point=P2,canal=main flow=0.75,level=0.25 {T0 + 1}",
        ]
    )
    rows = influx.query_points("SELECT flow, level, point FROM reading ORDER BY time")
    assert rows == [
        {"time": T0, "flow": 1.25, "level": 0.5, "point": "P1"},
        {"time": T0 + 1, "flow": 0.75, "level": 0.25, "point": "P2"},
    ]


def test_query_returns_series_with_group_by_tags(influx: InfluxV1) -> None:
    influx.write_lines(
        [f"reading,point=P1 flow=1 {T0}", f"reading,point=P1 flow=3 {T0 + 60_000}", f"reading,point=P2 flow=5 {T0}"]
    )
    series = influx.query("SELECT sum(flow) FROM reading GROUP BY point")
    assert [(s["name"], s["tags"], s["columns"], s["values"]) for s in series] == [
        ("reading", {"point": "P1"}, ["time", "sum"], [[0, 4]]),
        ("reading", {"point": "P2"}, ["time", "sum"], [[0, 5]]),
    ]
    assert influx.query_points("SELECT sum(flow) FROM reading GROUP BY point") == [
        {"point": "P1", "time": 0, "sum": 4},
        {"point": "P2", "time": 0, "sum": 5},
    ]


def test_bound_parameters(influx: InfluxV1) -> None:
    influx.write_lines([f"reading,point=P1 flow=1 {T0}", f"reading,point=P'2 flow=2 {T0}"])
    rows = influx.query_points("SELECT flow FROM reading WHERE point = $p", params={"p": "P'2"})
    assert rows == [{"time": T0, "flow": 2}]


def test_same_point_and_timestamp_is_one_row(influx: InfluxV1) -> None:
    # A replayed batch must not double the volume: InfluxDB keys a point by
    # measurement + tag set + timestamp, and the later field values win.
    influx.write_lines(f"reading,point=P1 flow=1.0 {T0}")
    influx.write_lines(f"reading,point=P1 flow=1.0 {T0}")
    influx.write_lines(f"reading,point=P1 flow=2.0 {T0}")
    assert influx.query_points("SELECT flow FROM reading") == [{"time": T0, "flow": 2.0}]


def test_bad_line_gives_400_and_the_other_lines_are_written(influx: InfluxV1) -> None:
    # InfluxDB 1.6 writes every line of the batch that parses, then answers
    # 400 {"error":"partial write: unable to parse '<bad line>': <reason> dropped=0"}
    # (one "unable to parse ..." per bad line, newline-separated; dropped= counts points refused
    # after parsing, e.g. beyond the retention policy).  So the good lines must not be re-sent
    # as if nothing had been written, and the bad line will fail again: not retryable.
    batch = [
        f"reading,point=P1 flow=1 {T0}",
        "reading,point=P2 flow= this is not line protocol",
        f"reading,point=P3 flow=3 {T0}",
    ]
    with pytest.raises(InfluxWriteError) as caught:
        influx.write_lines(batch)
    error = caught.value
    assert error.status == 400
    assert error.partial and not error.retryable
    assert "partial write" in error.body
    assert "unable to parse 'reading,point=P2 flow= this is not line protocol'" in error.body
    assert "dropped=0" in error.body
    assert error.retry_after is None
    assert [row["point"] for row in influx.query_points("SELECT flow, point FROM reading")] == ["P1", "P3"]


def test_field_type_conflict_is_a_partial_write(influx: InfluxV1) -> None:
    influx.write_lines(f"reading,point=P1 flow=1.5 {T0}")
    with pytest.raises(InfluxWriteError) as caught:
        influx.write_lines([f'reading,point=P1 flow="high" {T0 + 1}', f"reading,point=P1 flow=2.5 {T0 + 2}"])
    assert caught.value.status == 400
    assert "field type conflict" in caught.value.body
    assert "dropped=1" in caught.value.body
    assert len(influx.query_points("SELECT flow FROM reading")) == 2


@pytest.mark.parametrize("use_gzip", [True, False])
def test_write_with_and_without_gzip(influx: InfluxV1, use_gzip: bool) -> None:
    lines = [f"reading,point=P{i % 50} flow={i}.5 {T0 + i}" for i in range(5_000)]
    influx.write_lines(lines, gzip=use_gzip)
    assert influx.query_points("SELECT count(flow) FROM reading") == [{"time": 0, "count": 5_000}]


def test_gzip_body_encoding() -> None:
    body, headers = encode_write_body(["m v=1 1", "m v=2 2"], gzip=True)
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == b"m v=1 1\nm v=2 2"
    body, headers = encode_write_body("m v=1 1", gzip=False)
    assert "Content-Encoding" not in headers
    assert body == b"m v=1 1"


def test_precision_seconds(influx: InfluxV1) -> None:
    influx.write_lines("reading,point=P1 flow=1 1700000000", precision="s")
    assert influx.query_points("SELECT flow FROM reading") == [{"time": 1_700_000_000_000, "flow": 1}]
    with pytest.raises(ValueError, match="precision"):
        influx.write_lines("reading flow=1", precision="msec")


def test_unknown_database_is_404(influxd: Influxd) -> None:
    with InfluxV1(influxd.url, "no_such_database") as db, pytest.raises(InfluxWriteError) as caught:
        db.write_lines("reading flow=1")
    assert caught.value.status == 404
    assert "database not found" in caught.value.body


def test_retention_policy(influx: InfluxV1) -> None:
    influx.create_retention_policy("raw_90d", "90d", default=False)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    influx.write_lines(f"reading,point=P1 flow=1 {now_ms}", rp="raw_90d")
    assert influx.query_points('SELECT flow FROM "raw_90d"."reading"') == [{"time": now_ms, "flow": 1}]
    assert influx.query_points("SELECT flow FROM reading") == []  # not in the default policy (`raw`, as `ingest setup` made it)
    # 1.6 quirk: an unknown RP is HTTP 500, but it is a configuration error, not an outage.
    with pytest.raises(InfluxWriteError) as caught:
        influx.write_lines(f"reading flow=1 {now_ms}", rp="no_such_rp")
    assert caught.value.status == 500
    assert not caught.value.retryable
    with pytest.raises(ValueError, match="duration"):
        influx.create_retention_policy("bad", "90 days; DROP DATABASE x")


def test_query_errors(influx: InfluxV1) -> None:
    with pytest.raises(InfluxQueryError, match="error parsing query") as caught:
        influx.query("SELEC flow FROM reading")
    assert caught.value.status == 400
    with pytest.raises(InfluxQueryError, match="undefined function"):
        influx.query("SELECT no_such_function(flow) FROM reading")


def test_unreachable_server_raises_unavailable() -> None:
    with InfluxV1(f"http://127.0.0.1:{free_port()}", "x", timeout=2) as db:
        with pytest.raises(InfluxUnavailable, match="cannot reach InfluxDB"):
            db.write_lines("reading flow=1")
        with pytest.raises(InfluxUnavailable):
            db.query("SHOW DATABASES")


def test_database_lifecycle(influxd: Influxd) -> None:
    with InfluxV1(influxd.url, 'odd "name" db') as db:
        db.create_database()
        db.create_database()  # idempotent
        names = [row["name"] for row in db.query_points("SHOW DATABASES")]
        assert 'odd "name" db' in names
        db.drop_database()
        names = [row["name"] for row in db.query_points("SHOW DATABASES")]
        assert 'odd "name" db' not in names


def test_token_is_sent_as_authorization_header(influxd: Influxd) -> None:
    # 1.6 without auth-enabled ignores the header; the request must still succeed.
    with InfluxV1(influxd.url, "tok", token="secret-token") as db:
        assert db._http.headers["Authorization"] == "Token secret-token"
        assert db.ping()


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("garbage") is None
    now = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Sun, 01 Jun 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Sun, 01 Jun 2025 11:00:00 GMT", now=now) == 0.0


def test_quote_ident() -> None:
    assert quote_ident("canalflow") == '"canalflow"'
    assert quote_ident('a"b\\c') == '"a\\"b\\\\c"'
