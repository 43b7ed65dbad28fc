"""Realistic data for the demo district, written with the wire contract's own line encoders.

Stand-in for the fleet + ingest path until it is wired (the lead switches the test to it). Each
measurement has the tags and fields the dashboards read; four conditions are planted so the
alert rules have something to find: meter V12-IN silent for the last 2 hours, reach M1-R2 losing
3x its expected seepage, canal-system η at 0.66 (< 0.70), gateway GW-B3 offline with a growing
buffer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from canalflow import contract
from canalflow.contract import Flag, M, Quality, Reading, ReadingBatch, line, reading_lines
from canalflow.district import SENSOR_ROLES, District, PointRole
from canalflow.influx import InfluxV1

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
SILENT_POINT = "V12-IN"
ANOMALOUS_REACH = ("M1", "M1-R2")
OFFLINE_GATEWAY = "GW-B3"
SYSTEM_ETA = 0.66
FIELD_ETA = 0.87  # above the field target: the field alert must stay quiet


@dataclass(frozen=True)
class Planted:
    silent_point: str = SILENT_POINT
    anomalous_reach: tuple[str, str] = ANOMALOUS_REACH
    offline_gateway: str = OFFLINE_GATEWAY
    system_eta: float = SYSTEM_ETA


def base_flow(district: District, point_id: str) -> float:
    point = district.points[point_id]
    if point.role in SENSOR_ROLES:
        return 0.0  # no water passes a plot's sensors
    if point.role is PointRole.diversion and district.canals[district.fed_canal(point) or point.canal].level.value == "main":
        return 40.0
    return {"diversion": 4.0, "section": 25.0, "intake": 0.4, "outfall": 1.0}[point.role.value]


def reading_rows(district: District, now_ms: int, days: int = 3, step_ms: int = 10 * MINUTE) -> list[str]:
    lines: list[str] = []
    start = now_ms - days * DAY
    for index, point in enumerate(district.spec.points):
        stop = now_ms - 2 * HOUR if point.id == SILENT_POINT else now_ms
        flow0 = base_flow(district, point.id)
        readings = []
        totaliser = 1000.0 * (index + 1)
        for ts in range(start - start % step_ms, stop + 1, step_ms):
            flow = flow0 * (1 + 0.15 * math.sin(2 * math.pi * ts / DAY + index))
            totaliser += flow * step_ms / 1000
            quality, flags = Quality.good, ()
            if (ts // step_ms) % 37 == index % 37:
                quality, flags = Quality.suspect, (Flag.stuck,)
            elif point.ratings and point.ratings[0].type == "parshall" and (ts // step_ms) % 53 == 0:
                quality, flags = Quality.estimated, (Flag.rated, Flag.submerged)
            values = {"flow": round(flow, 4), "level": round(0.4 + flow / 100, 4)}
            if point.role in SENSOR_ROLES:
                values = sensor_values(district, point.id, ts - start)
            elif point.profile in ("em-pipe", "tuf2000m"):
                values["totaliser"] = round(totaliser, 2)
            readings.append(Reading(ts=ts, values=values, quality=quality, flags=flags))
        for chunk in range(0, len(readings), 500):
            batch = ReadingBatch(district=district.id, gateway=point.gateway, point=point.id, seq=chunk, readings=tuple(readings[chunk:chunk + 500]))
            lines += reading_lines(batch, point.canal, point.role.value)
    return lines


def sensor_values(district: District, point_id: str, since_ms: int) -> dict[str, float]:
    """A soil-moisture station: θ between its plot's wilting point and field capacity; a rain gauge: 1 mm a day."""
    if district.points[point_id].role is PointRole.rain_gauge:
        return {"rain_total": round(since_ms / DAY * 0.001, 6)}
    plot = next(p for p in district.spec.plots if p.station == point_id)
    theta = plot.wilting_point + 0.6 * (plot.field_capacity - plot.wilting_point)
    return {f"vwc_{d}cm": round(theta + 0.001 * i, 4) for i, d in enumerate(plot.depths_cm)}


def volume_rows(district: District, now_ms: int, days: int = 3) -> list[str]:
    lines = []
    for point in district.spec.points:
        if point.role in SENSOR_ROLES:
            continue  # ingest rolls up no volume where no water passes
        tags = {"district": district.id, "point": point.id, "canal": point.canal, "role": point.role.value}
        flow = base_flow(district, point.id)
        for interval, size in ((contract.INTERVAL_HOUR, HOUR), (contract.INTERVAL_DAY, DAY)):
            first = now_ms - days * DAY
            for ts in range(first - first % size, now_ms - size + 1, size):
                fields = {"volume_m3": round(flow * size / 1000, 1), "coverage": 1.0, "estimated_share": 0.0, "method": "totaliser"}
                lines.append(line(M.volume, {**tags, "interval": interval}, fields, ts))
    return lines


def balance_rows(district: District, now_ms: int, days: int = 3) -> list[str]:
    lines = []
    for ref in district.reaches:
        inflow = 500_000.0 if ref.canal == "M1" else 50_000.0
        expected = inflow * 0.02
        loss = expected * (3.0 if (ref.canal, ref.reach.id) == ANOMALOUS_REACH else 0.9)
        for day in range(days):
            ts = now_ms - now_ms % DAY - (day + 1) * DAY
            fields = {"in_m3": inflow, "out_m3": inflow - loss, "loss_m3": loss, "expected_loss_m3": expected,
                      "eta": round((inflow - loss) / inflow, 4), "anomaly": loss > expected * district.spec.tolerances.loss_anomaly_factor}
            tags = {"district": district.id, "canal": ref.canal, "reach": ref.reach.id, "interval": contract.INTERVAL_DAY}
            lines.append(line(M.balance, tags, fields, ts))
    return lines


def efficiency_rows(district: District, now_ms: int, days: int = 3) -> list[str]:
    lines = []
    for day in range(days):
        ts = now_ms - now_ms % DAY - (day + 1) * DAY
        lines.append(line(M.efficiency, {"district": district.id, "scope": contract.SCOPE_SYSTEM}, {"eta": SYSTEM_ETA, "in_m3": 3.4e6, "out_m3": 3.4e6 * SYSTEM_ETA}, ts))
        lines.append(line(M.efficiency, {"district": district.id, "scope": contract.SCOPE_FIELD}, {"eta": FIELD_ETA, "method": "typical_plots"}, ts))
        for unit in district.spec.units:
            tags = {"district": district.id, "scope": contract.SCOPE_FIELD_UNIT, "unit": unit.id}
            lines.append(line(M.efficiency, tags, {"eta": FIELD_ETA + 0.02, "method": "typical_plots"}, ts))
        for canal in district.spec.canals:
            tags = {"district": district.id, "scope": contract.SCOPE_CANAL, "canal": canal.id, "level": canal.level.value}
            lines.append(line(M.efficiency, tags, {"eta": 0.93 if canal.level.value == "main" else 0.88, "in_m3": 1e5, "out_m3": 9e4}, ts))
    return lines


def billing_rows(district: District, now_ms: int) -> list[str]:
    lines = []
    for index, unit in enumerate(district.spec.units):
        quota = float(district.quota_m3(unit.id, "spring"))
        use = quota * (0.7 + 0.06 * index)  # the last units use more than their quota
        over = max(0.0, use - quota)
        fields = {"volume_m3": round(use, 1), "quota_m3": round(quota, 1), "charge_yuan": round(use * 0.11 + over * 0.055, 2),
                  "surcharge_yuan": round(over * 0.055, 2), "subsidy_yuan": round(min(use, quota) * 0.02, 2),
                  "reward_yuan": round(max(0.0, quota - use) * 0.05, 2)}
        tags = {"district": district.id, "unit": unit.id, "township": unit.township, "kind": unit.kind.value, "season": "2026-spring"}
        lines.append(line(M.billing, tags, fields, now_ms - 6 * HOUR))
    return lines


def gateway_rows(district: District, now_ms: int, hours: int = 24, step_ms: int = 5 * MINUTE) -> list[str]:
    lines = []
    for gateway in district.spec.gateways:
        for ts in range(now_ms - hours * HOUR, now_ms + 1, step_ms):
            offline = gateway.id == OFFLINE_GATEWAY and ts > now_ms - HOUR
            depth = int((ts - (now_ms - HOUR)) / MINUTE * 40) if offline else 0
            fields = {"state": contract.STATE_OFFLINE if offline else contract.STATE_ONLINE, "buffer_depth": depth,
                      "buffer_dropped": 0, "unconfirmed": 0 if offline else 7}
            lines.append(line(M.gateway_status, {"district": district.id, "gateway": gateway.id}, fields, ts))
    return lines


def rows_by_measurement(district: District, now_ms: int) -> dict[str, list[str]]:
    return {
        M.readings: reading_rows(district, now_ms), M.gateway_status: gateway_rows(district, now_ms),
        M.volume: volume_rows(district, now_ms), M.balance: balance_rows(district, now_ms),
        M.efficiency: efficiency_rows(district, now_ms), M.billing: billing_rows(district, now_ms),
    }


def write_rows(influx: InfluxV1, district: District, now_ms: int) -> None:
    """Every measurement into the retention policy the contract names, as ingest and billing write them."""
    for measurement, rows in rows_by_measurement(district, now_ms).items():
        for start in range(0, len(rows), 5000):
            influx.write_lines(rows[start:start + 5000], rp=contract.policy_of(measurement))
