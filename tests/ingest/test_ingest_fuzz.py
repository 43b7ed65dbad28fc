"""Property-generated bad payloads: validation never crashes, and every one ends as a dead letter with a reason.

Phase 1 (in process, hypothesis): each generated message is rejected with a known reason, no exception.
Phase 2 (real pipeline): all of them are published through Mosquitto to a running ingest; the
dead-letter store must then hold exactly one letter per message, each with its reason and payload.
`make test` runs 500 examples; the slow test (``-m slow``) runs 10,000 as the issue asks.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_helpers import DEMO, publish, wait_for_dead_letters, write_raw

from canalflow.contract import IMPOSSIBLE, MAX_PAYLOAD_BYTES, readings_topic
from canalflow.district import load_district
from canalflow.influx import InfluxV1
from ingest.validate import REASONS, MessageValidator, Rejected

TS = 1_772_323_200_000
TOPIC = readings_topic("demo", "GW-B1", "V01-IN")


def good_batch() -> dict:
    return {"v": 1, "district": "demo", "gateway": "GW-B1", "point": "V01-IN", "seq": 3,
            "readings": [{"ts": TS, "values": {"flow": 0.25, "totaliser": 10.0}, "quality": "good", "flags": []},
                         {"ts": TS + 1000, "values": {"flow": 0.26}, "quality": "suspect", "flags": ["stuck"]}]}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

impossible_values = st.sampled_from(sorted(IMPOSSIBLE)).flatmap(
    lambda q: st.tuples(st.just(q), st.floats(min_value=IMPOSSIBLE[q][1], exclude_min=True, allow_infinity=False)
                        | st.floats(max_value=IMPOSSIBLE[q][0], exclude_max=True, allow_infinity=False))
)


def _set(path: tuple, value: object) -> dict:
    doc = good_batch()
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def _drop(key: str) -> dict:
    doc = good_batch()
    del doc[key]
    return doc


not_an_int = st.none() | st.text(max_size=5) | st.floats(allow_nan=False).filter(lambda f: not f.is_integer()) | st.lists(st.integers(), max_size=2)

mutations = st.one_of(
    st.sampled_from(["district", "gateway", "point", "seq", "readings"]).map(_drop),
    not_an_int.map(lambda v: _set(("seq",), v)),
    st.integers(max_value=-1).map(lambda v: _set(("seq",), v)),
    st.integers().filter(lambda v: v != 1).map(lambda v: _set(("v",), v)),
    (st.integers(max_value=946_684_799_999) | st.integers(min_value=4_102_444_800_001)).map(lambda v: _set(("readings", 0, "ts"), v)),
    not_an_int.map(lambda v: _set(("readings", 0, "ts"), v)),
    st.text(min_size=1, max_size=12).filter(lambda q: q not in IMPOSSIBLE).map(lambda q: _set(("readings", 0, "values", q), 1.0)),
    impossible_values.map(lambda qv: _set(("readings", 0, "values", qv[0]), qv[1])),
    (st.text(max_size=6) | st.lists(st.integers(), max_size=2)).map(lambda v: _set(("readings", 0, "values", "flow"), v)),
    st.text(max_size=10).filter(lambda q: q not in ("good", "suspect", "estimated", "bad")).map(lambda v: _set(("readings", 0, "quality"), v)),
    st.text(min_size=1, max_size=10).map(lambda v: _set(("readings", 0, "flags"), [v + "!"])),
    st.text(max_size=8).filter(lambda k: k not in good_batch()).map(lambda k: _set((k,), 1)),
    st.just(_set(("readings",), [])),
    st.just(_set(("readings", 1, "ts"), TS)),
    st.text(max_size=10).filter(lambda v: v != "V01-IN").map(lambda v: _set(("point",), v)),
    st.text(max_size=10).filter(lambda v: v != "demo").map(lambda v: _set(("district",), v)),
)


def encode(doc: object) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


bad_payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(encode),
    mutations.map(encode),
    mutations.map(encode).flatmap(lambda b: st.integers(1, max(1, len(b) - 1)).map(lambda n: b[:n])),  # truncated
    st.just(b"{" + b" " * MAX_PAYLOAD_BYTES + b"}"),
)


def generate_rejected(examples: int) -> list[bytes]:
    """Run the property in process; return every generated payload (each proved to be rejected)."""
    validator = MessageValidator(load_district(DEMO))
    payloads: list[bytes] = []

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(bad_payloads)
    def property_rejected_with_reason(payload: bytes) -> None:
        result = validator.validate(TOPIC, payload)
        assert isinstance(result, Rejected), f"accepted a bad payload: {payload[:200]!r}"
        assert result.reason in REASONS and result.detail
        payloads.append(payload)

    property_rejected_with_reason()
    return payloads


def run_fuzz(examples: int, mqtt_url: str, influx: InfluxV1, start_ingest, tmp_path: Path) -> None:
    payloads = generate_rejected(examples)
    assert len(payloads) >= examples * 0.9  # hypothesis may stop early only when the space is exhausted
    store = tmp_path / "fuzz.sqlite"
    ingest = start_ingest(mqtt_url, influx, deadletter=store)
    publish(mqtt_url, "--raw", str(write_raw(tmp_path / "fuzz.jsonl", [(TOPIC, p) for p in payloads])), timeout=300)
    letters = wait_for_dead_letters(store, len(payloads), timeout=120, ingest=ingest)
    assert len(letters) == len(payloads)
    assert Counter(x.payload for x in letters) == Counter(payloads)
    assert all(x.reason in REASONS and x.detail for x in letters)
    assert ingest.proc.poll() is None, "ingest crashed"
    assert ingest.stop() == 0
    assert influx.query_points('SELECT COUNT("qcode") FROM "reading"') == []


def test_500_generated_bad_payloads_are_all_dead_lettered(mqtt_url: str, influx: InfluxV1, start_ingest, tmp_path: Path) -> None:
    run_fuzz(500, mqtt_url, influx, start_ingest, tmp_path)


@pytest.mark.slow
def test_10000_generated_bad_payloads_are_all_dead_lettered(mqtt_url: str, influx: InfluxV1, start_ingest, tmp_path: Path) -> None:
    run_fuzz(10_000, mqtt_url, influx, start_ingest, tmp_path)
