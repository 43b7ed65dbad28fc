"""Validation of incoming MQTT messages against the wire contract and the district.

A message is either accepted (a :class:`Accepted` with the line protocol to write) or rejected
(a :class:`Rejected` with a reason code from :data:`REASONS` and a detail naming the field or
topic at fault). Nothing is dropped: every rejection goes to the dead-letter store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import ValidationError

from canalflow.contract import (
    MAX_PAYLOAD_BYTES,
    GatewayStatus,
    ReadingBatch,
    TopicError,
    TopicKind,
    line,
    parse_topic,
    policy_of,
    reading_lines,
)
from canalflow.contract import M as Measurements
from canalflow.district import District

# The retention policy of every accepted line: readings and status rows share one write.
LINES_RP = policy_of(Measurements.readings)
if policy_of(Measurements.gateway_status) != LINES_RP:
    raise RuntimeError("contract.RETENTION_POLICY: `reading` and `gateway_status` are written together, so share a policy")

# Reason codes of rejected messages, with the hint an operator sees in `deadletter list/show`.
REASONS: dict[str, str] = {
    "oversize": f"payload larger than {MAX_PAYLOAD_BYTES} bytes: split the batch at the edge agent",
    "malformed_json": "payload is not valid JSON: check the publisher's encoder",
    "schema": "payload does not match the v1 ReadingBatch schema (canalflow.contract): fix the field named",
    "unknown_quantity": "a value name is not a contract quantity: map it at the edge (see contract.QUANTITIES)",
    "impossible_value": "a value is non-finite or outside contract.IMPOSSIBLE: check the meter profile's scale/units",
    "duplicate_timestamp": "two readings of one batch share a timestamp: fix the edge buffer",
    "bad_topic": "topic is not a canalflow v1 readings/status topic",
    "wrong_district": "topic names another district than the one this ingest serves",
    "unknown_gateway": "gateway is not in the district file: add it (district check) then replay",
    "unknown_point": "point is not in the district file: add it (district check) then replay",
    "wrong_gateway": "the point belongs to another gateway in the district file: fix the agent config or the file",
    "topic_mismatch": "payload district/gateway/point differ from the topic's: fix the publisher",
    "bad_status": "gateway status payload does not match contract.GatewayStatus",
    "influx_rejected": "InfluxDB refused the line (type conflict, beyond retention, ...): see detail",
}


@dataclass(frozen=True)
class Accepted:
    lines: list[str]
    readings: int
    newest_ts_ms: int
    historical: bool
    oldest_ts_ms: int = 0
    point: str | None = None  # readings only: the metering point, for the rollups' late-data tracking


@dataclass(frozen=True)
class Rejected:
    reason: str
    detail: str

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown dead-letter reason {self.reason!r}")


class MessageValidator:
    """Validate readings and status messages of one district; build their line protocol."""

    def __init__(self, district: District) -> None:
        self.district = district
        self._points = {p.id: (p.gateway, p.canal, p.role.value) for p in district.spec.points}
        self._gateways = set(district.gateways)

    def validate(self, topic: str, payload: bytes) -> Accepted | Rejected:
        try:
            parsed = parse_topic(topic)
        except TopicError as exc:
            return Rejected("bad_topic", str(exc))
        if parsed.district != self.district.id:
            return Rejected("wrong_district", f"topic {topic!r} names district {parsed.district!r}, this ingest serves {self.district.id!r}")
        if parsed.gateway not in self._gateways:
            return Rejected("unknown_gateway", f"gateway {parsed.gateway!r} (topic {topic!r}) is not in {self.district.path}")
        if parsed.kind is TopicKind.status:
            return self._validate_status(parsed.gateway, payload)
        if parsed.kind is not TopicKind.readings or parsed.point is None:
            return Rejected("bad_topic", f"topic {topic!r} is not a readings or status topic")
        return self._validate_readings(parsed.gateway, parsed.point, topic, payload)

    def _validate_readings(self, gateway: str, point: str, topic: str, payload: bytes) -> Accepted | Rejected:
        known = self._points.get(point)
        if known is None:
            return Rejected("unknown_point", f"point {point!r} (topic {topic!r}) is not in {self.district.path}")
        owner, canal, role = known
        if owner != gateway:
            return Rejected("wrong_gateway", f"point {point!r} belongs to gateway {owner!r} in {self.district.path}, but {gateway!r} published it")
        if len(payload) > MAX_PAYLOAD_BYTES:
            return Rejected("oversize", f"payload of {len(payload)} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}")
        try:
            batch = ReadingBatch.model_validate_json(payload, strict=True)  # "0" or true is not a number on the wire
        except ValidationError as exc:
            return rejection_of(exc)
        except ValueError as exc:  # e.g. invalid UTF-8 raised before pydantic builds its error
            return Rejected("malformed_json", str(exc)[:500])
        for field, value in (("district", self.district.id), ("gateway", gateway), ("point", point)):
            if getattr(batch, field) != value:
                return Rejected("topic_mismatch", f"payload {field}={getattr(batch, field)!r} but topic {topic!r} says {value!r}")
        lines = reading_lines(batch, canal, role)
        stamps = [r.ts for r in batch.readings]
        return Accepted(lines, len(lines), max(stamps), batch.historical, min(stamps), point)

    def _validate_status(self, gateway: str, payload: bytes) -> Accepted | Rejected:
        if not payload:  # an empty retained message clears the topic: nothing to record
            return Accepted([], 0, 0, False)
        try:
            status = GatewayStatus.model_validate_json(payload, strict=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            return Rejected("bad_status", f"{_loc(first['loc'])}: {first['msg']}")
        if status.ts is None:
            return Rejected("bad_status", "ts: a status needs its timestamp (epoch ms) so that redelivery writes the same row")
        return Accepted([status_line(self.district.id, gateway, status)], 0, status.ts, False)


_SEQ = re.compile(rb'"seq"\s*:\s*(\d{1,18})[,}\s]')


def confirmation_address(topic: str, payload: bytes) -> tuple[str, int] | None:
    """``(gateway, seq)`` of a readings message, read leniently so that a rejected one is confirmed too
    (as dead-lettered): the gateway from the topic (the broker's ACL vouches for it), the seq from the
    head of the payload. None when the message is not a readings message or carries no seq."""
    try:
        parsed = parse_topic(topic)
    except TopicError:
        return None
    if parsed.kind is not TopicKind.readings:
        return None
    found = _SEQ.search(payload[:1024])
    return (parsed.gateway, int(found.group(1))) if found else None


def status_line(district: str, gateway: str, status: GatewayStatus) -> str:
    """The `gateway_status` row of a status message (state as text and as 1/0 for graphs)."""
    fields: dict[str, float | int | bool | str] = {"state": status.state, "online": int(status.state == "online")}
    for name in ("meters", "buffer_depth", "buffer_dropped", "unconfirmed"):
        value = getattr(status, name)
        if value is not None:
            fields[name] = int(value)
    if status.agent_version:
        fields["agent_version"] = status.agent_version
    return line(Measurements.gateway_status, {"district": district, "gateway": gateway}, fields, int(status.ts or 0))


def rejection_of(exc: ValidationError) -> Rejected:
    """Classify a pydantic error of a ReadingBatch into a reason code, naming the field."""
    errors = exc.errors()
    first = errors[0]
    where = _loc(first["loc"])
    message = str(first["msg"])
    detail = f"{where}: {message}" + (f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else "")
    kind = first["type"]
    if kind in ("json_invalid", "json_type") or (kind == "model_type" and not first["loc"]):
        return Rejected("malformed_json" if kind == "json_invalid" else "schema", detail)
    if "unknown quantity" in message:
        return Rejected("unknown_quantity", detail)
    if "outside the possible range" in message or "not a finite number" in message or kind == "finite_number":
        return Rejected("impossible_value", detail)
    if "same timestamp" in message:
        return Rejected("duplicate_timestamp", detail)
    return Rejected("schema", detail)


def _loc(loc: tuple[int | str, ...] | list[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(payload)"
