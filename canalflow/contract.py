"""The wire contract: MQTT topics and payloads, quality codes, and the InfluxDB schema.

This module is the only place that knows these names. Edge builds payloads with it, ingest
validates and encodes them with it, billing and dashboards query the measurements it names.

Version 1 payload on ``canalflow/v1/{district}/{gateway}/{point}/readings`` (QoS 1)::

    {"v": 1, "district": "demo", "gateway": "GW1", "point": "M1-HEAD", "seq": 42,
     "historical": false, "sent_ms": 1772323200123,
     "readings": [{"ts": 1772323200000, "values": {"flow": 12.5, "totaliser": 1234.5},
                   "quality": "good", "flags": []}]}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from canalflow.errors import CanalflowError

CONTRACT_VERSION = 1
TOPIC_ROOT = f"canalflow/v{CONTRACT_VERSION}"
MAX_PAYLOAD_BYTES = 512 * 1024
MAX_READINGS_PER_BATCH = 5000

# Sensor depths (cm) a soil-moisture station may report: one quantity ``vwc_<d>cm`` per depth.
SOIL_DEPTHS_CM = (10, 20, 30, 40, 50, 60, 80, 100)

# Quantities carried on the wire, always in SI units.
QUANTITIES: dict[str, str] = {
    "flow": "m3/s",
    "level": "m",
    "downstream_level": "m",
    "velocity": "m/s",
    "totaliser": "m3",
    "battery": "V",
    "signal_quality": "%",
    "status": "bits",
    **{f"vwc_{d}cm": "m3/m3" for d in SOIL_DEPTHS_CM},  # soil-moisture station: volumetric water content at d cm
    "rain_total": "m",  # rain gauge: accumulated rain (tipping-bucket count × depth per tip); wraps like a totaliser
}
# Physical bounds beyond which a value is impossible (not merely suspect): ingest dead-letters it.
IMPOSSIBLE: dict[str, tuple[float, float]] = {
    "flow": (-1000.0, 1000.0),
    "level": (-50.0, 100.0),
    "downstream_level": (-50.0, 100.0),
    "velocity": (-20.0, 20.0),
    "totaliser": (-1e13, 1e13),
    "battery": (0.0, 100.0),
    "signal_quality": (0.0, 100.0),
    "status": (0.0, 2.0**32),
    **{f"vwc_{d}cm": (0.0, 1.0) for d in SOIL_DEPTHS_CM},
    "rain_total": (0.0, 1e6),
}


def vwc_quantity(depth_cm: int) -> str:
    """The wire quantity of a soil-moisture station's sensor at ``depth_cm``."""
    if depth_cm not in SOIL_DEPTHS_CM:
        raise KeyError(f"no soil-moisture quantity for {depth_cm} cm (stations report at {SOIL_DEPTHS_CM} cm)")
    return f"vwc_{depth_cm}cm"


class Quality(StrEnum):
    good = "good"
    suspect = "suspect"
    estimated = "estimated"
    bad = "bad"

    @property
    def code(self) -> int:
        return _QUALITY_CODES[self]


_QUALITY_CODES = {Quality.good: 0, Quality.suspect: 1, Quality.estimated: 2, Quality.bad: 3}


class Flag(StrEnum):
    """Why a reading is not plainly good. A reading may carry several."""

    out_of_range = "out_of_range"
    rate_of_change = "rate_of_change"
    stuck = "stuck"
    totaliser_reset = "totaliser_reset"
    totaliser_rollover = "totaliser_rollover"
    future_timestamp = "future_timestamp"
    device_exception = "device_exception"
    comm_error = "comm_error"
    reverse_flow = "reverse_flow"
    submerged = "submerged"  # free-flow rating over-reads
    rated = "rated"  # flow computed at the edge from level with a rating (provisional)
    device_alarm = "device_alarm"
    low_battery = "low_battery"
    clock_drift = "clock_drift"
    low_signal = "low_signal"  # the sensor's signal degraded (fouling, silt, coating): clean it


# ---------------------------------------------------------------------------------------------
# Topics


class TopicKind(StrEnum):
    readings = "readings"
    status = "status"
    cmd = "cmd"
    cmd_result = "cmd/result"
    confirm = "confirm"


@dataclass(frozen=True)
class Topic:
    kind: TopicKind
    district: str
    gateway: str
    point: str | None = None


class TopicError(CanalflowError, ValueError):
    pass


def readings_topic(district: str, gateway: str, point: str) -> str:
    return f"{TOPIC_ROOT}/{district}/{gateway}/{point}/readings"


def status_topic(district: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{district}/{gateway}/status"


def cmd_topic(district: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{district}/{gateway}/cmd"


def cmd_result_topic(district: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{district}/{gateway}/cmd/result"


def confirm_topic(district: str, gateway: str) -> str:
    """Ingest tells a gateway which of its messages are durable (see :class:`Confirmation`)."""
    return f"{TOPIC_ROOT}/{district}/{gateway}/confirm"


def gateway_prefix(district: str, gateway: str) -> str:
    """Everything a gateway may publish lives below this prefix (used for broker ACLs)."""
    return f"{TOPIC_ROOT}/{district}/{gateway}"


def readings_filter(district: str = "+") -> str:
    return f"{TOPIC_ROOT}/{district}/+/+/readings"


def status_filter(district: str = "+") -> str:
    return f"{TOPIC_ROOT}/{district}/+/status"


def shared(group: str, topic_filter: str) -> str:
    """An MQTT shared subscription: members of ``group`` split the messages between them."""
    return f"$share/{group}/{topic_filter}"


def parse_topic(topic: str) -> Topic:
    """Parse a canalflow topic; raise :class:`TopicError` naming what is wrong."""
    parts = topic.split("/")
    root = TOPIC_ROOT.split("/")
    if parts[: len(root)] != root:
        raise TopicError(f"topic {topic!r} is not under {TOPIC_ROOT!r}")
    rest = parts[len(root) :]
    if len(rest) == 4 and rest[3] == "readings":
        return Topic(TopicKind.readings, rest[0], rest[1], rest[2])
    if len(rest) == 3 and rest[2] in ("status", "cmd", "confirm"):
        return Topic(TopicKind(rest[2]), rest[0], rest[1])
    if len(rest) == 4 and rest[2:] == ["cmd", "result"]:
        return Topic(TopicKind.cmd_result, rest[0], rest[1])
    raise TopicError(f"topic {topic!r} does not match {TOPIC_ROOT}/<district>/<gateway>/<point>/readings, .../status, .../cmd or .../confirm")


# ---------------------------------------------------------------------------------------------
# Payloads

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
EpochMs = Annotated[int, Field(ge=946_684_800_000, le=4_102_444_800_000)]  # 2000 .. 2100


class Reading(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ts: EpochMs
    values: dict[str, float]
    quality: Quality = Quality.good
    flags: tuple[Flag, ...] = ()

    @field_validator("values")
    @classmethod
    def _known_finite_values(cls, values: dict[str, float]) -> dict[str, float]:
        for name, value in values.items():
            if name not in QUANTITIES:
                raise ValueError(f"unknown quantity {name!r} (known: {', '.join(QUANTITIES)})")
            if not math.isfinite(value):
                raise ValueError(f"{name} is not a finite number")
            low, high = IMPOSSIBLE[name]
            if not low <= value <= high:
                raise ValueError(f"{name}={value} is outside the possible range [{low}, {high}] {QUANTITIES[name]}")
        return values


class ReadingBatch(BaseModel):
    """A batch of readings of one metering point, as published by an edge agent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    district: Name
    gateway: Name
    point: Name
    seq: int = Field(ge=0)
    historical: bool = False
    sent_ms: EpochMs | None = None
    readings: tuple[Reading, ...] = Field(min_length=1, max_length=MAX_READINGS_PER_BATCH)

    @model_validator(mode="after")
    def _unique_timestamps(self) -> ReadingBatch:
        stamps = [r.ts for r in self.readings]
        if len(set(stamps)) != len(stamps):
            raise ValueError("two readings in one batch have the same timestamp")
        return self

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def parse_batch(payload: bytes) -> ReadingBatch:
    """Validate a readings payload (raises ``pydantic.ValidationError`` or ``ValueError``)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}")
    return ReadingBatch.model_validate_json(payload)


class Confirmation(BaseModel):
    """Published by ingest on ``.../{gateway}/confirm`` (QoS 1) once a batch of messages is durable.

    ``written``: message ``seq`` numbers whose readings are in InfluxDB. ``dead``: seqs stored in
    the dead-letter store with their reason (kept, not retried). An edge agent with
    ``publish.confirm: ingest`` deletes a buffered reading only when its message is confirmed, and
    publishes again what stays unconfirmed: the broker's PUBACK alone does not prove delivery (a
    restarted Mosquitto forgets shared subscriptions; a killed one loses what it had not saved).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = 1
    written: tuple[int, ...] = ()
    dead: tuple[int, ...] = ()

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class GatewayStatus(BaseModel):
    """Retained on ``.../status``: birth ``online``, Last Will ``offline``, and periodic health."""

    model_config = ConfigDict(extra="allow")

    v: Literal[1] = 1
    state: Literal["online", "offline"]
    agent_version: str | None = None
    ts: EpochMs | None = None
    meters: int | None = None
    buffer_depth: int | None = None
    buffer_dropped: int | None = None
    unconfirmed: int | None = None  # readings the broker took that ingest has not yet confirmed stored
    health: dict[str, dict[str, float | int | str | None]] = {}


# ---------------------------------------------------------------------------------------------
# InfluxDB schema


class M:
    """Measurement names."""

    readings = "reading"  # raw readings, one row per (point, ts)
    volume = "volume"  # derived interval volumes per point (tag interval=1h|1d)
    balance = "balance"  # per reach and interval: in, out, loss, expected loss, eta
    gateway_status = "gateway_status"
    ingest_stats = "ingest_stats"
    efficiency = "efficiency"  # billing KPIs: eta per canal/level/system
    billing = "billing"  # billing KPIs per unit and run


READING_TAGS = ("district", "point", "gateway", "canal", "role")

# Where each measurement lives: `canalflow ingest setup` creates the database with the default policy
# ``raw`` (raw readings and health, kept for --raw-retention) and ``rollups`` (derived volumes,
# balances and KPIs, kept longer). On InfluxDB 2.x/3.x the same names are DBRP mappings onto buckets.
# Every writer passes ``rp=policy_of(m)`` and every reader queries ``source_of(m)``: nobody relies on
# the database's default policy, and nobody guesses.
RAW_RP = "raw"
ROLLUP_RP = "rollups"
RETENTION_POLICY: dict[str, str] = {
    M.readings: RAW_RP,
    M.gateway_status: RAW_RP,
    M.ingest_stats: RAW_RP,
    M.volume: ROLLUP_RP,
    M.balance: ROLLUP_RP,
    M.efficiency: ROLLUP_RP,
    M.billing: ROLLUP_RP,
}


# Which commands write each measurement: the words of a ``canalflow`` command and the options it
# needs. The compose stack runs a writer of every measurement a dashboard panel or alert rule reads
# (tests/test_compose.py); ``billing serve`` writes its KPIs on each run started through ``POST /runs``.
_ROLLUP_WRITERS = (("ingest", "run", "--rollup-every"), ("ingest", "rollup"))
WRITERS: dict[str, tuple[tuple[str, ...], ...]] = {
    M.readings: (("ingest", "run"),),
    M.gateway_status: (("ingest", "run"),),
    M.ingest_stats: (("ingest", "run"),),
    M.volume: _ROLLUP_WRITERS,
    M.balance: _ROLLUP_WRITERS,
    M.efficiency: (("billing", "serve"), ("billing", "efficiency", "--write-kpis")),
    M.billing: (("billing", "serve"), ("billing", "run", "--write-kpis")),
}


def writes(command: Sequence[str], measurement: str) -> bool:
    """Whether ``canalflow COMMAND...`` (its argument list) writes ``measurement`` (:data:`WRITERS`)."""
    for writer in WRITERS.get(measurement, ()):
        words = [w for w in writer if not w.startswith("--")]
        if list(command[: len(words)]) == words and all(o in command for o in writer if o.startswith("--")):
            return True
    return False


def policy_of(measurement: str) -> str:
    """The retention policy ``measurement`` is written to and read from."""
    try:
        return RETENTION_POLICY[measurement]
    except KeyError:
        raise KeyError(f"measurement {measurement!r} has no retention policy in canalflow.contract.RETENTION_POLICY") from None


def bucket_of(database: str, policy: str) -> str:
    """InfluxDB 2.x: the bucket behind ``database``/``policy`` (``canalflow-raw``, ``canalflow-rollups``).

    ``ingest setup --org`` creates these buckets and the compose init script
    (deploy/influxdb/init-canalflow.sh, named in docker-compose.yml) uses the same names."""
    return f"{database}-{policy}"


def source_of(measurement: str) -> str:
    """``"policy"."measurement"``: the InfluxQL FROM clause of a measurement, where it lives."""
    return f'"{policy_of(measurement)}"."{measurement}"'  # names above: no quote or backslash to escape


INTERVAL_HOUR = "1h"
INTERVAL_DAY = "1d"
VOLUME_TAGS = ("district", "point", "canal", "role", "interval")
VOLUME_FIELD = "volume_m3"
VOLUME_FIELDS = ("volume_m3", "coverage", "estimated_share", "method")
BALANCE_TAGS = ("district", "canal", "reach", "interval")
BALANCE_FIELDS = ("in_m3", "out_m3", "loss_m3", "expected_loss_m3", "eta", "anomaly")  # anomaly: bool

# M.gateway_status: written by ingest from the retained status topic.
GATEWAY_STATUS_TAGS = ("district", "gateway")
GATEWAY_STATUS_FIELDS = ("state", "buffer_depth", "buffer_dropped", "unconfirmed")
STATE_ONLINE = "online"
STATE_OFFLINE = "offline"

# M.efficiency: one row per computation window. Tag scope: "system" the official canal-system figure
# (canalflow.coefficients), "system_graph", "system_level_product" and "system_delivered_over_diverted"
# the diagnostics, "canal" one canal (tag canal), "level" one canal level (tag level), "field",
# "field_unit" one billing unit's field coefficient (tag unit), "whole" (tag method).
EFFICIENCY_TAGS = ("district", "scope", "canal", "level", "method", "unit")
EFFICIENCY_FIELDS = ("eta", "in_m3", "out_m3", "coverage", "incomplete", "method")
SCOPE_SYSTEM = "system"
SCOPE_CANAL = "canal"
SCOPE_LEVEL = "level"
SCOPE_FIELD = "field"
SCOPE_FIELD_UNIT = "field_unit"
SCOPE_WHOLE = "whole"

# M.billing: one row per billing unit and billing run, money in yuan (floats for display only;
# the ledger holds the exact decimals).
BILLING_TAGS = ("district", "unit", "township", "kind", "season")
BILLING_FIELDS = (
    "volume_m3", "quota_m3", "charge_yuan", "surcharge_yuan", "subsidy_yuan", "reward_yuan", "adjustment_yuan",
    "total_yuan", "blocked", "run",
)


def escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def escape_str_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _field(value: float | int | bool | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return escape_str_field(value)


def line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, float | int | bool | str], ts_ms: int) -> str:
    """One line of InfluxDB line protocol at millisecond precision; tags sorted, empty ones left out."""
    tag_text = "".join(f",{k}={escape_tag(v)}" for k, v in sorted(tags.items()) if v)
    field_text = ",".join(f"{escape_tag(k)}={_field(v)}" for k, v in fields.items())
    return f"{escape_tag(measurement)}{tag_text} {field_text} {ts_ms}"


def reading_lines(batch: ReadingBatch, canal: str, role: str) -> list[str]:
    """Line protocol for every reading of a batch (the `reading` measurement).

    Equal, line for line, to ``line()`` applied to each reading (tests/test_contract.py proves it on
    generated batches), but a batch has one tag set, so it is escaped once: about 4x faster, which
    decides whether validation or encoding is an ingest worker's bottleneck.
    """
    tags = {"district": batch.district, "point": batch.point, "gateway": batch.gateway, "canal": canal, "role": role}
    prefix = escape_tag(M.readings) + "".join(f",{k}={escape_tag(v)}" for k, v in sorted(tags.items()) if v) + " "
    tail = f",seq={batch.seq}i,historical={'true' if batch.historical else 'false'} "
    keys = _FIELD_KEYS
    quality = _QUALITY_FIELDS
    out = []
    for reading in batch.readings:
        # the caches inline (a call per value was a third of the encoding time)
        values = ",".join([(keys.get(k) or _field_key(k)) + repr(float(v)) for k, v in reading.values.items()])
        fields = quality.get((reading.quality, reading.flags)) or _quality_fields(reading.quality, reading.flags)
        out.append(f"{prefix}{values},{fields}{tail}{reading.ts}" if values else f"{prefix}{fields}{tail}{reading.ts}")
    return out


_QUALITY_FIELDS: dict[tuple[Quality, tuple[Flag, ...]], str] = {}


def _quality_fields(quality: Quality, flags: tuple[Flag, ...]) -> str:
    """``quality=…,qcode=…,flags=…`` of a reading: a few combinations make almost every reading."""
    fields = _QUALITY_FIELDS.get((quality, flags))
    if fields is None:
        flag_text = escape_str_field(",".join(f.value for f in flags))
        fields = f"quality={escape_str_field(quality.value)},qcode={quality.code}i,flags={flag_text}"
        if len(_QUALITY_FIELDS) < 4096:  # bounded: flags combine in few ways, but a cache must not grow without end
            _QUALITY_FIELDS[(quality, flags)] = fields
    return fields


_FIELD_KEYS: dict[str, str] = {}


def _field_key(name: str) -> str:
    escaped = _FIELD_KEYS.get(name)
    if escaped is None:
        escaped = _FIELD_KEYS[name] = escape_tag(name) + "="
    return escaped
