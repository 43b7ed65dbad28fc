"""``canalflow billing explain LINE``: how one bill line was made, down to the readings.

A line id is ``<run id prefix>-<unit>-L<n>`` (printed on every bill). The explanation follows the
chain backwards: the amount = volume × rate rounded to the fen; the rate = price component ×
band multiplier of the tariff version; the line's volume = the unit's volume in that crop class
and band (class share by quota, band by fraction of quota); the unit's volume = its allocations
of its charging points; each point's volume = the method (totaliser or flow), coverage, gaps,
estimated share and flags computed from the readings — and, given InfluxDB, the readings
themselves: how many, how many estimated or bad, the first and last in the window.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from billing.ledger import Ledger, LedgerError
from canalflow.contract import M, Quality, source_of
from canalflow.influx import InfluxV1


def split_line_id(line_id: str) -> tuple[str, int]:
    bill_id, sep, n = line_id.rpartition("-L")
    if not sep or not n.isdigit():
        raise LedgerError(f"{line_id!r} is not a bill line id; line ids look like 3f2a9c1d04e5-V01-L2 (printed on the bill)")
    return bill_id, int(n)


def explain_line(ledger: Ledger, line_id: str, influx: InfluxV1 | None = None, district_id: str | None = None) -> dict[str, Any]:
    bill_id, n = split_line_id(line_id)
    bill = ledger.bill(bill_id)
    if not 1 <= n <= len(bill["lines"]):
        raise LedgerError(f"bill {bill_id} has {len(bill['lines'])} line(s); there is no line {n}")
    item = bill["lines"][n - 1]
    run = ledger.run(bill["run_id"])
    volume, rate, amount = Decimal(item["volume_m3"]), Decimal(item["rate"]), Decimal(item["amount"])
    out: dict[str, Any] = {
        "line": item,
        "arithmetic": f"{volume} m3 × {rate} yuan/m3 = {volume * rate} → {amount} (rounded half up to the fen)",
        "bill": {"id": bill_id, "unit": bill["unit"], "volume_m3": bill["volume_m3"], "quota_m3": bill["quota_m3"], "total": bill["total"], "status": bill["status"]},
        "run": {"id": run.id, "status": run.status, "district_sha256": run.district_sha256, "tariff": f"{run.tariff_id} v{run.tariff_version}",
                "season": run.season_id, "t0_ms": run.t0_ms, "t1_ms": run.t1_ms, "as_of_ms": run.as_of_ms},
        "allocations": bill["allocations"],
        "points": bill["sources"],
    }
    if influx is not None:
        out["readings"] = {s["point"]: readings_summary(influx, district_id or run.district_id, s["point"], run.t0_ms, run.t1_ms) for s in bill["sources"]}
    return out


def readings_summary(influx: InfluxV1, district_id: str, point_id: str, t0_ms: int, t1_ms: int) -> dict[str, Any]:
    """Counts by quality and the first and last reading of a point in a window."""
    where = f"WHERE district = $d AND point = $p AND time >= {t0_ms}ms AND time <= {t1_ms}ms"
    params = {"d": district_id, "p": point_id}
    table = source_of(M.readings)
    counts = _counts_by_quality(influx, table, where, params)
    first = influx.query_points(f"SELECT * FROM {table} {where} ORDER BY time ASC LIMIT 1", params=params)
    last = influx.query_points(f"SELECT * FROM {table} {where} ORDER BY time DESC LIMIT 1", params=params)
    keep = ("time", "flow", "totaliser", "level", "quality", "flags")
    return {
        "counts": counts,
        "first": {k: first[0].get(k) for k in keep} if first else None,
        "last": {k: last[0].get(k) for k in keep} if last else None,
        "query": f"SELECT * FROM {table} WHERE district = '{district_id}' AND point = '{point_id}' AND time >= {t0_ms}ms AND time <= {t1_ms}ms",
    }


def _counts_by_quality(influx: InfluxV1, table: str, where: str, params: dict[str, str]) -> dict[str, int]:
    # quality is a field, not a tag (GROUP BY cannot split it): one count per code
    counts = {}
    for q in Quality:
        rows = influx.query_points(f"SELECT count(qcode) AS n FROM {table} {where} AND qcode = {q.code}", params=params)
        counts[q.value] = int(rows[0]["n"]) if rows else 0
    return counts


def format_explanation(ex: dict[str, Any]) -> str:
    item, bill, run = ex["line"], ex["bill"], ex["run"]
    out = [
        f"line {item['id']}: {item['kind']} {item['crop_class']} {item['component']}" + (f" band {item['band']}" if item["band"] is not None else ""),
        f"  amount     {ex['arithmetic']}",
        f"  note       {item['note']}" if item["note"] else "",
        f"bill {bill['id']} ({bill['status']}): unit {bill['unit']['id']} {bill['unit']['name']}, volume {bill['volume_m3']} m3 against quota {bill['quota_m3']} m3, total {bill['total']} yuan",
        f"run {run['id'][:12]}: tariff {run['tariff']}, season {run['season']}, window {run['t0_ms']}..{run['t1_ms']} ms, readings as of {run['as_of_ms']}, district file sha256 {run['district_sha256'][:16]}…",
        "unit volume from its charging points:",
    ]
    out += [f"  {a['point']}: {a['volume_m3']} m3 ({a['method']}, weight {a['weight']})" for a in ex["allocations"]]
    out.append("point volumes from the readings:")
    for s in ex["points"]:
        out.append(f"  {s['point']}: {s['volume_m3']} m3 by {s['method']}, coverage {s['coverage']:.1%}, estimated {s['estimated_share']:.1%}, "
                   f"{s['n_readings']} readings, {len(s['gaps'])} gap(s)" + (f", flags {', '.join(s['flags'])}" if s["flags"] else ""))
    for point, r in ex.get("readings", {}).items():
        out.append(f"  readings of {point}: " + ", ".join(f"{k} {v}" for k, v in r["counts"].items()))
        out.append(f"    first {r['first']}")
        out.append(f"    last  {r['last']}")
        out.append(f"    see all: {r['query']}")
    return "\n".join(x for x in out if x)
