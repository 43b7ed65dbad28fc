"""The wire contract: topics round-trip, payloads validate, line protocol escapes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from canalflow import contract as c


def test_topics_round_trip():
    assert c.parse_topic(c.readings_topic("demo", "GW-B1", "V01-IN")) == c.Topic(c.TopicKind.readings, "demo", "GW-B1", "V01-IN")
    assert c.parse_topic(c.status_topic("demo", "GW-B1")).kind is c.TopicKind.status
    assert c.parse_topic(c.cmd_result_topic("demo", "GW-B1")).kind is c.TopicKind.cmd_result
    assert c.shared("ingest", c.readings_filter("demo")) == "$share/ingest/canalflow/v1/demo/+/+/readings"
    assert c.parse_topic(c.confirm_topic("demo", "GW-B1")) == c.Topic(c.TopicKind.confirm, "demo", "GW-B1")


def test_confirmation_round_trips_and_ignores_what_a_later_version_adds():
    confirmation = c.Confirmation(written=(1, 2), dead=(3,))
    assert c.Confirmation.model_validate_json(confirmation.to_json()) == confirmation
    assert c.Confirmation.model_validate_json(b'{"v": 1, "written": [5], "worker": "w0"}').written == (5,)
    with pytest.raises(ValidationError):
        c.Confirmation.model_validate_json(b'{"v": 1, "written": ["five"]}')


@pytest.mark.parametrize("topic", ["canalflow/v2/demo/GW/P/readings", "canalflow/v1/demo/GW/P/other", "x"])
def test_bad_topics_are_named(topic):
    with pytest.raises(c.TopicError, match="topic"):
        c.parse_topic(topic)


def batch(**overrides):
    body = {
        "district": "demo", "gateway": "GW-B1", "point": "V01-IN", "seq": 7,
        "readings": [{"ts": 1_772_323_200_000, "values": {"flow": 0.12, "totaliser": 1234.5}}],
    }
    body.update(overrides)
    return json.dumps(body).encode()


def test_payload_round_trip():
    parsed = c.parse_batch(batch())
    assert parsed.readings[0].quality is c.Quality.good
    assert c.parse_batch(parsed.to_json()) == parsed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"readings": [{"ts": 1_772_323_200_000, "values": {"flux": 1.0}}]}, "unknown quantity 'flux'"),
        ({"readings": [{"ts": 1_772_323_200_000, "values": {"flow": 5000.0}}]}, "outside the possible range"),
        ({"readings": []}, "at least 1"),
        ({"point": "bad point"}, "pattern"),
        ({"extra": 1}, "Extra inputs"),
        ({"readings": [{"ts": 5, "values": {"flow": 1.0}}]}, "greater than or equal"),
    ],
)
def test_invalid_payloads_say_why(overrides, message):
    with pytest.raises(ValidationError, match=message):
        c.parse_batch(batch(**overrides))


def test_duplicate_timestamps_and_size_limit():
    reading = {"ts": 1_772_323_200_000, "values": {"flow": 1.0}}
    with pytest.raises(ValidationError, match="same timestamp"):
        c.parse_batch(batch(readings=[reading, reading]))
    with pytest.raises(ValueError, match="exceeds the limit"):
        c.parse_batch(b" " * (c.MAX_PAYLOAD_BYTES + 1))


def test_reading_lines_escape_and_type_fields():
    parsed = c.parse_batch(batch(point="V01-IN", readings=[{"ts": 1_772_323_200_000, "values": {"flow": 0.5}, "quality": "suspect", "flags": ["stuck"]}]))
    (text,) = c.reading_lines(parsed, canal="L 11", role="intake")
    assert text.startswith("reading,canal=L\\ 11,district=demo,gateway=GW-B1,point=V01-IN,role=intake ")
    assert 'flow=0.5,quality="suspect",qcode=1i,flags="stuck",seq=7i,historical=false 1772323200000' in text


names = st.from_regex(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,10}$", fullmatch=True)
values = st.sampled_from(sorted(c.IMPOSSIBLE)).flatmap(
    lambda q: st.tuples(st.just(q), st.floats(min_value=c.IMPOSSIBLE[q][0], max_value=c.IMPOSSIBLE[q][1]))
)
readings = st.builds(
    c.Reading,
    ts=st.integers(946_684_800_000, 4_102_444_800_000),
    values=st.lists(values, max_size=4).map(dict),
    quality=st.sampled_from(list(c.Quality)),
    flags=st.lists(st.sampled_from(list(c.Flag)), max_size=3).map(tuple),
)
batches = st.builds(
    c.ReadingBatch,
    district=names, gateway=names, point=names, seq=st.integers(0, 2**40), historical=st.booleans(),
    readings=st.lists(readings, min_size=1, max_size=5, unique_by=lambda r: r.ts).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(batches, st.text(max_size=8), st.sampled_from(["diversion", "intake", "section", "outfall", ""]))
def test_reading_lines_equal_the_generic_line_encoder(batch, canal, role):
    tags = {"district": batch.district, "point": batch.point, "gateway": batch.gateway, "canal": canal, "role": role}
    expected = []
    for reading in batch.readings:
        fields = {k: float(v) for k, v in reading.values.items()}
        fields |= {"quality": reading.quality.value, "qcode": reading.quality.code,
                   "flags": ",".join(f.value for f in reading.flags), "seq": batch.seq, "historical": batch.historical}
        expected.append(c.line(c.M.readings, tags, fields, reading.ts))
    assert c.reading_lines(batch, canal, role) == expected


def test_every_measurement_names_its_retention_policy_and_ingest_setup_creates_them(influx) -> None:
    from canalflow.contract import RETENTION_POLICY, M, source_of

    measurements = {v for k, v in vars(M).items() if not k.startswith("_")}
    assert set(RETENTION_POLICY) == measurements
    made = {row["name"]: row["default"] for row in influx.query_points("SHOW RETENTION POLICIES")}  # the fixture ran `ingest setup`
    assert set(RETENTION_POLICY.values()) <= set(made) and made["raw"] is True
    assert source_of(M.volume) == '"rollups"."volume"' and source_of(M.readings) == '"raw"."reading"'
